"""Hostile structure, not hostile values: nesting, width, duplicate keys, numbers beyond a double,
broken text encodings, malformed Avro blocks, varints and indexes, and all of it gzipped.

Whatever the shape, ``parse_upload`` must answer with an upload the topic schema encodes, or a
``Rejection`` (413/415/422) whose errors each name a ``loc`` and a ``msg`` and whose response
is JSON; any other exception would leave the gateway as a 500. test_body.py varies the values.
"""

from __future__ import annotations

import copy
import gzip
import io
import json
import math
import re
import struct
import time
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from circadia.avro import SchemaSet
from ingest_gateway.body import AVRO, JSON, MAX_ERRORS, BodyLimits, parse_upload
from ingest_gateway.errors import Rejection
from ingest_gateway.models import SLEEP_STAGES, UploadRequest, ValidationRules

SCHEMAS = SchemaSet.load()
REQUEST = SCHEMAS["io.circadia.health.UploadRequest"]
UPLOAD = SCHEMAS["io.circadia.health.HealthUpload"]
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
RULES = ValidationRules(now=NOW)
LIMITS = BodyLimits(max_bytes=1 << 20, max_decompressed_bytes=1 << 20)
UPLOAD_ID = "7d0c3f9e-4a51-4a39-9d7e-5b8f2c1e0a11"
START_MS = int(datetime(2026, 11, 25, 9, 0, tzinfo=UTC).timestamp() * 1000)
SEEDS = Path(__file__).resolve().parents[2] / "fuzz" / "seeds"
FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Answer = UploadRequest | Rejection


def outcome(raw: bytes, content_type: str = JSON, encoding: str | None = None) -> Answer:
    """The gateway's answer to ``raw``: an upload fit to publish, or a 4xx refusal that says why.
    Any other exception propagates, as it would to the server's 500 handler."""
    try:
        upload = parse_upload(raw, content_type=content_type, content_encoding=encoding, limits=LIMITS,
                              rules=RULES, avro_schema=REQUEST)
    except Rejection as rejection:
        assert rejection.status in (413, 415, 422), rejection
        assert rejection.errors, f"{rejection} without errors"
        for error in rejection.errors:
            assert isinstance(error.get("loc"), list) and isinstance(error.get("msg"), str) and error["msg"], error
        assert json.loads(bytes(rejection.response().body))["error"] == rejection.reason
        return rejection
    UPLOAD.encode(upload.to_record("user", NOW))  # what the gateway publishes
    assert re.fullmatch("[0-9a-f]{64}", upload.digest())
    return upload


def refused(raw: bytes, content_type: str = JSON, encoding: str | None = None, status: int = 422) -> Rejection:
    answer = outcome(raw, content_type, encoding)
    assert isinstance(answer, Rejection), f"accepted: {answer!r}"
    assert answer.status == status, answer.errors
    return answer


def accepted(raw: bytes, content_type: str = JSON, encoding: str | None = None) -> UploadRequest:
    answer = outcome(raw, content_type, encoding)
    assert isinstance(answer, UploadRequest), f"refused: {answer.status} {answer.errors}"
    return answer


def locs(rejection: Rejection) -> list[Any]:
    return [error["loc"] for error in rejection.errors or ()]


def same(first: Answer, second: Answer) -> bool:
    """One answer, however the body arrived: equal uploads, or refusals for the same reasons."""
    if isinstance(first, UploadRequest) and isinstance(second, UploadRequest):
        return first == second and first.digest() == second.digest()
    if isinstance(first, Rejection) and isinstance(second, Rejection):
        return (first.status, first.reason, first.errors) == (second.status, second.reason, second.errors)
    return False


# --- JSON bodies ------------------------------------------------------------------------------

def sample(**fields: object) -> dict[str, object]:
    return {"type": "step_count", "start": "2026-11-25T09:00:00+00:00", "end": "2026-11-25T09:01:00+00:00",
            "value": 30, "unit": "count", **fields}


def request(**fields: object) -> dict[str, object]:
    return {"upload_id": UPLOAD_ID, "device": {"id": "d", "model": "m", "os": "o"}, "samples": [sample()],
            **fields}


def dumps(value: object) -> bytes:
    return json.dumps(value).encode()


HOLE = "\x00hole\x00"  # marks the node to replace: its JSON spelling occurs nowhere else in a body


def with_raw(body: dict[str, Any], path: tuple[str | int, ...], raw: bytes) -> bytes:
    """``body`` with the node at ``path`` (added if missing) replaced by the JSON text ``raw``,
    which may be anything json.dumps would never write: NaN, 10**309, duplicate keys, bad escapes."""
    if not path:
        return raw
    target = copy.deepcopy(body)
    node: Any = target
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = HOLE
    return dumps(target).replace(dumps(HOLE), raw)


def nested(depth: int, kind: str, core: bytes = b"1") -> bytes:
    if kind == "array":
        return b"[" * depth + core + b"]" * depth
    return b'{"a":' * depth + core + b"}" * depth


DEPTHS = [10, 1_000, 100_000]
FIELDS = [("upload_id",), ("user_id",), ("device",), ("device", "id"), ("samples",), ("samples", 0),
          ("samples", 0, "value"), ("samples", 0, "start"), ("samples", 0, "unit")]


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("kind", ["array", "object"])
def test_deep_nesting_as_the_whole_body_is_422(kind: str, depth: int) -> None:
    refused(nested(depth, kind))
    refused((b"[" if kind == "array" else b'{"a":') * depth)  # never closed


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("kind", ["array", "object"])
@pytest.mark.parametrize("path", FIELDS, ids=lambda path: "/".join(map(str, path)))
def test_deep_nesting_inside_a_field_is_422(path: tuple[str | int, ...], kind: str, depth: int) -> None:
    rejection = refused(with_raw(request(), path, nested(depth, kind)))
    if depth == 10:  # within the parser's depth limit: the field itself is refused, by name
        assert any(loc[:len(path)] == list(path) for loc in locs(rejection)), locs(rejection)


