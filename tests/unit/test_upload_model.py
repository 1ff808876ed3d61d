"""The upload body's domain rules, each with the field its error names."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from ingest_gateway.models import UploadRequest, ValidationRules

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
RULES = ValidationRules(now=NOW, clock_skew=timedelta(seconds=30), history=timedelta(days=30), max_samples=5)


def at(minutes_ago: float) -> str:
    return (NOW - timedelta(minutes=minutes_ago)).astimezone(timezone(timedelta(hours=1))).isoformat()


def sample(kind: str = "step_count", value: object = 12, unit: str | None = None,
           start: float = 10, end: float = 9) -> dict:
    units = {"step_count": "count", "activity_count": "count", "heart_rate": "count/min",
             "sleep_analysis": "stage"}
    return {"type": kind, "start": at(start), "end": at(end), "value": value, "unit": unit or units[kind]}


def body(*samples: dict, **overrides: object) -> dict:
    return {"upload_id": str(uuid.uuid4()), "device": {"id": "d1", "model": "Pixel 9", "os": "Android 16"},
            "samples": list(samples) or [sample()], **overrides}


def parse(payload: dict) -> UploadRequest:
    return UploadRequest.validate_json(json.dumps(payload), RULES)


def errors(payload: dict) -> list[tuple[tuple, str]]:
    with pytest.raises(ValidationError) as error:
        parse(payload)
    return [(e["loc"], e["msg"]) for e in error.value.errors()]


def test_valid_upload_maps_to_the_avro_record() -> None:
    upload = parse(body(sample(), sample("heart_rate", 61.5, start=5, end=5),
                        sample("sleep_analysis", "asleep_deep", start=300, end=240)))
    record = upload.to_record("user-1", NOW)
    assert record["user_id"] == "user-1" and record["received_at"] == NOW
    steps, hr, sleep = record["samples"]
    assert steps["value"] == 12.0 and steps["stage"] is None and steps["utc_offset_minutes"] == 60
    assert hr["value"] == 61.5
    assert sleep["stage"] == "asleep_deep" and sleep["value"] is None


@pytest.mark.parametrize(
    ("bad", "loc", "msg"),
    [
        (sample(start=10, end=11), ("samples", 0, "end"), "end must not be before start"),
        (sample(start=-5, end=-6), ("samples", 0, "start"), "in the future"),
        (sample(start=1, end=-5), ("samples", 0, "end"), "in the future"),
        (sample(start=31 * 1440, end=31 * 1440 - 1), ("samples", 0, "start"),
         "older than the accepted history of 30 days"),
        (sample(unit="steps"), ("samples", 0, "unit"), "unit of step_count must be 'count'"),
        (sample("heart_rate", 60, unit="bpm"), ("samples", 0, "unit"), "unit of heart_rate must be 'count/min'"),
        (sample(value=-1), ("samples", 0, "value"), "must be a finite, non-negative number"),
        (sample("activity_count", -3), ("samples", 0, "value"), "must be a finite, non-negative number"),
        (sample(value="12"), ("samples", 0, "value"), "must be a number"),
        (sample(value=True), ("samples", 0, "value"), "must be a number"),
        (sample(value=None), ("samples", 0, "value"), "must be a number"),
        (sample("heart_rate", 19.9), ("samples", 0, "value"), "heart rate must be within 20-300 count/min"),
        (sample("heart_rate", 300.5), ("samples", 0, "value"), "heart rate must be within 20-300 count/min"),
        (sample(value=401), ("samples", 0, "value"), "more than 400 steps per minute"),
        (sample(value=801, start=10, end=8), ("samples", 0, "value"), "more than 400 steps per minute"),
        (sample("sleep_analysis", "dreaming"), ("samples", 0, "value"), "must be a sleep stage"),
        (sample("sleep_analysis", 3), ("samples", 0, "value"), "must be a sleep stage"),
        ({**sample(), "start": "2026-11-25T10:00:00"}, ("samples", 0, "start"), "timezone"),
        ({**sample(), "type": "blood_sugar"}, ("samples", 0, "type"), "Input should be"),
        ({**sample(), "colour": "red"}, ("samples", 0, "colour"), "Extra inputs are not permitted"),
    ],
)
def test_each_domain_rule_names_its_field(bad: dict, loc: tuple, msg: str) -> None:
    found = errors(body(sample(), bad))
    loc = (loc[0], 1, *loc[2:])
    assert any(where == loc and msg.lower() in m.lower() for where, m in found), found


def test_values_at_the_bounds_are_accepted() -> None:
    parse(body(sample("heart_rate", 20, start=3, end=3), sample("heart_rate", 300, start=2, end=2),
               sample(value=400), sample(value=800, start=20, end=18), sample(start=0.4, end=-0.4)))


def test_instantaneous_step_samples_are_rated_over_one_minute() -> None:
    parse(body(sample(value=400, start=5, end=5)))
    assert errors(body(sample(value=401, start=5, end=5)))[0][0] == ("samples", 0, "value")


def test_at_most_max_samples() -> None:
    parse(body(*[sample()] * 5))
    assert errors(body(*[sample()] * 6)) == [(("samples",), "Value error, at most 5 samples per upload")]


def test_unknown_top_level_fields_and_bad_ids_are_refused() -> None:
    assert errors(body(email="a@b.c")) == [(("email",), "Extra inputs are not permitted")]
    assert errors(body(upload_id="not-a-uuid"))[0][0] == ("upload_id",)
    assert errors(body(samples=[]))[0][0] == ("samples",)
    assert errors(body(device={"id": "", "model": "m", "os": "o"}))[0][0] == ("device", "id")


def test_user_id_may_be_named_but_is_not_trusted() -> None:
    assert parse(body(user_id="ada")).user_id == "ada"
    assert errors(body(user_id=""))[0][0] == ("user_id",)


def test_the_digest_follows_what_is_stored_and_nothing_else() -> None:
    original = body(sample(), sample("sleep_analysis", "asleep_deep", start=9, end=5))
    digest = parse(original).digest()
    utc = json.loads(json.dumps(original))
    for item in utc["samples"]:  # the same instants, spelled in UTC and with sub-millisecond noise
        for edge in ("start", "end"):
            instant = datetime.fromisoformat(item[edge]).astimezone(UTC)
            item[edge] = (instant + timedelta(microseconds=400)).isoformat()
    assert parse(utc).digest() != digest  # the offset is stored, so it is part of the content
    same_offset = json.loads(json.dumps(original))
    for item in same_offset["samples"]:
        item["start"] = item["start"].replace("+01:00", ".000400+01:00")
    assert parse(same_offset).digest() == digest  # stored to the millisecond
    changes = [
        {"samples": [sample(value=13), original["samples"][1]]},
        {"samples": [sample(start=11), original["samples"][1]]},
        {"samples": [sample(end=8), original["samples"][1]]},
        {"samples": [sample("activity_count"), original["samples"][1]]},
        {"samples": [original["samples"][1], sample()]},
        {"samples": [sample(), sample("sleep_analysis", "awake", start=9, end=5)]},
        {"samples": [sample()]},
        {"device": {**original["device"], "os": "Android 17"}},
        {"device": {**original["device"], "id": "d1\tcount"}},
        {"upload_id": str(uuid.uuid4())},
    ]
    digests = {parse({**original, **change}).digest() for change in changes}
    assert digest not in digests and len(digests) == len(changes)
