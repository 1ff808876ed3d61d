"""Per local calendar day totals of the merged minute window. Pure: no I/O, no clock.

Method ``daily-totals/merged-minutes@2``: local days in the user's current UTC offset;
steps and activity counts are the sums of the merged per-minute counts (see
``window.py`` for resampling and the merge across devices); a day's covered minutes are
the minutes with step or activity data from any device, coverage = covered / 1440;
heart rate is the time-weighted mean of all readings in the day. Missing minutes are
missing, never zero: a day without step data has ``steps = null``. Activity counts are those of
the minutes worn (``prediction_worker.inputs``); each day names its movement input, its wear
minutes and the rule that decided them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from prediction_worker.inputs import DayWear

METHOD = "daily-totals/merged-minutes@2"
DAY_MINUTES = 1440


def daily_activity(start_minute: int, utc_offset_minutes: int, steps: np.ndarray, activity: np.ndarray,
                   hr_sum: np.ndarray, hr_weight: np.ndarray,
                   wear: Mapping[str, DayWear] | None = None) -> list[dict[str, Any]]:
    """One entry per local day that has movement or heart-rate data, in date order.

    The window's minutes are consecutive, so each local day is a slice of it: sums are taken over
    the slice (missing minutes as 0), which adds the same values in the same order as summing the
    day's minutes picked by a mask would, so the totals are the same to the last bit. A day whose
    measure has no data at all has None for it."""
    first_day = (start_minute + utc_offset_minutes) // DAY_MINUTES
    # where each local day begins in the window (the first one at minute 0)
    bounds = np.arange(first_day + 1, (start_minute + utc_offset_minutes + steps.size - 1) // DAY_MINUTES + 1)
    starts = np.concatenate(([0], bounds * DAY_MINUTES - (start_minute + utc_offset_minutes)))
    has_steps, has_activity = ~np.isnan(steps), ~np.isnan(activity)
    has_movement, has_hr = has_steps | has_activity, hr_weight > 0

    ends = np.append(starts[1:], steps.size)

    def per_day(values: np.ndarray) -> np.ndarray:
        return np.array([values[a:b].sum() for a, b in zip(starts, ends, strict=True)])

    step_sum = per_day(np.where(has_steps, steps, 0.0))
    with np.errstate(over="ignore"):  # counts near a double's maximum: the day's total is refused below
        activity_sum = per_day(np.where(has_activity, activity, 0.0))
    step_minutes, activity_minutes = per_day(has_steps.astype(np.int64)), per_day(has_activity.astype(np.int64))
    covered, hr_minutes = per_day(has_movement.astype(np.int64)), per_day(has_hr.astype(np.int64))
    total, weight = per_day(hr_sum), per_day(hr_weight)
    days = []
    dates = [(date(1970, 1, 1) + timedelta(days=int(first_day + index))).isoformat() for index in range(len(starts))]
    # a day whose movement data were all non-wear is still listed, with its wear minutes (0)
    moved = np.array([wear is not None and day in wear and wear[day].input is not None for day in dates], dtype=bool)
    for index in np.flatnonzero((covered > 0) | (hr_minutes > 0) | moved):
        day_weight = float(weight[index])
        day = dates[index]
        worn = wear.get(day) if wear is not None else None
        counted = bool(activity_minutes[index])
        representable = bool(np.isfinite(activity_sum[index]))
        days.append({
            "date": day,
            "steps": float(step_sum[index]) if step_minutes[index] else None,
            "activity_counts": float(activity_sum[index]) if counted and representable else None,
            "minutes_covered": int(covered[index]),
            "coverage": int(covered[index]) / DAY_MINUTES,
            "heart_rate_mean": float(total[index]) / day_weight if day_weight > 0 else None,
            "heart_rate_minutes": int(hr_minutes[index]),
            "movement_input": worn.input if worn else None,
            "wear_minutes": worn.wear_minutes if worn else 0,
            "wear_rule": worn.rule if worn else None,
            "refused": None if representable else "activity_counts: the day's total exceeds a double's range",
        })
    return days