def test_alternating_deep_nesting_is_422() -> None:
    refused(b'[{"a":' * 50_000 + b"1" + b"}]" * 50_000)


@pytest.mark.parametrize("path", [(), ("device",), ("samples", 0)], ids=["top", "device", "sample"])
def test_thousands_of_unknown_keys_are_named_up_to_the_error_cap(path: tuple[str | int, ...]) -> None:
    """The first MAX_ERRORS are named, then one line counts the rest: the answer stays small."""
    body = request()
    node: Any = body
    for key in path:
        node = node[key]
    node.update({f"k{i}": i for i in range(5_000)})
    errors = refused(dumps(body)).errors or []
    assert len(errors) == MAX_ERRORS + 1
    assert {error["msg"] for error in errors[:-1]} == {"Extra inputs are not permitted"}
    assert errors[0]["loc"] == [*path, "k0"]
    assert errors[-1] == {"loc": [], "msg": f"and {5_000 - MAX_ERRORS} more errors, not listed"}


def test_wide_arrays_are_422() -> None:
    refused(dumps([None] * 200_000))
    assert locs(refused(dumps(request(samples=[sample(value=list(range(100_000)))])))) == [["samples", 0, "value"]]
    assert locs(refused(dumps(request(samples=[sample()] * 50_001)))) == [["samples"]]
    errors = refused(dumps(request(samples=[0] * 20_000))).errors or []
    assert len(errors) == MAX_ERRORS + 1 and errors[-1]["msg"] == f"and {20_000 - MAX_ERRORS} more errors, not listed"


# duplicate keys: the last occurrence wins, for validation, the record, the digest and the metrics

def duplicated(path: tuple[str | int, ...], first: object, second: object) -> bytes:
    key = json.dumps(path[-1]).encode()
    return with_raw(request(), path, dumps(first) + b", " + key + b": " + dumps(second))


def only(path: tuple[str | int, ...], value: object) -> bytes:
    return with_raw(request(), path, dumps(value))


@pytest.mark.parametrize(("path", "first", "second"), [
    (("upload_id",), "00000000-0000-0000-0000-000000000000", UPLOAD_ID),
    (("device", "id"), "first", "second"),
    (("samples", 0, "value"), 9_999_999, 30),
    (("samples", 0, "type"), "heart_rate", "step_count"),
    (("samples", 0, "start"), "not a time", "2026-11-25T09:00:30Z"),
    (("samples",), [], [sample(), sample(type="activity_count")]),
], ids=["upload_id", "device.id", "value", "type", "start", "samples"])
def test_duplicate_keys_last_one_wins_everywhere(path: tuple[str | int, ...], first: object, second: object) -> None:
    upload = accepted(duplicated(path, first, second))
    alone = accepted(only(path, second))
    assert upload == alone
    assert upload.digest() == alone.digest()
    assert upload.to_record("user", NOW) == alone.to_record("user", NOW)


@pytest.mark.parametrize(("path", "first", "second"), [
    (("samples", 0, "value"), 30, 9_999_999),
    (("samples",), [sample()], []),
    (("device", "id"), "d", ""),
], ids=["value", "samples", "device.id"])
def test_duplicate_keys_refused_for_the_value_that_wins(path: tuple[str | int, ...], first: object,
                                                        second: object) -> None:
    assert refused(duplicated(path, first, second)).errors == refused(only(path, second)).errors


def test_duplicate_samples_are_counted_as_validation_saw_them() -> None:
    bad = sample(value=-1)
    rejection = refused(duplicated(("samples",), [sample()] * 3, [bad]))
    assert rejection.samples == 1  # the rejected-samples metric counts the list that was validated


# numbers beyond a double, and the literals JSON does not have

BIG = "1" + "0" * 309  # 10**309: an integer literal no double holds


@pytest.mark.parametrize(("kind", "literal"), [
    ("step_count", "1e400"), ("step_count", "-1e400"), ("activity_count", "1" + "0" * 5000),
    ("step_count", BIG), ("activity_count", BIG), ("heart_rate", BIG), ("activity_count", "-" + BIG),
    ("activity_count", "9" * 4300), ("step_count", "NaN"), ("step_count", "Infinity"),
    ("step_count", "-Infinity"), ("step_count", "nan"), ("step_count", "inf"), ("step_count", "0x1e"),
    ("step_count", "01"), ("step_count", "+1"), ("step_count", ".5"), ("step_count", "1."), ("step_count", "1e"),
    ("step_count", "--1"), ("step_count", "-"),
], ids=lambda value: value if len(value) < 20 else f"{value[:6]}…({len(value)} chars)")
def test_numbers_no_double_holds_and_non_json_literals_are_422(kind: str, literal: str) -> None:
    unit = {"heart_rate": "count/min"}.get(kind, "count")
    body = request(samples=[sample(type=kind, unit=unit)])
    rejection = refused(with_raw(body, ("samples", 0, "value"), literal.encode()))
    assert locs(rejection) in ([["samples", 0, "value"]], [[]]), locs(rejection)  # the field, or the JSON


@pytest.mark.parametrize(("literal", "stored"), [
    ("1e-400", 0.0), ("-0", 0.0), ("-0.0", 0.0), ("0." + "1" * 5000, 0.1111111111111111),
    ("30.000000000000000000000000001", 30.0), ("1E2", 100.0), ("1" + "0" * 300, 1e300),
    ("1.7976931348623157e308", 1.7976931348623157e308), ("9007199254740993", 9007199254740992.0),
], ids=lambda value: str(value)[:20])
def test_numbers_a_double_holds_are_stored_as_that_double(literal: str, stored: float) -> None:
    body = request(samples=[sample(type="activity_count")])
    upload = accepted(with_raw(body, ("samples", 0, "value"), literal.encode()))
    assert upload.sample_records[0]["value"] == stored


