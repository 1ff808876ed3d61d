"""The gateway's size bound against real encodings, the classification of Kafka errors, and
the body preparation that runs inline or in a parser process."""

from __future__ import annotations

import asyncio
import json
import pickle
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka.errors import (
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    OutOfOrderSequenceNumber,
    TopicAuthorizationFailedError,
)

from circadia.auth import MAX_SUBJECT_LENGTH
from circadia.avro import SchemaSet
from ingest_gateway.body import JSON, BodyLimits
from ingest_gateway.errors import Rejection
from ingest_gateway.limits import limit_problem, max_samples_within, record_bytes, upload_record_bound
from ingest_gateway.models import ValidationRules
from ingest_gateway.prepare import BodyToPrepare, ParsersBusy, Schemas, UploadParsers, prepare
from ingest_gateway.publisher import BrokerUnavailable, RecordRefused, UploadPublisher

SCHEMAS = SchemaSet.load()
UPLOAD = SCHEMAS["io.circadia.health.HealthUpload"]
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def largest_record(samples: int) -> tuple[bytes, bytes]:
    """(key, value) of the largest record an upload of ``samples`` can become: 4-byte characters
    in every free-text field at its length limit, the longest unit, offsets at -24 h."""
    wide = "\U0001f600"
    user = wide * MAX_SUBJECT_LENGTH
    start = int((NOW - timedelta(days=30)).timestamp() * 1000)
    record = {
        "upload_id": str(uuid.uuid4()), "user_id": user, "received_at": NOW,
        "device": {"id": wide * 128, "model": wide * 128, "os": wide * 128, "activity_counts": "vendor"},
        "samples": [{"type": "heart_rate", "start": start + i, "end": start + i + 60_000,
                     "utc_offset_minutes": -1439, "value": 299.5, "stage": None, "unit": "count/min"}
                    for i in range(samples)],
    }
    return user.encode(), UPLOAD.write(record)


@pytest.mark.parametrize("samples", [1, 1_000, 50_000])
def test_the_bound_holds_for_the_largest_record_and_is_not_loose(samples: int) -> None:
    key, value = largest_record(samples)
    headers = UPLOAD.headers() + [("upload_id", b"x" * 36), ("circadia.idempotency", b"unchecked"),
                                  ("traceparent", b"0" * 55)]
    actual = record_bytes(key, value, headers)
    bound = upload_record_bound(samples)
    assert actual <= bound
    assert bound <= 1.5 * actual + 8192  # within the margin for headers and varints


def test_the_declared_topic_holds_the_documented_maximum() -> None:
    from circadia.topics import SAMPLES_MAX_MESSAGE_BYTES

    assert limit_problem("health.samples.v1", SAMPLES_MAX_MESSAGE_BYTES, 50_000) is None
    problem = limit_problem("health.samples.v1", 1_048_588, 50_000)
    assert problem is not None and "1,048,588" in problem and "CIRCADIA_INGEST_MAX_SAMPLES=50,000" in problem
    fits = max_samples_within(1_048_588)
    assert limit_problem("t", 1_048_588, fits) is None and limit_problem("t", 1_048_588, fits + 1) is not None


@pytest.mark.parametrize(("error", "kind", "too_large"), [
    (MessageSizeTooLargeError(), RecordRefused, True),
    (TopicAuthorizationFailedError(), RecordRefused, False),
    (OutOfOrderSequenceNumber(), RecordRefused, False),
    (NotLeaderForPartitionError(), BrokerUnavailable, False),
    (KafkaTimeoutError(), BrokerUnavailable, False),
])
def test_errors_are_classified_by_whether_a_retry_can_succeed(error: Exception, kind: type,
                                                              too_large: bool) -> None:
    failure = UploadPublisher._classify(error, "health.samples.v1")  # type: ignore[arg-type]
    assert type(failure) is kind
    assert getattr(failure, "too_large", False) is too_large


def body(samples: int, **changes: object) -> bytes:
    start = NOW - timedelta(days=20)
    document = {"upload_id": str(uuid.uuid4()), "device": {"id": "d", "model": "m", "os": "o"},
                "samples": [{"type": "step_count", "start": (start + timedelta(minutes=i)).isoformat(),
                             "end": (start + timedelta(minutes=i + 1)).isoformat(), "value": i % 90,
                             "unit": "count"} for i in range(samples)], **changes}
    return json.dumps(document).encode()


def to_prepare(raw: bytes) -> BodyToPrepare:
    return BodyToPrepare(raw, content_type=JSON, content_encoding=None, limits=BodyLimits(8 << 20, 32 << 20),
                         rules=ValidationRules(now=NOW), user_id="ada", received_at=NOW)


def test_a_rejection_survives_the_trip_from_a_parser_process() -> None:
    rejection = Rejection(422, "invalid_upload", errors=[{"loc": ["samples", 0], "msg": "bad"}],
                          headers={"X": "1"}, samples=3)
    copy = pickle.loads(pickle.dumps(rejection))  # noqa: S301 -- our own bytes, as the pool does
    assert (copy.status, copy.reason, copy.errors, copy.headers, copy.samples) == (
        422, "invalid_upload", [{"loc": ["samples", 0], "msg": "bad"}], {"X": "1"}, 3)


async def test_a_large_body_is_prepared_in_a_parser_process_exactly_as_inline() -> None:
    schemas = Schemas.of(SCHEMAS)
    parsers = UploadParsers(schemas, workers=1, offload_bytes=1024, queue_limit=2)
    await parsers.start()
    try:
        raw = body(500)
        offloaded = await parsers.prepare(to_prepare(raw))
        assert offloaded == prepare(to_prepare(raw), schemas)
        assert offloaded.samples == 500 and offloaded.body_user_id is None
        record = SCHEMAS.decode(offloaded.value, UPLOAD.headers(), UPLOAD)
        assert record["user_id"] == "ada" and len(record["samples"]) == 500
        bad = json.loads(raw)
        bad["samples"][7]["value"] = -1
        with pytest.raises(Rejection) as refused:
            await parsers.prepare(to_prepare(json.dumps(bad).encode()))
        assert refused.value.status == 422 and refused.value.errors == [
            {"loc": ["samples", 7, "value"], "msg": "must be a finite, non-negative number"}]
    finally:
        await parsers.stop()


async def test_large_bodies_that_wait_too_long_for_a_parser_are_refused_as_busy() -> None:
    parsers = UploadParsers(Schemas.of(SCHEMAS), workers=1, offload_bytes=1024, queue_limit=1, wait_seconds=0.05)
    await parsers.start()
    try:
        raw = body(20_000)
        first = asyncio.create_task(parsers.prepare(to_prepare(raw)))
        await asyncio.sleep(0)  # the first takes the only slot
        with pytest.raises(ParsersBusy):
            await parsers.prepare(to_prepare(raw))
        small = await parsers.prepare(to_prepare(body(3)))  # small bodies never queue
        assert small.samples == 3
        assert (await first).samples == 20_000
    finally:
        await parsers.stop()
