"""The uploads of the benchmark (pure): the project's traffic model (bench/traffic.py) as each
phase's spec carries it, and an upload body as the Avro record the gateway publishes.

Every phase draws its uploads from a ``TrafficModel``: the spec names its parameters (JSON:
pairs as lists) and the instant ``now`` the run fixed, so two processes given the same spec
draw the same uploads (the raw producer and the gateway phase do). ``record_of`` turns a
body into the ``io.circadia.health.HealthUpload`` record with the field values
``UploadRequest.to_record`` gives it — by a direct conversion (no pydantic, no domain
rules): the raw producer measures what is left of the gateway's path without its parsing.
``check_record_of`` proves the conversion against the gateway's own models.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.traffic import TrafficModel, Upload

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SMALL_KINDS = ("small", "radar", "sleep")  # what a device sends between syncs: no backlogs


def user_ids(count: int, prefix: str = "bench-user") -> list[str]:
    return [f"{prefix}-{index:05d}" for index in range(count)]


def parameters(**overrides: Any) -> dict[str, Any]:
    """Every parameter of a ``TrafficModel`` (defaults plus ``overrides``), JSON-ready."""
    model = TrafficModel(**overrides)
    return {f.name: list(value) if isinstance(value := getattr(model, f.name), tuple) else value
            for f in fields(model) if f.init}


def model(params: Mapping[str, Any]) -> TrafficModel:
    """The ``TrafficModel`` of a spec's parameters (lists back to tuples)."""
    values: dict[str, Any] = {name: tuple(value) if isinstance(value, list) else value
                              for name, value in params.items()}
    return TrafficModel(**values)


def parse_now(text: str) -> datetime:
    now = datetime.fromisoformat(text)
    if now.utcoffset() is None:
        raise ValueError(f"now must carry its offset: {text!r}")
    return now


def salted(upload: Upload, salt: str) -> tuple[str, bytes]:
    """The upload's body with its id re-derived from ``salt`` (uuid5): a phase that replays
    another's schedule without repeating its upload ids (a repeat would be answered 200
    duplicate, a cheaper path than a new upload). Returns (the new id, the encoded body)."""
    upload_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{salt}:{upload.upload_id}"))
    body = upload.body | {"upload_id": upload_id}
    return upload_id, Upload(upload.kind, upload.user, upload.samples, body, upload.interval_s,
                             upload.overlaps).encoded()


def _millis(instant: datetime) -> int:
    """Epoch milliseconds, truncated, as the gateway's models compute them."""
    delta = instant - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def record_of(body: Mapping[str, Any], user_id: str, received_at: datetime) -> dict[str, Any]:
    """The HealthUpload record the gateway publishes for ``body`` (a body that passes its
    validation, as every body of the traffic model does)."""
    samples = []
    parse = datetime.fromisoformat
    for sample in body["samples"]:
        start, end = parse(sample["start"]), parse(sample["end"])
        offset = start.utcoffset()
        numeric = sample["type"] != "sleep_analysis"
        samples.append({
            "type": sample["type"],
            "start": _millis(start),
            "end": _millis(end),
            "utc_offset_minutes": int(offset.total_seconds() // 60) if offset else 0,
            "value": float(sample["value"]) if numeric else None,
            "stage": None if numeric else sample["value"],
            "unit": sample["unit"],
        })
    device = body["device"]
    return {"upload_id": str(body["upload_id"]), "user_id": user_id, "received_at": received_at,
            "device": {"id": device["id"], "model": device["model"], "os": device["os"]}, "samples": samples}


def check_record_of(upload: Upload, now: datetime) -> None:
    """Raise unless ``record_of`` gives what the gateway's ``UploadRequest.to_record`` gives."""
    from ingest_gateway.models import UploadRequest, ValidationRules

    received = now + timedelta(seconds=1)
    expected = UploadRequest.validate_json(upload.encoded(), ValidationRules(now=now)).to_record(
        upload.user, received)
    got = record_of(upload.body, upload.user, received)
    if got != expected:
        raise AssertionError(f"record_of differs from UploadRequest.to_record for a {upload.kind} upload")