def test_minus_zero_is_stored_as_zero_so_a_respelled_retry_is_the_same_upload() -> None:
    body = request(samples=[sample(type="activity_count")])
    zero = accepted(with_raw(body, ("samples", 0, "value"), b"0"))
    for spelling in (b"-0", b"-0.0", b"0.0", b"0e5"):
        again = accepted(with_raw(body, ("samples", 0, "value"), spelling))
        assert again.digest() == zero.digest()
        assert math.copysign(1.0, again.sample_records[0]["value"]) == 1.0


@pytest.mark.parametrize(("path", "literal"), [
    (("upload_id",), "123"), (("user_id",), "1"), (("device", "id"), "123"), (("device", "id"), "1e400"),
    (("device", "model"), "true"), (("device", "os"), "null"), (("samples", 0, "type"), "1"),
    (("samples", 0, "unit"), "0"), (("samples", 0, "value"), '"30"'), (("samples", 0, "start"), "1e400"),
    (("samples", 0, "start"), "true"), (("samples", 0, "end"), "NaN"),
], ids=lambda value: "/".join(map(str, value)) if isinstance(value, tuple) else value)
def test_numbers_for_strings_and_strings_for_numbers_are_422_at_the_field(path: tuple[str | int, ...],
                                                                         literal: str) -> None:
    assert locs(refused(with_raw(request(), path, literal.encode()))) == [list(path)]


@pytest.mark.parametrize("start", ["1795597200", "1795597200000", '"1795597200"', "1795597200.0"])
def test_a_number_for_a_timestamp_is_read_as_unix_time(start: str) -> None:
    """pydantic's lax datetimes: seconds (or milliseconds above 2e10) since the epoch, UTC."""
    upload = accepted(with_raw(request(), ("samples", 0, "start"), start.encode()))
    assert upload.sample_records[0]["start"] == START_MS
    assert upload.sample_records[0]["utc_offset_minutes"] == 0


# strings: NUL, surrogates, invalid UTF-8, other encodings of the whole body

@pytest.mark.parametrize("device_id", ["d\x00", "\x00", "ü", "日本語の端末", "😀" * 10, "é" * 128, "a\u0301",
                                       "\u202eevil"])
def test_unusual_device_ids_are_kept_as_sent(device_id: str) -> None:
    upload = accepted(dumps(request(device={"id": device_id, "model": "m", "os": "o"})))
    record = upload.to_record("user", NOW)
    assert record["device"]["id"] == device_id
    decoded = SCHEMAS.decode(UPLOAD.encode(record), UPLOAD.headers(), UPLOAD)
    assert decoded["device"]["id"] == device_id


def test_device_id_length_counts_characters() -> None:
    assert locs(refused(dumps(request(device={"id": "😀" * 129, "model": "m", "os": "o"})))) == [["device", "id"]]


@pytest.mark.parametrize("escape", [rb'"\ud800"', rb'"\udc00"', rb'"\ud800x"', rb'"\ud800\ud800"', rb'"\udfff\ud800"',
                                    rb'"\u"', rb'"\ud8"', rb'"\x41"', rb'"\U0001F600"'])
@pytest.mark.parametrize("path", [("device", "id"), ("samples", 0, "unit"), ("user_id",)],
                         ids=lambda path: "/".join(map(str, path)))
def test_lone_surrogates_and_bad_escapes_are_422(path: tuple[str | int, ...], escape: bytes) -> None:
    refused(with_raw(request(), path, escape))


def test_a_lone_surrogate_in_a_key_is_422() -> None:
    refused(b'{"\\ud800": 1, ' + dumps(request())[1:])


def test_an_escaped_surrogate_pair_is_one_character() -> None:
    upload = accepted(with_raw(request(), ("device", "id"), rb'"\ud83d\ude00"'))
    assert upload.device.id == "😀"


@pytest.mark.parametrize("junk", [b"\xc0\x80", b"\xc1\xbf", b"\xe0\x80\x80", b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xff",
                                  b"\xfe", b"\x80", b"\xe2\x82", b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80"],
                         ids=lambda junk: junk.hex())
def test_invalid_utf8_is_422_in_values_keys_and_between_tokens(junk: bytes) -> None:
    body = dumps(request())
    refused(body.replace(b'"d"', b'"' + junk + b'"'))
    refused(body.replace(b'"model"', b'"mo' + junk + b'del"'))
    refused(body.replace(b", ", b"," + junk, 1))


def test_raw_control_characters_in_strings_are_422() -> None:
    refused(dumps(request()).replace(b'"d"', b'"a\x01b"'))
    refused(dumps(request()).replace(b'"d"', b'"a\nb"'))


def test_nul_in_a_closed_set_is_refused() -> None:
    assert locs(refused(dumps(request(samples=[sample(type="step_count\x00")])))) == [["samples", 0, "type"]]


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le",
                                      "utf-32-be"])
def test_a_body_in_another_encoding_is_422_and_declaring_it_415(encoding: str) -> None:
    raw = json.dumps(request()).encode(encoding)
    refused(raw)
    refused(raw, f"application/json; charset={encoding}", status=415)


@pytest.mark.parametrize("raw", [b"", b" ", b" \t\r\n ", b"\x00", b"\x0c{}", b"null", b"0", b"-0", b'"x"', b"true",
                                 b"[]", b"{}", b"[" + dumps(request()) + b"]", dumps(request()) + b" x",
                                 dumps(request()) * 2, dumps(request()) + b"\x00", dumps(request()) + b",",
                                 b"\xef\xbb\xbf"], ids=lambda raw: repr(raw[:12]))
def test_no_upload_object_is_422(raw: bytes) -> None:
    refused(raw)


def test_json_whitespace_around_the_body_is_fine() -> None:
    assert accepted(b" \r\n\t" + dumps(request()) + b"\n ") == accepted(dumps(request()))


