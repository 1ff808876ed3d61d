"""The worker's state on the real broker: windows survive restarts without double counting,
and a poison record lands in the dead-letter topic and replays once the cause is fixed."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import fastavro
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from circadia import deadletters
from circadia.avro import SchemaSet, header
from circadia.paths import schemas_dir
from circadia.topics import HEALTH_SAMPLES
from circadia_dev.devstack.stack import LocalStack
from tests.e2e.conftest import (
    YESTERDAY,
    metric,
    new_stack,
    next_prediction,
    open_socket,
    post,
    upload_body,
)

RUN = uuid.uuid4().hex[:6]
MORNING = datetime.combine(YESTERDAY, datetime.min.time(), tzinfo=UTC) + timedelta(hours=9)
WORKER = "prediction-worker"


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = new_stack(tmp_path_factory.mktemp("state-stack"), kafka_bootstrap, redis_url)
    try:
        stack.up(report=lambda line: None)  # a failed start-up still stops what it started
        yield stack
    finally:
        stack.down()


def worker_metrics(stack: LocalStack) -> str:
    return f"http://127.0.0.1:{stack.ports.worker_metrics}/metrics"


def day_steps(prediction: dict) -> float:
    (day,) = [d for d in prediction["daily_activity"] if d["date"] == YESTERDAY.isoformat()]
    return day["steps"]


async def raw_record(bootstrap: str, upload_id: str) -> tuple[bytes, bytes, list]:
    """The record the gateway published for ``upload_id`` (to deliver it a second time)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(HEALTH_SAMPLES, p) for p in range(6)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                for m in messages:
                    if header(m.headers, "upload_id") == upload_id.encode():
                        return m.key, m.value, list(m.headers)
    finally:
        await consumer.stop()
    raise AssertionError(f"{upload_id} not on {HEALTH_SAMPLES}")


async def produce(bootstrap: str, key: bytes, value: bytes, headers: list) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(HEALTH_SAMPLES, value=value, key=key, headers=headers)
    finally:
        await producer.stop()


async def test_a_restarted_worker_restores_windows_and_never_counts_an_upload_twice(stack: LocalStack) -> None:
    user = f"hopper-{RUN}"
    ws = await open_socket(stack, user)
    try:
        first = upload_body([10] * 10, start=MORNING)
        assert (await post(stack, user, first)).status_code == 202
        result = (await next_prediction(ws, 30))["prediction"]
        assert result["source_upload_ids"] == [first["upload_id"]] and day_steps(result) == 100

        stack.process(WORKER).stop()  # clean stop: offsets committed, changelog flushed
        stack.start_service(WORKER)
        applied_before = metric(worker_metrics(stack), 'circadia_worker_records_total{outcome="applied"}')

        second = upload_body([5] * 10, start=MORNING + timedelta(hours=1))
        assert (await post(stack, user, second)).status_code == 202
        result = (await next_prediction(ws, 30))["prediction"]
        # 150: the first upload came back from the changelog; it was not re-read from the topic
        assert result["source_upload_ids"] == [second["upload_id"]] and day_steps(result) == 150
        assert metric(worker_metrics(stack), 'circadia_worker_records_total{outcome="applied"}') == applied_before + 1

        # the first upload delivered again (as after a producer retry): skipped, no new result
        key, value, headers = await raw_record(stack.bootstrap_servers, first["upload_id"])
        await produce(stack.bootstrap_servers, key, value, headers)
        deadline = time.monotonic() + 20
        while metric(worker_metrics(stack), 'circadia_worker_records_total{outcome="duplicate"}') < 1:
            assert time.monotonic() < deadline, "redelivered upload never reached the worker"
            await asyncio.sleep(0.2)
        with pytest.raises(TimeoutError):
            await next_prediction(ws, 2)

        third = upload_body([1] * 10, start=MORNING + timedelta(hours=2))
        assert (await post(stack, user, third)).status_code == 202
        assert day_steps((await next_prediction(ws, 30))["prediction"]) == 160
    finally:
        await ws.close()


def evolved_schemas(into: Path) -> Path:
    """schemas/ as a newer release might ship it: HealthUpload with one more optional field."""
    shutil.copytree(schemas_dir(), into)
    path = into / "health" / "upload.avsc"
    schema = json.loads(path.read_text())
    schema["fields"].append({"name": "firmware", "type": ["null", "string"], "default": None,
                             "doc": "Device firmware version (a field this worker's release does not know)."})
    path.write_text(json.dumps(schema, indent=2))
    return into


