"""What the metrics are fed, end to end through the window and the result: non-wear read as
missing, the movement input chosen per day and per metric, the device classes Cole–Kripke is
scored on, naps apart from the night, and only finite numbers out — for the extremes the
ingest gateway accepts as well."""

from __future__ import annotations

import io
import json
import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import fastavro
import numpy as np
import pytest

from circadia.avro import SchemaSet
from ingest_gateway.models import HEART_RATE_RANGE, MAX_STEPS_PER_MINUTE, UploadRequest, ValidationRules
from prediction_worker.results import ModelOutcome, build_prediction
from prediction_worker.science.circadian import nonparametric
from prediction_worker.science.series import MinuteSeries
from prediction_worker.window import UserWindow

SCHEMAS = SchemaSet.load()
PREDICTION = SCHEMAS["io.circadia.prediction.Prediction"]
UPLOAD = SCHEMAS["io.circadia.health.HealthUpload"]
START = datetime(2026, 11, 16, tzinfo=UTC)  # a Monday, local midnight at UTC+0
DAY = 1440


def upload(kind: str, values: np.ndarray, device: str, counts: str | None = None,
           start: datetime = START) -> dict[str, Any]:
    """One upload of per-minute samples from ``start``; NaN minutes are not sent."""
    samples = [{"type": kind, "start": start + timedelta(minutes=m), "end": start + timedelta(minutes=m + 1),
                "utc_offset_minutes": 0, "value": float(v), "stage": None,
                "unit": "count/min" if kind == "heart_rate" else "count"}
               for m, v in enumerate(values) if not math.isnan(v)]
    device_record = {"id": device, "model": "m", "os": "o"}
    if counts is not None:
        device_record["activity_counts"] = counts
    return {"upload_id": str(uuid.uuid4()), "user_id": "u", "received_at": START + timedelta(days=8),
            "device": device_record, "samples": samples}


def regular_sleeper(seed: int = 11, days: int = 7) -> np.ndarray:
    """Wrist counts of a regular sleeper: active 07:00-23:00, a quiet but worn night (a small
    count in about one minute of three: no 90-minute run of zeros)."""
    rng = np.random.default_rng(seed)
    minute = np.arange(days * DAY) % DAY
    awake = (minute >= 7 * 60) & (minute < 23 * 60)
    active = rng.integers(300, 2500, minute.size).astype(float)
    night = np.where(rng.random(minute.size) < 0.35, rng.integers(1, 40, minute.size), 0).astype(float)
    return np.where(awake, active, night)


def phone_steps(days: int = 7) -> np.ndarray:
    """Phone steps: walking from 08:00 to 20:00 each day, zeros otherwise (a carried phone)."""
    minute = np.arange(days * DAY) % DAY
    return np.where((minute >= 8 * 60) & (minute < 20 * 60), 20.0 + (minute % 7), 0.0)


def result(*uploads: dict[str, Any]) -> dict[str, Any]:
    window = UserWindow()
    for one in uploads:
        window.apply(one)
    record = build_prediction(window, "u", ["a"], START + timedelta(days=8), ModelOutcome())
    PREDICTION.encode(record)
    return record


def numbers(value: Any) -> list[float]:
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        return [n for v in value.values() for n in numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in numbers(v)]
    return []


# --- non-wear is missing, not rest -----------------------------------------------------------------

