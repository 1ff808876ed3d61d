"""The upload body: what is accepted and the field-level reasons for what is not."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from ingest_gateway.models import UploadRequest


def body(**overrides: object) -> dict:
    base = {
        "upload_id": str(uuid.uuid4()),
        "device": {"id": "d1", "model": "Pixel 9", "os": "Android 16"},
        "samples": [
            {"type": "step_count", "start": "2026-11-24T10:00:00+01:00",
             "end": "2026-11-24T10:01:00+01:00", "value": 12, "unit": "count"},
            {"type": "heart_rate", "start": "2026-11-24T10:00:00+01:00",
             "end": "2026-11-24T10:00:00+01:00", "value": 61.5, "unit": "count/min"},
            {"type": "sleep_analysis", "start": "2026-11-24T01:00:00+01:00",
             "end": "2026-11-24T02:00:00+01:00", "value": "asleep_deep", "unit": "stage"},
        ],
    }
    base.update(overrides)
    return base


def errors(payload: dict) -> list[tuple[tuple, str]]:
    with pytest.raises(ValidationError) as error:
        UploadRequest.model_validate_json(json.dumps(payload))
    return [(e["loc"], e["msg"]) for e in error.value.errors()]


def test_valid_upload_maps_to_the_avro_record() -> None:
    upload = UploadRequest.model_validate_json(json.dumps(body()))
    received = datetime(2026, 11, 24, 12, tzinfo=UTC)
    record = upload.to_record("user-1", received)
    assert record["user_id"] == "user-1" and record["received_at"] == received
    steps, hr, sleep = record["samples"]
    assert steps["value"] == 12.0 and steps["stage"] is None and steps["utc_offset_minutes"] == 60
    assert hr["value"] == 61.5
    assert sleep["stage"] == "asleep_deep" and sleep["value"] is None


def test_user_id_in_the_body_is_an_unknown_field() -> None:
    assert errors(body(user_id="someone-else")) == [(("user_id",), "Extra inputs are not permitted")]


@pytest.mark.parametrize(
    ("change", "loc", "msg"),
    [
        ({"end": "2026-11-24T09:00:00+01:00"}, ("samples", 0), "end must not be before start"),
        ({"unit": "steps"}, ("samples", 0), "unit of step_count must be 'count'"),
        ({"value": -1}, ("samples", 0), "value must be a finite, non-negative number"),
        ({"value": "awake"}, ("samples", 0), "value of step_count must be a number"),
        ({"start": "2026-11-24T10:00:00"}, ("samples", 0, "start"), "timezone"),
        ({"type": "blood_sugar"}, ("samples", 0, "type"), "Input should be"),
        ({"colour": "red"}, ("samples", 0, "colour"), "Extra inputs are not permitted"),
    ],
)
def test_sample_errors_name_the_field(change: dict, loc: tuple, msg: str) -> None:
    payload = body()
    payload["samples"][0].update(change)
    found = errors(payload)
    assert any(l == loc and msg.lower() in m.lower() for l, m in found), found


def test_sleep_stage_must_be_a_known_stage() -> None:
    payload = body()
    payload["samples"][2]["value"] = "dreaming"
    assert any(l[:2] == ("samples", 2) for l, _ in errors(payload))
    payload["samples"][2]["value"] = 3
    assert any(l[:2] == ("samples", 2) for l, _ in errors(payload))


def test_upload_needs_a_uuid_and_at_least_one_sample() -> None:
    assert errors(body(upload_id="not-a-uuid"))[0][0] == ("upload_id",)
    assert errors(body(samples=[]))[0][0] == ("samples",)