def test_every_truncation_of_a_valid_json_body_is_422() -> None:
    body = json.dumps(request(user_id="u", samples=[sample(), sample(type="sleep_analysis", value="awake",
                                                                     unit="stage")]), separators=(",", ":")).encode()
    accepted(body)
    for cut in range(len(body)):
        refused(body[:cut])


# timestamps

@pytest.mark.parametrize(("start", "start_ms", "offset"), [
    ("2026-11-25T09:00:00z", START_MS, 0),
    ("2026-11-25t09:00:00Z", START_MS, 0),
    ("2026-11-25 09:00:00Z", START_MS, 0),
    ("2026-11-25T09:00Z", START_MS, 0),
    ("2026-11-25T09:00:00-00:00", START_MS, 0),
    ("2026-11-25T10:00:00+0100", START_MS, 60),
    ("2026-11-26T08:59:00+23:59", START_MS, 1439),
    ("2026-11-24T09:01:00-23:59", START_MS, -1439),
    ("2026-11-25T09:00:00.123456789012345678901234567890Z", START_MS + 123, 0),
    ("2026-11-25T09:00:00." + "9" * 5000 + "Z", START_MS + 999, 0),
], ids=lambda value: str(value)[:40])
def test_timestamp_spellings_that_are_accepted(start: str, start_ms: int, offset: int) -> None:
    upload = accepted(dumps(request(samples=[sample(start=start, end="2026-11-25T09:01:00Z")])))
    assert upload.sample_records[0]["start"] == start_ms
    assert upload.sample_records[0]["utc_offset_minutes"] == offset


@pytest.mark.parametrize("start", [
    "0000-01-01T00:00:00Z", "0001-01-01T00:00:00Z", "0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59Z",
    "9999-12-31T23:59:59.999999-23:59", "10000-01-01T00:00:00Z", "-0001-01-01T00:00:00Z", "+2026-11-25T09:00:00Z",
    "2026-11-25T09:00:00+24:00", "2026-11-25T09:00:00-24:00", "2026-11-25T09:00:00+25:00",
    "2026-11-25T09:00:00-99:99", "2026-11-25T09:00:00+00:60", "2026-11-25T09:00:00+01",
    "2026-11-25T09:00:00+01:00:30", "2026-11-25T23:59:60Z", "2026-11-24T23:59:60+00:00", "2026-12-31T23:59:60Z",
    "2026-11-25T09:00:00", "2026-11-25", "2026-02-30T09:00:00Z", "2026-11-25T24:00:00Z", " 2026-11-25T09:00:00Z",
    "2026-11-25T09:00:00Z ", "2026-11-25T09:00:00Z\x00", "２０２６-11-25T09:00:00Z", "2026-W48-3T09:00:00Z",
    "20261125T090000Z", "", "9" * 30,
], ids=lambda value: value[:40])
def test_timestamps_out_of_range_or_badly_spelt_are_422_at_the_field(start: str) -> None:
    rejection = refused(dumps(request(samples=[sample(start=start)])))
    assert ["samples", 0, "start"] in locs(rejection), locs(rejection)


def test_an_end_beyond_the_last_representable_instant_is_422() -> None:
    rejection = refused(dumps(request(samples=[sample(end="9999-12-31T23:59:59.999999-23:59")])))
    assert locs(rejection) == [["samples", 0, "end"]]


# upload ids

@pytest.mark.parametrize("spelling", [UPLOAD_ID.upper(), UPLOAD_ID.replace("-", ""), "{" + UPLOAD_ID + "}",
                                      "urn:uuid:" + UPLOAD_ID])
def test_other_uuid_spellings_are_one_upload(spelling: str) -> None:
    upload = accepted(dumps(request(upload_id=spelling)))
    canonical = accepted(dumps(request()))
    assert str(upload.upload_id) == UPLOAD_ID
    assert upload.digest() == canonical.digest()
    assert upload.to_record("user", NOW)["upload_id"] == UPLOAD_ID


@pytest.mark.parametrize("upload_id", ["00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff",
                                       "7d0c3f9e-4a51-0a39-9d7e-5b8f2c1e0a11", "7d0c3f9e-4a51-4a39-1d7e-5b8f2c1e0a11"])
def test_any_128_bit_uuid_is_accepted_whatever_its_version(upload_id: str) -> None:
    assert str(accepted(dumps(request(upload_id=upload_id))).upload_id) == upload_id


@pytest.mark.parametrize("upload_id", [UPLOAD_ID[:-1], UPLOAD_ID + "0", UPLOAD_ID[:-1] + "g", " " + UPLOAD_ID,
                                       UPLOAD_ID + "\n", "７" + UPLOAD_ID[1:], UPLOAD_ID.replace("-", "", 1),
                                       "7d0c-3f9e-4a51-4a39-9d7e-5b8f-2c1e-0a11", "", "x" * 100_000,
                                       "urn:uuid:", UPLOAD_ID + "\x00"], ids=lambda value: repr(value[:20]))
def test_malformed_uuids_are_422_at_the_field(upload_id: str) -> None:
    assert locs(refused(dumps(request(upload_id=upload_id)))) == [["upload_id"]]


# --- Avro bodies, written by hand so that they can be wrong -------------------------------------

def varint(number: int) -> bytes:
    """Avro's zig-zag varint, of any width (a valid long has at most 64 bits: ten bytes)."""
    encoded = number << 1 if number >= 0 else (-number << 1) - 1
    out = bytearray()
    while True:
        byte, encoded = encoded & 0x7F, encoded >> 7
        out.append(byte | 0x80 if encoded else byte)
        if not encoded:
            return bytes(out)


