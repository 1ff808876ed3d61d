"""The uploads of the benchmark (pure): users, upload bodies as devices send them, and the
same upload as the Avro record the gateway publishes.

Every upload is one hour of one-minute ``step_count`` samples (``--samples``, 60 by default)
of one user's watch, with a fresh ``upload_id``. Each user's uploads walk forward through a
20-hour range that starts 23 hours before the run began, an hour at a time, and wrap around
(a device re-syncing), so every sample lies within the last day and never in the future.
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

DEVICE_MODEL = "Watch7,1"
DEVICE_OS = "watchOS 11.2"
RANGE_MINUTES = 20 * 60  # the span each user's uploads walk through
FIRST_MINUTE_AGO = 23 * 60  # where it starts, before the run began
MAX_STEPS = 120  # per minute, well under the gateway's 400/minute


def user_ids(count: int, prefix: str = "bench-user") -> list[str]:
    return [f"{prefix}-{index:05d}" for index in range(count)]


@dataclass
class Uploads:
    """Upload bodies for a set of users; ``next(user)`` gives that user's next upload."""

    samples: int = 60
    seed: int = 1
    base: datetime = field(default_factory=lambda: datetime.now(UTC).replace(second=0, microsecond=0))
    _cursor: dict[str, int] = field(default_factory=dict)
    _random: random.Random = field(init=False)

    def __post_init__(self) -> None:
        if self.samples > RANGE_MINUTES:
            raise ValueError(f"at most {RANGE_MINUTES} samples per upload")
        self._random = random.Random(self.seed)

    def _start(self, user: str) -> datetime:
        step = self._cursor.get(user, 0)
        self._cursor[user] = step + 1
        minute = (step * self.samples) % (RANGE_MINUTES - self.samples + 1)
        return self.base - timedelta(minutes=FIRST_MINUTE_AGO) + timedelta(minutes=minute)

    def body(self, user: str) -> tuple[str, dict[str, Any]]:
        """(upload id, the JSON body of ``POST /v1/uploads``)."""
        start = self._start(user)
        randint = self._random.randint
        samples = []
        for i in range(self.samples):
            begin = start + timedelta(minutes=i)
            samples.append({"type": "step_count", "start": begin.isoformat(),
                            "end": (begin + timedelta(minutes=1)).isoformat(),
                            "value": randint(0, MAX_STEPS), "unit": "count"})
        upload_id = str(uuid.uuid4())
        return upload_id, {"upload_id": upload_id, "device": {"id": f"{user}-watch", "model": DEVICE_MODEL,
                                                              "os": DEVICE_OS}, "samples": samples}

    def encoded_body(self, user: str) -> tuple[str, bytes]:
        upload_id, body = self.body(user)
        return upload_id, json.dumps(body, separators=(",", ":")).encode()

    def record(self, user: str) -> tuple[str, dict[str, Any]]:
        """(upload id, the ``io.circadia.health.HealthUpload`` record the gateway would publish for
        the same upload: what ``UploadRequest.to_record`` builds)."""
        start = self._start(user)
        randint = self._random.randint
        samples = []
        for i in range(self.samples):
            begin = start + timedelta(minutes=i)
            start_ms = int(begin.timestamp()) * 1000  # whole minutes: exact
            samples.append({"type": "step_count", "start": start_ms, "end": start_ms + 60_000,
                            "utc_offset_minutes": 0, "value": float(randint(0, MAX_STEPS)), "stage": None,
                            "unit": "count"})
        upload_id = str(uuid.uuid4())
        return upload_id, {"upload_id": upload_id, "user_id": user, "received_at": datetime.now(UTC),
                           "device": {"id": f"{user}-watch", "model": DEVICE_MODEL, "os": DEVICE_OS},
                           "samples": samples}
