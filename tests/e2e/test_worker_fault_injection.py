"""A failure at each stage of the worker, against the real broker: every upload ends in a
result or in the dead-letter topic, and its offset is committed only then.

The worker runs as deployed but for the injected failures (``tests/e2e/faulty_worker.py``):
decode and apply failures are records written to health.samples.v1 as a broken producer
would write them; compute, encode and publish failures are injected for users named for
them (the publish failure is the broker's own refusal of a result over the topic's limit);
the model failure happens in a configured model's background run.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from circadia.avro import SchemaSet, header
from circadia.deadletters import VALUE_OMITTED, DeadLetter, list_dead_letters
from circadia.offsets import committed_offsets
from circadia.topics import HEALTH_SAMPLES, PREDICTIONS
from circadia_dev.devstack.stack import LocalStack
from circadia_dev.paths import PROJECT_ROOT
from tests.e2e.conftest import LATE_EVENING, new_stack, opened_prediction, post, upload_body
from tests.e2e.test_worker_state import produce, raw_record

RUN = uuid.uuid4().hex[:6]
WORKER = "prediction-worker"
SCHEMAS = SchemaSet.load()
UPLOAD = SCHEMAS["io.circadia.health.HealthUpload"]
PREDICTION = SCHEMAS["io.circadia.prediction.Prediction"]


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = new_stack(tmp_path_factory.mktemp("faults-stack"), kafka_bootstrap, redis_url)
    try:
        stack.up(report=lambda line: None)
        yield stack
    finally:
        stack.down()


def run_faulty_worker(stack: LocalStack, *, model: bool) -> None:
    stack.process(WORKER).stop()
    stack.start_service(WORKER, module="tests.e2e.faulty_worker", FAULTY_WORKER_MODEL="1" if model else "0",
                        PYTHONPATH=os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])))


def group(stack: LocalStack) -> str:
    return dict(stack.overrides)["CIRCADIA_WORKER_APP_ID"]


async def results_for(stack: LocalStack, upload_ids: set[str], timeout: float) -> dict[str, dict]:
    """The results on predictions.v1 that name any of ``upload_ids``, by upload id, opened."""
    bootstrap = stack.bootstrap_servers
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    found: dict[str, dict] = {}
    try:
        partitions = [TopicPartition(PREDICTIONS, p) for p in range(6)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not upload_ids <= set(found):
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                for m in messages:
                    record = SCHEMAS.decode(m.value, list(m.headers), PREDICTION)
                    for uid in set(record["source_upload_ids"]) & upload_ids:
                        found[uid] = await opened_prediction(stack, record)
    finally:
        await consumer.stop()
    return found


async def letters_since(bootstrap: str, since: datetime, count: int, timeout: float) -> list[DeadLetter]:
    deadline = time.monotonic() + timeout
    while True:
        letters = await list_dead_letters(bootstrap, since=since)
        mine = [letter for letter in letters if RUN in (letter.key or b"").decode(errors="replace")]
        if len(mine) >= count or time.monotonic() > deadline:
            return mine
        await asyncio.sleep(0.5)


async def committed_past(stack: LocalStack, offsets: dict[int, int], timeout: float = 30) -> None:
    """Wait until the worker's group has committed past each (partition: offset)."""
    partitions = [TopicPartition(HEALTH_SAMPLES, p) for p in offsets]
    deadline = time.monotonic() + timeout
    while True:
        committed = await committed_offsets(stack.bootstrap_servers, group(stack), partitions)
        behind = {tp.partition: offset for tp, offset in ((TopicPartition(HEALTH_SAMPLES, p), o)
                                                          for p, o in offsets.items())
                  if committed.get(tp, -1) <= offset}
        if not behind:
            return
        assert time.monotonic() < deadline, f"offsets not committed past the failed records: {behind}"
        await asyncio.sleep(0.5)


def apply_breaking_record(user: str) -> tuple[str, bytes]:
    """An upload the Avro schema accepts but the window cannot apply: a step count without a
    value (the gateway never writes one; a broken producer could)."""
    upload_id = str(uuid.uuid4())
    start = LATE_EVENING
    record = {"upload_id": upload_id, "user_id": user, "received_at": datetime.now(UTC),
              "device": {"id": "watch-1", "model": "Watch7,1", "os": "watchOS 11.2", "activity_counts": "UNKNOWN"},
              "samples": [{"type": "step_count", "start": start, "end": start + timedelta(minutes=1),
                           "utc_offset_minutes": 0, "value": None, "stage": None, "unit": "count"}]}
    return upload_id, UPLOAD.encode(record)


