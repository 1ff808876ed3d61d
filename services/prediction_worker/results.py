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
import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from circadia import __version__
from prediction_worker import daily, metrics
from prediction_worker.inputs import DEFAULT_NONWEAR, INPUT_METHOD, Movement, movement
from prediction_worker.science.circadian import (
    COSINOR_METHOD,
    NPCRA_METHOD,
    cosinor,
    nonparametric,
)
from prediction_worker.science.series import MinuteSeries
from prediction_worker.science.sleep import (
    COLE_KRIPKE_METHOD,
    STAGES_METHOD,
    StageInterval,
    cole_kripke,
    sleep_nights,
    unscored,
)
from prediction_worker.science.wear import HEART_RATE_OVERRIDE_METHOD, VALID_DAY_METHOD
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
    naps: list[dict[str, Any]]
    methods: dict[str, str]


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


def _unscorable(classes: frozenset[str]) -> dict[str, Any]:
    named = ", ".join(sorted(classes))
    return {"method": COLE_KRIPKE_METHOD, "input": "activity_count"} | unscored(
        0.0, f"Cole–Kripke is validated on ActiGraph-compatible counts; these counts come from devices of "
             f"class {named} (an upload names its class in device.activity_counts)")


def week_blocks(window: UserWindow, computed_at: datetime, nonwear: str = DEFAULT_NONWEAR,
                moved: Movement | None = None) -> WeekBlocks:
    """The circadian, cosinor, scored-sleep and sleep blocks of the window as it is now
    (``moved``: the window's ``inputs.movement``, when the caller has it already)."""
    moved = moved if moved is not None else movement(window, nonwear)
    series = moved.rhythm_series()
    methods: dict[str, str] = {"input": INPUT_METHOD, "wear": (f"{moved.nonwear_method}+{HEART_RATE_OVERRIDE_METHOD}; "
                                                               f"{VALID_DAY_METHOD}")}
    circadian = rhythm = scored = None
    if series is not None:
        circadian = _guarded("circadian", lambda: nonparametric(series), _refused_series_group(
            NPCRA_METHOD, series, ["interdaily_stability", "intradaily_variability", "m10",
                                   "m10_onset", "l5", "l5_onset", "relative_amplitude"], days_used=0))
        rhythm = _guarded("cosinor", lambda: cosinor(series), _refused_series_group(
            COSINOR_METHOD, series, ["mesor", "amplitude", "acrophase", "acrophase_hours", "r_squared"]))
        methods["circadian"], methods["cosinor"] = circadian["method"], rhythm["method"]
    if moved.scorable_activity is not None:
        counts = MinuteSeries(start_minute=window.start_minute, values=moved.scorable_activity,
                              utc_offset_minutes=window.utc_offset_minutes, input="activity_count")
        scored = _guarded("scored_sleep", lambda: cole_kripke(counts), _refused_series_group(
            COLE_KRIPKE_METHOD, counts, [], scored_minutes=0, sleep_minutes=0, wake_minutes=0))
    elif moved.activity is not None:
        scored = _unscorable(moved.activity_classes)
    if scored is not None:
        methods["scored_sleep"] = scored["method"]
    nights, naps = _guarded("sleep_nights", lambda: sleep_nights([
        StageInterval(iv.start_ms, iv.end_ms, iv.stage, iv.utc_offset_minutes) for iv in window.sleep
    ]), lambda reason: ([], []))
    if nights or naps:
        methods["sleep_nights"] = STAGES_METHOD
    covered = covered_minutes(window.movement("step_count"), window.movement("activity_count"))
    return WeekBlocks(as_of=AsOf.of(window, computed_at), covered=covered, circadian=circadian, cosinor=rhythm,
                      scored_sleep=scored, sleep_nights=nights, naps=naps, methods=methods)


def _non_finite(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def finite_block(group: str, block: dict[str, Any]) -> dict[str, Any]:
    """``block`` with every non-finite number replaced by None and named in its ``refused``: only
    finite numbers leave the worker (NaN and infinities are not JSON, and no method gives them)."""
    bad = [key for key, value in block.items() if _non_finite(value)]
    if not bad:
        return block
    metrics.METRIC_ERRORS.labels(f"{group}_non_finite").inc()
    log.error("metric group produced non-finite numbers; refused", extra={"group": group, "fields": bad})
    reason = f"non-finite result for {', '.join(bad)}"
    refused = block.get("refused")
    return block | dict.fromkeys(bad) | {"refused": f"{refused}; {reason}" if refused else reason}


def finite_prediction(record: dict[str, Any]) -> dict[str, Any]:
    """The record with every metric block through ``finite_block``. (The PAT block and head scores
    are checked where they are made, in ``prediction_worker.model``.)"""
    for name in ("circadian", "cosinor", "scored_sleep"):
        if record[name] is not None:
            record[name] = finite_block(name, record[name])
    for name in ("daily_activity", "sleep_nights", "naps"):
        record[name] = [finite_block(name, entry) for entry in record[name]]
    return record


def build_prediction(window: UserWindow, user_id: str, source_upload_ids: Sequence[str],
                     computed_at: datetime, model: ModelOutcome, blocks: WeekBlocks | None = None,
                     nonwear: str = DEFAULT_NONWEAR, moved: Movement | None = None) -> dict[str, Any]:
    """The result for the window now: coverage and daily totals of the window as it is, the
    week's blocks from ``blocks`` (computed now when None) and the model's from ``model``.
    Only finite numbers leave (``finite_prediction``). ``moved``: the window's
    ``inputs.movement``, when the caller has it already."""
    moved = moved if moved is not None else movement(window, nonwear)
    steps = window.movement("step_count")
    activity = moved.activity if moved.activity is not None else np.full(WINDOW_MINUTES, np.nan)
    hr_sum, hr_weight = window.heart_rate()
    covered = covered_minutes(steps, activity)
    if blocks is None:
        blocks = week_blocks(window, computed_at, nonwear, moved)
    methods = {"window": RESAMPLING_METHOD, "daily_activity": daily.METHOD, **blocks.methods}
    if model.method is not None:
        methods["pat"] = model.method
    now = AsOf.of(window, computed_at).record()
    as_of = {"window": now, "daily_activity": now}
    for name in ("circadian", "cosinor", "scored_sleep", "sleep_nights", "naps"):
        as_of[name] = blocks.as_of.record()
    if model.as_of is not None:
        as_of["pat"] = model.as_of.record()

    window_start = _EPOCH + timedelta(minutes=window.start_minute)
    return finite_prediction({
        "prediction_id": str(uuid.uuid4()),
        "user_id": user_id,
        "source_upload_ids": list(source_upload_ids),
        "computed_at": computed_at,
        "window_start": window_start,
        "window_end": window_start + timedelta(minutes=WINDOW_MINUTES),
        "code_version": __version__,
        "daily_activity": _guarded("daily_activity", lambda: daily.daily_activity(
            window.start_minute, window.utc_offset_minutes, steps, activity, hr_sum, hr_weight, moved.days),
            lambda r: []),
        "methods": methods,
        "window_minutes_covered": covered,
        "window_coverage": covered / WINDOW_MINUTES,
        "circadian": blocks.circadian,
        "cosinor": blocks.cosinor,
        "sleep_nights": blocks.sleep_nights,
        "naps": blocks.naps,
        "scored_sleep": blocks.scored_sleep,
        "pat": model.block,
        "pat_unavailable": model.unavailable,
        "clinical_scores": model.scores,
        "as_of": as_of,
    })
