"""The worker's PAT stage: the block only from loaded weights, refusals, breaker and timeout."""

from __future__ import annotations

import asyncio
import lzma
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from circadia.avro import SchemaSet
from prediction_worker import metrics
from prediction_worker.model import PatModel
from prediction_worker.pat import load_encoder, normalise
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


def window_of(kind: str, minutes: int = 7 * 1440) -> UserWindow:
    rng = np.random.default_rng(3)
    samples = [{"type": kind, "start": START + timedelta(minutes=m), "end": START + timedelta(minutes=m + 1),
                "utc_offset_minutes": 0, "value": float(rng.integers(0, 500)), "stage": None, "unit": "count"}
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