def text(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return varint(len(raw)) + raw


def double(number: float) -> bytes:
    return struct.pack("<d", number)


def avro_sample(kind: int = 1, start: int = START_MS, end: int | None = None, offset: int = 0,
                value: bytes | None = None, stage: bytes | None = None, unit: str | bytes = "count") -> list[bytes]:
    """One Sample's fields, each its own piece so a test can replace any of them."""
    return [varint(kind), varint(start), varint(start + 60_000 if end is None else end), varint(offset),
            varint(1) + double(30.0) if value is None else value,
            varint(0) if stage is None else stage, text(unit)]


def avro_pieces(samples: list[list[bytes]] | None = None, upload_id: str | bytes = UPLOAD_ID,
                user: bytes | None = None, device: tuple[str | bytes, ...] = ("d", "m", "o"),
                counts: bytes = b"\x00") -> list[bytes]:
    samples = [avro_sample()] if samples is None else samples
    # counts: the device's activity_counts enum index (0 = UNKNOWN, 1 = actigraph, 2 = vendor)
    head = [text(upload_id), varint(0) if user is None else user, *(text(field) for field in device), counts]
    block = [varint(len(samples)), *(piece for one in samples for piece in one)] if samples else []
    return [*head, *block, varint(0)]


def avro(samples: list[list[bytes]] | None = None, **fields: Any) -> bytes:
    return b"".join(avro_pieces(samples, **fields))


HEAD = b"".join(avro_pieces([])[:-1])  # upload_id, user_id, device: where the samples array begins
SAMPLE = b"".join(avro_sample())


def test_the_hand_written_encoding_is_fastavros() -> None:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, REQUEST.parsed, {
        "upload_id": UPLOAD_ID, "user_id": None, "device": {"id": "d", "model": "m", "os": "o"},
        "samples": [{"type": "step_count", "start": START_MS, "end": START_MS + 60_000, "utc_offset_minutes": 0,
                     "value": 30.0, "stage": None, "unit": "count"}]})
    assert buffer.getvalue() == avro()
    accepted(avro(), AVRO)


def test_every_truncation_of_a_valid_avro_body_is_422() -> None:
    body = avro([avro_sample(), avro_sample(kind=4, value=varint(0), stage=varint(1) + varint(3), unit="stage")],
                user=varint(1) + text("u"))
    accepted(body, AVRO)
    for cut in range(len(body)):
        assert refused(body[:cut], AVRO).reason == "invalid_avro"


@pytest.mark.parametrize("tail", [b"\x00", b"\x00" * 1000, SAMPLE, avro()], ids=["nul", "nuls", "sample", "body"])
def test_bytes_after_the_record_are_422(tail: bytes) -> None:
    assert refused(avro() + tail, AVRO).reason == "invalid_avro"


@pytest.mark.parametrize("count", [2, 1_000_000, 2**31, 2**62, 2**63 - 1, -(2**62), -(2**63)])
def test_block_counts_beyond_the_body_are_422_without_allocating_them(count: int) -> None:
    started = time.perf_counter()
    size = varint(len(SAMPLE)) if count < 0 else b""
    assert refused(HEAD + varint(count) + size + SAMPLE, AVRO).reason == "invalid_avro"
    assert time.perf_counter() - started < 1


def test_a_negative_block_count_with_its_byte_size_is_the_same_upload() -> None:
    """Avro's blocked arrays: a negative count is followed by the block's size in bytes."""
    plain = accepted(avro([avro_sample(), avro_sample(start=START_MS + 60_000)]), AVRO)
    second = b"".join(avro_sample(start=START_MS + 60_000))
    blocked = HEAD + varint(-1) + varint(len(SAMPLE)) + SAMPLE + varint(-1) + varint(len(second)) + second + varint(0)
    upload = accepted(blocked, AVRO)
    assert upload == plain and upload.digest() == plain.digest()
    assert accepted(HEAD + varint(1) + SAMPLE + varint(1) + second + varint(0), AVRO) == plain


@pytest.mark.parametrize("size", [0, 1, 2**62, -5, -(2**63)])
def test_a_wrong_block_size_never_changes_the_samples(size: int) -> None:
    """The size is a hint for skipping; a reader that ignores it must still read the same samples."""
    answer = outcome(HEAD + varint(-1) + varint(size) + SAMPLE + varint(0), AVRO)
    assert isinstance(answer, Rejection) or same(answer, accepted(avro(), AVRO))


STRINGS = {"upload_id": 0, "device.id": 2, "device.model": 3, "device.os": 4, "unit": 12}


@pytest.mark.parametrize("length", [-1, -5, -(2**62), 1000, 2**40, 2**62, 2**63 - 1])
@pytest.mark.parametrize("where", sorted(STRINGS))
def test_string_lengths_below_zero_or_beyond_the_body_are_422(where: str, length: int) -> None:
    pieces = avro_pieces()
    index = STRINGS[where]
    pieces[index] = varint(length) + pieces[index][1:]  # every string here is shorter than 64 bytes
    assert refused(b"".join(pieces), AVRO).reason == "invalid_avro"


@pytest.mark.parametrize("index", [5, 6, 2**31, 2**62, -6, -(2**62)])
def test_enum_indexes_past_the_symbols_are_422(index: int) -> None:
    assert refused(avro([avro_sample(kind=index)]), AVRO).reason == "invalid_avro"


@pytest.mark.parametrize("index", [-1, -2, -3, -4, -5])
def test_negative_enum_indexes_are_422(index: int) -> None:
    """An index counts from the first symbol; -1 is not the last one (it is byte 0x01 on the wire)."""
    assert refused(avro([avro_sample(kind=index)]), AVRO).reason == "invalid_avro"


def test_the_unknown_type_symbol_is_422_at_the_field() -> None:
    assert locs(refused(avro([avro_sample(kind=0)]), AVRO)) == [["samples", 0, "type"]]


def sleep(stage: bytes) -> list[list[bytes]]:
    return [avro_sample(kind=4, value=varint(0), stage=stage, unit="stage")]