async def test_a_failure_at_each_stage_ends_in_the_dead_letter_topic_and_nothing_else_stops(
        stack: LocalStack) -> None:
    run_faulty_worker(stack, model=False)
    since = datetime.now(UTC) - timedelta(seconds=5)
    bootstrap = stack.bootstrap_servers

    garbage_user = f"fault-decode-{RUN}"
    await produce(bootstrap, garbage_user.encode(), b"\x00\xff not avro at all", UPLOAD.headers())
    apply_user = f"fault-apply-{RUN}"
    apply_id, apply_value = apply_breaking_record(apply_user)
    await produce(bootstrap, apply_user.encode(), apply_value,
                  [*UPLOAD.headers(), ("upload_id", apply_id.encode())])
    sent: dict[str, str] = {}
    for stage in ("compute", "encode", "publish"):
        user = f"fault-{stage}-{RUN}"
        body = upload_body([10] * 5)
        assert (await post(stack, user, body)).status_code == 202
        sent[stage] = body["upload_id"]
    good_user = f"fine-{RUN}"
    good = upload_body([7] * 5)
    assert (await post(stack, good_user, good)).status_code == 202

    # the healthy user is not held up by the others' failures
    assert good["upload_id"] in await results_for(stack, {good["upload_id"]}, 60)
    letters = await letters_since(bootstrap, since, 5, 60)
    by_stage = {letter.get("error.stage"): letter for letter in letters}
    assert set(by_stage) == {"decode", "apply", "compute", "encode", "publish"}, [describe(x) for x in letters]
    assert by_stage["decode"].value == b"\x00\xff not avro at all"
    assert by_stage["apply"].value == apply_value and by_stage["apply"].get("error.class") == "TypeError"
    assert by_stage["compute"].get("error.class") == "RuntimeError"
    assert by_stage["encode"].get("error.class") == "AvroValidationError"
    # the broker's own refusal, not retried: a result over predictions.v1's limit
    assert by_stage["publish"].get("error.class") == "MessageSizeTooLargeError"
    for stage, upload_id in sent.items():
        letter = by_stage[stage]
        # the whole record, as the gateway published it: replayable once the cause is fixed
        _, value, _ = await raw_record(bootstrap, upload_id)
        assert letter.value == value and header(letter.headers, VALUE_OMITTED) is None
        assert letter.get("upload_id") == upload_id
    # none of the failed uploads produced a result; each was acknowledged only after its letter
    assert await results_for(stack, set(sent.values()) | {apply_id}, 3) == {}
    await committed_past(stack, {int(x.get("source.partition")): int(x.get("source.offset")) for x in letters})


async def test_failures_in_a_models_background_run_end_in_a_result_or_a_dead_letter(stack: LocalStack) -> None:
    run_faulty_worker(stack, model=True)
    since = datetime.now(UTC) - timedelta(seconds=5)
    bootstrap = stack.bootstrap_servers

    model_user = f"fault-model-{RUN}"
    flaky = upload_body([3] * 5)
    flaky["device"]["id"] = f"fault-model-{RUN}"  # the test model fails once for this device
    assert (await post(stack, model_user, flaky)).status_code == 202
    compute_user = f"fault-compute-bg-{RUN}"
    broken = upload_body([4] * 5)
    assert (await post(stack, compute_user, broken)).status_code == 202
    good = upload_body([5] * 5)
    assert (await post(stack, f"fine-bg-{RUN}", good)).status_code == 202

    results = await results_for(stack, {good["upload_id"], flaky["upload_id"]}, 60)
    assert results[good["upload_id"]]["pat_unavailable"] == "test model: no weights"
    # the model failed once: the upload stayed pending in the window and the flush published it
    flaky_result = results[flaky["upload_id"]]
    assert flaky_result["as_of"]["pat"]["computed_at"] <= flaky_result["computed_at"]
    # applied (it is in the window) but its result can never be built: a letter names it
    (letter,) = [x for x in await letters_since(bootstrap, since, 1, 60) if x.get("upload_id") == broken["upload_id"]]
    assert letter.get("error.stage") == "compute" and header(letter.headers, VALUE_OMITTED) is not None
    assert await results_for(stack, {broken["upload_id"]}, 3) == {}


def describe(letter: DeadLetter) -> str:
    return f"{letter.get('error.stage')} {letter.get('error.class')} {letter.get('upload_id')} {letter.key!r}"
