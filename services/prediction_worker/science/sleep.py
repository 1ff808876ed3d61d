"""Sleep: Cole–Kripke scoring of 1-minute activity counts, and nights from device-reported stages.

Cole–Kripke (``cole-kripke-1992/1min-actilife-scaling@1``; Cole et al. 1992, Sleep 15:461):
- D = 0.001·(106·A₋₄ + 54·A₋₃ + 58·A₋₂ + 76·A₋₁ + 230·A₀ + 74·A₊₁ + 67·A₊₂) over 1-minute epochs;
  D < 1 -> sleep (1), otherwise wake (0). Coefficients and the factor P = 0.001 are the paper's
  model for 1-minute epochs of mean activity per minute;
- the paper's counts came from a different device (AMA-32, zero-crossing mode); ActiGraph counts
  are first scaled as ActiGraph's ActiLife does: A = min(count / 100, 300). This scaling is what
  the method name records. Only the counts of devices that declare them ActiGraph-compatible
  (``device.activity_counts`` = actigraph) are scored (``prediction_worker.inputs``);
- an epoch is unscored (NaN) when it or any epoch of its window (4 before, 2 after) is missing,
  including the first 4 and last 2 epochs of a series;
- only ``activity_count`` input is scored: phone step counts are not activity counts and are
  refused. The summary needs >= 60 scored minutes, else it is refused;
- no Webster rescoring.

Nights from stages (``sleep-stages/device-reported@2``):
- stages in_bed, awake and asleep_{core,deep,rem,unspecified} are used; any other stage (e.g. an
  Avro ``UNKNOWN``) and any empty interval (end = start) is ignored;
- sleep periods: the used intervals, sorted by start, are joined into periods. An interval joins
  the current period when it starts less than ``PERIOD_GAP_MINUTES`` = 60 minutes after the latest
  end seen so far in that period (overlapping and touching intervals join too); otherwise it starts
  a new period. This is the gap rule GGIR uses to join sleep-period blocks (van Hees et al. 2018,
  Sci Rep 8:12975, HDCZA: blocks are joined when the gap between them is < 60 min). Periods are
  therefore disjoint and at least 60 minutes apart; an interval is never split;
- date of sleep: a period belongs to ``date_of_sleep``, the local calendar date on which it ends,
  in the local time (UTC + ``utc_offset_minutes``) of the interval that ends it (of several ending
  at that instant: the one that starts last, then the larger offset). The end instant is exclusive:
  the date is that of (end − 1 ms), so a period ending exactly at local midnight belongs to the day
  that just ended. This is Fitbit's convention (Web API sleep logs: ``dateOfSleep`` is "the date
  the sleep log ended", and one log per date is ``isMainSleep``);
- main sleep and naps: per date_of_sleep the main sleep is the period with the most total sleep;
  ties -> the longer time in bed -> the earlier start. A period without asleep time is never the
  main sleep while one with asleep time exists; if no period of the date has asleep time, the
  date's main entry is the refused summary of its longest period (time in bed; ties -> earlier
  start), so the bed times are still shown. Every other period of that date with asleep time is a
  nap (``main_sleep`` False); other periods without asleep time are not reported. (This ranking
  is the module's own; Fitbit documents one main sleep per date but not how it picks it);
- ``night`` (kept for compatibility) = date_of_sleep − 1 day, the local date of the evening
  before;
- per period: bed_start / bed_end = first start / last end of its intervals; time in bed =
  bed_end − bed_start (gaps without reports, all < 60 min, included);
- total sleep = length of the union of the period's asleep_* intervals, so overlapping reports
  from several devices count once; efficiency = TST / TIB;
- onset latency = first asleep start − bed_start; final awakening = last asleep end; WASO =
  (final awakening − onset) − TST, i.e. minutes not asleep between them; awakenings = number of
  gaps (of any positive length) in the asleep union between onset and final awakening;
- a period with no asleep time is refused (numbers None; bed_start / bed_end still given);
- durations are computed on UTC instants, so an offset change during a period cannot distort
  them; offsets only decide the date.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cached_property

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

STAGES_METHOD = "sleep-stages/device-reported@2"
ASLEEP_STAGES = frozenset({"asleep_core", "asleep_deep", "asleep_rem", "asleep_unspecified"})
STAGES = ASLEEP_STAGES | {"in_bed", "awake"}
# Periods are joined across gaps < 60 min: GGIR's HDCZA block-joining rule (van Hees et al. 2018,
# Sci Rep 8:12975)
PERIOD_GAP_MINUTES = 60
MINUTE_MS = 60_000
DAY_MS = 24 * 60 * MINUTE_MS
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
        return summary | unscored(0.0, f"Cole–Kripke is validated on wrist activity counts, "
                                        f"not {series.input}; nothing scored")
    scores = cole_kripke_scores(series.values)
    scored = int(np.count_nonzero(~np.isnan(scores)))
    coverage = scored / series.values.size if series.values.size else 0.0
    if scored < MIN_SCORED_MINUTES:
        return summary | unscored(coverage, f"only {scored} minute(s) can be scored (the minute "
                                             f"and its 4 before / 2 after present); "
                                             f"at least {MIN_SCORED_MINUTES} are needed")
    sleep = int(np.count_nonzero(scores == 1.0))
    return summary | {
        "coverage": coverage, "refused": None,
        "scored_minutes": scored, "sleep_minutes": sleep, "wake_minutes": scored - sleep,
    }


def unscored(coverage: float, reason: str) -> dict:
    """The minute totals of a Cole–Kripke summary that scored nothing, with the reason."""
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


@dataclass(frozen=True)
class SleepPeriod:
    """Used, non-empty stage intervals joined across gaps < ``PERIOD_GAP_MINUTES`` (module
    docstring), sorted by (start, end, stage, offset)."""
    intervals: tuple[StageInterval, ...]

    @property
    def start_ms(self) -> int:
        return self.intervals[0].start_ms

    @property
    def end_ms(self) -> int:
        return max(i.end_ms for i in self.intervals)

    @property
    def date_of_sleep(self) -> date:
        """Local date of (end − 1 ms) at the offset of the interval that ends the period (of several
        ending then: the one starting last, then the larger offset)."""
        ending = max(self.intervals, key=lambda i: (i.end_ms, i.start_ms, i.utc_offset_minutes))
        local_ms = ending.end_ms - 1 + ending.utc_offset_minutes * MINUTE_MS
        return date(1970, 1, 1) + timedelta(days=local_ms // DAY_MS)

    @cached_property
    def asleep(self) -> list[tuple[int, int]]:
        return asleep_union(self.intervals)

    @property
    def asleep_ms(self) -> int:
        return sum(end - start for start, end in self.asleep)

    @property
    def in_bed_ms(self) -> int:
        return self.end_ms - self.start_ms


def sleep_periods(intervals: Sequence[StageInterval]) -> list[SleepPeriod]:
    """Sleep periods in time order: used stages (in_bed, awake, asleep_*) of positive length, sorted
    by start; an interval starting < ``PERIOD_GAP_MINUTES`` after the latest end so far of the
    current period joins it (overlaps join too), otherwise it opens a new period (GGIR's HDCZA
    gap rule, van Hees et al. 2018, Sci Rep 8:12975)."""
    used = sorted((i for i in intervals if i.stage in STAGES and i.end_ms > i.start_ms),
                  key=lambda i: (i.start_ms, i.end_ms, i.stage, i.utc_offset_minutes))
    gap_ms = PERIOD_GAP_MINUTES * MINUTE_MS
    groups: list[list[StageInterval]] = []
    latest_end = 0
    for interval in used:
        if groups and interval.start_ms - latest_end < gap_ms:
            groups[-1].append(interval)
            latest_end = max(latest_end, interval.end_ms)
        else:
            groups.append([interval])
            latest_end = interval.end_ms
    return [SleepPeriod(tuple(group)) for group in groups]


def summarise_period(period: SleepPeriod, main_sleep: bool) -> dict:
    """One sleep period from device-reported stages (rules in the module docstring); refused when
    the period holds no asleep time."""
    date_of_sleep = period.date_of_sleep
    bed_start, bed_end = period.start_ms, period.end_ms
    summary = {"night": (date_of_sleep - timedelta(days=1)).isoformat(),
               "date_of_sleep": date_of_sleep.isoformat(), "main_sleep": main_sleep,
               "method": STAGES_METHOD, "bed_start": _utc(bed_start), "bed_end": _utc(bed_end)}
    union = period.asleep
    if not union:
        return summary | {
            "refused": "no asleep stage reported in this sleep period", "time_in_bed_minutes": None,
            "total_sleep_minutes": None, "efficiency": None, "onset_latency_minutes": None,
            "waso_minutes": None, "awakenings": None,
        }
    in_bed = bed_end - bed_start
    asleep = period.asleep_ms
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


def sleep_nights(intervals: Sequence[StageInterval]) -> tuple[list[dict], list[dict]]:
    """Main sleeps (one per ``date_of_sleep``, in date order) and naps (in time order) from
    device-reported stages (e.g. HealthKit sleepAnalysis); rules in the module docstring.

    Time in bed, total sleep time, efficiency, onset latency, WASO and awakenings, the standard
    sleep-summary measures (as in actigraphy validation, e.g. Cole et al. 1992, Sleep 15:461), read
    per sleep period from the device's own stages rather than scored from movement. Periods are
    joined across gaps < 60 min (GGIR HDCZA, van Hees et al. 2018, Sci Rep 8:12975) and dated by
    the local date they end on, one main sleep per date (Fitbit ``dateOfSleep`` / ``isMainSleep``).
    Minimum coverage: a period needs asleep time, else it is refused with a reason (reported only
    as the main entry of a date that has no sleep at all).
    """
    by_date: dict[date, list[SleepPeriod]] = defaultdict(list)
    for period in sleep_periods(intervals):
        by_date[period.date_of_sleep].append(period)
    mains: list[dict] = []
    naps: list[SleepPeriod] = []
    for day in sorted(by_date):
        periods = by_date[day]
        # most sleep, then longest in bed, then earliest start; no-sleep periods lose to any sleep
        main = max(periods, key=lambda p: (p.asleep_ms, p.in_bed_ms, -p.start_ms))
        mains.append(summarise_period(main, main_sleep=True))
        naps.extend(p for p in periods if p is not main and p.asleep_ms > 0)
    naps.sort(key=lambda p: p.start_ms)
    return mains, [summarise_period(p, main_sleep=False) for p in naps]
