"""What each metric is fed: the worn minutes of each movement series, chosen per day and per metric.

Rules (method ``movement-input/per-day-and-metric@1``):

- **Wear first.** Each device's activity counts lose their non-wear minutes (Choi et al. 2011 by
  default, ``CIRCADIA_WORKER_NONWEAR_METHOD``; a period the same device's heart rate shows worn is
  kept; see ``science.wear``) before the devices are merged
  (per-minute maximum, as in ``window``), so a band on the nightstand cannot hide another that is worn.
  Step counts keep only the local days that pass the valid-day rule. Non-wear minutes are missing
  data for every metric; a day's step total still counts every step reported.
- **Per day**: a day's movement input is the series with more worn minutes that day (ties go to
  activity counts, what the methods were validated on); the day reports it, its wear minutes and
  the rule that decided (``daily_activity``).
- **Per metric**: the circadian and cosinor blocks analyse the one series with more qualifying
  days (>= 80 % worn minutes and data in every hour, see ``science.series``); ties go to the series
  with more worn minutes, then to activity counts. Their ``input`` field names it. A single series
  per metric: counts and steps are on different scales and never mix in one analysis.
- **Device classes**: an upload says which counts its device sends (``device.activity_counts``:
  ``actigraph``, ``vendor`` or ``unknown``, the default). Cole–Kripke is scored only on the counts
  of the classes it was validated on (ActiGraph-compatible wrist counts); the others are refused by
  name. A device's class is the one its latest upload declared.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np

from prediction_worker.science.series import MINUTES_PER_DAY as DAY_MINUTES
from prediction_worker.science.series import DayLayout, MinuteSeries, local_days, qualifying_days
from prediction_worker.science.wear import (
    NONWEAR,
    NONWEAR_METHODS,
    RULE_NONE,
    VALID_DAY_METHOD,
    valid_step_days,
    worn_by_heart_rate,
)
from prediction_worker.window import HR_WEIGHT, WINDOW_MINUTES, UserWindow

INPUT_METHOD = "movement-input/per-day-and-metric@1"
COUNT_CLASSES = ("unknown", "actigraph", "vendor")
COLE_KRIPKE_CLASSES = frozenset({"actigraph"})
DEFAULT_NONWEAR = "choi-2011"
_LARGEST = np.finfo(np.float64).max


@dataclass(frozen=True)
class DayWear:
    """A local day's chosen movement input, its wear minutes, and the rule that decided them."""

    input: str | None       # "activity_count", "step_count", or None without movement data
    wear_minutes: int
    rule: str               # e.g. "non-wear/choi-2011@1" or "valid-day/hr-600min-or-steps-10h@1: steps"


@dataclass(frozen=True, eq=False)
class Movement:
    """The window's movement data as the metrics see it (module rules)."""

    start_minute: int
    utc_offset_minutes: int
    activity: np.ndarray | None            # worn activity counts, merged; None: no device sends counts
    scorable_activity: np.ndarray | None   # the same from the classes Cole–Kripke was validated on
    activity_classes: frozenset[str]       # classes of the devices that sent counts
    steps: np.ndarray | None               # steps on valid days only (NaN elsewhere)
    days: dict[str, DayWear]               # by local date (ISO), every day of the window
    nonwear_method: str

    def series(self, measure: str) -> MinuteSeries | None:
        values = self.activity if measure == "activity_count" else self.steps
        if values is None:
            return None
        return MinuteSeries(start_minute=self.start_minute, values=values,
                            utc_offset_minutes=self.utc_offset_minutes, input=measure)

    def rhythm_series(self) -> MinuteSeries | None:
        """The series the circadian and cosinor blocks analyse (per-metric rule), None without
        movement data."""
        candidates = [s for s in (self.series("activity_count"), self.series("step_count")) if s is not None]
        if not candidates:
            return None

        def rank(series: MinuteSeries) -> tuple[int, int, int]:
            days = local_days(series).values
            present = int(np.count_nonzero(~np.isnan(series.values)))
            return int(qualifying_days(days).sum()), present, series.input == "activity_count"

        return max(candidates, key=rank)


def _merged(tracks: list[np.ndarray]) -> np.ndarray | None:
    if not tracks:
        return None
    merged = np.full(WINDOW_MINUTES, np.nan)
    for values in tracks:
        merged = np.fmax(merged, values)
    return merged


def _present(layout: DayLayout, values: np.ndarray | None) -> np.ndarray:
    """Minutes with data per local day (0 for every day when ``values`` is None)."""
    if values is None:
        return np.zeros(layout.count, dtype=np.int64)
    return layout.fold(~np.isnan(values), False).sum(axis=1)


def movement(window: UserWindow, nonwear: str = DEFAULT_NONWEAR) -> Movement:
    """The worn movement series of ``window`` and each local day's input (module rules)."""
    detect = NONWEAR[nonwear]
    worn, raw, scorable, classes, steps_tracks = [], [], [], set(), []
    heart_rate = np.zeros(WINDOW_MINUTES, dtype=bool)
    for device, measures in window.tracks.items():
        counts = measures.get("activity_count")
        if counts is not None:
            counts = np.minimum(counts, _LARGEST)  # a window written before apply capped its sums
            flagged = detect(counts)
            if HR_WEIGHT in measures and flagged.any():
                flagged = worn_by_heart_rate(flagged, np.nan_to_num(measures[HR_WEIGHT]) > 0)
            masked = np.where(flagged, np.nan, counts)
            worn.append(masked)
            raw.append(counts)
            kind = window.count_classes.get(device, "unknown")
            classes.add(kind)
            if kind in COLE_KRIPKE_CLASSES:
                scorable.append(masked)
        if "step_count" in measures:
            steps_tracks.append(measures["step_count"])
        if HR_WEIGHT in measures:
            heart_rate |= np.nan_to_num(measures[HR_WEIGHT]) > 0
    activity, raw_steps = _merged(worn), _merged(steps_tracks)

    layout = DayLayout.of(window.start_minute, window.utc_offset_minutes, WINDOW_MINUTES)
    activity_worn = _present(layout, activity)
    has_counts = _present(layout, _merged(raw)) > 0
    has_steps = _present(layout, raw_steps) > 0
    steps = None
    step_worn = np.zeros(layout.count, dtype=np.int64)
    step_rules = np.full(layout.count, RULE_NONE)
    if raw_steps is not None:
        step_rules, step_worn = valid_step_days(layout.fold(raw_steps), layout.fold(heart_rate, False))
        step_worn = np.where(has_steps, step_worn, 0)
        valid = (step_rules != RULE_NONE).repeat(DAY_MINUTES)
        steps = np.where(valid[layout.lead:layout.lead + WINDOW_MINUTES], raw_steps, np.nan)

    choi = NONWEAR_METHODS[nonwear]
    days = {}
    for index in range(layout.count):
        day = (date(1970, 1, 1) + timedelta(days=layout.first + index)).isoformat()
        if has_counts[index] and (activity_worn[index] >= step_worn[index] or not has_steps[index]):
            days[day] = DayWear("activity_count", int(activity_worn[index]), choi)
        elif has_steps[index]:
            days[day] = DayWear("step_count", int(step_worn[index]), f"{VALID_DAY_METHOD}: {step_rules[index]}")
        else:
            days[day] = DayWear(None, 0, "no movement data")
    return Movement(start_minute=window.start_minute, utc_offset_minutes=window.utc_offset_minutes,
                    activity=activity, scorable_activity=_merged(scorable), activity_classes=frozenset(classes),
                    steps=steps, days=days, nonwear_method=choi)

