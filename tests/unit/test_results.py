"""From a window to the Prediction record: which groups appear, on which input, and that a
failing group is refused rather than sinking the result."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from circadia.avro import SchemaSet
from prediction_worker import metrics, results
from prediction_worker.results import ModelOutcome, build_prediction
from prediction_worker.window import UserWindow

SCHEMA = SchemaSet.load()["io.circadia.prediction.Prediction"]
START = datetime(2026, 11, 16, tzinfo=UTC)


def week(kind: str, device: str = "watch", counts: str = "actigraph") -> dict:
    """Seven days of minute counts with a daily rhythm (active by day, quiet at night)."""
    rng = np.random.default_rng(7)
    samples = []
    for m in range(7 * 1440):
        hour = (m % 1440) / 60
        level = 200 + 180 * np.cos(2 * np.pi * (hour - 15) / 24)
        start = START + timedelta(minutes=m)
        samples.append({"type": kind, "start": start, "end": start + timedelta(minutes=1), "utc_offset_minutes": 60,
                        "value": float(max(0.0, level + rng.normal(0, 20))), "stage": None, "unit": "count"})
    return {"upload_id": str(uuid.uuid4()), "user_id": "u", "received_at": START + timedelta(days=7),
            "device": {"id": device, "model": "m", "os": "o", "activity_counts": counts}, "samples": samples}


def test_a_week_of_activity_counts_yields_every_group_and_encodes() -> None:
    window = UserWindow()
    window.apply(week("activity_count"))
    record = build_prediction(window, "u", ["a"], START, ModelOutcome())
    assert record["window_minutes_covered"] == 7 * 1440 and record["window_coverage"] == 1.0
    assert record["circadian"]["input"] == "activity_count" and record["circadian"]["refused"] is None
    assert record["circadian"]["interdaily_stability"] > 0.9
    assert record["cosinor"]["acrophase"] == "16:00"  # peak at 15:00 UTC, shown in local time (UTC+1)
    assert record["scored_sleep"]["refused"] is None and record["scored_sleep"]["scored_minutes"] > 0
    assert record["pat"] is None and record["clinical_scores"] == []
    assert set(record["methods"]) >= {"window", "daily_activity", "circadian", "cosinor", "scored_sleep"}
    SCHEMA.encode(record)


def test_phone_steps_are_never_scored_as_sleep() -> None:
    window = UserWindow()
    window.apply(week("step_count", device="phone"))
    record = build_prediction(window, "u", ["a"], START, ModelOutcome())
    assert record["circadian"]["input"] == "step_count"
    assert record["scored_sleep"] is None and "scored_sleep" not in record["methods"]


def test_activity_counts_are_preferred_over_steps_for_the_rhythm() -> None:
    window = UserWindow()
    window.apply(week("step_count", device="phone"))
    window.apply(week("activity_count", device="watch"))
    assert build_prediction(window, "u", [], START, ModelOutcome())["cosinor"]["input"] == "activity_count"


def test_a_failing_group_is_refused_counted_and_the_rest_survive(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(series: object) -> dict:
        raise FloatingPointError("boom")

    monkeypatch.setattr(results, "nonparametric", broken)
    before = metrics.METRIC_ERRORS.labels("circadian")._value.get()
    window = UserWindow()
    window.apply(week("activity_count"))
    record = build_prediction(window, "u", [], START, ModelOutcome())
    assert record["circadian"]["refused"] == "internal error: FloatingPointError"
    assert record["circadian"]["interdaily_stability"] is None
    assert record["cosinor"]["refused"] is None
    assert metrics.METRIC_ERRORS.labels("circadian")._value.get() == before + 1
    SCHEMA.encode(record)


def test_an_empty_window_has_no_rhythm_groups() -> None:
    record = build_prediction(UserWindow(), "u", [], START, ModelOutcome())
    assert record["circadian"] is None and record["cosinor"] is None and record["daily_activity"] == []
    SCHEMA.encode(record)
