"""Per-day totals of the merged window: hand-computed cases for proration, coverage, offsets
and heart rate."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest

from prediction_worker.daily import daily_activity
from prediction_worker.window import UserWindow


def sample(kind: str, start: datetime, minutes: float, value: float, offset: int = 0) -> dict:
    return {"type": kind, "start": start, "end": start + timedelta(minutes=minutes),
            "utc_offset_minutes": offset, "value": value, "stage": None, "unit": "count"}


def at(hour: int, minute: int = 0, day: int = 24) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


def days(*samples: dict, device: str = "phone") -> list[dict]:
    window = UserWindow()
    window.apply({"upload_id": str(uuid.uuid4()), "user_id": "u", "received_at": at(23, 59, day=25),
                  "device": {"id": device, "model": "m", "os": "o"}, "samples": list(samples)})
    return daily_activity(window.start_minute, window.utc_offset_minutes, window.movement("step_count"),
                          window.movement("activity_count"), *window.heart_rate())


def test_minute_samples_sum_and_cover_their_minutes() -> None:
    (day,) = days(*[sample("step_count", at(10, m), 1, 10) for m in range(30)])
    assert day["date"] == "2026-11-24"
    assert day["steps"] == 300
    assert day["minutes_covered"] == 30
    assert day["coverage"] == pytest.approx(30 / 1440)
    assert day["activity_counts"] is None and day["heart_rate_mean"] is None


def test_sample_across_midnight_is_prorated_by_overlap() -> None:
    # 120 steps from 23:30 to 00:30: half on each day, 30 minutes covered on each
    result = days(sample("step_count", at(23, 30), 60, 120))
    assert [d["date"] for d in result] == ["2026-11-24", "2026-11-25"]
    assert [d["steps"] for d in result] == [60, 60]
    assert [d["minutes_covered"] for d in result] == [30, 30]


def test_local_day_follows_the_users_offset() -> None:
    # 23:30 UTC is 00:30 the next day at UTC+1
    (day,) = days(sample("step_count", at(23, 30), 10, 50, offset=60))
    assert day["date"] == "2026-11-25"
    (day,) = days(sample("step_count", at(0, 30, day=25), 10, 50, offset=-60))
    assert day["date"] == "2026-11-24"


def test_overlapping_kinds_count_a_minute_once_for_coverage() -> None:
    (day,) = days(sample("step_count", at(8), 10, 100), sample("activity_count", at(8, 5), 10, 40))
    assert day["steps"] == 100 and day["activity_counts"] == 40
    assert day["minutes_covered"] == 15  # 08:00-08:15


def test_partial_minutes_are_covered_and_instants_count_in_their_minute() -> None:
    (day,) = days(sample("step_count", at(9) + timedelta(seconds=30), 1, 12))  # 09:00:30-09:01:30
    assert day["minutes_covered"] == 2 and day["steps"] == pytest.approx(12)
    (day,) = days(sample("step_count", at(7, 15), 0, 7))
    assert day["steps"] == 7 and day["minutes_covered"] == 1


def test_heart_rate_is_time_weighted_and_is_not_movement() -> None:
    (day,) = days(sample("heart_rate", at(12), 30, 60), sample("heart_rate", at(12, 30), 10, 100),
                  sample("heart_rate", at(13), 0, 80))  # an instant weighs one minute
    assert day["heart_rate_mean"] == pytest.approx((60 * 30 + 100 * 10 + 80 * 1) / 41)
    assert day["heart_rate_minutes"] == 41
    assert day["minutes_covered"] == 0 and day["steps"] is None


def test_full_day_has_full_coverage_and_days_are_ordered() -> None:
    samples = [sample("step_count", at(0, day=25) + timedelta(minutes=m), 1, 1) for m in range(1440)]
    result = days(sample("step_count", at(12), 1, 5), *samples)
    assert [d["date"] for d in result] == ["2026-11-24", "2026-11-25"]
    assert result[1]["minutes_covered"] == 1440 and result[1]["coverage"] == 1.0
    assert result[1]["steps"] == 1440


def masked_reference(start_minute: int, offset: int, steps: np.ndarray, activity: np.ndarray,
                     hr_sum: np.ndarray, hr_weight: np.ndarray) -> list[dict]:
    """The per-day formulas written plainly: each day's minutes picked by a mask."""
    day_index = (start_minute + offset + np.arange(steps.size)) // 1440
    movement, hr = ~np.isnan(steps) | ~np.isnan(activity), hr_weight > 0
    out = []
    for day in np.unique(day_index[movement | hr]):
        in_day = day_index == day
        weight = float(hr_weight[in_day].sum())
        out.append({
            "date": (date(1970, 1, 1) + timedelta(days=int(day))).isoformat(),
            "steps": float(np.nansum(steps[in_day])) if (in_day & ~np.isnan(steps)).any() else None,
            "activity_counts": float(np.nansum(activity[in_day])) if (in_day & ~np.isnan(activity)).any() else None,
            "minutes_covered": int(np.count_nonzero(in_day & movement)),
            "coverage": int(np.count_nonzero(in_day & movement)) / 1440,
            "heart_rate_mean": float(hr_sum[in_day].sum()) / weight if weight > 0 else None,
            "heart_rate_minutes": int(np.count_nonzero(in_day & hr)),
            # without a wear report (``wear``), no day names an input or wear
            "movement_input": None, "wear_minutes": 0, "wear_rule": None, "refused": None,
        })
    return out


@pytest.mark.parametrize("seed", range(40))
def test_day_slices_give_the_masked_formulas_to_the_last_bit(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 10_080
    steps = np.where(rng.random(n) < rng.random(), np.nan, rng.random(n) * 120)
    activity = np.where(rng.random(n) < 0.5, np.nan, rng.random(n) * 2000) if seed % 2 else np.full(n, np.nan)
    weight = np.where(rng.random(n) < 0.4, 0.0, rng.random(n) * 2)
    hr_sum = weight * (50 + rng.random(n) * 100)
    start, offset = int(rng.integers(29_000_000, 29_600_000)), int(rng.integers(-720, 841))
    assert daily_activity(start, offset, steps, activity, hr_sum, weight) == masked_reference(
        start, offset, steps, activity, hr_sum, weight)
