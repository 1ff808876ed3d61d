"""Request bytes → upload: media types, gzip limits, JSON and Avro, and properties over any input."""

from __future__ import annotations

import gzip
import io
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from circadia.avro import SchemaSet
from ingest_gateway.body import (
    AVRO,
    JSON,
    BodyLimits,
    decompress,
    media_type,
    parse_upload,
)
from ingest_gateway.errors import Rejection
from ingest_gateway.models import SLEEP_STAGES, UNITS, UploadRequest, ValidationRules

SCHEMAS = SchemaSet.load()
REQUEST = SCHEMAS["io.circadia.health.UploadRequest"]
UPLOAD = SCHEMAS["io.circadia.health.HealthUpload"]
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
RULES = ValidationRules(now=NOW)
LIMITS = BodyLimits(max_bytes=1 << 20, max_decompressed_bytes=1 << 16)


def parse(raw: bytes, content_type: str = JSON, encoding: str | None = None) -> UploadRequest:
    return parse_upload(raw, content_type=content_type, content_encoding=encoding, limits=LIMITS,
                        rules=RULES, avro_schema=REQUEST)


def json_body() -> dict:
    start = NOW - timedelta(hours=3)
    return {"upload_id": str(uuid.uuid4()), "device": {"id": "d", "model": "m", "os": "o"},
            "samples": [{"type": "step_count", "start": start.astimezone(timezone(timedelta(hours=-5))).isoformat(),
                         "end": (start + timedelta(minutes=1)).isoformat(), "value": 30, "unit": "count"}]}


@pytest.mark.parametrize("header", ["application/json", "Application/JSON; charset=UTF-8",
                                    'application/json; charset="utf-8"', AVRO])
def test_accepted_media_types(header: str) -> None:
    assert media_type(header) in (JSON, AVRO)


@pytest.mark.parametrize("header", [None, "", "text/plain", "application/json; charset=latin-1",
                                    "application/x-www-form-urlencoded", "application/vnd.circadia.upload.v2+avro"])
def test_other_media_types_are_415(header: str | None) -> None:
    with pytest.raises(Rejection) as error:
        media_type(header)
    assert error.value.status == 415


def test_gzip_including_several_members() -> None:
    assert decompress(gzip.compress(b"abc") + gzip.compress(b"def"), "gzip", 100) == b"abcdef"
    assert decompress(b"plain", None, 100) == b"plain"
    assert decompress(b"plain", "identity", 100) == b"plain"


@pytest.mark.parametrize(("raw", "encoding", "status"), [
    (gzip.compress(b"x" * 101), "gzip", 413),
    (gzip.compress(b"x" * 50) + gzip.compress(b"y" * 51), "gzip", 413),
    (gzip.compress(b"abc")[:-6], "gzip", 422),
    (b"not gzip at all", "gzip", 422),
    (b"{}", "deflate", 415),
    (b"{}", "br", 415),
])
def test_gzip_failures(raw: bytes, encoding: str, status: int) -> None:
    with pytest.raises(Rejection) as error:
        decompress(raw, encoding, 100)
    assert error.value.status == status


def test_avro_and_json_bodies_yield_the_same_upload() -> None:
    body = json_body()
    from_json = parse(json.dumps(body).encode())
    request = {"upload_id": body["upload_id"], "user_id": None, "device": body["device"],
               "samples": from_json.sample_records}
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, REQUEST.parsed, request)
    from_avro = parse(buffer.getvalue(), AVRO)
    assert from_avro == from_json
    assert from_avro.digest() == from_json.digest()  # one idempotency digest for both encodings


def test_avro_with_trailing_bytes_is_422() -> None:
    body = json_body()
    records = parse(json.dumps(body).encode()).sample_records
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, REQUEST.parsed, {
        "upload_id": body["upload_id"], "user_id": None, "device": body["device"], "samples": records})
    with pytest.raises(Rejection) as error:
        parse(buffer.getvalue() + b"\x00", AVRO)
    assert error.value.status == 422 and error.value.reason == "invalid_avro"


def test_request_schema_shares_device_and_sample_with_the_topic_record() -> None:
    def field(schema: dict, name: str) -> object:
        return next(f for f in json.loads(schema.path.read_text())["fields"] if f["name"] == name)

    for name in ("device", "samples"):
        assert field(REQUEST, name) == field(UPLOAD, name)


# --- properties: whatever arrives, the answer is an upload or a 4xx refusal, never a crash ---

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


def _refused_or_parsed(raw: bytes, content_type: str, encoding: str | None) -> None:
    try:
        parse(raw, content_type, encoding)
    except Rejection as rejection:
        assert rejection.status in (413, 415, 422)
        assert rejection.errors is None or all({"loc", "msg"} <= set(e) for e in rejection.errors)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.binary(max_size=512), content_type=st.sampled_from([JSON, AVRO, "text/plain"]),
       encoding=st.sampled_from([None, "gzip", "identity", "br"]))
def test_any_bytes_are_parsed_or_refused(raw: bytes, content_type: str, encoding: str | None) -> None:
    _refused_or_parsed(raw, content_type, encoding)


@settings(max_examples=300)
@given(value=json_values)
def test_any_json_is_parsed_or_refused(value: object) -> None:
    _refused_or_parsed(json.dumps(value).encode(), JSON, None)


field_values = json_values | st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat())


@settings(max_examples=300)
@given(data=st.data())
def test_mutated_valid_bodies_are_parsed_or_refused(data: st.DataObject) -> None:
    body = json_body()
    target = data.draw(st.sampled_from(["upload_id", "device", "samples", "type", "start", "end", "value", "unit"]))
    replacement = data.draw(field_values)
    if target in ("upload_id", "device", "samples"):
        body[target] = replacement
    else:
        body["samples"][0][target] = replacement
    _refused_or_parsed(json.dumps(body).encode(), JSON, None)


samples = st.builds(
    lambda kind, minutes_ago, length, number, stage, offset: {
        "type": kind,
        "start": (NOW - timedelta(minutes=minutes_ago)).astimezone(timezone(timedelta(minutes=offset))).isoformat(),
        "end": (NOW - timedelta(minutes=minutes_ago - length)).isoformat(),
        "value": stage if kind == "sleep_analysis" else number,
        "unit": UNITS[kind],
    },
    kind=st.sampled_from(sorted(UNITS)),
    minutes_ago=st.integers(min_value=600, max_value=29 * 1440),
    length=st.integers(min_value=0, max_value=600),
    number=st.floats(min_value=20, max_value=300),
    stage=st.sampled_from(SLEEP_STAGES),
    offset=st.integers(min_value=-14 * 60, max_value=14 * 60),
)


@settings(max_examples=200)
@given(chosen=st.lists(samples, min_size=1, max_size=10))
def test_every_accepted_upload_encodes_with_the_topic_schema(chosen: list[dict]) -> None:
    body = {"upload_id": str(uuid.uuid4()), "device": {"id": "d", "model": "m", "os": "o"}, "samples": chosen}
    upload = parse(json.dumps(body).encode())
    record = upload.to_record("user", NOW)
    decoded = SCHEMAS.decode(UPLOAD.encode(record), UPLOAD.headers(), UPLOAD)
    assert [s["value"] for s in decoded["samples"]] == [s["value"] for s in record["samples"]]
    assert [s["start"] for s in decoded["samples"]] == [  # epoch milliseconds, read back as UTC instants
        datetime.fromtimestamp(s["start"] / 1000, UTC) for s in record["samples"]]
    assert [s["start"] for s in decoded["samples"]] == [
        sample.start.replace(microsecond=sample.start.microsecond // 1000 * 1000) for sample in upload.samples]
