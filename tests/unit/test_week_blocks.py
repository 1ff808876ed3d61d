"""The week's blocks are reused between results and say as of when; a slow model holds back
only its own user's result (topics and table as fakes, as in test_worker_failures)."""

from __future__ import annotations

import asyncio
import copy
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from circadia.avro import SchemaSet
from prediction_worker import metrics
from prediction_worker.deadletter import DeadLetters
from prediction_worker.processor import UploadProcessor
from prediction_worker.results import ModelOutcome, build_prediction, week_blocks
from prediction_worker.settings import WorkerSettings
from prediction_worker.store import WindowStore
from prediction_worker.weekly import WeekMetrics
from prediction_worker.window import UserWindow
from tests.unit.test_worker_failures import Event, FakeTopic, Message

SCHEMAS = SchemaSet.load()
UPLOAD = SCHEMAS["io.circadia.health.HealthUpload"]
PREDICTION = SCHEMAS["io.circadia.prediction.Prediction"]
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def minutes(start: datetime, count: int, seed: int = 3) -> list[dict[str, Any]]:
    """Minute activity counts with a daily rhythm from ``start``."""
    rng = np.random.default_rng(seed)
    out = []
    for m in range(count):
        at = start + timedelta(minutes=m)
        level = 200 + 180 * np.cos(2 * np.pi * (at.hour + at.minute / 60 - 15) / 24)
        out.append({"type": "activity_count", "start": at, "end": at + timedelta(minutes=1), "utc_offset_minutes": 0,
                    "value": float(max(0.0, level + rng.normal(0, 20))), "stage": None, "unit": "count"})
    return out


def upload(samples: list[dict[str, Any]], user: str = "ada") -> dict[str, Any]:
    return {"upload_id": str(uuid.uuid4()), "user_id": user, "received_at": NOW,
            "device": {"id": "band", "model": "GT3X+", "os": "fw", "activity_counts": "actigraph"}, "samples": samples}


def full_week() -> UserWindow:
    window = UserWindow()
    window.apply(upload(minutes(NOW - timedelta(days=7, minutes=15), 7 * 1440)))
    return window


def test_blocks_are_reused_within_the_interval_and_are_those_of_the_window_they_name() -> None:
    weeks = WeekMetrics(interval_seconds=600, max_users=10)
    window = full_week()
    before = copy.deepcopy(window)
    first = weeks.blocks(b"ada", window, NOW)
    window.apply(upload(minutes(NOW - timedelta(minutes=15), 15, seed=9)))
    later = NOW + timedelta(minutes=5)
    reused = weeks.blocks(b"ada", window, later)
    assert reused is first
    # exactly what the formulas give on the window it names, not on the window now
    assert reused == week_blocks(before, NOW)
    assert reused != week_blocks(window, later)
    record = build_prediction(window, "ada", ["x"], later, ModelOutcome(), reused)
    assert record["as_of"]["circadian"] == {"computed_at": NOW, "window_end": before_end(before)}
    assert record["as_of"]["daily_activity"] == {"computed_at": later, "window_end": before_end(window)}
    assert record["window_end"] == before_end(window) and record["circadian"]["refused"] is None
    decoded = SCHEMAS.decode(PREDICTION.encode(record), PREDICTION.headers(), PREDICTION)
    assert decoded["as_of"]["circadian"]["window_end"] == before_end(before)


def before_end(window: UserWindow) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(minutes=window.end_minute)


def test_blocks_are_recomputed_after_the_interval() -> None:
    weeks = WeekMetrics(interval_seconds=600, max_users=10)
    window = full_week()
    first = weeks.blocks(b"ada", window, NOW)
    assert weeks.blocks(b"ada", window, NOW + timedelta(seconds=599)) is first
    again = weeks.blocks(b"ada", window, NOW + timedelta(seconds=600))
    assert again is not first and again.as_of.computed_at == NOW + timedelta(seconds=600)


def test_a_day_more_of_data_recomputes_at_once() -> None:
    """A first sync after a small upload must not leave the week refused for the interval."""
    weeks = WeekMetrics(interval_seconds=3600, max_users=10)
    window = UserWindow()
    window.apply(upload(minutes(NOW - timedelta(minutes=30), 30)))
    sparse = weeks.blocks(b"ada", window, NOW)
    assert sparse.circadian is not None and sparse.circadian["refused"] is not None
    window.apply(upload(minutes(NOW - timedelta(days=7), 7 * 1440 - 30)))
    synced = weeks.blocks(b"ada", window, NOW + timedelta(seconds=10))
    assert synced is not sparse and synced.circadian is not None and synced.circadian["refused"] is None


def test_interval_zero_recomputes_for_every_result() -> None:
    weeks = WeekMetrics(interval_seconds=0, max_users=10)
    window = full_week()
    assert weeks.blocks(b"ada", window, NOW) is not weeks.blocks(b"ada", window, NOW)


def test_the_cache_keeps_the_most_recently_used_users() -> None:
    weeks = WeekMetrics(interval_seconds=600, max_users=2)
    window = full_week()
    ada = weeks.blocks(b"ada", window, NOW)
    weeks.blocks(b"bob", window, NOW)
    assert weeks.blocks(b"ada", window, NOW) is ada  # ada used last: bob leaves next
    weeks.blocks(b"cy", window, NOW)
    assert weeks.blocks(b"ada", window, NOW) is ada
    assert weeks.blocks(b"bob", window, NOW).as_of.computed_at == NOW  # recomputed (a new object)


