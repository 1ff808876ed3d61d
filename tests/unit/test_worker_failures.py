"""How the worker's upload handling ends when a stage fails: retried only when a retry can
succeed, otherwise dead-lettered, never acknowledged unprocessed (topics and table as fakes;
the same paths against the broker are in the end-to-end suite)."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    TopicAuthorizationFailedError,
)

from circadia.avro import SchemaSet, header
from circadia.deadletters import VALUE_OMITTED
from circadia.topics import HEALTH_SAMPLES
from prediction_worker import processor as worker
from prediction_worker.deadletter import DeadLetters
from prediction_worker.processor import NoModel, UploadProcessor
from prediction_worker.retry import retrying, transient
from prediction_worker.settings import WorkerSettings
from prediction_worker.store import WindowStore
from prediction_worker.window import UserWindow

SCHEMAS = SchemaSet.load()
UPLOAD = SCHEMAS["io.circadia.health.HealthUpload"]


@pytest.mark.parametrize(("error", "expected"), [
    (KafkaConnectionError(), True), (NotLeaderForPartitionError(), True), (KafkaTimeoutError(), True),
    (TimeoutError(), True), (ConnectionResetError(), True),
    (MessageSizeTooLargeError(), False), (TopicAuthorizationFailedError(), False), (ValueError("x"), False),
])
def test_only_errors_a_retry_can_cure_are_transient(error: BaseException, expected: bool) -> None:
    assert transient(error) is expected


async def test_retrying_gives_up_at_once_on_an_error_no_retry_can_cure() -> None:
    calls: list[int] = []

    async def refused() -> None:
        calls.append(1)
        raise MessageSizeTooLargeError()

    with pytest.raises(MessageSizeTooLargeError):
        await retrying("publish", refused, attempts=5, backoff=0.001)
    assert len(calls) == 1

    async def unreachable() -> None:
        calls.append(1)
        raise KafkaConnectionError()

    with pytest.raises(KafkaConnectionError):
        await retrying("publish", unreachable, attempts=3, backoff=0.001)
    assert len(calls) == 1 + 3


@dataclass
class FakeTopic:
    """A topic whose sends fail with ``failures`` (in order) before succeeding."""

    failures: list[BaseException] = field(default_factory=list)
    sent: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]] = field(default_factory=list)
    attempts: int = 0

    async def send(self, *, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]],
                   force: bool) -> asyncio.Future[None]:
        self.attempts += 1
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append((key, value, list(headers)))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


@dataclass
class Message:
    topic: str = HEALTH_SAMPLES
    partition: int = 0
    offset: int = 0


@dataclass
class Event:
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    message: Message = field(default_factory=Message)


def upload_event(user: str = "ada", offset: int = 0) -> tuple[str, Event]:
    upload_id = str(uuid.uuid4())
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=3)
    record = {
        "upload_id": upload_id, "user_id": user, "received_at": datetime.now(UTC),
        "device": {"id": "watch", "model": "Watch7,1", "os": "watchOS 11", "activity_counts": "UNKNOWN"},
        "samples": [{"type": "step_count", "start": start + timedelta(minutes=i),
                     "end": start + timedelta(minutes=i + 1), "utc_offset_minutes": 0, "value": 10.0 + i,
                     "stage": None, "unit": "count"} for i in range(5)],
    }
    return upload_id, Event(user.encode(), UPLOAD.encode(record), UPLOAD.headers(), Message(offset=offset))


@dataclass
class Worker:
    processor: UploadProcessor
    table: dict[bytes, bytes]
    predictions: FakeTopic
    dead: FakeTopic

    def window(self, user: str = "ada") -> UserWindow | None:
        raw = self.table.get(user.encode())
        return UserWindow.from_bytes(raw) if raw is not None else None


def make_worker(predictions: FakeTopic | None = None, dead: FakeTopic | None = None, **settings: Any) -> Worker:
    options: dict[str, Any] = {"worker_publish_attempts": 2, "worker_retry_backoff_seconds": 0.001,
                               "kafka_bootstrap_servers": "127.0.0.1:1", **settings}
    table: dict[bytes, bytes] = {}
    predictions, dead = predictions or FakeTopic(), dead or FakeTopic()
    processor = UploadProcessor(WorkerSettings(**options), SCHEMAS, WindowStore(table),  # type: ignore[arg-type]
                                predictions, DeadLetters(dead, backoff=0.001), NoModel())  # type: ignore[arg-type]
    return Worker(processor, table, predictions, dead)


def stage_of(letter: tuple[bytes | None, bytes, list[tuple[str, bytes]]]) -> str:
    value = header(letter[2], "error.stage")
    return value.decode() if value else ""


async def test_a_result_the_topic_refuses_for_good_dead_letters_the_upload_without_retrying() -> None:
    w = make_worker(predictions=FakeTopic([MessageSizeTooLargeError()]))
    _, event = upload_event()
    await w.processor.handle(event)  # type: ignore[arg-type]
    assert w.predictions.attempts == 1
    (letter,) = w.dead.sent
    assert stage_of(letter) == "publish" and letter[1] == event.value
    assert w.window() is None  # nothing half-applied: a replay after the fix applies it afresh


async def test_a_result_not_published_while_kafka_is_down_stays_pending_until_it_is() -> None:
    w = make_worker(predictions=FakeTopic([KafkaConnectionError(), KafkaConnectionError()]))
    upload_id, event = upload_event()
    await w.processor.handle(event)  # type: ignore[arg-type]
    assert w.dead.sent == [] and w.predictions.sent == []
    window = w.window()
    assert window is not None and window.pending == [upload_id]
    await w.processor.flush()
    assert len(w.predictions.sent) == 1
    window = w.window()
    assert window is not None and window.pending == []


async def test_a_result_the_schema_refuses_dead_letters_the_upload(monkeypatch: pytest.MonkeyPatch) -> None:
    real = worker.build_prediction

    def broken(*args: Any, **kwargs: Any) -> dict[str, Any]:
        record = real(*args, **kwargs)
        record["window_minutes_covered"] = "many"
        return record

    monkeypatch.setattr(worker, "build_prediction", broken)
    w = make_worker()
    _, event = upload_event()
    await w.processor.handle(event)  # type: ignore[arg-type]
    (letter,) = w.dead.sent
    assert stage_of(letter) == "encode" and w.predictions.sent == []


async def test_a_failing_metric_computation_dead_letters_the_upload(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise ZeroDivisionError("a metric")

    monkeypatch.setattr(worker, "build_prediction", broken)
    w = make_worker()
    _, event = upload_event()
    await w.processor.handle(event)  # type: ignore[arg-type]
    (letter,) = w.dead.sent
    assert stage_of(letter) == "compute" and header(letter[2], "error.class") == b"ZeroDivisionError"


async def test_a_dead_letter_the_topic_refuses_whole_is_written_without_its_record() -> None:
    w = make_worker(predictions=FakeTopic([MessageSizeTooLargeError()]),
                    dead=FakeTopic([MessageSizeTooLargeError()]))
    _, event = upload_event(offset=41)
    await w.processor.handle(event)  # type: ignore[arg-type]
    (letter,) = w.dead.sent
    assert letter[1] == b"" and header(letter[2], VALUE_OMITTED) is not None
    assert header(letter[2], "source.offset") == b"41" and stage_of(letter) == "publish"


async def test_pending_is_bounded_and_the_oldest_ids_leave_the_next_result() -> None:
    w = make_worker(predictions=FakeTopic([KafkaConnectionError()] * 10), worker_max_pending=3)
    ids = []
    for offset in range(5):
        upload_id, event = upload_event(offset=offset)
        ids.append(upload_id)
        await w.processor.handle(event)  # type: ignore[arg-type]
    window = w.window()
    assert window is not None and window.pending == ids[-3:]


async def test_uploads_whose_result_can_never_be_published_are_each_dead_lettered_on_flush() -> None:
    w = make_worker(predictions=FakeTopic([KafkaConnectionError()] * 4))
    ids = []
    for offset in range(2):
        upload_id, event = upload_event(offset=offset)
        ids.append(upload_id)
        await w.processor.handle(event)  # type: ignore[arg-type]
    w.predictions.failures = [TopicAuthorizationFailedError()]
    await w.processor.flush()
    assert sorted(header(letter[2], "upload_id") for letter in w.dead.sent) == sorted(i.encode() for i in ids)
    assert all(stage_of(letter) == "publish" and letter[1] == b"" for letter in w.dead.sent)
    window = w.window()
    assert window is not None and window.pending == [] and window.holds(ids[0])


async def test_a_result_published_later_by_the_flush_is_in_the_trace_of_its_first_upload() -> None:
    from opentelemetry import trace

    traces: list[int] = []

    class TracingTopic(FakeTopic):
        async def send(self, **kwargs: Any) -> asyncio.Future[None]:
            traces.append(trace.get_current_span().get_span_context().trace_id)
            return await super().send(**kwargs)

    w = make_worker(predictions=TracingTopic([KafkaConnectionError(), KafkaConnectionError()]))
    _, event = upload_event()
    trace_id = uuid.uuid4().hex
    event.headers.append(("traceparent", f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01".encode()))
    await w.processor.handle(event)  # type: ignore[arg-type]
    window = w.window()
    assert window is not None and window.pending and trace_id in window.pending_trace
    await w.processor.flush()
    assert len(w.predictions.sent) == 1 and traces[-1] == int(trace_id, 16)
    window = w.window()
    assert window is not None and window.pending == [] and window.pending_trace == ""
