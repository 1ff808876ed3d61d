"""From a user's window to the ``Prediction`` record. Pure: the caller supplies the clock
and the outcome of the model (which is the only part that may be slow or fail).

Two kinds of block. The window's coverage and the daily totals are computed for every
result. The blocks over the whole week (circadian rhythm, cosinor, scored sleep, sleep
nights, and the model's) cost milliseconds and change little from one small upload to the
next, so the worker may reuse them (``WeekBlocks``, see ``prediction_worker.weekly``). Every
result says in ``as_of`` when each of its blocks was computed and where the window it
covered ended; a reused block is exactly what the formulas gave on that window.

Each metric group is computed in isolation: an unexpected error in one group is logged
with its stack, counted, and turns into that group's refusal ("internal error: ...")
instead of losing the whole result or emitting a number that cannot be justified.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from circadia import __version__
from prediction_worker import daily, metrics
from prediction_worker.science.circadian import (
    COSINOR_METHOD,
    NPCRA_METHOD,
    cosinor,
    nonparametric,
)
from prediction_worker.science.series import MinuteSeries
from prediction_worker.science.sleep import (
    COLE_KRIPKE_METHOD,
    StageInterval,
    cole_kripke,
    sleep_nights,
)
from prediction_worker.window import (
    RESAMPLING_METHOD,
    WINDOW_MINUTES,
    UserWindow,
)

log = logging.getLogger(__name__)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class AsOf:
    """When a block was computed, and the end of the window it covered (which started
    ``WINDOW_MINUTES`` before)."""

    computed_at: datetime
    window_end: datetime

    @classmethod
    def of(cls, window: UserWindow, computed_at: datetime) -> AsOf:
        return cls(computed_at, _EPOCH + timedelta(minutes=window.end_minute))

    def record(self) -> dict[str, datetime]:
        return {"computed_at": self.computed_at, "window_end": self.window_end}


@dataclass(frozen=True)
class ModelOutcome:
    """What the model stage produced: a PAT block, or why there is none, and head scores."""

    block: dict[str, Any] | None = None
    unavailable: str | None = None
    scores: list[dict[str, Any]] = field(default_factory=list)
    method: str | None = None
    as_of: AsOf | None = None  # None: no model configured


@dataclass(frozen=True)
class WeekBlocks:
    """The blocks computed over the whole window, as of one moment."""

    as_of: AsOf
    covered: int  # minutes with movement data in the window they were computed on
    circadian: dict[str, Any] | None
    cosinor: dict[str, Any] | None
    scored_sleep: dict[str, Any] | None
    sleep_nights: list[dict[str, Any]]
    methods: dict[str, str]


def movement_series(window: UserWindow) -> MinuteSeries | None:
    """The series the circadian metrics analyse: activity counts when any device sends them
    (what the methods were validated on), otherwise step counts; None without movement data."""
    for measure in ("activity_count", "step_count"):
        if window.has(measure):
            return MinuteSeries(start_minute=window.start_minute, values=window.movement(measure),
                                utc_offset_minutes=window.utc_offset_minutes, input=measure)
    return None


def _guarded(group: str, compute: Callable[[], Any], fallback: Callable[[str], Any]) -> Any:
    try:
        return compute()
    except Exception as exc:  # one group's failure must not take the others down
        metrics.METRIC_ERRORS.labels(group).inc()
        log.error("metric group failed", exc_info=True, extra={"group": group})
        return fallback(f"internal error: {type(exc).__name__}")


def _refused_series_group(method: str, series: MinuteSeries, keys: Sequence[str],
                          **fixed: Any) -> Callable[[str], dict]:
    def refusal(reason: str) -> dict[str, Any]:
        return {"method": method, "input": series.input, "coverage": 0.0, "refused": reason,
                **dict.fromkeys(keys), **fixed}
    return refusal


def covered_minutes(steps: np.ndarray, activity: np.ndarray) -> int:
    return int(np.count_nonzero(~np.isnan(steps) | ~np.isnan(activity)))


def week_blocks(window: UserWindow, computed_at: datetime) -> WeekBlocks:
    """The circadian, cosinor, scored-sleep and sleep-night blocks of the window as it is now."""
    series = movement_series(window)
    methods: dict[str, str] = {}
    circadian = rhythm = scored = None
    if series is not None:
        circadian = _guarded("circadian", lambda: nonparametric(series), _refused_series_group(
            NPCRA_METHOD, series, ["interdaily_stability", "intradaily_variability", "m10",
                                               "m10_onset", "l5", "l5_onset", "relative_amplitude"], days_used=0))
        rhythm = _guarded("cosinor", lambda: cosinor(series), _refused_series_group(
            COSINOR_METHOD, series, ["mesor", "amplitude", "acrophase", "acrophase_hours", "r_squared"]))
        methods["circadian"], methods["cosinor"] = circadian["method"], rhythm["method"]
    activity = window.movement("activity_count")
    if window.has("activity_count"):
        counts = MinuteSeries(start_minute=window.start_minute, values=activity,
                              utc_offset_minutes=window.utc_offset_minutes, input="activity_count")
        scored = _guarded("scored_sleep", lambda: cole_kripke(counts), _refused_series_group(
            COLE_KRIPKE_METHOD, counts, [], scored_minutes=0, sleep_minutes=0, wake_minutes=0))
        methods["scored_sleep"] = scored["method"]
    nights = _guarded("sleep_nights", lambda: sleep_nights([
        StageInterval(iv.start_ms, iv.end_ms, iv.stage, iv.utc_offset_minutes) for iv in window.sleep
    ]), lambda reason: [])
    if nights:
        methods["sleep_nights"] = nights[0]["method"]
    covered = covered_minutes(window.movement("step_count"), activity)
    return WeekBlocks(as_of=AsOf.of(window, computed_at), covered=covered, circadian=circadian, cosinor=rhythm,
                      scored_sleep=scored, sleep_nights=nights, methods=methods)


def build_prediction(window: UserWindow, user_id: str, source_upload_ids: Sequence[str],
                     computed_at: datetime, model: ModelOutcome, blocks: WeekBlocks | None = None) -> dict[str, Any]:
    """The result for the window now: coverage and daily totals of the window as it is, the
    week's blocks from ``blocks`` (computed now when None) and the model's from ``model``."""
    steps, activity = window.movement("step_count"), window.movement("activity_count")
    hr_sum, hr_weight = window.heart_rate()
    covered = covered_minutes(steps, activity)
    if blocks is None:
        blocks = week_blocks(window, computed_at)
    methods = {"window": RESAMPLING_METHOD, "daily_activity": daily.METHOD, **blocks.methods}
    if model.method is not None:
        methods["pat"] = model.method
    now = AsOf.of(window, computed_at).record()
    as_of = {"window": now, "daily_activity": now}
    for name in ("circadian", "cosinor", "scored_sleep", "sleep_nights"):
        as_of[name] = blocks.as_of.record()
    if model.as_of is not None:
        as_of["pat"] = model.as_of.record()

    window_start = _EPOCH + timedelta(minutes=window.start_minute)
    return {
        "prediction_id": str(uuid.uuid4()),
        "user_id": user_id,
        "source_upload_ids": list(source_upload_ids),
        "computed_at": computed_at,
        "window_start": window_start,
        "window_end": window_start + timedelta(minutes=WINDOW_MINUTES),
        "code_version": __version__,
        "daily_activity": _guarded("daily_activity", lambda: daily.daily_activity(
            window.start_minute, window.utc_offset_minutes, steps, activity, hr_sum, hr_weight), lambda r: []),
        "methods": methods,
        "window_minutes_covered": covered,
        "window_coverage": covered / WINDOW_MINUTES,
        "circadian": blocks.circadian,
        "cosinor": blocks.cosinor,
        "sleep_nights": blocks.sleep_nights,
        "scored_sleep": blocks.scored_sleep,
        "pat": model.block,
        "pat_unavailable": model.unavailable,
        "clinical_scores": model.scores,
        "as_of": as_of,
    }
