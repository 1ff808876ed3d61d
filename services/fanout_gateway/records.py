"""Results as the fan-out handles them: Avro bytes until a socket needs JSON.

The owner of a partition records and publishes each result without decoding it: it reads
only the head of the record — ``prediction_id``, ``user_id`` and ``source_upload_ids``, the
first fields of ``io.circadia.prediction.Prediction`` — which is all that routing and repeat
detection need. The history keeps the Avro bytes with their schema fingerprint, and the
replica that has a connection of the user decodes and renders the result once for all of
them (``Renderer``). Most results have no live connection at all (apps are open a fraction
of the day), so decoding where results are watched rather than where they are consumed is
what keeps a replica's work proportional to its own users.

A writer schema whose first fields are not the head (a future evolution that reorders
them) is read with the full decoder instead: slower, never wrong.

Sealed results (``circadia.sealing``) keep the head readable, so the owner's work is unchanged;
rendering opens them. ``render`` opens inline with a data key cached here and raises ``ColdKey``
otherwise (a sync caller then asks ``render_async``, which fetches the key from OpenBao); a result
of an erased user raises ``ErasedRecord`` and is never rendered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from circadia.avro import HEADER_FINGERPRINT, AvroSchema, Headers, SchemaSet, UnknownSchemaError, header
from circadia.sealing import RecordSeal
from circadia.topics import PREDICTIONS
from circadia.userkeys import Erased, Tampered, UserKeys

HEAD = (("prediction_id", "string"), ("user_id", "string"), ("source_upload_ids", "array"))
# what stays readable of a sealed result (the worker seals with the same routing fields)
ROUTING = ("prediction_id", "user_id", "source_upload_ids", "computed_at", "code_version")


class UnreadableRecord(ValueError):
    """The record cannot be read (truncated, unknown schema, bad text, a sealed content that does
    not authenticate)."""


class ErasedRecord(Exception):
    """The result's user was erased: its content is gone for good."""


class ColdKey(Exception):
    """The result is sealed with a data key not cached here: ``render_async`` fetches it."""


@dataclass(frozen=True)
class Head:
    prediction_id: str
    user_id: str
    sources: list[str]
    fingerprint: str


class Renderer:
    """Reads heads and renders whole results as JSON, for the schemas in ``schemas/``."""

    def __init__(self, schemas: SchemaSet, expected: AvroSchema, keys: UserKeys | None = None) -> None:
        self._schemas = schemas
        self._expected = expected
        self._keys = keys
        self._seal = RecordSeal(schemas, expected, PREDICTIONS, ROUTING)
        self._head_first: dict[str, bool] = {}  # fingerprint → its first fields are HEAD

    def forget(self, user_id: str) -> None:
        """Drop the user's cached data keys (an erasure)."""
        if self._keys is not None:
            self._keys.forget(user_id)

    def head(self, value: bytes, headers: Headers) -> Head:
        raw = header(headers, HEADER_FINGERPRINT)
        if raw is None:
            raise UnreadableRecord(f"no {HEADER_FINGERPRINT} header")
        fingerprint = raw.decode("ascii", "replace")
        if not self._is_head_first(fingerprint):
            record = self.decode(fingerprint, value)
            return Head(str(record["prediction_id"]), record["user_id"], list(record["source_upload_ids"]),
                        fingerprint)
        try:
            prediction_id, at = _string(value, 0)
            user_id, at = _string(value, at)
            sources, _ = _strings(value, at)
        except (IndexError, UnicodeDecodeError) as exc:
            raise UnreadableRecord(f"record head unreadable: {exc!r}") from exc
        return Head(prediction_id, user_id, sources, fingerprint)

    def decode(self, fingerprint: str, value: bytes) -> dict[str, Any]:
        try:
            return self._schemas.decode(value, [(HEADER_FINGERPRINT, fingerprint.encode())], self._expected)
        except UnknownSchemaError as exc:
            raise UnreadableRecord(str(exc)) from exc
        except Exception as exc:  # fastavro raises many types on corrupt input
            raise UnreadableRecord(f"record undecodable: {exc!r}") from exc

    def render(self, fingerprint: str, value: bytes) -> str:
        """The result as JSON (RFC 3339 times, UUIDs as text), as clients receive it; ``ColdKey``
        when it is sealed with a data key not cached here."""
        record = self.decode(fingerprint, value)
        try:
            content = self._seal.open_cached(self._keys, record)
        except Erased as exc:
            raise ErasedRecord(str(exc)) from exc
        except (Tampered, UnknownSchemaError) as exc:
            raise UnreadableRecord(f"sealed result refused: {exc}") from exc
        if content is None:
            raise ColdKey(record["user_id"])
        return _json(content)

    async def render_async(self, fingerprint: str, value: bytes) -> str:
        """``render``, fetching the data key when it is not cached (``KeysUnavailable`` when the
        key service cannot be reached)."""
        record = self.decode(fingerprint, value)
        try:
            return _json(await self._seal.open(self._keys, record))
        except Erased as exc:
            raise ErasedRecord(str(exc)) from exc
        except (Tampered, UnknownSchemaError) as exc:
            raise UnreadableRecord(f"sealed result refused: {exc}") from exc

    def _is_head_first(self, fingerprint: str) -> bool:
        known = self._head_first.get(fingerprint)
        if known is None:
            try:
                writer = self._schemas.writer(fingerprint)
            except UnknownSchemaError as exc:
                raise UnreadableRecord(str(exc)) from exc
            fields = writer.plain["fields"][:len(HEAD)]
            known = [(f["name"], _kind(f["type"])) for f in fields] == list(HEAD) and \
                _kind(fields[2]["type"].get("items")) == "string"
            self._head_first[fingerprint] = known
        return known


def _json(record: dict[str, Any]) -> str:
    record.pop("sealed", None)  # null on every result a client sees
    return orjson.dumps(record).decode()


def _kind(schema: Any) -> str | None:
    if isinstance(schema, str):
        return schema
    if isinstance(schema, dict):
        return str(schema.get("type"))
    return None  # a union: not a head field


def _long(data: bytes, at: int) -> tuple[int, int]:
    """An Avro long (zigzag varint) at ``at``; the value and the next position."""
    shift = result = 0
    while True:
        byte = data[at]
        at += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), at
        shift += 7
        if shift > 63:
            raise IndexError("varint longer than 64 bits")


def _string(data: bytes, at: int) -> tuple[str, int]:
    length, at = _long(data, at)
    if length < 0 or at + length > len(data):
        raise IndexError("string runs past the record")
    return data[at:at + length].decode("utf-8"), at + length


def _strings(data: bytes, at: int) -> tuple[list[str], int]:
    items: list[str] = []
    while True:
        count, at = _long(data, at)
        if count == 0:
            return items, at
        if count < 0:  # a block with its size in bytes after the count
            count = -count
            _, at = _long(data, at)
        for _ in range(count):
            item, at = _string(data, at)
            items.append(item)
