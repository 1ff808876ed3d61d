"""What the fleet connects as and what is published: users, messages, and who gets which.

Pure: no I/O. Message ``seq`` goes to user ``seq % users``; every connection of that user
must receive it exactly once. The message identity travels inside the payload itself
(``prediction_id``), so both systems carry the same bytes and the client decodes both
the same way.
"""

from __future__ import annotations

import math
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any


@dataclass(frozen=True)
class Plan:
    connections: int
    connections_per_user: int
    nonce: int  # tells this run's messages apart from anything else on the topic / channel

    @classmethod
    def new(cls, connections: int, connections_per_user: int) -> Plan:
        if connections % connections_per_user:
            raise ValueError("connections must be a multiple of connections_per_user")
        return cls(connections, connections_per_user, random.getrandbits(32))

    @property
    def users(self) -> int:
        return self.connections // self.connections_per_user

    def user_id(self, index: int) -> str:
        return f"bench-{self.nonce:08x}-{index:05d}"

    def user_of_message(self, seq: int) -> int:
        return seq % self.users

    def user_of_connection(self, connection: int) -> int:
        return connection // self.connections_per_user

    def connections_of_user(self, user: int) -> range:
        first = user * self.connections_per_user
        return range(first, first + self.connections_per_user)

    def deliveries(self, first_seq: int, end_seq: int) -> int:
        """Expected deliveries of messages ``first_seq <= seq < end_seq``."""
        return (end_seq - first_seq) * self.connections_per_user

    def prediction_id(self, seq: int) -> str:
        return prediction_id(self.nonce, seq)


def prediction_id(nonce: int, seq: int) -> str:
    return f"{nonce:08x}-0000-4000-8000-{seq:012x}"


def parse_prediction_id(value: str, nonce_hex: str) -> int | None:
    """The message sequence number, or None for anything this run did not publish."""
    if len(value) != 36 or not value.startswith(nonce_hex):
        return None
    try:
        return int(value[24:], 16)
    except ValueError:
        return None


_EMBEDDING = [round(math.sin(i * 0.7), 6) for i in range(96)]  # any 96 floats: only the size matters


def prediction_record(user_id: str, pid: str, computed_at: datetime) -> dict[str, Any]:
    """A valid ``io.circadia.prediction.Prediction`` of realistic size (one day, one night,
    a PAT-S embedding): ~1 KB as Avro, ~2.2 KB as the JSON both servers push."""
    day = computed_at.replace(hour=0, minute=0, second=0, microsecond=0)
    window_end = day + timedelta(hours=computed_at.hour)
    return {
        "prediction_id": pid,
        "user_id": user_id,
        "source_upload_ids": [str(uuid.UUID(int=random.getrandbits(128), version=4))],
        "computed_at": computed_at,
        "window_start": window_end - timedelta(days=7),
        "window_end": window_end,
        "code_version": "bench-fanout",
        "daily_activity": [{"date": day.date().isoformat(), "steps": 4242.0, "activity_counts": None,
                            "minutes_covered": 600, "coverage": 600 / 1440,
                            "heart_rate_mean": 64.5, "heart_rate_minutes": 420, "movement_input": "step_count",
                            "wear_minutes": 600, "wear_rule": "valid-day/hr-600min-or-steps-10h@1: heart-rate",
                            "refused": None}],
        "methods": {"daily_activity": "daily-totals/merged-minutes@2"},
        "window_minutes_covered": 600,
        "window_coverage": 600 / 10080,
        "circadian": {"method": "npcra/van-someren-1999@1", "input": "step_count", "coverage": 0.06,
                      "days_used": 0, "refused": "fewer than 3 days", "interdaily_stability": None,
                      "intradaily_variability": None, "m10": None, "m10_onset": None, "l5": None,
                      "l5_onset": None, "relative_amplitude": None},
        "cosinor": {"method": "cosinor/24h-least-squares@1", "input": "step_count", "coverage": 0.9,
                    "refused": None, "mesor": 10.0, "amplitude": 5.0, "acrophase": "14:30",
                    "acrophase_hours": 14.5, "r_squared": 0.4},
        "sleep_nights": [{"night": (day - timedelta(days=1)).date().isoformat(),
                          "method": "sleep-stages/device-reported@2", "refused": None,
                          "bed_start": day - timedelta(hours=1), "bed_end": day + timedelta(hours=7),
                          "time_in_bed_minutes": 480.0, "total_sleep_minutes": 420.0, "efficiency": 0.875,
                          "onset_latency_minutes": 15.0, "waso_minutes": 45.0, "awakenings": 2,
                          "date_of_sleep": day.date().isoformat(), "main_sleep": True}],
        "naps": [],
        "scored_sleep": None,
        "pat": {"model_id": "PAT-S", "weights_sha256": "0" * 64, "normalisation": "none",
                "input": "activity_count", "coverage": 0.95, "embedding": _EMBEDDING},
        "pat_unavailable": None,
        "clinical_scores": [],
        "as_of": {block: {"computed_at": day, "window_end": day}
                  for block in ("window", "daily_activity", "circadian", "cosinor", "sleep_nights", "pat")},
    }


def now() -> datetime:
    return datetime.now(UTC)
