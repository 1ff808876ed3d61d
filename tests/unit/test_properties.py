"""Hypothesis properties of the pieces every result passes through: the window's resampling
and merging, Avro round trips, and a connection's ordering and de-duplication on resume."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from circadia.avro import SchemaSet
from circadia.jsonable import jsonable
from fanout_gateway.sendqueue import Connection, Push
from prediction_worker.window import WINDOW_MINUTES, UserWindow

SCHEMAS = SchemaSet.load()
T0 = datetime(2026, 11, 20, tzinfo=UTC)

# --- the window --------------------------------------------------------------------------------

movement = st.builds(
    lambda start, seconds, value, offset: {
        "type": "step_count", "start": T0 + timedelta(seconds=start), "end": T0 + timedelta(seconds=start + seconds),
        "utc_offset_minutes": offset, "value": value, "stage": None, "unit": "count"},
    start=st.integers(0, 6 * 24 * 3600), seconds=st.integers(0, 3 * 3600),
    value=st.floats(0, 5000, allow_nan=False), offset=st.sampled_from([-300, 0, 60, 330]))


def upload(samples: list[dict], device: str = "phone") -> dict:
    return {"upload_id": str(uuid.uuid4()), "user_id": "u", "received_at": T0,
            "device": {"id": device, "model": "m", "os": "o"}, "samples": samples}


@settings(max_examples=150, deadline=None)
@given(samples=st.lists(movement, min_size=1, max_size=30))
def test_resampling_keeps_every_step_and_marks_only_covered_minutes(samples: list[dict]) -> None:
    window = UserWindow()
    window.apply(upload(samples))
    steps = window.movement("step_count")
    # the window ends at the latest data; everything uploaded fits in its 7 days, and spreading a
    # sample over its minutes neither creates nor loses steps
    total = sum(s["value"] for s in samples)
    assert abs(np.nansum(steps) - total) <= 1e-9 * max(1.0, total)
    covered = ~np.isnan(steps)
    expected = np.zeros(WINDOW_MINUTES, dtype=bool)
    origin = window.start_minute * 60_000
    for sample in samples:
        start = int(sample["start"].timestamp() * 1000) - origin
        end = int(sample["end"].timestamp() * 1000) - origin
        first = start // 60_000
        expected[first:max(first + 1, -(-end // 60_000))] = True
    assert np.array_equal(covered, expected)


@settings(max_examples=80, deadline=None)
@given(phone=st.lists(movement, min_size=1, max_size=10), watch=st.lists(movement, min_size=1, max_size=10))
def test_devices_merge_by_the_per_minute_maximum_and_round_trip(phone: list[dict], watch: list[dict]) -> None:
    probe = UserWindow()  # the window end both devices' data share
    probe.apply(upload(phone + watch, device="probe"))
    alone = {}
    for device, samples in (("phone", phone), ("watch", watch)):
        single = UserWindow(end_minute=probe.end_minute)
        single.apply(upload(samples, device=device))
        alone[device] = single.movement("step_count")
    both = UserWindow(end_minute=probe.end_minute)
    both.apply(upload(phone, device="phone"))
    both.apply(upload(watch, device="watch"))
    assert np.array_equal(both.movement("step_count"), np.fmax(alone["phone"], alone["watch"]), equal_nan=True)
    restored = UserWindow.from_bytes(both.to_bytes())
    assert np.array_equal(restored.movement("step_count"), both.movement("step_count"), equal_nan=True)
    assert restored.applied == both.applied


# --- Avro round trips ---------------------------------------------------------------------------

instants = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1),
                        timezones=st.just(UTC)).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))
optional_number = st.none() | st.floats(allow_nan=False, allow_infinity=False, width=64)
days = st.fixed_dictionaries({
    "date": st.dates().map(str), "steps": optional_number, "activity_counts": optional_number,
    "minutes_covered": st.integers(0, 1440), "coverage": st.floats(0, 1), "heart_rate_mean": optional_number,
    "heart_rate_minutes": st.integers(0, 1440),
    "movement_input": st.none() | st.sampled_from(["activity_count", "step_count"]),
    "wear_minutes": st.integers(0, 1440), "wear_rule": st.none() | st.text(max_size=40),
    "refused": st.none() | st.text(max_size=40)})
predictions = st.fixed_dictionaries({
    "prediction_id": st.uuids().map(str), "user_id": st.text(min_size=1, max_size=40),
    "source_upload_ids": st.lists(st.uuids().map(str), min_size=1, max_size=5), "computed_at": instants,
    "window_start": instants, "window_end": instants, "code_version": st.text(max_size=20),
    "daily_activity": st.lists(days, max_size=8),
    "methods": st.dictionaries(st.text(min_size=1, max_size=20), st.text(max_size=40), max_size=5),
    "window_minutes_covered": st.integers(0, WINDOW_MINUTES), "window_coverage": st.floats(0, 1),
    "circadian": st.none(), "cosinor": st.none(), "sleep_nights": st.just([]), "naps": st.just([]),
    "scored_sleep": st.none(),
    "pat": st.none() | st.fixed_dictionaries({
        "model_id": st.sampled_from(["PAT-S", "PAT-M", "PAT-L"]), "weights_sha256": st.text("0123456789abcdef",
                                                                                              min_size=64, max_size=64),
        "normalisation": st.text(max_size=30), "input": st.just("activity_count"), "coverage": st.floats(0, 1),
        "embedding": st.lists(st.floats(-1e3, 1e3, width=32), min_size=96, max_size=96)}),
    "pat_unavailable": st.none() | st.text(max_size=60), "clinical_scores": st.just([]),
    "as_of": st.dictionaries(st.sampled_from(["window", "daily_activity", "circadian", "pat"]),
                             st.fixed_dictionaries({"computed_at": instants, "window_end": instants}), max_size=4),
    "sealed": st.none()})


@settings(max_examples=150, deadline=None)
@given(record=predictions)
def test_any_prediction_round_trips_through_avro(record: dict) -> None:
    schema = SCHEMAS["io.circadia.prediction.Prediction"]
    decoded = SCHEMAS.decode(schema.encode(record), schema.headers(), schema)
    assert jsonable(decoded) == jsonable(record)


# --- a connection's order on resume -------------------------------------------------------------

class QuietSocket:
    """Stands in for the socket: the connection under test only queues, it never writes."""

    async def close(self, code: int, reason: str) -> None:
        pass


def queued(connection: Connection) -> list[int]:
    offsets = []
    while not connection._queue.empty():
        text, _ = connection._queue.get_nowait()
        offsets.append(int(text))
    return offsets


@st.composite
def resume_scenario(draw: st.DrawFn) -> tuple[list[int], list[int], int, list[int]]:
    """What the history holds, what arrives live while it is read (every live record is in the
    history by then, or newer than all of it), the client's cursor, and what arrives after."""
    history = sorted(draw(st.lists(st.integers(0, 200), max_size=40, unique=True)))
    newer = draw(st.lists(st.integers(201, 260), max_size=10))
    live = draw(st.lists(st.sampled_from(history), max_size=20)) if history else []
    live = draw(st.permutations(live + newer))
    cursor = draw(st.integers(-1, 220))
    later = draw(st.lists(st.integers(0, 300), max_size=20))  # a re-reading replica sends old ones too
    return history, live, cursor, later


@settings(max_examples=300, deadline=None)
@given(scenario=resume_scenario())
def test_resume_delivers_in_order_without_gaps_or_duplicates(scenario: tuple) -> None:
    history, live, cursor, later = scenario

    async def run() -> list[int]:
        connection = Connection(QuietSocket(), "u", queue_size=1000)  # type: ignore[arg-type]
        for offset in live:  # arrives while the history is being read: held back
            connection.push(Push(0, offset, str(offset)))
        connection.go_live([Push(0, o, str(o)) for o in history if o > cursor], after=(0, cursor))
        for offset in sorted(later):
            connection.push(Push(0, offset, str(offset)))
        return queued(connection)

    sent = asyncio.run(run())
    assert sent == sorted(set(sent))  # strictly increasing: in order, nothing twice
    assert all(o > cursor for o in sent)  # nothing the client already has
    caught_up = {o for o in history + live if o > cursor}
    assert caught_up <= set(sent)  # no gap between the cursor and the live stream