class StallingModel:
    """A model that takes ``stall`` seconds for the users in ``slow``, no time for others."""

    def __init__(self, slow: set[str], stall: float) -> None:
        self.slow, self.stall = slow, stall
        self.runs: list[str] = []

    async def run(self, window: UserWindow) -> ModelOutcome:
        user = next(iter(window.tracks))  # the device id names the user in these tests
        self.runs.append(user)
        if user in self.slow:
            await asyncio.sleep(self.stall)
        return ModelOutcome(unavailable="test model", method="test-model@1")


def event_for(user: str, offset: int) -> tuple[str, Event, float]:
    record = upload(minutes(datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=20), 15), user)
    record["device"]["id"] = user
    return record["upload_id"], Event(user.encode(), UPLOAD.encode(record), UPLOAD.headers(),
                                      Message(offset=offset)), time.monotonic()


async def test_one_users_stalled_model_does_not_hold_back_other_users_results() -> None:
    predictions = FakeTopic()
    stall = 5.0  # the stall: one user's model takes 5 s
    model = StallingModel({"slow"}, stall)
    table: dict[bytes, bytes] = {}
    processor = UploadProcessor(
        WorkerSettings(kafka_bootstrap_servers="127.0.0.1:1", worker_retry_backoff_seconds=0.001),
        SCHEMAS, WindowStore(table), predictions, DeadLetters(FakeTopic(), backoff=0.001), model)  # type: ignore[arg-type]
    published: dict[str, float] = {}
    sent_before = 0

    def note_published() -> None:
        nonlocal sent_before
        for _key, value, _ in predictions.sent[sent_before:]:
            published.setdefault(SCHEMAS.decode(value, PREDICTION.headers(), PREDICTION)["user_id"],
                                 time.monotonic())
        sent_before = len(predictions.sent)

    slow_first, event, started = event_for("slow", 0)
    await processor.handle(event)  # type: ignore[arg-type]
    slow_second, event, _ = event_for("slow", 1)
    await processor.handle(event)  # type: ignore[arg-type]
    for offset, user in enumerate(["u1", "u2", "u3"], start=2):
        _, event, _ = event_for(user, offset)
        await processor.handle(event)  # type: ignore[arg-type]
        await asyncio.sleep(0.01)  # their model runs take no time, but in tasks of their own
        note_published()
    assert set(published) == {"u1", "u2", "u3"} and "slow" not in published
    assert max(published.values()) - started < stall / 3
    pending = UserWindow.from_bytes(table[b"slow"]).pending
    assert pending == [slow_first, slow_second]  # held in the window, not lost
    await asyncio.sleep(stall + 0.5)
    note_published()
    assert published["slow"] - started >= stall
    (slow,) = [SCHEMAS.decode(v, PREDICTION.headers(), PREDICTION) for k, v, _ in predictions.sent if k == b"slow"]
    assert slow["source_upload_ids"] == [slow_first, slow_second]
    assert slow["pat_unavailable"] == "test model" and slow["as_of"]["pat"]["computed_at"] <= slow["computed_at"]
    assert UserWindow.from_bytes(table[b"slow"]).pending == []
    assert model.runs.count("slow") == 1  # the second upload waited for the run in flight


async def test_a_failing_background_run_leaves_the_uploads_pending_for_the_flush(
        monkeypatch: pytest.MonkeyPatch) -> None:
    predictions = FakeTopic()
    model = StallingModel(set(), 0)
    table: dict[bytes, bytes] = {}
    processor = UploadProcessor(
        WorkerSettings(kafka_bootstrap_servers="127.0.0.1:1", worker_retry_backoff_seconds=0.001),
        SCHEMAS, WindowStore(table), predictions, DeadLetters(FakeTopic(), backoff=0.001), model)  # type: ignore[arg-type]
    real = processor._weeks.set_model
    calls = 0

    def flaky(*args: Any) -> ModelOutcome:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise MemoryError("the first run")
        return real(*args)

    monkeypatch.setattr(processor._weeks, "set_model", flaky)
    upload_id, event, _ = event_for("ada", 0)
    await processor.handle(event)  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    assert predictions.sent == [] and UserWindow.from_bytes(table[b"ada"]).pending == [upload_id]
    assert metrics.MODEL_REFRESHES.labels("failed")._value.get() >= 1
    await processor.flush()
    await asyncio.sleep(0.05)
    (sent,) = predictions.sent
    assert SCHEMAS.decode(sent[1], PREDICTION.headers(), PREDICTION)["source_upload_ids"] == [upload_id]


async def test_with_interval_zero_each_result_runs_the_model_once() -> None:
    """Every result recomputes the week, the model too, but a result whose model just ran is
    published, not sent back to the model."""
    predictions = FakeTopic()
    model = StallingModel(set(), 0)
    processor = UploadProcessor(
        WorkerSettings(kafka_bootstrap_servers="127.0.0.1:1", worker_week_metrics_interval_seconds=0),
        SCHEMAS, WindowStore({}), predictions, DeadLetters(FakeTopic(), backoff=0.001), model)  # type: ignore[arg-type]
    for offset in range(3):
        _, event, _ = event_for("ada", offset)
        await processor.handle(event)  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
    assert len(predictions.sent) == 3 and model.runs == ["ada"] * 3