@pytest.mark.parametrize("index", [7, 2**40, -1, -7, -8])
def test_sleep_stage_indexes_outside_the_symbols_are_422(index: int) -> None:
    assert refused(avro(sleep(varint(1) + varint(index))), AVRO).reason == "invalid_avro"


def test_the_unknown_sleep_stage_is_422_at_the_value() -> None:
    assert locs(refused(avro(sleep(varint(1) + varint(0))), AVRO)) == [["samples", 0, "value"]]
    assert accepted(avro(sleep(varint(1) + varint(6))), AVRO).samples[0].value == SLEEP_STAGES[-1]


@pytest.mark.parametrize("branch", [2, 3, 2**62, -1, -2, -3])
@pytest.mark.parametrize("where", ["user_id", "value", "stage"])
def test_union_branches_the_schema_lacks_are_422(where: str, branch: int) -> None:
    """Every union here has two branches, null (0) and a type (1); no other index means anything."""
    if where == "user_id":
        body = avro(user=varint(branch) + text("u"))
    elif where == "value":
        body = avro([avro_sample(value=varint(branch) + double(1.0))])
    else:
        body = avro(sleep(varint(branch) + varint(3)))
    assert refused(body, AVRO).reason == "invalid_avro"


@pytest.mark.parametrize("instant", ["start", "end"])
@pytest.mark.parametrize("wrap", [2**64, -(2**64), 2**70])
def test_varints_wider_than_a_long_are_422(instant: str, wrap: int) -> None:
    """A long has 64 bits; a longer varint must not wrap around into a plausible time."""
    start, end = (START_MS + wrap, START_MS + 60_000) if instant == "start" else (START_MS, START_MS + 60_000 + wrap)
    assert refused(avro([avro_sample(start=start, end=end)]), AVRO).reason == "invalid_avro"


def test_a_varint_that_never_ends_is_422() -> None:
    assert refused(HEAD + b"\xff" * 20 + b"\x01" + SAMPLE + varint(0), AVRO).reason == "invalid_avro"
    refused(b"\xff" * 1000, AVRO)
    refused(b"\x80" * 100_000, AVRO)


@pytest.mark.parametrize("offset", [1440, -1440, 2**31 - 1, -(2**31), 2**31, 2**40, -(2**62)])
def test_offsets_beyond_a_day_or_an_int_are_422(offset: int) -> None:
    refused(avro([avro_sample(offset=offset)]), AVRO)


@pytest.mark.parametrize("offset", [1439, -1439, 330, -570])
def test_offsets_within_a_day_are_kept(offset: int) -> None:
    upload = accepted(avro([avro_sample(offset=offset)]), AVRO)
    assert upload.sample_records[0]["utc_offset_minutes"] == offset
    assert upload.sample_records[0]["start"] == START_MS


LAST_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last instant a datetime holds
FIRST_MS = -62_135_596_800_000  # 0001-01-01T00:00:00Z


@pytest.mark.parametrize("instant", [2**63 - 1, -(2**63), 2**62, -(2**62), LAST_MS, LAST_MS + 1, FIRST_MS,
                                     FIRST_MS - 1, 0, -1])
@pytest.mark.parametrize("where", ["start", "end", "both"])
def test_timestamps_at_the_ends_of_a_long_are_422(where: str, instant: int) -> None:
    start = instant if where in ("start", "both") else START_MS
    end = instant if where in ("end", "both") else START_MS + 60_000
    refused(avro([avro_sample(start=start, end=end)]), AVRO)


@pytest.mark.parametrize(("instant", "offset"), [(LAST_MS, 1439), (FIRST_MS, -1439), (LAST_MS, -1439),
                                                 (FIRST_MS, 1439)])
def test_offsets_that_push_the_local_time_past_a_datetime_are_422(instant: int, offset: int) -> None:
    refused(avro([avro_sample(start=instant, end=instant, offset=offset)]), AVRO)


@pytest.mark.parametrize("junk", [b"\xed\xa0\x80", b"\xc0\x80", b"\xff", b"\xf4\x90\x80\x80", b"\x80", b"\xe2\x82"],
                         ids=lambda junk: junk.hex())
@pytest.mark.parametrize("where", ["upload_id", "user_id", "device", "unit"])
def test_invalid_utf8_in_avro_strings_is_422(where: str, junk: bytes) -> None:
    if where == "upload_id":
        body = avro(upload_id=junk)
    elif where == "user_id":
        body = avro(user=varint(1) + text(junk))
    elif where == "device":
        body = avro(device=(b"d" + junk, "m", "o"))
    else:
        body = avro([avro_sample(unit=junk)])
    assert refused(body, AVRO).reason == "invalid_avro"


@pytest.mark.parametrize("upload_id", ["", "not-a-uuid", UPLOAD_ID[:-1], UPLOAD_ID + "0"])
def test_avro_upload_ids_that_are_not_uuids_are_422(upload_id: str) -> None:
    refused(avro(upload_id=upload_id), AVRO)


def test_avro_upload_id_spellings_are_one_upload() -> None:
    canonical = accepted(avro(), AVRO)
    for spelling in (UPLOAD_ID.upper(), UPLOAD_ID.replace("-", ""), "urn:uuid:" + UPLOAD_ID):
        assert accepted(avro(upload_id=spelling), AVRO).digest() == canonical.digest()


def test_no_samples_and_too_many_samples_are_422() -> None:
    assert locs(refused(avro([]), AVRO)) == [["samples"]]
    assert locs(refused(avro([avro_sample()] * 50_001), AVRO)) == [["samples"]]


def test_an_avro_body_sent_as_json_and_a_json_body_sent_as_avro_are_422() -> None:
    refused(avro(), JSON)
    refused(dumps(request()), AVRO)


HOSTILE_VARINTS = st.sampled_from([0, 1, -1, -2, 5, 7, 2**31 - 1, -(2**31), 2**31, 2**62, -(2**62), 2**63 - 1,
                                   -(2**63), 2**64, 2**70, LAST_MS + 1, FIRST_MS - 1]) | st.integers(-(2**70), 2**70)