async def test_a_poison_record_is_dead_lettered_and_replays_after_the_fix(stack: LocalStack, tmp_path: Path) -> None:
    user = f"lovelace-{RUN}"
    newer = evolved_schemas(tmp_path / "schemas")
    schema = SchemaSet.load(newer)["io.circadia.health.HealthUpload"]
    upload_id = str(uuid.uuid4())
    record = {"upload_id": upload_id, "user_id": user, "received_at": datetime.now(UTC),
              "device": {"id": "band", "model": "Band 3", "os": "RTOS 4"}, "firmware": "4.2.0",
              "samples": [{"type": "step_count", "start": MORNING, "end": MORNING + timedelta(minutes=1),
                           "utc_offset_minutes": 0, "value": 42.0, "stage": None, "unit": "count"}]}
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema.parsed, record)
    sent_at = datetime.now(UTC) - timedelta(seconds=1)
    await produce(stack.bootstrap_servers, user.encode(), buffer.getvalue(),
                  schema.headers() + [("upload_id", upload_id.encode())])

    deadline, ours = time.monotonic() + 30, []
    while not ours:
        assert time.monotonic() < deadline, "the record never reached the dead-letter topic"
        letters = await deadletters.list_dead_letters(stack.bootstrap_servers, since=sent_at)
        ours = [letter for letter in letters if letter.get("upload_id") == upload_id]
        await asyncio.sleep(0.3)
    (letter,) = ours
    assert letter.get("error.stage") == "decode" and letter.get("error.class") == "UnknownSchemaError"
    assert letter.value == buffer.getvalue() and letter.get("source.topic") == HEALTH_SAMPLES
    assert "Traceback" in letter.get("error.stack")

    # the fix: a worker release that knows the newer schema
    stack.process("prediction-worker").stop()
    stack.start_service("prediction-worker", CIRCADIA_SCHEMAS_DIR=str(newer))
    ws = await open_socket(stack, user)
    try:
        replayed = await deadletters.replay(stack.bootstrap_servers, since=sent_at)
        assert upload_id in {r.get("upload_id") for r in replayed}
        result = (await next_prediction(ws, 30))["prediction"]
        assert result["source_upload_ids"] == [upload_id] and day_steps(result) == 42

        again = await deadletters.replay(stack.bootstrap_servers)  # from the committed position
        assert upload_id not in {r.get("upload_id") for r in again}
        forced = await deadletters.replay(stack.bootstrap_servers, since=sent_at)  # even if resent ...
        assert upload_id in {r.get("upload_id") for r in forced}
        with pytest.raises(TimeoutError):  # ... the window already holds it: no second result
            await next_prediction(ws, 3)
    finally:
        await ws.close()


async def test_with_weights_configured_results_carry_the_pat_embedding(stack: LocalStack, tmp_path: Path) -> None:
    import lzma

    from prediction_worker.pat import file_sha256
    from tests.unit.test_pat import FIXTURE

    weights = tmp_path / "pat_s.h5"
    weights.write_bytes(lzma.decompress((FIXTURE / "pat_s.h5.xz").read_bytes()))
    stack.process(WORKER).stop()
    stack.start_service(WORKER, CIRCADIA_WORKER_PAT_WEIGHTS_PATH=str(weights))
    user = f"franklin-{RUN}"
    # a full week that ends a minute ago (a week ending at MORNING + 1 day would lie in the
    # future before 09:00 UTC, and the gateway refuses samples from the future)
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=7, minutes=1)
    body = {"upload_id": str(uuid.uuid4()),
            "device": {"id": "gt3x", "model": "GT3X+", "os": "fw 4", "activity_counts": "actigraph"},
            "samples": [{"type": "activity_count", "start": (start + timedelta(minutes=m)).isoformat(),
                         "end": (start + timedelta(minutes=m + 1)).isoformat(),
                         "value": (m * 37) % 900, "unit": "count"} for m in range(10_080)]}
    ws = await open_socket(stack, user)
    try:
        assert (await post(stack, user, body)).status_code == 202
        result = (await next_prediction(ws, 60))["prediction"]
        assert result["pat_unavailable"] is None
        assert result["pat"]["model_id"] == "PAT-S" and result["pat"]["weights_sha256"] == file_sha256(weights)
        assert len(result["pat"]["embedding"]) == 96 and result["clinical_scores"] == []
        assert result["scored_sleep"]["input"] == "activity_count" and result["scored_sleep"]["refused"] is None
    finally:
        await ws.close()


async def test_debounced_uploads_are_reflected_together_by_the_flush_timer(stack: LocalStack) -> None:
    stack.process(WORKER).stop()
    stack.start_service(WORKER, CIRCADIA_WORKER_DEBOUNCE_SECONDS="3")
    user = f"noether-{RUN}"
    ws = await open_socket(stack, user)
    try:
        first = upload_body([2] * 5, start=MORNING)
        assert (await post(stack, user, first)).status_code == 202
        assert (await next_prediction(ws, 30))["prediction"]["source_upload_ids"] == [first["upload_id"]]
        # within the debounce interval: both wait, then one result carries both
        second, third = upload_body([3] * 5, start=MORNING + timedelta(hours=1)), \
            upload_body([4] * 5, start=MORNING + timedelta(hours=2))
        assert (await post(stack, user, second)).status_code == 202
        assert (await post(stack, user, third)).status_code == 202
        result = (await next_prediction(ws, 30))["prediction"]
        assert result["source_upload_ids"] == [second["upload_id"], third["upload_id"]]
        assert day_steps(result) == 45
    finally:
        await ws.close()
