"""From request bytes to a validated upload: size limits, decompression, JSON or Avro.

Everything here is pure except ``read_limited``; every failure is a ``Rejection`` with
its status (413 too large, 415 unsupported type or encoding, 422 invalid content).
"""

from __future__ import annotations

import io
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta, timezone
from typing import Any, cast

import fastavro
from pydantic import ValidationError
from pydantic_core import from_json

from circadia.avro import AvroSchema
from ingest_gateway.errors import Rejection
from ingest_gateway.models import UploadRequest, ValidationRules

JSON = "application/json"
AVRO = "application/vnd.circadia.upload.v1+avro"
MEDIA_TYPES = (JSON, AVRO)
MAX_GZIP_MEMBERS = 64  # clients send one; each member costs a copy of the rest of the body


@dataclass(frozen=True)
class BodyLimits:
    max_bytes: int
    max_decompressed_bytes: int


def check_declared_length(declared_length: str | None, limit: int) -> None:
    """413 for a ``Content-Length`` over ``limit``, before a byte of the body is read."""
    if declared_length is not None and declared_length.isdigit() and int(declared_length) > limit:
        raise Rejection(413, "body_too_large", errors=[{"loc": ["body"], "msg": f"over {limit} bytes"}])


async def read_limited(chunks: AsyncIterator[bytes], declared_length: str | None, limit: int) -> bytes:
    """Read at most ``limit`` bytes, refusing as soon as more arrive (413 before parsing)."""
    check_declared_length(declared_length, limit)
    buffer, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise Rejection(413, "body_too_large", errors=[{"loc": ["body"], "msg": f"over {limit} bytes"}])
        buffer.append(chunk)
    return b"".join(buffer)


def media_type(content_type: str | None) -> str:
    """The media type, refusing anything but the accepted ones (and charsets other than UTF-8)."""
    kind, _, params = (content_type or "").partition(";")
    kind = kind.strip().lower()
    if kind not in MEDIA_TYPES:
        raise Rejection(415, "unsupported_media_type",
                        errors=[{"loc": ["header", "content-type"], "msg": f"use {' or '.join(MEDIA_TYPES)}"}])
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise Rejection(415, "unsupported_charset",
                            errors=[{"loc": ["header", "content-type"], "msg": "charset must be utf-8"}])
    return kind


def decompress(raw: bytes, content_encoding: str | None, limit: int) -> bytes:
    """Undo ``Content-Encoding: gzip`` without ever holding more than ``limit`` bytes (zip bombs → 413)."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding == "identity":
        return raw
    if encoding not in ("gzip", "x-gzip"):
        raise Rejection(415, "unsupported_content_encoding",
                        errors=[{"loc": ["header", "content-encoding"], "msg": "use gzip or identity"}])
    out = bytearray()
    data = raw
    members = 0
    try:
        while data:  # a gzip stream may hold several members
            members += 1
            if members > MAX_GZIP_MEMBERS:
                raise Rejection(422, "invalid_gzip",
                                errors=[{"loc": ["body"], "msg": f"more than {MAX_GZIP_MEMBERS} gzip members"}])
            inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            out += inflater.decompress(data, limit + 1 - len(out))
            while inflater.unconsumed_tail and len(out) <= limit:
                out += inflater.decompress(inflater.unconsumed_tail, limit + 1 - len(out))
            if len(out) > limit:
                raise Rejection(413, "decompressed_body_too_large",
                                errors=[{"loc": ["body"], "msg": f"over {limit} bytes once decompressed"}])
            if not inflater.eof:
                raise Rejection(422, "invalid_gzip", errors=[{"loc": ["body"], "msg": "truncated gzip stream"}])
            data = inflater.unused_data
    except zlib.error as exc:
        raise Rejection(422, "invalid_gzip", errors=[{"loc": ["body"], "msg": f"not gzip: {exc}"}]) from None
    return bytes(out)


MAX_ERRORS = 100  # listed per refusal: a body of 100,000 unknown keys must not get a 6 MB answer


def _pydantic_errors(exc: ValidationError) -> list[dict[str, object]]:
    errors: list[dict[str, object]] = [
        {"loc": list(error["loc"]), "msg": error["msg"].removeprefix("Value error, ")}
        for error in exc.errors(include_url=False, include_input=False)[:MAX_ERRORS]
    ]
    if exc.error_count() > MAX_ERRORS:
        errors.append({"loc": [], "msg": f"and {exc.error_count() - MAX_ERRORS} more errors, not listed"})
    return errors


def _long(buffer: io.BytesIO) -> int:
    """A zig-zag varint of at most ten bytes and 64 bits, as Avro's long is (fastavro wraps wider ones)."""
    result = 0
    for shift in range(0, 70, 7):
        byte = buffer.read(1)
        if not byte:
            raise EOFError("varint beyond the body")
        result |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            if result >> 64:
                raise OverflowError("varint wider than 64 bits")
            return (result >> 1) ^ -(result & 1)
    raise OverflowError("varint longer than ten bytes")


