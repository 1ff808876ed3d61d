"""Per local calendar day totals of an upload's samples. Pure: no I/O, no clock.

Method ``daily-totals/prorated-overlap@1``:
- a sample covers the half-open interval [start, end) in the device's local time
  (UTC + the sample's ``utc_offset_minutes``);
- a movement sample (step_count, activity_count) spreads its value uniformly over its
  interval, and each local day receives the share that overlaps it; an instantaneous
  sample (start == end) counts wholly in its minute;
- a day's covered minutes are the distinct local clock minutes overlapped by any
  movement sample; coverage = covered minutes / 1440. Minutes without data are missing,
  never zero;
- heart rate is a time-weighted mean over the day's heart_rate samples, each weighted by
  its overlap with the day; instantaneous readings weigh one minute.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

METHOD = "daily-totals/prorated-overlap@1"
MINUTE_MS = 60_000
DAY_MS = 1440 * MINUTE_MS
MOVEMENT = ("step_count", "activity_count")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class _Day:
    steps: float | None = None
    activity_counts: float | None = None
    movement_minutes: set[int] = field(default_factory=set)
    hr_weighted_sum: float = 0.0
    hr_weight: float = 0.0
    hr_minutes: set[int] = field(default_factory=set)


def _ms(value: datetime) -> int:
    return (value - _EPOCH) // timedelta(milliseconds=1)


def _minutes(start: int, end: int) -> range:
    """Local minute indices overlapped by [start, end); an instant overlaps its own minute."""
    first = start // MINUTE_MS
    last = max(first + 1, -(-end // MINUTE_MS))
    return range(first, last)


def daily_activity(samples: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Totals per local day touched by movement or heart-rate samples, in date order."""
    days: dict[int, _Day] = {}
    for sample in samples:
        kind = sample["type"]
        if kind not in MOVEMENT and kind != "heart_rate":
            continue
        offset = int(sample["utc_offset_minutes"]) * MINUTE_MS
        start, end = _ms(sample["start"]) + offset, _ms(sample["end"]) + offset
        value = float(sample["value"])
        duration = end - start
        first_day, last_day = start // DAY_MS, max(start, end - 1) // DAY_MS
        for day_index in range(first_day, last_day + 1):
            day = days.setdefault(day_index, _Day())
            lo, hi = max(start, day_index * DAY_MS), min(end, (day_index + 1) * DAY_MS)
            share = 1.0 if duration == 0 else (hi - lo) / duration
            minutes = _minutes(lo, hi)
            if kind == "heart_rate":
                weight = (hi - lo) if duration else MINUTE_MS
                day.hr_weighted_sum += value * weight
                day.hr_weight += weight
                day.hr_minutes.update(minutes)
                continue
            day.movement_minutes.update(minutes)
            if kind == "step_count":
                day.steps = (day.steps or 0.0) + value * share
            else:
                day.activity_counts = (day.activity_counts or 0.0) + value * share
    return [_summary(index, days[index]) for index in sorted(days)]


def _summary(day_index: int, day: _Day) -> dict[str, Any]:
    covered = len(day.movement_minutes)
    return {
        "date": (date(1970, 1, 1) + timedelta(days=day_index)).isoformat(),
        "steps": day.steps,
        "activity_counts": day.activity_counts,
        "minutes_covered": covered,
        "coverage": covered / 1440,
        "heart_rate_mean": day.hr_weighted_sum / day.hr_weight if day.hr_weight else None,
        "heart_rate_minutes": len(day.hr_minutes),
    }
