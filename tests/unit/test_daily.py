"""Per-day totals: hand-computed cases for proration, coverage, offsets and heart rate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prediction_worker.daily import daily_activity


def sample(kind: str, start: datetime, minutes: float, value: float, offset: int = 0) -> dict:
    return {"type": kind, "start": start, "end": start + timedelta(minutes=minutes),
            "utc_offset_minutes": offset, "value": value, "stage": None}


def at(hour: int, minute: int = 0, day: int = 24) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


def test_minute_samples_sum_and_cover_their_minutes() -> None:
    samples = [sample("step_count", at(10, m), 1, 10) for m in range(30)]
    (day,) = daily_activity(samples)
    assert day["date"] == "2026-11-24"
    assert day["steps"] == 300
    assert day["minutes_covered"] == 30
    assert day["coverage"] == pytest.approx(30 / 1440)
    assert day["activity_counts"] is None and day["heart_rate_mean"] is None


def test_sample_across_midnight_is_prorated_by_overlap() -> None:
    # 120 steps from 23:30 to 00:30: half on each day, 30 minutes covered on each
    days = daily_activity([sample("step_count", at(23, 30), 60, 120)])
    assert [d["date"] for d in days] == ["2026-11-24", "2026-11-25"]
    assert [d["steps"] for d in days] == [60, 60]
    assert [d["minutes_covered"] for d in days] == [30, 30]


def test_local_day_follows_the_device_offset() -> None:
    # 23:30 UTC is 00:30 the next day at UTC+1
    (day,) = daily_activity([sample("step_count", at(23, 30), 10, 50, offset=60)])
    assert day["date"] == "2026-11-25"
    (day,) = daily_activity([sample("step_count", at(0, 30, day=25), 10, 50, offset=-60)])
    assert day["date"] == "2026-11-24"


def test_overlapping_samples_count_a_minute_once_for_coverage() -> None:
    samples = [sample("step_count", at(8), 10, 100), sample("activity_count", at(8, 5), 10, 40)]
    (day,) = daily_activity(samples)
    assert day["steps"] == 100 and day["activity_counts"] == 40
    assert day["minutes_covered"] == 15  # 08:00-08:15


def test_partial_minutes_are_covered() -> None:
    start = at(9) + timedelta(seconds=30)
    (day,) = daily_activity([sample("step_count", start, 1, 12)])  # 09:00:30-09:01:30
    assert day["minutes_covered"] == 2


def test_instantaneous_sample_counts_in_its_minute() -> None:
    (day,) = daily_activity([sample("step_count", at(7, 15), 0, 7)])
    assert day["steps"] == 7 and day["minutes_covered"] == 1


def test_heart_rate_is_time_weighted_and_does_not_count_as_movement() -> None:
    samples = [sample("heart_rate", at(12), 30, 60), sample("heart_rate", at(12, 30), 10, 100),
               sample("heart_rate", at(13), 0, 80)]  # an instant weighs one minute
    (day,) = daily_activity(samples)
    assert day["heart_rate_mean"] == pytest.approx((60 * 30 + 100 * 10 + 80 * 1) / 41)
    assert day["heart_rate_minutes"] == 41
    assert day["minutes_covered"] == 0 and day["steps"] is None


def test_sleep_stages_are_not_movement() -> None:
    stage = {"type": "sleep_analysis", "start": at(1), "end": at(2), "utc_offset_minutes": 0,
             "value": None, "stage": "asleep_core"}
    assert daily_activity([stage]) == []


def test_full_day_of_minutes_has_full_coverage_and_days_are_ordered() -> None:
    samples = [sample("step_count", at(0, day=25) + timedelta(minutes=m), 1, 1) for m in range(1440)]
    samples.insert(0, sample("step_count", at(12), 1, 5))
    days = daily_activity(reversed(samples))
    assert [d["date"] for d in days] == ["2026-11-24", "2026-11-25"]
    assert days[1]["minutes_covered"] == 1440 and days[1]["coverage"] == 1.0
    assert days[1]["steps"] == 1440
