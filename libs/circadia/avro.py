"""Avro encoding of topic records, with the schema identified in Kafka headers.

Records are written schemaless (no per-record schema, no registry round trip); the
writer's schema travels as the SHA-256 fingerprint of its Parsing Canonical Form in the
``avro.schema.fingerprint`` header, and readers resolve it against the schemas in
``schemas/``. ``schemas/`` is the single source of truth: code loads schemas, never
re-declares them.

``schemas/archive/`` keeps every earlier version of each schema (``make schemas-archive`` adds
the versions in git history; a test fails while one is missing). They are writer schemas only:
records written before an evolution (still on a topic, or from a replica not yet upgraded during
a rolling upgrade) are read through them into the current schema, and nothing writes with them.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form
from fastavro.validation import ValidationError as _FastavroValidationError
from fastavro.validation import validate

from circadia.paths import schemas_dir

ARCHIVE = "archive"  # earlier versions of the schemas, as writer schemas (module docstring)
HEADER_FINGERPRINT = "avro.schema.fingerprint"
HEADER_SCHEMA_NAME = "avro.schema.name"
HEADER_CONTENT_TYPE = "content-type"
CONTENT_TYPE = "avro/binary"

Headers = Sequence[tuple[str, bytes]]


class AvroValidationError(ValueError):
    """A record does not conform to its schema; ``problems`` lists each violation."""

    def __init__(self, schema_name: str, problems: list[str]) -> None:
        super().__init__(f"record does not match {schema_name}: {'; '.join(problems)}")
        self.schema_name = schema_name
        self.problems = problems


class UnknownSchemaError(ValueError):
    """A message names a schema fingerprint that no file in ``schemas/`` has."""


# Logical types a reader may leave as their underlying values (see SchemaSet.decode)
_PLAIN_LOGICAL = frozenset({"timestamp-millis", "timestamp-micros", "uuid"})


def _without_logical_types(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_logical_types(v) for k, v in node.items()
                if not (k == "logicalType" and v in _PLAIN_LOGICAL)}
    if isinstance(node, list):
        return [_without_logical_types(item) for item in node]
    return node


@dataclass(frozen=True)
class AvroSchema:
    name: str
    parsed: Any
    fingerprint: str
    path: Path
    plain: Any = None  # ``parsed`` with timestamps read as ints and uuids as strings

    @classmethod
    def from_file(cls, path: Path) -> AvroSchema:
        raw = json.loads(path.read_text())
        parsed = fastavro.parse_schema(raw)
        canonical = to_parsing_canonical_form(parsed)
        return cls(
            name=raw["namespace"] + "." + raw["name"],
            parsed=parsed,
            fingerprint=fingerprint(canonical, "SHA-256"),
            path=path,
            plain=fastavro.parse_schema(_without_logical_types(raw)),
        )

    def validate(self, record: Mapping[str, Any]) -> None:
        # the quiet check is four times cheaper on valid records (fastavro raises and catches
        # internally for every union it resolves when asked for errors); only an invalid
        # record pays for the detailed pass that names the problems
        if validate(record, self.parsed, raise_errors=False, strict=True):
            return
        try:
            validate(record, self.parsed, raise_errors=True, strict=True)
        except _FastavroValidationError as exc:
            raise AvroValidationError(self.name, [str(e) for e in exc.errors]) from None
        raise AvroValidationError(self.name, ["does not match the schema"])

    def encode(self, record: Mapping[str, Any]) -> bytes:
        """Validate, then write schemaless; a record that fails validation is never written."""
        self.validate(record)
        return self.write(record)

    def write(self, record: Mapping[str, Any]) -> bytes:
        """Write schemaless without the separate validation pass, for records that code builds
        from values it has already checked (the ingest gateway's uploads: the pass costs more
        than the write). The strict writer still refuses a value of the wrong type, a symbol
        outside its enum, a missing field without a default and a field the schema lacks (a
        missing field with a default is written as its default); it does not check that an
        ``int`` fits 32 bits."""
        buffer = io.BytesIO()
        try:
            fastavro.schemaless_writer(buffer, self.parsed, record, strict_allow_default=True)
        except (ValueError, TypeError, KeyError) as exc:
            raise AvroValidationError(self.name, [str(exc)]) from None
        return buffer.getvalue()

    def headers(self) -> list[tuple[str, bytes]]:
        return [
            (HEADER_CONTENT_TYPE, CONTENT_TYPE.encode()),
            (HEADER_SCHEMA_NAME, self.name.encode()),
            (HEADER_FINGERPRINT, self.fingerprint.encode()),
        ]


class SchemaSet:
    """All schemas of ``schemas/``, addressable by full name and by fingerprint."""

    def __init__(self, schemas: Iterable[AvroSchema], earlier: Iterable[AvroSchema] = ()) -> None:
        self._by_name: dict[str, AvroSchema] = {}
        self._by_fingerprint: dict[str, AvroSchema] = {}
        for schema in earlier:  # writer schemas only: never addressable by name
            self._by_fingerprint[schema.fingerprint] = schema
        for schema in schemas:
            if schema.name in self._by_name:
                raise ValueError(f"schema {schema.name} defined twice: {schema.path}")
            self._by_name[schema.name] = schema
            self._by_fingerprint[schema.fingerprint] = schema

    @classmethod
    def load(cls, directory: Path | None = None) -> SchemaSet:
        root = directory or schemas_dir()
        archive = root / ARCHIVE
        files = sorted(path for path in root.rglob("*.avsc") if archive not in path.parents)
        if not files:
            raise FileNotFoundError(f"no .avsc files under {root}")
        return cls((AvroSchema.from_file(path) for path in files),
                   (AvroSchema.from_file(path) for path in sorted(archive.glob("*.avsc"))))

    def fingerprints(self) -> set[str]:
        """Every writer schema this set reads: the current ones and the archived versions."""
        return set(self._by_fingerprint)

    def __getitem__(self, name: str) -> AvroSchema:
        return self._by_name[name]

    def __iter__(self):
        return iter(self._by_name.values())

    def writer(self, fingerprint: str) -> AvroSchema:
        """The schema with this fingerprint (``UnknownSchemaError`` when none has it)."""
        schema = self._by_fingerprint.get(fingerprint)
        if schema is None:
            raise UnknownSchemaError(f"unknown schema fingerprint {fingerprint[:64]!r}")
        return schema

    def decode(self, data: bytes, headers: Headers, expected: AvroSchema, *, logical: bool = True) -> dict[str, Any]:
        """Decode ``data`` written with the schema its headers name, read as ``expected``.

        With ``logical=False`` timestamps stay the integers they are on the wire (milliseconds
        since the epoch for ``timestamp-millis``) and uuids stay strings: a reader that works in
        milliseconds anyway (the worker's window) saves a datetime per timestamp, a third of the
        decoding of an upload's samples."""
        value = header(headers, HEADER_FINGERPRINT)
        if value is None:
            raise UnknownSchemaError(f"message has no {HEADER_FINGERPRINT} header")
        writer = self._by_fingerprint.get(value.decode("ascii", "replace"))
        if writer is None:
            raise UnknownSchemaError(f"unknown schema fingerprint {value[:64]!r}")
        # every schema of the registry is a record, and a record reads as a dict
        if logical:
            return cast(dict[str, Any], fastavro.schemaless_reader(io.BytesIO(data), writer.parsed, expected.parsed))
        return cast(dict[str, Any], fastavro.schemaless_reader(io.BytesIO(data), writer.plain, expected.plain))


def header(headers: Headers | None, name: str) -> bytes | None:
    for key, value in headers or ():
        if key == name:
            return value
    return None
