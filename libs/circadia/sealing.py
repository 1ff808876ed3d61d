"""Records sealed per user: the health content of a topic record encrypted with the user's data key.

A sealed record is an ordinary record of its schema (so the topic's schema, its fingerprint header
and the compatibility rules stay as they are) in which:

- the **routing fields** (the ids, the user, the times a consumer routes and orders by) keep their
  values: partitioning, idempotency, the fan-out's head-only reads and tracing work on them unopened;
- every other field holds a **placeholder**: its default, or the empty value of its type (``""``,
  ``0``, ``[]``, ``{}``, a record of placeholders);
- ``sealed`` holds the whole record, Avro-encoded and encrypted (``circadia.userkeys``: AES-256-GCM,
  associated data = format, topic and user), with the fingerprint of the schema it was written with.

Opening decrypts, decodes the content with its own writer schema and checks that its routing fields
are the envelope's: a sealed content moved under another record of the same user fails like a
tampered one. A record with ``sealed`` null is a plaintext record (written before sealing, or by a
development stack without a key service) and opens as itself; ``circadia_sealing_total`` counts both
kinds, so an operator sees plaintext still arriving.

Errors are those of :mod:`circadia.userkeys`: ``KeysUnavailable`` (retry), ``Erased`` (the user's key
is gone: the content is erased, for good), ``Tampered`` (the content does not authenticate).
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Any

import fastavro
from prometheus_client import Counter

from circadia.avro import HEADER_FINGERPRINT, AvroSchema, SchemaSet
from circadia.userkeys import Sealed, Tampered, UserKeys

SEALING = Counter("circadia_sealing_total", "Records sealed and opened, by topic, operation and kind "
                  "(sealed, plaintext, or the failure: erased, tampered, keysunavailable, "
                  "unknownschemaerror).", ["topic", "operation", "kind"])


def placeholder(schema: Any) -> Any:
    """The empty value of an Avro type (parsed by fastavro): what a sealed record's content fields hold."""
    if isinstance(schema, list):  # a union: its first branch, as Avro defaults are
        return placeholder(schema[0])
    if isinstance(schema, str):
        return {"null": None, "boolean": False, "int": 0, "long": 0, "float": 0.0, "double": 0.0,
                "string": "", "bytes": b""}.get(schema)
    kind = schema["type"]
    if kind == "record" or kind == "error":
        return {field["name"]: field["default"] if "default" in field else placeholder(field["type"])
                for field in schema["fields"]}
    if kind == "array":
        return []
    if kind == "map":
        return {}
    if kind == "enum":
        return schema.get("default", schema["symbols"][0])
    if kind == "fixed":
        return b"\0" * schema["size"]
    return placeholder(kind)  # a primitive with a logical type, {"type": "long", ...}


