"""The Avro contract: every schema parses, documents itself and round-trips."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest

from circadia.avro import (
    HEADER_FINGERPRINT,
    AvroValidationError,
    SchemaSet,
    UnknownSchemaError,
    header,
)
from circadia.jsonable import jsonable

UPLOAD = "io.circadia.health.HealthUpload"
PREDICTION = "io.circadia.prediction.Prediction"
T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
T1 = datetime(2026, 11, 24, 8, 1, tzinfo=UTC)


def upload_record() -> dict:
    return {
        "upload_id": str(uuid.uuid4()),
        "user_id": "user-1",
        "received_at": T1,
        "device": {"id": "d1", "model": "Watch7,1", "os": "watchOS 11.2", "activity_counts": "actigraph"},
        "samples": [
            {"type": "step_count", "start": T0, "end": T1, "utc_offset_minutes": 60,
             "value": 42.0, "stage": None, "unit": "count"},
            {"type": "sleep_analysis", "start": T0, "end": T1, "utc_offset_minutes": -300,
             "value": None, "stage": "asleep_deep", "unit": "stage"},
        ],
        "sealed": None,
    }


def prediction_record() -> dict:
    return {
        "prediction_id": str(uuid.uuid4()),
        "user_id": "user-1",
        "source_upload_ids": [str(uuid.uuid4())],
        "computed_at": T1,
        "window_start": T0,
        "window_end": T1,
        "code_version": "0.1.0",
        "daily_activity": [{"date": "2026-11-24", "steps": 42.0, "activity_counts": None,
                            "minutes_covered": 1, "coverage": 1 / 1440,
                            "heart_rate_mean": None, "heart_rate_minutes": 0, "movement_input": "step_count",
                            "wear_minutes": 0, "wear_rule": "valid-day/hr-600min-or-steps-10h@1: none",
                            "refused": None}],
        "methods": {"daily_activity": "daily-totals/merged-minutes@2"},
        "window_minutes_covered": 1,
        "window_coverage": 1 / 10080,
        "circadian": {"method": "npcra/van-someren-1999@1", "input": "step_count", "coverage": 0.1,
                      "days_used": 0, "refused": "fewer than 3 days", "interdaily_stability": None,
                      "intradaily_variability": None, "m10": None, "m10_onset": None, "l5": None,
                      "l5_onset": None, "relative_amplitude": None},
        "cosinor": {"method": "cosinor/24h-least-squares@1", "input": "step_count", "coverage": 0.9,
                    "refused": None, "mesor": 10.0, "amplitude": 5.0, "acrophase": "14:30",
                    "acrophase_hours": 14.5, "r_squared": 0.4},
        "sleep_nights": [{"night": "2026-11-23", "method": "sleep-stages/device-reported@2", "refused": None,
                          "bed_start": T0, "bed_end": T1, "time_in_bed_minutes": 480.0,
                          "total_sleep_minutes": 420.0, "efficiency": 0.875, "onset_latency_minutes": 15.0,
                          "waso_minutes": 45.0, "awakenings": 2, "date_of_sleep": "2026-11-24",
                          "main_sleep": True}],
        "naps": [{"night": "2026-11-23", "method": "sleep-stages/device-reported@2", "refused": None,
                  "bed_start": T0, "bed_end": T1, "time_in_bed_minutes": 30.0, "total_sleep_minutes": 25.0,
                  "efficiency": 25 / 30, "onset_latency_minutes": 5.0, "waso_minutes": 0.0, "awakenings": 0,
                  "date_of_sleep": "2026-11-24", "main_sleep": False}],
        "scored_sleep": None,
        "pat": {"model_id": "PAT-S", "weights_sha256": "0" * 64, "normalisation": "none",
                "input": "activity_count", "coverage": 0.95, "embedding": [0.5] * 96},
        "pat_unavailable": None,
        "clinical_scores": [],
        "as_of": {"daily_activity": {"computed_at": T1, "window_end": T1},
                  "circadian": {"computed_at": T0, "window_end": T0}},
        "sealed": None,
    }


@pytest.fixture(scope="module")
def schemas() -> SchemaSet:
    return SchemaSet.load()


def _fields(schema: object):
    """Every record field of a parsed-from-JSON schema, recursively."""
    if isinstance(schema, dict):
        if schema.get("type") == "record":
            for field in schema["fields"]:
                yield schema["name"], field
                yield from _fields(field["type"])
        else:
            for key in ("items", "values"):
                if key in schema:
                    yield from _fields(schema[key])
    elif isinstance(schema, list):
        for branch in schema:
            yield from _fields(branch)


def _enums(schema: object):
    if isinstance(schema, dict):
        if schema.get("type") == "enum":
            yield schema
        for value in schema.values():
            yield from _enums(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from _enums(item)


def test_both_topic_records_are_defined(schemas: SchemaSet) -> None:
    assert {s.name for s in schemas} >= {UPLOAD, PREDICTION}


def test_every_field_is_documented_and_optional_fields_default_to_null(schemas: SchemaSet) -> None:
    for schema in schemas:
        raw = json.loads(schema.path.read_text())
        assert raw.get("doc"), schema.name
        for record, field in _fields(raw):
            assert field.get("doc"), f"{schema.name}: {record}.{field['name']} has no doc"
            if isinstance(field["type"], list) and field["type"][0] == "null":
                assert "default" in field and field["default"] is None, f"{record}.{field['name']}"


def test_enums_carry_an_unknown_default(schemas: SchemaSet) -> None:
    for schema in schemas:
        for enum in _enums(json.loads(schema.path.read_text())):
            assert enum["default"] == "UNKNOWN" and "UNKNOWN" in enum["symbols"], enum["name"]


@pytest.mark.parametrize(("name", "make"), [(UPLOAD, upload_record), (PREDICTION, prediction_record)])
def test_records_round_trip(schemas: SchemaSet, name: str, make) -> None:
    schema = schemas[name]
    record = make()
    decoded = schemas.decode(schema.encode(record), schema.headers(), schema)
    assert jsonable(decoded) == jsonable(record)  # UUIDs come back as uuid.UUID


def test_fingerprint_header_names_the_writer_schema(schemas: SchemaSet) -> None:
    schema = schemas[UPLOAD]
    assert header(schema.headers(), HEADER_FINGERPRINT) == schema.fingerprint.encode()
    assert schemas[UPLOAD].fingerprint != schemas[PREDICTION].fingerprint
    assert len(schema.fingerprint) == 64  # SHA-256 of the Parsing Canonical Form, hex


def test_invalid_record_is_refused_before_encoding(schemas: SchemaSet) -> None:
    record = upload_record()
    record["samples"][0]["type"] = "blood_sugar"
    with pytest.raises(AvroValidationError) as error:
        schemas[UPLOAD].encode(record)
    assert error.value.problems


def test_unknown_fields_are_refused(schemas: SchemaSet) -> None:
    record = upload_record()
    record["email"] = "someone@example.org"
    with pytest.raises(AvroValidationError):
        schemas[UPLOAD].encode(record)


def test_decoding_needs_a_known_fingerprint(schemas: SchemaSet) -> None:
    schema = schemas[UPLOAD]
    data = schema.encode(upload_record())
    with pytest.raises(UnknownSchemaError):
        schemas.decode(data, [], schema)
    with pytest.raises(UnknownSchemaError):
        schemas.decode(data, [(HEADER_FINGERPRINT, b"0" * 64)], schema)