def test_days_on_the_nightstand_give_the_is_of_the_same_days_sent_as_missing() -> None:
    counts = regular_sleeper()
    nightstand, missing = counts.copy(), counts.copy()
    nightstand[2 * DAY:4 * DAY] = 0.0  # Wednesday and Thursday: zeros, the band left on the nightstand
    missing[2 * DAY:4 * DAY] = np.nan
    with_zeros = result(upload("activity_count", nightstand, "band", "actigraph"))
    without = result(upload("activity_count", missing, "band", "actigraph"))
    assert with_zeros["circadian"]["refused"] is None and without["circadian"]["refused"] is None
    assert with_zeros["circadian"]["days_used"] == without["circadian"]["days_used"] == 5
    assert with_zeros["circadian"]["interdaily_stability"] == pytest.approx(
        without["circadian"]["interdaily_stability"], abs=0.01)
    # without the wear rule the zeros are read as rest and IS collapses (what the rule prevents)
    raw = nonparametric(MinuteSeries(int(START.timestamp()) // 60, nightstand, 0, "activity_count"))
    assert raw["interdaily_stability"] < with_zeros["circadian"]["interdaily_stability"] - 0.2
    # and the zero days add no scored sleep
    assert with_zeros["scored_sleep"]["sleep_minutes"] == pytest.approx(
        without["scored_sleep"]["sleep_minutes"], abs=30)
    days = {d["date"]: d for d in with_zeros["daily_activity"]}
    assert days["2026-11-18"]["wear_minutes"] == 0 and days["2026-11-18"]["activity_counts"] is None
    assert days["2026-11-18"]["wear_rule"] == "non-wear/choi-2011@1"
    assert days["2026-11-16"]["wear_minutes"] == DAY and days["2026-11-16"]["movement_input"] == "activity_count"


def test_the_troiano_rule_is_selectable_and_named() -> None:
    counts = regular_sleeper()
    counts[2 * DAY:3 * DAY] = 0.0
    window = UserWindow()
    window.apply(upload("activity_count", counts, "band", "actigraph"))
    record = build_prediction(window, "u", ["a"], START, ModelOutcome(), nonwear="troiano-2008")
    assert record["methods"]["wear"].startswith("non-wear/troiano-2008@1")
    day = next(d for d in record["daily_activity"] if d["date"] == "2026-11-18")
    assert day["wear_rule"] == "non-wear/troiano-2008@1" and day["wear_minutes"] == 0


def test_a_phone_left_at_home_for_a_day_is_left_out_of_the_rhythm() -> None:
    steps = phone_steps()
    steps[3 * DAY:4 * DAY] = 0.0  # Thursday: the phone on the desk, zeros all day
    record = result(upload("step_count", steps, "phone"))
    assert record["circadian"]["input"] == "step_count" and record["circadian"]["days_used"] == 6
    thursday = next(d for d in record["daily_activity"] if d["date"] == "2026-11-19")
    assert thursday["steps"] == 0.0 and thursday["wear_minutes"] == 0
    assert thursday["wear_rule"] == "valid-day/hr-600min-or-steps-10h@1: none"
    monday = record["daily_activity"][0]
    assert monday["wear_rule"].endswith(": steps") and monday["wear_minutes"] == 12 * 60


def test_heart_rate_makes_a_step_day_valid_when_the_user_has_it() -> None:
    steps = phone_steps()
    steps[3 * DAY:4 * DAY] = 0.0  # a day in bed ...
    heart_rate = np.full(7 * DAY, 62.0)  # ... with the watch on
    record = result(upload("step_count", steps, "watch-steps"), upload("heart_rate", heart_rate, "watch-hr"))
    thursday = next(d for d in record["daily_activity"] if d["date"] == "2026-11-19")
    assert thursday["wear_rule"].endswith(": heart-rate") and thursday["wear_minutes"] == DAY
    assert record["circadian"]["days_used"] == 7


# --- the input, per day and per metric -------------------------------------------------------------

def test_one_band_hour_beside_a_week_of_phone_steps_leaves_the_rhythm_on_steps() -> None:
    band = np.full(7 * DAY, np.nan)
    band[2 * DAY + 600:2 * DAY + 660] = 800.0
    record = result(upload("step_count", phone_steps(), "phone"), upload("activity_count", band, "band", "actigraph"))
    assert record["circadian"]["input"] == "step_count" and record["circadian"]["refused"] is None
    assert record["cosinor"]["input"] == "step_count" and record["cosinor"]["refused"] is None
    wednesday = next(d for d in record["daily_activity"] if d["date"] == "2026-11-18")
    assert wednesday["movement_input"] == "step_count" and wednesday["activity_counts"] == 800.0 * 60
    assert record["methods"]["input"] == "movement-input/per-day-and-metric@1"


def test_a_week_of_counts_beside_a_week_of_steps_is_analysed_on_counts() -> None:
    record = result(upload("step_count", phone_steps(), "phone"),
                    upload("activity_count", regular_sleeper(), "band", "actigraph"))
    assert record["circadian"]["input"] == "activity_count" and record["cosinor"]["input"] == "activity_count"
    assert {d["movement_input"] for d in record["daily_activity"]} == {"activity_count"}


def test_counts_for_four_days_and_steps_for_seven_choose_steps_for_the_rhythm() -> None:
    counts = regular_sleeper()
    counts[4 * DAY:] = np.nan
    record = result(upload("step_count", phone_steps(), "phone"), upload("activity_count", counts, "band", "vendor"))
    assert record["circadian"]["input"] == "step_count" and record["circadian"]["days_used"] == 7
    inputs = [d["movement_input"] for d in record["daily_activity"]]
    assert inputs[:4] == ["activity_count"] * 4 and inputs[4:7] == ["step_count"] * 3


# --- device classes --------------------------------------------------------------------------------

@pytest.mark.parametrize(("counts", "scored"), [("actigraph", True), ("vendor", False), (None, False)])
def test_cole_kripke_scores_only_actigraph_compatible_counts(counts: str | None, scored: bool) -> None:
    record = result(upload("activity_count", regular_sleeper(), "band", counts))
    block = record["scored_sleep"]
    assert record["circadian"]["refused"] is None  # the rhythm metrics are scale-free
    if scored:
        assert block["refused"] is None and block["sleep_minutes"] > 6 * 60
    else:
        named = counts or "unknown"
        assert block["scored_minutes"] == 0 and f"devices of class {named}" in block["refused"]


def test_an_upload_written_before_device_classes_reads_as_unknown() -> None:
    old_schema = json.loads(UPLOAD.path.read_text())
    device = next(f for f in old_schema["fields"] if f["name"] == "device")
    device["type"]["fields"] = [f for f in device["type"]["fields"] if f["name"] != "activity_counts"]
    record = upload("activity_count", regular_sleeper(days=1), "band")
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(old_schema), record)
    buffer.seek(0)
    decoded = fastavro.schemaless_reader(buffer, fastavro.parse_schema(old_schema), UPLOAD.parsed)
    assert decoded["device"]["activity_counts"] == "UNKNOWN"
    window = UserWindow()
    window.apply(decoded)
    assert window.count_classes == {"band": "unknown"}


def test_a_device_class_survives_the_changelog() -> None:
    window = UserWindow()
    window.apply(upload("activity_count", regular_sleeper(days=1), "band", "actigraph"))
    assert UserWindow.from_bytes(window.to_bytes()).count_classes == {"band": "actigraph"}


# --- sleep periods ---------------------------------------------------------------------------------

def stage(start: datetime, end: datetime, value: str) -> dict[str, Any]:
    return {"type": "sleep_analysis", "start": start, "end": end, "utc_offset_minutes": 0, "value": None,
            "stage": value, "unit": "stage"}


def test_a_nap_is_reported_apart_from_the_night() -> None:
    before = stage(START - timedelta(hours=1), START + timedelta(hours=7), "asleep_core")
    nap = stage(START + timedelta(hours=14), START + timedelta(hours=15), "asleep_core")
    night = stage(START + timedelta(hours=23), START + timedelta(days=1, hours=7), "asleep_core")
    sleep = {"upload_id": str(uuid.uuid4()), "user_id": "u", "received_at": START + timedelta(days=2),
             "device": {"id": "watch", "model": "m", "os": "o"}, "samples": [before, nap, night]}
    record = result(sleep)
    assert [n["date_of_sleep"] for n in record["sleep_nights"]] == ["2026-11-16", "2026-11-17"]
    main = record["sleep_nights"][1]
    assert main["main_sleep"] is True and main["night"] == "2026-11-16"
    assert main["time_in_bed_minutes"] == 480 and main["efficiency"] == 1.0 and main["waso_minutes"] == 0
    (short,) = record["naps"]
    assert short["date_of_sleep"] == "2026-11-16" and short["main_sleep"] is False
    assert short["total_sleep_minutes"] == 60


# --- only finite numbers, for what the gateway accepts ---------------------------------------------

def accepted_extremes() -> dict[str, Any]:
    """A week the gateway accepts, at its limits: counts at a double's maximum and at its smallest
    subnormal, steps at the per-minute limit, heart rate at both ends of its range."""
    now = START + timedelta(days=7, minutes=1)
    biggest, tiny = 1.7976931348623157e308, 5e-324
    samples = []
    for m in range(7 * DAY):
        at = START + timedelta(minutes=m)
        hour = (m // 60) % 24
        count = biggest if 8 <= hour < 20 else (tiny if hour % 2 else 0.0)
        end = (at + timedelta(minutes=1)).isoformat()
        samples.append({"type": "activity_count", "start": at.isoformat(), "end": end, "value": count, "unit": "count"})
        if m % 3 == 0:
            samples.append({"type": "step_count", "start": at.isoformat(), "end": end,
                            "value": MAX_STEPS_PER_MINUTE if 8 <= hour < 20 else 0, "unit": "count"})
            samples.append({"type": "heart_rate", "start": at.isoformat(), "end": at.isoformat(),
                            "value": HEART_RATE_RANGE[1] if 8 <= hour < 20 else HEART_RATE_RANGE[0],
                            "unit": "count/min"})
    body = {"upload_id": str(uuid.uuid4()), "device": {"id": "band", "model": "m", "os": "o",
                                                        "activity_counts": "actigraph"}, "samples": samples}
    request = UploadRequest.validate_python(body, ValidationRules(now=now, history=timedelta(days=30)))
    encoded = UPLOAD.encode(request.to_record("u", now))
    return SCHEMAS.decode(encoded, UPLOAD.headers(), UPLOAD, logical=False)


def test_the_extremes_the_gateway_accepts_give_only_finite_numbers() -> None:
    record = result(accepted_extremes())
    assert all(math.isfinite(n) for n in numbers(record))
    json.dumps(record, default=str, allow_nan=False)
    assert record["circadian"]["refused"] is None and record["circadian"]["interdaily_stability"] == pytest.approx(1.0)
    assert record["cosinor"]["refused"] is None and math.isfinite(record["cosinor"]["amplitude"])
    # a day's total of counts at a double's maximum is beyond a double: refused by name, not inf
    monday = record["daily_activity"][0]
    assert monday["activity_counts"] is None and "exceeds a double's range" in monday["refused"]
    assert monday["steps"] == pytest.approx(240 * MAX_STEPS_PER_MINUTE)  # every third minute of 12 hours


def test_a_flat_week_reports_no_onsets_and_no_relative_amplitude() -> None:
    record = result(upload("activity_count", np.full(7 * DAY, 120.0), "band", "actigraph"))
    block = record["circadian"]
    assert block["m10_onset"] is None and block["l5_onset"] is None and block["relative_amplitude"] is None
    assert block["m10"] == block["l5"] == 120.0 and "flat average day" in block["refused"]


# --- found in review: sums, heart rate as wear, silence about the class ----------------------------

def test_two_counts_at_a_doubles_maximum_in_one_minute_leave_the_result_finite() -> None:
    biggest = 1.7976931348623157e308
    one = upload("activity_count", regular_sleeper(), "band", "actigraph")
    at = START + timedelta(days=2, hours=12)
    huge = {"type": "activity_count", "start": at, "end": at + timedelta(minutes=1), "utc_offset_minutes": 0,
            "value": biggest, "stage": None, "unit": "count"}
    one["samples"] += [huge, huge]  # one upload's samples of a minute add up: beyond a double
    window = UserWindow()
    window.apply(one)
    assert np.isfinite(np.nan_to_num(window.tracks["band"]["activity_count"], nan=0.0)).all()
    record = build_prediction(window, "u", ["a"], START + timedelta(days=8), ModelOutcome())
    assert all(math.isfinite(n) for n in numbers(record))
    assert record["circadian"]["refused"] is None


def test_a_still_night_with_a_pulse_from_the_same_watch_is_worn() -> None:
    counts = regular_sleeper()
    minute = np.arange(7 * DAY) % DAY
    night = (minute >= 23 * 60) | (minute < 7 * 60)
    counts[night] = 0.0  # not a single count at night ...
    pulse = np.where(np.arange(7 * DAY) % 2 == 0, 58.0, np.nan)  # ... but a pulse every other minute
    watch = upload("activity_count", counts, "watch", "actigraph")
    watch["samples"] += upload("heart_rate", pulse, "watch")["samples"]
    worn = result(watch)
    assert worn["circadian"]["input"] == "activity_count" and worn["circadian"]["refused"] is None
    assert worn["scored_sleep"]["sleep_minutes"] > 6 * 60 * 6
    off_wrist = result(upload("activity_count", counts, "band", "actigraph"))  # no pulse: not worn at night
    assert off_wrist["scored_sleep"]["sleep_minutes"] < worn["scored_sleep"]["sleep_minutes"] / 10


def test_an_upload_that_does_not_state_the_class_leaves_it() -> None:
    window = UserWindow()
    window.apply(upload("activity_count", regular_sleeper(days=1), "watch", "actigraph"))
    window.apply(upload("heart_rate", np.full(60, 60.0), "watch"))  # no counts, no class stated
    assert window.count_classes == {"watch": "actigraph"}
    window.apply(upload("heart_rate", np.full(60, 60.0), "watch", "vendor"))  # stated without counts
    assert window.count_classes == {"watch": "vendor"}
    window.apply(upload("activity_count", np.full(60, 5.0), "watch"))  # counts that do not say
    assert window.count_classes == {"watch": "unknown"}
