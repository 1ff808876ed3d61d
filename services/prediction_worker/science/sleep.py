"""Sleep: Cole–Kripke scoring of 1-minute activity counts, and nights from device-reported stages.

Cole–Kripke (``cole-kripke-1992/1min-actilife-scaling@1``; Cole et al. 1992, Sleep 15:461):
- D = 0.001·(106·A₋₄ + 54·A₋₃ + 58·A₋₂ + 76·A₋₁ + 230·A₀ + 74·A₊₁ + 67·A₊₂) over 1-minute epochs;
  D < 1 -> sleep (1), otherwise wake (0). Coefficients and the factor P = 0.001 are the paper's
  model for 1-minute epochs of mean activity per minute;
- the paper's counts came from a different device (AMA-32, zero-crossing mode); ActiGraph counts
  are first scaled as ActiGraph's ActiLife does: A = min(count / 100, 300). This scaling is what
  the method name records. Counts should be ActiGraph-style (vertical axis) wrist counts;
- an epoch is unscored (NaN) when it or any epoch of its window (4 before, 2 after) is missing,
  including the first 4 and last 2 epochs of a series;
- only ``activity_count`` input is scored: phone step counts are not activity counts and are
  refused. The summary needs >= 60 scored minutes, else it is refused;
- no Webster rescoring.

Nights from stages (``sleep-stages/device-reported@1``):
- an interval belongs to the night that contains its start: nights run from 12:00 to 12:00 in the
  interval's own local time (UTC + its ``utc_offset_minutes``) and are named by the local date
  of the evening; intervals are never split across nights;
- stages in_bed, awake and asleep_{core,deep,rem,unspecified} are used; any other stage (e.g. an
  Avro ``UNKNOWN``) is ignored;
- bed_start / bed_end = first start / last end of any used interval of the night; time in bed =
  bed_end − bed_start (gaps without reports included);
- total sleep = length of the union of the asleep_* intervals, so overlapping reports from several
  devices count once; efficiency = TST / TIB;
- onset latency = first asleep start − bed_start; final awakening = last asleep end; WASO =
  (final awakening − onset) − TST, i.e. minutes not asleep between them; awakenings = number of
  gaps (of any positive length) in the asleep union between onset and final awakening;
- a night with no asleep time is refused (numbers None; bed_start / bed_end still given);
- durations are computed on UTC instants, so an offset change during the night cannot distort them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np

from .series import MinuteSeries

COLE_KRIPKE_METHOD = "cole-kripke-1992/1min-actilife-scaling@1"
# Weights for A₋₄ … A₊₂, 1-minute epochs (Cole et al. 1992)
COLE_KRIPKE_WEIGHTS = np.array([106.0, 54.0, 58.0, 76.0, 230.0, 74.0, 67.0])
COLE_KRIPKE_SCALE = 0.001
EPOCHS_BEFORE = 4
EPOCHS_AFTER = 2
ACTILIFE_DIVISOR = 100.0
ACTILIFE_CAP = 300.0
MIN_SCORED_MINUTES = 60

STAGES_METHOD = "sleep-stages/device-reported@1"
ASLEEP_STAGES = frozenset({"asleep_core", "asleep_deep", "asleep_rem", "asleep_unspecified"})
STAGES = ASLEEP_STAGES | {"in_bed", "awake"}
NIGHT_STARTS_HOUR = 12
MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def actilife_scaled(counts: np.ndarray) -> np.ndarray:
    """ActiLife's input scaling for Cole–Kripke on ActiGraph counts: min(count / 100, 300)."""
    return np.minimum(np.asarray(counts, dtype=np.float64) / ACTILIFE_DIVISOR, ACTILIFE_CAP)


def cole_kripke_index(counts: np.ndarray) -> np.ndarray:
    """Cole–Kripke activity index D per 1-minute epoch (Cole et al. 1992, Sleep 15:461) on
    ActiLife-scaled counts; NaN where the epoch or any epoch of its window is missing."""
    scaled = actilife_scaled(counts)
    width = EPOCHS_BEFORE + 1 + EPOCHS_AFTER
    index = np.full(scaled.size, np.nan)
    if scaled.size >= width:
        windows = np.lib.stride_tricks.sliding_window_view(scaled, width)
        # a NaN anywhere in the window propagates through the weighted sum
        weighted = windows @ COLE_KRIPKE_WEIGHTS
        index[EPOCHS_BEFORE:scaled.size - EPOCHS_AFTER] = COLE_KRIPKE_SCALE * weighted
    return index


def cole_kripke_scores(counts: np.ndarray) -> np.ndarray:
    """Cole–Kripke (1992, Sleep 15:461) sleep/wake per 1-minute epoch of activity counts.

    Returns float64: 1.0 = sleep (D < 1), 0.0 = wake, NaN = unscored because the epoch or one of
    the 4 epochs before / 2 after it is missing (or outside the array). Counts are scaled as in
    ActiLife, min(count / 100, 300), before D = 0.001·(106, 54, 58, 76, 230, 74, 67)·A. No
    coverage minimum here; the ``cole_kripke`` summary applies one.
    """
    index = cole_kripke_index(counts)
    return np.where(np.isnan(index), np.nan, (index < 1.0).astype(np.float64))