def _check_wire(buffer: io.BytesIO, schema: Any) -> None:
    """Walk the bytes as ``schema`` lays them out, refusing what fastavro reads leniently: an enum
    or union index below zero (a Python list counts it from the end), a varint wider than a long,
    an int beyond 32 bits, a negative length or block size."""
    if isinstance(schema, list):  # a union: the branch's index, then the branch
        branch = _long(buffer)
        if not 0 <= branch < len(schema):
            raise IndexError(f"union branch {branch}")
        _check_wire(buffer, schema[branch])
        return
    kind = schema["type"] if isinstance(schema, dict) else schema
    if kind == "record":
        for field in schema["fields"]:
            _check_wire(buffer, field["type"])
    elif kind == "array":
        while count := _long(buffer):
            if count < 0:  # a block that gives its size in bytes
                count = -count
                if _long(buffer) < 0:
                    raise ValueError("negative block size")
            for _ in range(count):
                _check_wire(buffer, schema["items"])
    elif kind == "enum":
        index = _long(buffer)
        if not 0 <= index < len(schema["symbols"]):
            raise IndexError(f"enum index {index}")
    elif kind in ("string", "bytes"):
        size = _long(buffer)
        if size < 0 or len(buffer.read(size)) != size:
            raise EOFError("string beyond the body")
    elif kind in ("int", "long"):
        value = _long(buffer)
        if kind == "int" and not -(1 << 31) <= value < 1 << 31:
            raise OverflowError("int wider than 32 bits")
    elif kind == "double":
        if len(buffer.read(8)) != 8:
            raise EOFError("double beyond the body")
    elif kind != "null":
        raise TypeError(f"no wire check for {kind}")


def _from_avro(raw: bytes, schema: AvroSchema) -> dict[str, Any]:
    """The Avro request as the same structure the JSON body has (local-time timestamps)."""
    buffer = io.BytesIO(raw)
    try:
        _check_wire(io.BytesIO(raw), schema.parsed)
        record = cast(dict[str, Any], fastavro.schemaless_reader(buffer, schema.parsed))  # a record schema
    except Exception as exc:  # hostile bytes surface as many exception types; all mean "not this schema"
        raise Rejection(422, "invalid_avro",
                        errors=[{"loc": ["body"], "msg": f"not a {schema.name}: {type(exc).__name__}"}]) from None
    if buffer.tell() != len(raw):
        raise Rejection(422, "invalid_avro", errors=[{"loc": ["body"], "msg": "trailing bytes after the record"}])
    samples = []
    for index, sample in enumerate(record["samples"]):
        try:
            tz = timezone(timedelta(minutes=sample["utc_offset_minutes"]))
            start, end = sample["start"].astimezone(tz), sample["end"].astimezone(tz)
        except (ValueError, OverflowError):
            raise Rejection(422, "invalid_upload", errors=[{
                "loc": ["samples", index, "utc_offset_minutes"],
                "msg": "offset must be within ±24 hours of a representable time"}]) from None
        sleep = sample["type"] == "sleep_analysis"
        samples.append({
            "type": sample["type"],
            "start": start,
            "end": end,
            "value": sample["stage"] if sleep else sample["value"],
            "unit": sample["unit"],
        })
    device = dict(record["device"])
    if device.get("activity_counts") == "UNKNOWN":  # Avro's fallback symbol is the API's "unknown"
        device["activity_counts"] = "unknown"
    upload = {"upload_id": str(record["upload_id"]), "device": device, "samples": samples}
    if record["user_id"] is not None:
        upload["user_id"] = record["user_id"]
    return upload


def parse_upload(raw: bytes, *, content_type: str | None, content_encoding: str | None,
                 limits: BodyLimits, rules: ValidationRules, avro_schema: AvroSchema) -> UploadRequest:
    """Bytes as received (already within ``limits.max_bytes``) → a validated upload."""
    kind = media_type(content_type)
    body = decompress(raw, content_encoding, limits.max_decompressed_bytes)
    try:
        if kind == AVRO:
            return UploadRequest.validate_python(_from_avro(body, avro_schema), rules)
        return UploadRequest.validate_json(body, rules)
    except ValidationError as exc:
        raise Rejection(422, "invalid_upload", errors=_pydantic_errors(exc),
                        samples=_count_samples(body, kind)) from None


def _count_samples(body: bytes, kind: str) -> int:
    """How many samples a refused JSON body held (for the rejected-samples metric); 0 if unknown.
    Read by the parser that validated it, so nesting limits, duplicate keys and encodings agree."""
    if kind != JSON:
        return 0
    try:
        samples = from_json(body).get("samples")
    except (ValueError, AttributeError):
        return 0
    return len(samples) if isinstance(samples, list) else 0