@st.composite
def hostile_avro(draw: st.DrawFn) -> bytes:
    """A request written piece by piece (every varint, string and union its own piece), of which
    a few are replaced by hostile varints or bytes, cut, dropped or repeated."""
    samples = draw(st.lists(st.sampled_from([
        avro_sample(), avro_sample(kind=3, value=varint(1) + double(60.0), unit="count/min"),
        avro_sample(kind=4, value=varint(0), stage=varint(1) + varint(2), unit="stage"),
        avro_sample(kind=2, offset=-300, value=varint(1) + double(0.0))]), max_size=3))
    pieces = avro_pieces(samples, user=draw(st.sampled_from([varint(0), varint(1) + text("u")])))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(pieces) - 1))
        action = draw(st.sampled_from(["varint", "bytes", "cut", "drop", "repeat", "length"]))
        if action == "varint":
            pieces[at] = varint(draw(HOSTILE_VARINTS))
        elif action == "bytes":
            pieces[at] = draw(st.binary(max_size=12))
        elif action == "cut":
            pieces[at] = pieces[at][:draw(st.integers(0, len(pieces[at])))]
        elif action == "drop":
            del pieces[at]
        elif action == "repeat":
            pieces.insert(at, pieces[at])
        else:  # the piece keeps its bytes and gets a hostile length or count in front
            pieces.insert(at, varint(draw(HOSTILE_VARINTS)))
        if not pieces:
            break
    return b"".join(pieces)


@FAST
@given(raw=hostile_avro())
def test_structurally_hostile_avro_is_parsed_or_refused(raw: bytes) -> None:
    outcome(raw, AVRO)


@FAST
@given(raw=st.binary(max_size=256) | st.builds(lambda head, tail: head + tail, st.just(HEAD), st.binary(max_size=64)))
def test_random_bytes_as_avro_are_parsed_or_refused(raw: bytes) -> None:
    outcome(raw, AVRO)


# --- gzip ---------------------------------------------------------------------------------------

HOSTILE = [
    pytest.param(nested(1_000, "array"), JSON, id="json-nested-1000"),
    pytest.param(nested(100_000, "object"), JSON, id="json-nested-100000"),
    pytest.param(with_raw(request(), ("samples", 0, "value"), nested(5_000, "array")), JSON, id="json-nested-value"),
    pytest.param(dumps(request(**{f"k{i}": i for i in range(2_000)})), JSON, id="json-wide"),
    pytest.param(duplicated(("device", "id"), "first", "second"), JSON, id="json-duplicate-key"),
    pytest.param(with_raw(request(), ("samples", 0, "value"), BIG.encode()), JSON, id="json-int-beyond-double"),
    pytest.param(with_raw(request(), ("samples", 0, "value"), b"NaN"), JSON, id="json-nan"),
    pytest.param(with_raw(request(), ("device", "id"), rb'"\ud800"'), JSON, id="json-lone-surrogate"),
    pytest.param(json.dumps(request()).encode("utf-16"), JSON, id="json-utf16"),
    pytest.param(b"\xef\xbb\xbf" + dumps(request()), JSON, id="json-bom"),
    pytest.param(b"", JSON, id="json-empty"),
    pytest.param(dumps(request())[:-7], JSON, id="json-truncated"),
    pytest.param(dumps(request()), JSON, id="json-valid"),
    pytest.param(avro(), AVRO, id="avro-valid"),
    pytest.param(b"", AVRO, id="avro-empty"),
    pytest.param(avro()[:-3], AVRO, id="avro-truncated"),
    pytest.param(HEAD + varint(2**62) + SAMPLE, AVRO, id="avro-huge-count"),
    pytest.param(HEAD + varint(-1) + varint(len(SAMPLE)) + SAMPLE + varint(0), AVRO, id="avro-negative-count"),
    pytest.param(avro([avro_sample(kind=-1)]), AVRO, id="avro-negative-enum"),
    pytest.param(avro([avro_sample(value=varint(-1) + double(1.0))]), AVRO, id="avro-negative-union"),
    pytest.param(avro([avro_sample(start=2**63 - 1)]), AVRO, id="avro-long-max"),
    pytest.param(avro() + b"\x00", AVRO, id="avro-trailing"),
]


