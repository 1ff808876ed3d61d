"""Per local calendar day totals of the merged minute window. Pure: no I/O, no clock.

Method ``daily-totals/merged-minutes@2``: local days in the user's current UTC offset;
steps and activity counts are the sums of the merged per-minute counts (see
``window.py`` for resampling and the merge across devices); a day's covered minutes are
the minutes with step or activity data from any device, coverage = covered / 1440;
heart rate is the time-weighted mean of all readings in the day. Missing minutes are
missing, never zero: a day without step data has ``steps = null``.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import numpy as np

METHOD = "daily-totals/merged-minutes@2"
DAY_MINUTES = 1440


def daily_activity(start_minute: int, utc_offset_minutes: int, steps: np.ndarray, activity: np.ndarray,
                   hr_sum: np.ndarray, hr_weight: np.ndarray) -> list[dict[str, Any]]:
    """One entry per local day that has movement or heart-rate data, in date order."""
    local = start_minute + utc_offset_minutes + np.arange(steps.size)
    day_index = local // DAY_MINUTES
    has_steps, has_activity = ~np.isnan(steps), ~np.isnan(activity)
    has_movement, has_hr = has_steps | has_activity, hr_weight > 0
    days = []
    for day in np.unique(day_index[has_movement | has_hr]):
        in_day = day_index == day
        covered = int(np.count_nonzero(in_day & has_movement))
        weight = float(hr_weight[in_day].sum())
        days.append({
            "date": (date(1970, 1, 1) + timedelta(days=int(day))).isoformat(),
            "steps": float(np.nansum(steps[in_day])) if (in_day & has_steps).any() else None,
            "activity_counts": float(np.nansum(activity[in_day])) if (in_day & has_activity).any() else None,
            "minutes_covered": covered,
            "coverage": covered / DAY_MINUTES,
            "heart_rate_mean": float(hr_sum[in_day].sum()) / weight if weight > 0 else None,
            "heart_rate_minutes": int(np.count_nonzero(in_day & has_hr)),
        })
    return days