class RecordSeal:
    """Seals and opens the records of one schema on one topic (module rules)."""

    def __init__(self, schemas: SchemaSet, schema: AvroSchema, topic: str, routing: tuple[str, ...]) -> None:
        fields = {field["name"]: field for field in schema.parsed["fields"]}
        unknown = set(routing) - set(fields)
        if unknown or "sealed" not in fields:
            raise ValueError(f"{schema.name} cannot be sealed: no field {sorted(unknown) or 'sealed'}")
        self._schemas = schemas
        self.schema = schema
        self.topic = topic
        self.routing = routing
        self._count = {kind: SEALING.labels(topic, "open", kind) for kind in ("plaintext", "sealed", "tampered")}
        self._sealed_count = SEALING.labels(topic, "seal", "sealed")  # children looked up once: a hot path
        self._empty = {name: field["default"] if "default" in field else placeholder(field["type"])
                       for name, field in fields.items() if name not in routing}

    def envelope(self, routing: Mapping[str, Any], sealed: Sealed) -> bytes:
        """The record that carries ``sealed``: ``routing``'s values, placeholders for the rest."""
        record = {**self._empty, **{name: routing[name] for name in self.routing}}
        record["sealed"] = {"key_id": sealed.key_id, "wrapped_key": sealed.wrapped_key, "nonce": sealed.nonce,
                            "ciphertext": sealed.ciphertext, "content_fingerprint": self.schema.fingerprint}
        return self.schema.write(record)

    async def seal(self, keys: UserKeys, user_id: str, content: bytes, routing: Mapping[str, Any]) -> bytes:
        """``content`` (this schema's record, Avro) sealed for the user; ``routing`` names the
        routing fields' values (the same as the content's)."""
        sealed = await keys.seal_async(user_id, self.topic, content)
        self._sealed_count.inc()
        return self.envelope(routing, sealed)

    async def open(self, keys: UserKeys | None, record: dict[str, Any], *, logical: bool = True) -> dict[str, Any]:
        """The record's content: the record itself when it is plaintext, else the decrypted content,
        decoded as this schema (``logical=False``: timestamps as ints, uuids as strings)."""
        found = self._sealed(keys, record)
        if found is None:
            return record
        plaintext = await self._counted(found[0].open_async(record["user_id"], self.topic, found[1]))
        return self._content(record, plaintext, logical)

    def open_cached(self, keys: UserKeys | None, record: dict[str, Any], *,
                    logical: bool = True) -> dict[str, Any] | None:
        """``open`` without waiting: None when the record is sealed with a data key not cached here
        (``open`` then fetches it)."""
        found = self._sealed(keys, record)
        if found is None:
            return record
        try:
            plaintext = found[0].open_cached(record["user_id"], self.topic, found[1])
        except Exception as exc:
            SEALING.labels(self.topic, "open", _kind(exc)).inc()
            raise
        return None if plaintext is None else self._content(record, plaintext, logical)

    def _sealed(self, keys: UserKeys | None, record: dict[str, Any]) -> tuple[UserKeys, Sealed] | None:
        sealed = record.get("sealed")
        if sealed is None:
            self._count["plaintext"].inc()
            return None
        if keys is None:
            self._count["tampered"].inc()
            raise Tampered("a sealed record reached a service without a key service (CIRCADIA_USER_KEYS_ADDR)")
        return keys, Sealed(sealed["key_id"], sealed["wrapped_key"], sealed["nonce"], sealed["ciphertext"])

    async def _counted(self, opening: Awaitable[bytes]) -> bytes:
        try:
            return await opening
        except Exception as exc:
            SEALING.labels(self.topic, "open", _kind(exc)).inc()
            raise

    def _content(self, record: dict[str, Any], plaintext: bytes, logical: bool) -> dict[str, Any]:
        try:
            content = self.decode(plaintext, record["sealed"]["content_fingerprint"], logical=logical)
            for name in self.routing:
                if _comparable(content.get(name)) != _comparable(record.get(name)):
                    raise Tampered(f"the sealed content's {name} is not the record's")
        except Exception as exc:
            SEALING.labels(self.topic, "open", _kind(exc)).inc()
            raise
        self._count["sealed"].inc()
        return content

    def decode(self, content: bytes, fingerprint: str, *, logical: bool = True) -> dict[str, Any]:
        """Content written with the schema of ``fingerprint``, read as this schema; a fingerprint this
        reader does not know raises ``UnknownSchemaError`` (a newer writer: dead-lettered, replayable
        after an upgrade), content that authenticates yet does not decode raises ``Tampered``."""
        headers = [(HEADER_FINGERPRINT, fingerprint.encode())]
        self._schemas.writer(fingerprint)  # UnknownSchemaError before any decoding
        try:
            return self._schemas.decode(content, headers, self.schema, logical=logical)
        except (ValueError, EOFError, IndexError, fastavro.read.SchemaResolutionError) as exc:
            raise Tampered(f"the sealed content does not decode: {type(exc).__name__}: {exc}") from None


def _kind(exc: BaseException) -> str:
    """The ``kind`` label of a failed open: erased, tampered, keysunavailable, unknownschemaerror."""
    return type(exc).__name__.lower()


def _comparable(value: Any) -> Any:
    """Routing values as both decoders give them (a uuid and its string, a datetime and its ms)."""
    if hasattr(value, "timestamp"):
        return round(value.timestamp() * 1000)
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    return str(value) if value is not None and not isinstance(value, int | float) else value

