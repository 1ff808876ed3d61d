"""Coverage-guided fuzzing of the ingest body parser (atheris): ``make fuzz``.

Any bytes, as JSON or Avro, plain or gzip, must end as a validated upload or a
``Rejection`` (413/415/422); anything else is a crash the fuzzer reports with its input.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import atheris

with atheris.instrument_imports():
    from circadia.avro import SchemaSet
    from ingest_gateway.body import AVRO, JSON, BodyLimits, parse_upload
    from ingest_gateway.errors import Rejection
    from ingest_gateway.models import ValidationRules

SCHEMA = SchemaSet.load()["io.circadia.health.UploadRequest"]
LIMITS = BodyLimits(max_bytes=1 << 20, max_decompressed_bytes=1 << 20)
RULES = ValidationRules(now=datetime(2026, 11, 25, tzinfo=UTC))


def test_one_input(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    content_type = provider.PickValueInList([JSON, AVRO, "application/json; charset=utf-8"])
    encoding = provider.PickValueInList([None, "gzip", "identity"])
    raw = provider.ConsumeBytes(provider.remaining_bytes())
    try:
        parse_upload(raw, content_type=content_type, content_encoding=encoding, limits=LIMITS,
                     rules=RULES, avro_schema=SCHEMA)
    except Rejection as rejection:
        if rejection.status not in (413, 415, 422):
            raise AssertionError(f"unexpected status {rejection.status}") from rejection


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