def cole_kripke(series: MinuteSeries) -> dict:
    """Sleep/wake minutes by Cole–Kripke (Cole et al. 1992, Sleep 15:461), 1-minute epochs with
    ActiLife count scaling (min(count / 100, 300)), no Webster rescoring.

    Refused unless ``series.input == "activity_count"`` (step counts are never scored) and at
    least 60 minutes can be scored. ``coverage`` = scored minutes / series minutes (0.0 for step
    input); the minute totals are 0 when refused.
    """
    summary = {"method": COLE_KRIPKE_METHOD, "input": series.input}
    if series.input != "activity_count":
        return summary | _unscored(0.0, f"Cole–Kripke is validated on wrist activity counts, "
                                        f"not {series.input}; nothing scored")
    scores = cole_kripke_scores(series.values)
    scored = int(np.count_nonzero(~np.isnan(scores)))
    coverage = scored / series.values.size if series.values.size else 0.0
    if scored < MIN_SCORED_MINUTES:
        return summary | _unscored(coverage, f"only {scored} minute(s) can be scored (the minute "
                                             f"and its 4 before / 2 after present); "
                                             f"at least {MIN_SCORED_MINUTES} are needed")
    sleep = int(np.count_nonzero(scores == 1.0))
    return summary | {
        "coverage": coverage, "refused": None,
        "scored_minutes": scored, "sleep_minutes": sleep, "wake_minutes": scored - sleep,
    }


def _unscored(coverage: float, reason: str) -> dict:
    return {"coverage": coverage, "refused": reason,
            "scored_minutes": 0, "sleep_minutes": 0, "wake_minutes": 0}


@dataclass(frozen=True)
class StageInterval:
    start_ms: int   # UTC epoch milliseconds
    end_ms: int
    stage: str      # in_bed, asleep_core, asleep_deep, asleep_rem, asleep_unspecified, awake
    utc_offset_minutes: int

    def __post_init__(self) -> None:
        if self.end_ms < self.start_ms:
            raise ValueError("a stage interval must not end before it starts")


def night_of(interval: StageInterval) -> date:
    """Local date of the evening of the noon-to-noon night that contains the interval's start."""
    local_ms = interval.start_ms + interval.utc_offset_minutes * MINUTE_MS
    return date(1970, 1, 1) + timedelta(days=(local_ms - NIGHT_STARTS_HOUR * HOUR_MS) // DAY_MS)


def asleep_union(intervals: Sequence[StageInterval]) -> list[tuple[int, int]]:
    """Disjoint (start_ms, end_ms) spans covered by any asleep_* interval, in time order;
    spans that touch or overlap are merged, empty intervals dropped."""
    spans = sorted((i.start_ms, i.end_ms) for i in intervals
                   if i.stage in ASLEEP_STAGES and i.end_ms > i.start_ms)
    union: list[tuple[int, int]] = []
    for start, end in spans:
        if union and start <= union[-1][1]:
            union[-1] = (union[-1][0], max(union[-1][1], end))
        else:
            union.append((start, end))
    return union


def _utc(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def _minutes(ms: int) -> float:
    return ms / MINUTE_MS


def summarise_night(night: date, intervals: Sequence[StageInterval]) -> dict:
    """One night from device-reported stages (rules in the module docstring); refused when the
    night holds no asleep time."""
    bed_start = min(i.start_ms for i in intervals)
    bed_end = max(i.end_ms for i in intervals)
    summary = {"night": night.isoformat(), "method": STAGES_METHOD,
               "bed_start": _utc(bed_start), "bed_end": _utc(bed_end)}
    union = asleep_union(intervals)
    if not union:
        return summary | {
            "refused": "no asleep stage reported this night", "time_in_bed_minutes": None,
            "total_sleep_minutes": None, "efficiency": None, "onset_latency_minutes": None,
            "waso_minutes": None, "awakenings": None,
        }
    in_bed = bed_end - bed_start
    asleep = sum(end - start for start, end in union)
    onset, final_awakening = union[0][0], union[-1][1]
    return summary | {
        "refused": None,
        "time_in_bed_minutes": _minutes(in_bed),
        "total_sleep_minutes": _minutes(asleep),
        "efficiency": asleep / in_bed,
        "onset_latency_minutes": _minutes(onset - bed_start),
        "waso_minutes": _minutes(final_awakening - onset - asleep),
        "awakenings": len(union) - 1,
    }


def sleep_nights(intervals: Sequence[StageInterval]) -> list[dict]:
    """Per-night sleep from device-reported stages (e.g. HealthKit sleepAnalysis), one dict per
    night with any recognised interval, in night order.

    Time in bed, total sleep time, efficiency, onset latency, WASO and awakenings, the standard
    sleep-summary measures (as in actigraphy validation, e.g. Cole et al. 1992, Sleep 15:461), read
    from the device's own stages rather than scored from movement. Minimum coverage: a night needs
    asleep time (a non-empty asleep_* union), else it is refused with a reason.
    """
    by_night: dict[date, list[StageInterval]] = defaultdict(list)
    for interval in intervals:
        if interval.stage in STAGES:
            by_night[night_of(interval)].append(interval)
    return [summarise_night(night, by_night[night]) for night in sorted(by_night)]
