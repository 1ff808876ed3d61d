"""The worker's PAT stage: the block only from loaded weights, refusals, breaker and timeout."""

from __future__ import annotations

import asyncio
import logging
import lzma
import math
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from circadia.avro import SchemaSet
from prediction_worker import metrics
from prediction_worker.model import PatModel
from prediction_worker.pat import TrainedHead, load_encoder, normalise
from prediction_worker.results import build_prediction
from prediction_worker.window import UserWindow
from tests.unit.test_pat import FIXTURE, write_head

START = datetime(2026, 11, 16, tzinfo=UTC)
SCHEMA = SchemaSet.load()["io.circadia.prediction.Prediction"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pat") / "pat_s.h5"
    path.write_bytes(lzma.decompress((FIXTURE / "pat_s.h5.xz").read_bytes()))
    return path


def window_of(kind: str, minutes: int = 7 * 1440, values: np.ndarray | None = None) -> UserWindow:
    if values is None:
        values = np.random.default_rng(3).integers(0, 500, size=minutes).astype(float)
    samples = [{"type": kind, "start": START + timedelta(minutes=m), "end": START + timedelta(minutes=m + 1),
                "utc_offset_minutes": 0, "value": float(values[m]), "stage": None, "unit": "count"}
               for m in range(minutes)]
    window = UserWindow()
    window.apply({"upload_id": str(uuid.uuid4()), "user_id": "u", "received_at": START,
                  "device": {"id": "watch", "model": "m", "os": "o"}, "samples": samples})
    return window


def model(weights: Path, **options: object) -> PatModel:
    settings = {"normalisation": "per-sequence-zscore", "min_coverage": 0.8, "timeout": 5.0, "threshold": 2,
                "reset_seconds": 30.0}
    settings.update(options)
    return PatModel.create(load_encoder(weights), **settings)


async def test_a_week_of_counts_gets_the_embedding_of_the_loaded_weights(weights: Path) -> None:
    window = window_of("activity_count")
    outcome = await model(weights).run(window)
    assert outcome.unavailable is None and outcome.scores == []
    block = outcome.block
    encoder = load_encoder(weights)
    expected = encoder.embed(normalise(window.movement("activity_count")[None, :], "per-sequence-zscore"))[0]
    assert block["model_id"] == "PAT-S" and block["weights_sha256"] == encoder.weights_sha256
    assert np.allclose(block["embedding"], expected, atol=1e-6) and len(block["embedding"]) == 96
    assert "approximation" in block["normalisation"] and block["coverage"] == 1.0
    record = build_prediction(window, "u", ["a"], START, outcome)
    assert record["methods"]["pat"] == "pat-encoder/mean-of-patches@1"
    SCHEMA.encode(record)


async def test_steps_and_thin_weeks_are_refused_with_a_reason(weights: Path) -> None:
    steps = await model(weights).run(window_of("step_count"))
    assert steps.block is None and "activity counts" in steps.unavailable
    thin = await model(weights).run(window_of("activity_count", minutes=3 * 1440))
    assert thin.block is None and "cover 43%" in thin.unavailable


async def test_a_head_with_provenance_adds_a_score(weights: Path, tmp_path: Path) -> None:
    from prediction_worker.pat import load_head

    head = load_head(write_head(tmp_path, model_id="PAT-S"))
    outcome = await model(weights, head=head).run(window_of("activity_count"))
    (score,) = outcome.scores
    assert 0 <= score["score"] <= 1 and score["head_sha256"] == head.sha256 and score["model_id"] == "PAT-S"


class Failing:
    def __init__(self, real: object, *, sleep: float = 0.0) -> None:
        self.real, self.sleep, self.calls = real, sleep, 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)

    def embed(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.sleep:
            time.sleep(self.sleep)
            return self.real.embed(x)
        raise MemoryError("simulated model failure")


async def test_repeated_failures_open_the_breaker_and_results_say_why(weights: Path) -> None:
    stage = model(weights, threshold=2, reset_seconds=60.0)
    failing = Failing(stage.encoder)
    object.__setattr__(stage, "encoder", failing)
    window = window_of("activity_count")
    first, second = await stage.run(window), await stage.run(window)
    assert "MemoryError" in first.unavailable and "MemoryError" in second.unavailable
    opened = await stage.run(window)
    assert opened.block is None and "breaker open" in opened.unavailable
    assert failing.calls == 2  # the open breaker did not call the model again
    assert metrics.BREAKER_STATE.labels("pat")._value.get() == 2
    SCHEMA.encode(build_prediction(window, "u", ["a"], START, opened))


async def test_a_slow_model_times_out(weights: Path) -> None:
    stage = model(weights, timeout=0.05, threshold=5)
    object.__setattr__(stage, "encoder", Failing(stage.encoder, sleep=0.5))
    outcome = await stage.run(window_of("activity_count"))
    assert outcome.block is None and "exceeded 0.05 s" in outcome.unavailable
    await asyncio.sleep(0.5)  # let the abandoned thread finish before the loop closes


# --- nothing non-finite in a result ------------------------------------------------------------------------

def assert_finite_or_refused(outcome: object) -> None:
    """Either an embedding of finite values or no block and a reason; never NaN or inf."""
    if outcome.block is None:
        assert outcome.unavailable and outcome.scores == []
    else:
        assert outcome.unavailable is None and len(outcome.block["embedding"]) == 96
        assert all(math.isfinite(v) for v in outcome.block["embedding"])
        assert all(math.isfinite(s["score"]) for s in outcome.scores)
        assert math.isfinite(outcome.block["coverage"])


HUGE_WEEKS = {
    "constant 1e308": np.full(7 * 1440, 1e308),
    "1e308 and 0": np.where(np.arange(7 * 1440) % 2, 1e308, 0.0),
    "spikes of float64's largest": np.where(np.arange(7 * 1440) % 500, 30.0, np.finfo(np.float64).max),
}


@pytest.mark.parametrize("week", HUGE_WEEKS)
async def test_a_week_of_huge_counts_gets_a_finite_embedding(weights: Path, week: str) -> None:
    """The gateway accepts counts up to 1.7e308: their plain mean and SD overflow, the z-score does not."""
    window = window_of("activity_count", values=HUGE_WEEKS[week])
    assert window.movement("activity_count").max() >= 1e308
    outcome = await model(weights).run(window)
    assert outcome.unavailable is None, outcome.unavailable
    assert_finite_or_refused(outcome)
    # the z-score is scale-invariant: a week of 1e308 and 0 is the week of 1 and 0
    if week == "1e308 and 0":
        small = await model(weights).run(window_of("activity_count", values=HUGE_WEEKS[week] / 1e308))
        assert outcome.block["embedding"] == small.block["embedding"]


async def test_huge_counts_with_missing_minutes_fill_to_a_finite_mean(weights: Path) -> None:
    values = np.full(7 * 1440, 1e308)
    values[::2] = 1.7e308
    window = window_of("activity_count", minutes=9000, values=values)  # 89% coverage: 1,080 minutes filled
    outcome = await model(weights).run(window)
    assert outcome.unavailable is None and outcome.block["coverage"] == pytest.approx(9000 / 10_080)
    assert_finite_or_refused(outcome)


async def test_huge_counts_that_cannot_be_fed_unscaled_are_refused_with_a_reason(weights: Path) -> None:
    window = window_of("activity_count", values=np.full(7 * 1440, 1e308))
    stage = model(weights, normalisation="none", threshold=1)
    outcome = await stage.run(window)
    assert outcome.block is None
    assert outcome.unavailable.startswith("PAT input refused: normalisation 'none' leaves 10080 of 10080 value(s) "
                                          "beyond float32's range")
    assert_finite_or_refused(outcome)
    # the input's fault, not the model's: the breaker (threshold 1) stays closed
    assert "breaker open" not in (await stage.run(window)).unavailable


class NonFinite:
    """An encoder whose embedding holds NaN and inf, as overflowing float32 arithmetic would give."""

    def __init__(self, real: object) -> None:
        self.real, self.calls = real, 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)

    def embed(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        out = self.real.embed(x)
        out[0, :3] = [np.nan, np.inf, -np.inf]
        return out


async def test_a_non_finite_embedding_is_withheld_logged_and_counted(
        weights: Path, caplog: pytest.LogCaptureFixture) -> None:
    stage = model(weights, threshold=1)
    encoder = NonFinite(stage.encoder)
    object.__setattr__(stage, "encoder", encoder)
    window = window_of("activity_count")
    before = metrics.METRIC_ERRORS.labels("pat")._value.get()
    with caplog.at_level(logging.ERROR, logger="prediction_worker.model"):
        outcome = await stage.run(window)
    assert outcome.block is None and outcome.scores == []
    assert outcome.unavailable == "PAT embedding has 3 non-finite value(s) of 96; not published"
    assert metrics.METRIC_ERRORS.labels("pat")._value.get() == before + 1
    (record,) = [r for r in caplog.records if r.name == "prediction_worker.model"]
    assert record.levelno == logging.ERROR and "not finite" in record.getMessage()
    assert (record.output, record.non_finite, record.model_id) == ("embedding", 3, "PAT-S")
    assert record.weights_sha256 == encoder.weights_sha256 and record.window_end_minute == window.end_minute
    assert_finite_or_refused(outcome)
    SCHEMA.encode(build_prediction(window, "u", ["a"], START, outcome))
    # not a model failure: the breaker (threshold 1) stays closed and the model runs again
    second = await stage.run(window)
    assert "non-finite" in second.unavailable and encoder.calls == 2


async def test_a_non_finite_head_score_is_withheld(weights: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Finite weights far beyond a trained head's overflow float32: +inf and -inf hidden units make NaN."""
    kernel = np.full((96, 128), 3e38, dtype=np.float32)
    kernel[:, 64:] = -3e38
    head = TrainedHead(task="overflowing", training_data="none: a unit test", auc=0.5, model_id="PAT-S",
                       sha256="0" * 64, hidden_kernel=kernel, hidden_bias=np.zeros(128, np.float32),
                       output_kernel=np.r_[np.ones(64), -np.ones(64)].astype(np.float32)[:, None],
                       output_bias=np.zeros(1, np.float32))
    window = window_of("activity_count")
    before = metrics.METRIC_ERRORS.labels("pat")._value.get()
    with np.errstate(over="ignore", invalid="ignore"), caplog.at_level(logging.ERROR, "prediction_worker.model"):
        outcome = await model(weights, head=head).run(window)
    assert outcome.block is None and outcome.scores == []
    assert outcome.unavailable == "PAT head 'overflowing' gave a non-finite score (nan); not published"
    assert metrics.METRIC_ERRORS.labels("pat")._value.get() == before + 1
    assert [(r.output, r.head_task) for r in caplog.records if r.name == "prediction_worker.model"] == [
        ("head_score", "overflowing")]
    assert_finite_or_refused(outcome)
