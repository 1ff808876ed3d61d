"""The PAT stage of the worker: the encoder behind a circuit breaker and a timeout.

The model is the one part of a result that may be slow or fail. It runs in a thread with
a timeout, behind an async circuit breaker (purgatory): after ``threshold`` consecutive
failures the breaker opens for ``reset`` seconds and results are published without the
PAT block, saying why (``pat_unavailable``). The breaker state is the gauge
``circadia_worker_breaker_state{breaker="pat"}``.

Inputs are the worn minutes of the window's merged activity counts only (non-wear minutes are
missing, as for every metric: ``prediction_worker.inputs``): PAT was pretrained on accelerometer
counts (NHANES ActiGraph), so phone step counts are refused, as are windows below the
minimum coverage. Missing minutes are filled with the window's mean before normalisation
(so they enter as 0 after a per-sequence z-score). Clinical scores come only from a head
file with provenance; without one there are none.

Nothing non-finite reaches a result: normalisation turns any finite week into finite
encoder input or refuses it with a reason, and an embedding or head score that is not
finite all the same withholds the PAT block (``pat_unavailable`` says so), is logged and
counted as ``circadia_worker_metric_errors_total{group="pat"}``. Neither a refused input
nor a non-finite output counts as a model failure for the breaker.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass

import numpy as np
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState

from prediction_worker import metrics
from prediction_worker.inputs import DEFAULT_NONWEAR, movement
from prediction_worker.pat import (
    PatEncoder,
    TrainedHead,
    load_encoder,
    load_head,
    normalisation_label,
    normalise,
)
from prediction_worker.results import ModelOutcome
from prediction_worker.settings import WorkerSettings
from prediction_worker.window import UserWindow

log = logging.getLogger(__name__)

BREAKER = "pat"
METRIC_GROUP = "pat"  # the label of the PAT block in circadia_worker_metric_errors_total
METHOD = "pat-encoder/mean-of-patches@1"
_STATE_VALUES = {"closed": 0, "half-opened": 1, "opened": 2}


@dataclass(frozen=True)
class PatModel:
    encoder: PatEncoder
    normalisation: str
    min_coverage: float
    timeout: float
    breakers: AsyncCircuitBreakerFactory
    head: TrainedHead | None = None
    nonwear: str = DEFAULT_NONWEAR

    @classmethod
    def from_settings(cls, settings: WorkerSettings) -> PatModel:
        if settings.worker_pat_weights_path is None:
            raise ValueError("a PAT model needs CIRCADIA_WORKER_PAT_WEIGHTS_PATH")
        encoder = load_encoder(settings.worker_pat_weights_path, settings.worker_pat_model_id)
        head = None
        if settings.worker_pat_head_path is not None:
            head = load_head(settings.worker_pat_head_path, model_id=encoder.model_id)
        log.info("PAT encoder loaded", extra={**encoder.describe(), "head": head.task if head else None})
        return cls.create(encoder, normalisation=settings.worker_pat_normalisation,
                          min_coverage=settings.worker_pat_min_coverage,
                          timeout=settings.worker_pat_timeout_seconds,
                          threshold=settings.worker_pat_breaker_threshold,
                          reset_seconds=settings.worker_pat_breaker_reset_seconds, head=head,
                          nonwear=settings.worker_nonwear_method)

    @classmethod
    def create(cls, encoder: PatEncoder, *, normalisation: str, min_coverage: float, timeout: float,
               threshold: int, reset_seconds: float, head: TrainedHead | None = None,
               nonwear: str = DEFAULT_NONWEAR) -> PatModel:
        breakers = AsyncCircuitBreakerFactory(default_threshold=threshold, default_ttl=reset_seconds)
        breakers.add_listener(_record_state)
        metrics.BREAKER_STATE.labels(BREAKER).set(0)
        return cls(encoder, normalisation, min_coverage, timeout, breakers, head, nonwear)

    async def run(self, window: UserWindow) -> ModelOutcome:
        counts = movement(window, self.nonwear).activity
        if counts is None:
            return ModelOutcome(unavailable="PAT was pretrained on accelerometer activity counts; this window "
                                            "has none (phone step counts are not a valid input)", method=METHOD)
        present = ~np.isnan(counts)
        coverage = float(present.mean())
        if coverage < self.min_coverage:
            return ModelOutcome(unavailable=f"worn activity counts cover {coverage:.0%} of the week; PAT needs "
                                            f"{self.min_coverage:.0%}", method=METHOD)
        if not present.any():
            return ModelOutcome(unavailable="no minute of the week has an activity count", method=METHOD)
        try:
            week = normalise(_fill_missing(counts)[None, :], self.normalisation)
        except ValueError as exc:  # the input, not the model: no breaker failure
            log.warning("PAT input refused", extra={**self._context(window, coverage), "reason": str(exc)})
            return ModelOutcome(unavailable=f"PAT input refused: {exc}", method=METHOD)
        try:
            breaker = await self.breakers.get_breaker(BREAKER)
            async with breaker:
                started = time.perf_counter()
                embedding = await asyncio.wait_for(asyncio.to_thread(self._embed, week), self.timeout)
                metrics.MODEL_DURATION.observe(time.perf_counter() - started)
        except OpenedState:
            return ModelOutcome(unavailable="PAT circuit breaker open after repeated model failures", method=METHOD)
        except TimeoutError:
            log.error("PAT forward pass timed out", extra={"timeout": self.timeout})
            return ModelOutcome(unavailable=f"PAT forward pass exceeded {self.timeout:g} s", method=METHOD)
        except Exception as exc:  # a model failure costs the PAT block, never the result
            log.error("PAT forward pass failed", exc_info=True)
            return ModelOutcome(unavailable=f"PAT forward pass failed: {type(exc).__name__}", method=METHOD)
        bad = int(np.count_nonzero(~np.isfinite(embedding)))
        if bad:
            return self._withheld(f"PAT embedding has {bad} non-finite value(s) of {embedding.size}",
                                  window, coverage, output="embedding", non_finite=bad)
        block = {
            "model_id": self.encoder.model_id,
            "weights_sha256": self.encoder.weights_sha256,
            "normalisation": normalisation_label(self.normalisation),
            "input": "activity_count",
            "coverage": coverage,
            "embedding": [float(v) for v in embedding],
        }
        scores = []
        if self.head is not None:
            provenance = self.head.provenance()
            score = self.head.score(embedding)
            if not math.isfinite(score):
                return self._withheld(f"PAT head {self.head.task!r} gave a non-finite score ({score})",
                                      window, coverage, output="head_score", head_task=self.head.task)
            scores.append({"task": provenance["task"], "score": score,
                           "head_sha256": provenance["head_sha256"], "training_data": provenance["training_data"],
                           "auc": float(self.head.auc), "model_id": self.encoder.model_id})
        return ModelOutcome(block=block, scores=scores, method=METHOD)

    def _embed(self, week: np.ndarray) -> np.ndarray:
        return self.encoder.embed(week)[0]

    def _context(self, window: UserWindow, coverage: float) -> dict[str, object]:
        """What a log line about one run names: the model, the normalisation and the window."""
        return {"model_id": self.encoder.model_id, "weights_sha256": self.encoder.weights_sha256,
                "normalisation": self.normalisation, "coverage": coverage, "window_end_minute": window.end_minute}

    def _withheld(self, reason: str, window: UserWindow, coverage: float, **details: object) -> ModelOutcome:
        """No PAT block: an output was not finite. Logged and counted, not a breaker failure."""
        metrics.METRIC_ERRORS.labels(METRIC_GROUP).inc()
        log.error("PAT output not finite, block withheld",
                  extra={**self._context(window, coverage), **details, "reason": reason})
        return ModelOutcome(unavailable=f"{reason}; not published", method=METHOD)


def _fill_missing(counts: np.ndarray) -> np.ndarray:
    """``counts`` with NaN minutes set to the mean of the others (at least one must be present).

    The mean is taken of the values divided by a power of two just above the largest magnitude (exact, and
    it cannot overflow as a plain mean of counts near float64's limit does), then scaled back.
    """
    present = ~np.isnan(counts)
    values = counts[present]
    _, exponent = np.frexp(np.abs(values).max())
    return np.where(present, counts, np.ldexp(np.ldexp(values, -exponent).mean(), exponent))


def _record_state(name: str, event_name: str, event: object) -> None:
    if name == BREAKER and event_name == "state_changed":
        state = getattr(event, "state", "closed")
        metrics.BREAKER_STATE.labels(BREAKER).set(_STATE_VALUES.get(state, 0))
        log.warning("PAT circuit breaker state changed", extra={"state": state})