@pytest.mark.parametrize(("raw", "content_type"), HOSTILE)
def test_gzip_changes_nothing_but_the_bytes_on_the_wire(raw: bytes, content_type: str) -> None:
    plain = outcome(raw, content_type)
    assert same(outcome(gzip.compress(raw), content_type, "gzip"), plain)
    step = max(7, len(raw) // 8 + 1)  # a few members, cut anywhere (even inside a token)
    members = b"".join(gzip.compress(raw[i:i + step]) for i in range(0, len(raw), step)) or gzip.compress(b"")
    assert same(outcome(members, content_type, "gzip"), plain)


def test_every_truncation_of_a_gzip_body_is_422() -> None:
    body = gzip.compress(dumps(request()))
    for cut in range(len(body)):
        refused(body[:cut], JSON, "gzip")


@pytest.mark.parametrize("tail", [b"\x00" * 8, b"garbage", b"\x1f", b"\x1f\x8b", gzip.compress(b"x")[:-4]],
                         ids=["zero-padding", "garbage", "half-magic", "magic", "truncated-member"])
def test_anything_but_a_whole_member_after_a_member_is_422(tail: bytes) -> None:
    assert refused(gzip.compress(dumps(request())) + tail, JSON, "gzip").reason == "invalid_gzip"


def test_only_one_layer_of_gzip_is_undone() -> None:
    refused(gzip.compress(gzip.compress(dumps(request()))), JSON, "gzip")
    refused(gzip.compress(b""), JSON, "gzip")


def bomb(size: int) -> bytes:
    """``size`` zero bytes, gzipped a megabyte at a time (a thousandfold smaller)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = bytes(min(size, 1 << 20))
    parts = [packer.compress(chunk[:min(len(chunk), size - done)]) for done in range(0, size, len(chunk))]
    return b"".join(parts) + packer.flush()


def test_a_gzip_bomb_within_the_limit_is_only_as_big_as_the_limit() -> None:
    within = gzip.compress(b" " * LIMITS.max_decompressed_bytes)
    assert refused(within, JSON, "gzip").reason == "invalid_upload"  # all of it read, then found empty
    over = gzip.compress(b" " * (LIMITS.max_decompressed_bytes + 1))
    assert refused(over, JSON, "gzip", status=413).reason == "decompressed_body_too_large"


def test_a_gzip_bomb_over_the_limit_is_413_before_it_is_inflated() -> None:
    raw = bomb(64 << 20)
    assert len(raw) < LIMITS.max_bytes
    started = time.perf_counter()
    refused(raw, JSON, "gzip", status=413)
    assert time.perf_counter() - started < 1


def test_a_gzip_bomb_split_over_members_is_413() -> None:
    half = gzip.compress(b" " * (LIMITS.max_decompressed_bytes // 2 + 1))
    refused(half + half, JSON, "gzip", status=413)
    refused(bomb(1 << 20) * 3, AVRO, "gzip", status=413)


def test_many_empty_gzip_members_take_time_in_proportion_to_the_body() -> None:
    """A 2 MiB body of 20-byte empty members: linear work is a few hundredths of a second; work
    that grows with members × remaining bytes takes seconds here and minutes at the 8 MiB limit."""
    raw = gzip.compress(b"", mtime=0) * ((2 << 20) // 20)
    started = time.perf_counter()
    outcome(raw, JSON, "gzip")
    assert time.perf_counter() - started < 1.5


# --- properties: random structure anywhere in a valid body ------------------------------------

KEYS = st.sampled_from(["upload_id", "user_id", "device", "samples", "type", "start", "end", "value", "unit", "id",
                        "model", "os"]) | st.text(max_size=6)
SCALARS = st.one_of(
    st.sampled_from([b"null", b"true", b"false", b"0", b"-0", b"-0.0", b"1e400", b"-1e400", b"1e-400", b"NaN",
                     b"Infinity", b"-Infinity", BIG.encode(), b"9" * 4301, rb'"\ud800"', rb'"\u0000"', b'""',
                     b'"2026-11-25T09:00:00Z"', b'"23:59:60"', b'"asleep_deep"', b'"count"', dumps(UPLOAD_ID)]),
    st.integers().map(lambda number: str(number).encode()),
    st.floats().map(lambda number: json.dumps(number).encode()),
    st.text(max_size=12).map(dumps),
    st.binary(max_size=4).map(lambda junk: b'"' + junk.replace(b'"', b"") + b'"'),
)


def _array(items: list[bytes]) -> bytes:
    return b"[" + b",".join(items) + b"]"


def _object(pairs: list[tuple[str, bytes]]) -> bytes:  # keys may repeat: duplicates on purpose
    return b"{" + b",".join(dumps(key) + b":" + value for key, value in pairs) + b"}"


STRUCTURE = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5).map(_array),
        st.lists(st.tuples(KEYS, inner), max_size=5).map(_object),
        st.tuples(st.integers(1, 3_000), st.sampled_from(["array", "object"]), inner).map(
            lambda args: nested(*args)),
    ),
    max_leaves=25,
)
PATHS = st.sampled_from([(), *FIELDS, ("device", "model"), ("device", "os"), ("device", "extra"),
                         ("samples", 0, "type"), ("samples", 0, "end"), ("samples", 0, "extra"), ("extra",)])


@FAST
@given(raw=STRUCTURE)
def test_any_structure_as_the_body_is_parsed_or_refused(raw: bytes) -> None:
    outcome(raw)


@FAST
@given(path=PATHS, replacement=STRUCTURE)
def test_any_structure_in_any_node_of_a_valid_body_is_parsed_or_refused(path: tuple[str | int, ...],
                                                                        replacement: bytes) -> None:
    raw = with_raw(request(), path, replacement)
    plain = outcome(raw)
    assert same(outcome(gzip.compress(raw), JSON, "gzip"), plain)


@FAST
@given(data=st.data())
def test_any_structure_in_place_of_many_nodes_is_parsed_or_refused(data: st.DataObject) -> None:
    body = dumps(request(samples=[sample()] * 3))
    for _ in range(data.draw(st.integers(1, 4))):  # splice structure over a random span of the text
        start = data.draw(st.integers(0, len(body)))
        end = data.draw(st.integers(start, min(len(body), start + 40)))
        body = body[:start] + data.draw(STRUCTURE) + body[end:]
    outcome(body)


# --- the fuzzer's seeds -------------------------------------------------------------------------

HARNESS_TYPES = [JSON, AVRO, "application/json; charset=utf-8"]
HARNESS_ENCODINGS = [None, "gzip", "identity"]


def harness_input(data: bytes) -> tuple[bytes, str, str | None]:
    """What fuzz/upload_body.py makes of ``data``: atheris takes each pick from the *end* (one byte
    modulo the choices; the content type first, then the encoding) and the body from the front."""
    rest = bytearray(data)
    content_type = HARNESS_TYPES[rest.pop() % 3] if rest else HARNESS_TYPES[0]
    encoding = HARNESS_ENCODINGS[rest.pop() % 3] if rest else HARNESS_ENCODINGS[0]
    return bytes(rest), content_type, encoding


@pytest.mark.parametrize("seed", sorted(SEEDS.iterdir()), ids=lambda path: path.name)
def test_fuzz_seeds_are_parsed_or_refused(seed: Path) -> None:
    assert seed.stat().st_size < 64 << 10
    outcome(*harness_input(seed.read_bytes()))
