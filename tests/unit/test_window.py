"""The per-user window: resampling, merging devices, advancing, and its changelog bytes.

``apply`` resamples with whole-array numpy operations; ``PerSampleWindow`` below keeps the
per-sample implementation it replaced, and the tests at the end hold the two to the same
window, bit for bit, on random and on realistic uploads."""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.traffic import DEVICES, TrafficModel
from circadia.avro import SchemaSet
from ingest_gateway.models import UploadRequest, ValidationRules
from prediction_worker.window import (
    APPLIED_KEPT,
    APPLIED_RETENTION_MS,
    HR_SUM,
    HR_WEIGHT,
    MINUTE_MS,
    MOVEMENT,
    WINDOW_MINUTES,
    ApplyReport,
    StateFormatError,
    UserWindow,
    _ms,
    count_class_of,
)

T0 = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)
T0_MINUTE = int(T0.timestamp()) // 60


def sample(kind: str, start: datetime, minutes: float, value: float | None = None, stage: str | None = None,
           offset: int = 0) -> dict:
    return {"type": kind, "start": start, "end": start + timedelta(minutes=minutes), "utc_offset_minutes": offset,
            "value": value, "stage": stage, "unit": "count"}


def upload(*samples: dict, device: str = "phone", received: datetime | None = None,
           upload_id: str | None = None) -> dict:
    return {"upload_id": upload_id or str(uuid.uuid4()), "user_id": "u", "received_at": received or T0,
            "device": {"id": device, "model": "m", "os": "o"}, "samples": list(samples)}


def minute(window: UserWindow, at: datetime) -> int:
    """Index of the minute starting at ``at`` in the window arrays."""
    return int(at.timestamp()) // 60 - window.start_minute


def test_a_sample_spreads_over_its_minutes_by_overlap() -> None:
    window = UserWindow()
    window.apply(upload(sample("step_count", T0 + timedelta(seconds=30), 2, 120)))  # 00:00:30-00:02:30
    steps = window.movement("step_count")
    i = minute(window, T0)
    assert steps[i:i + 3].tolist() == [30.0, 60.0, 30.0]
    assert i + 3 == WINDOW_MINUTES and np.isnan(steps[:i]).all()  # earlier minutes missing, not zero
    assert window.end_minute == T0_MINUTE + 3


def test_instant_counts_in_its_minute_and_heart_rate_is_time_weighted() -> None:
    window = UserWindow()
    window.apply(upload(sample("step_count", T0, 0, 7), sample("heart_rate", T0, 0.5, 60),
                        sample("heart_rate", T0 + timedelta(seconds=30), 0.5, 80)))
    i = minute(window, T0)
    assert window.movement("step_count")[i] == 7
    total, weight = window.heart_rate()
    assert weight[i] == pytest.approx(1.0) and total[i] / weight[i] == pytest.approx(70.0)


def test_devices_merge_by_maximum_and_a_resync_replaces() -> None:
    window = UserWindow()
    window.apply(upload(sample("step_count", T0, 1, 50), sample("step_count", T0 + timedelta(minutes=1), 1, 10),
                        device="phone"))
    window.apply(upload(sample("step_count", T0, 1, 40), sample("step_count", T0 + timedelta(minutes=1), 1, 30),
                        device="watch"))
    i = minute(window, T0)
    assert window.movement("step_count")[i:i + 2].tolist() == [50.0, 30.0]
    # the phone re-sends minute 0 in a later upload: it replaces, it does not add
    window.apply(upload(sample("step_count", T0, 1, 20), device="phone"))
    assert window.movement("step_count")[i:i + 2].tolist() == [40.0, 30.0]


def test_within_one_upload_a_devices_samples_add() -> None:
    window = UserWindow()
    window.apply(upload(sample("activity_count", T0, 1, 100), sample("activity_count", T0, 1, 25)))
    assert window.movement("activity_count")[minute(window, T0)] == 125


def test_the_window_advances_and_drops_what_falls_out() -> None:
    window = UserWindow()
    window.apply(upload(sample("step_count", T0, 1, 5)))
    later = T0 + timedelta(days=6, hours=23, minutes=59)
    window.apply(upload(sample("step_count", later, 1, 9)))
    assert window.end_minute - window.start_minute == WINDOW_MINUTES
    assert window.movement("step_count")[0] == 5  # exactly 7 days: still inside
    window.apply(upload(sample("step_count", later + timedelta(minutes=1), 1, 1)))
    assert np.count_nonzero(~np.isnan(window.movement("step_count"))) == 2  # the first minute fell out
    report = window.apply(upload(sample("step_count", T0 - timedelta(days=1), 1, 3)))
    assert report.dropped_too_old == 1


def test_sleep_reports_replace_per_device_and_expire_with_the_window() -> None:
    window = UserWindow()
    night = T0 + timedelta(hours=23)
    window.apply(upload(sample("step_count", T0, 1, 1), sample("sleep_analysis", night, 60, stage="asleep_core")))
    window.apply(upload(sample("sleep_analysis", night, 30, stage="asleep_deep"),
                        sample("sleep_analysis", night + timedelta(minutes=30), 30, stage="awake")))
    assert [iv.stage for iv in window.sleep] == ["asleep_deep", "awake"]
    window.apply(upload(sample("sleep_analysis", night, 60, stage="asleep_rem"), device="watch"))
    assert sorted(iv.stage for iv in window.sleep) == ["asleep_deep", "asleep_rem", "awake"]
    window.apply(upload(sample("step_count", T0 + timedelta(days=10), 1, 1)))
    assert window.sleep == []


def test_applied_uploads_are_remembered_for_eight_days() -> None:
    window = UserWindow()
    window.apply(upload(sample("step_count", T0, 1, 1), upload_id="first", received=T0))
    assert window.holds("first")
    late = T0 + timedelta(milliseconds=APPLIED_RETENTION_MS + 1)
    window.apply(upload(sample("step_count", late, 1, 1), upload_id="second", received=late))
    assert not window.holds("first") and window.holds("second")


def test_only_the_newest_applied_uploads_are_remembered() -> None:
    window = UserWindow()
    for i in range(APPLIED_KEPT + 20):
        window.apply(upload(sample("step_count", T0, 1, 1), upload_id=f"u{i}",
                            received=T0 + timedelta(seconds=i)))
    assert len(window.applied) == APPLIED_KEPT
    assert not window.holds("u0") and window.holds(f"u{APPLIED_KEPT + 19}")


def test_serialisation_round_trips_exactly() -> None:
    window = UserWindow()
    window.apply(upload(sample("step_count", T0, 3, 100.0 / 3), sample("heart_rate", T0, 5, 61.5),
                        sample("sleep_analysis", T0, 30, stage="in_bed", offset=-300)))
    window.apply(upload(sample("activity_count", T0, 1, 250), device="watch"))
    window.pending = ["a", "b"]
    window.last_published_ms = 123
    restored = UserWindow.from_bytes(window.to_bytes())
    assert restored.applied == window.applied and restored.pending == ["a", "b"]
    assert restored.sleep == window.sleep and restored.last_published_ms == 123
    for measure in ("step_count", "activity_count"):
        assert np.array_equal(restored.movement(measure), window.movement(measure), equal_nan=True)
    assert all(np.array_equal(a, b) for a, b in zip(restored.heart_rate(), window.heart_rate(), strict=True))


@pytest.mark.parametrize("data", [b"", b"nonsense", b"CWIN1\x00\x00\x00\x05{}abc", b"CWIN1\x00\x00\x00\x02{}x",
                                  b"CWIN2\x00\x00\x00\x02{}x", b"CWIN3\x00\x00\x00\x02{}"])
def test_corrupt_bytes_are_refused(data: bytes) -> None:
    with pytest.raises(StateFormatError):
        UserWindow.from_bytes(data)


def test_a_window_written_in_the_zlib_format_is_still_read() -> None:
    """A changelog written before the zstd format (CWIN1: zlib, sleep intervals as JSON rows in
    the header) restores to the same window."""
    import struct
    import zlib

    window = UserWindow()
    window.apply(upload(sample("step_count", T0, 1, 30), sample("heart_rate", T0, 2, 61.5),
                        sample("sleep_analysis", T0 - timedelta(hours=8), 420, stage="asleep_core")))
    assert window.sleep
    current = window.to_bytes()
    assert current.startswith(b"CWIN2")
    header = json.loads(current[9:9 + struct.unpack(">I", current[5:9])[0]])
    header["sleep"] = [[iv.start_ms, iv.end_ms, iv.stage, iv.utc_offset_minutes, iv.device] for iv in window.sleep]
    arrays = b"".join(np.ascontiguousarray(values, dtype="<f8").tobytes()
                      for measures in window.tracks.values() for values in measures.values())
    old_header = json.dumps(header).encode()
    old = b"CWIN1" + struct.pack(">I", len(old_header)) + old_header + zlib.compress(arrays, 1)
    restored = UserWindow.from_bytes(old)
    assert restored.sleep == window.sleep
    assert restored.to_bytes() == current


def test_a_window_cut_short_in_its_sleep_columns_is_refused() -> None:
    import struct

    import cramjam

    window = UserWindow()
    window.apply(upload(sample("step_count", T0, 1, 30),
                        sample("sleep_analysis", T0 - timedelta(hours=8), 420, stage="asleep_core")))
    data = window.to_bytes()
    size = struct.unpack(">I", data[5:9])[0]
    blob = bytes(cramjam.zstd.decompress(data[9 + size:]))
    cut = data[:9 + size] + bytes(cramjam.zstd.compress(blob[:-3], level=1))
    with pytest.raises(StateFormatError, match="truncated"):
        UserWindow.from_bytes(cut)


def test_a_sample_across_the_window_start_keeps_only_its_share_inside() -> None:
    window = UserWindow()
    window.apply(upload(sample("step_count", T0, 1, 1)))
    start = T0 + timedelta(minutes=1) - timedelta(minutes=WINDOW_MINUTES)  # the window's first minute
    report = window.apply(upload(sample("step_count", start - timedelta(seconds=90), 2, 120)))
    steps = window.movement("step_count")
    assert steps[0] == 30.0 and report.dropped_too_old == 0  # 30 s of its 2 minutes are inside
    assert window.apply(upload(sample("step_count", start - timedelta(minutes=2), 2, 5))).dropped_too_old == 1


def test_a_sample_without_a_number_fails_the_upload_and_leaves_the_window_alone() -> None:
    window = UserWindow()
    window.apply(upload(sample("step_count", T0, 1, 5)))
    before = window.to_bytes()
    later = T0 + timedelta(days=2)
    with pytest.raises(TypeError):
        window.apply(upload(sample("step_count", later, 1, 5), sample("heart_rate", later, 0, None)))
    assert window.to_bytes() == before


# --- the vectorised resampling against the per-sample one it replaced -------------------------------


class PerSampleWindow(UserWindow):
    """``UserWindow.apply`` as it was before it was vectorised: one numpy call per sample. The
    helpers it shares with today's class (``_advance``, ``_track``, ``_apply_sleep``) are
    unchanged, so this is the former implementation whole."""

    def apply(self, upload: Mapping[str, Any]) -> ApplyReport:
        device = str(upload["device"]["id"])
        samples = list(upload["samples"])
        received_ms = _ms(upload["received_at"])
        timed = [s for s in samples if s["type"] in (*MOVEMENT, "heart_rate")]
        if timed:
            latest = max(timed, key=lambda s: (_ms(s["end"]), _ms(s["start"])))
            latest_end = max(_ms(latest["end"]), _ms(latest["start"]) + 1)
            if -(-latest_end // MINUTE_MS) >= self.end_minute:
                self.utc_offset_minutes = int(latest["utc_offset_minutes"])
            self._advance(-(-latest_end // MINUTE_MS))
        dropped = 0
        for measure in MOVEMENT:
            dropped += self._apply_counts(device, measure, [s for s in samples if s["type"] == measure])
        dropped += self._apply_heart_rate(device, [s for s in samples if s["type"] == "heart_rate"])
        self._apply_sleep(device, [s for s in samples if s["type"] == "sleep_analysis"])
        self._note_class(device, count_class_of(upload["device"]),
                         sends_counts=any(s["type"] == "activity_count" for s in samples))
        self._remember(str(upload["upload_id"]), received_ms)
        return ApplyReport(samples=len(samples), dropped_too_old=dropped)

    def _spread_per_sample(self, samples: Iterable[Mapping[str, Any]],
                           weigh: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        values = np.zeros(WINDOW_MINUTES)
        weights = np.zeros(WINDOW_MINUTES)
        covered = np.zeros(WINDOW_MINUTES, dtype=bool)
        origin = self.start_minute * MINUTE_MS
        dropped = 0
        for sample in samples:
            start, end = _ms(sample["start"]) - origin, _ms(sample["end"]) - origin
            value = float(sample["value"])
            first = start // MINUTE_MS
            last = max(first + 1, -(-end // MINUTE_MS))  # exclusive
            if last <= 0:
                dropped += 1
                continue
            minutes = np.arange(first, last)
            if end > start:
                overlap = np.minimum((minutes + 1) * MINUTE_MS, end) - np.maximum(minutes * MINUTE_MS, start)
                share = overlap / (end - start)
                weight = overlap / MINUTE_MS
            else:
                share = weight = np.ones(1)
            inside = (minutes >= 0) & (minutes < WINDOW_MINUTES)
            minutes, share, weight = minutes[inside], share[inside], weight[inside]
            if weigh:
                np.add.at(values, minutes, value * weight)
            else:
                np.add.at(values, minutes, value * share)
            np.add.at(weights, minutes, weight)
            covered[minutes] = True
        return values, weights, covered, dropped

    def _apply_counts(self, device: str, measure: str, samples: list[Mapping[str, Any]]) -> int:
        if not samples:
            return 0
        values, _, covered, dropped = self._spread_per_sample(samples, weigh=False)
        if covered.any():
            self._track(device, measure)[covered] = np.minimum(values[covered], np.finfo(np.float64).max)
        return dropped

    def _apply_heart_rate(self, device: str, samples: list[Mapping[str, Any]]) -> int:
        if not samples:
            return 0
        sums, weights, covered, dropped = self._spread_per_sample(samples, weigh=True)
        if covered.any():
            self._track(device, HR_SUM)[covered] = sums[covered]
            self._track(device, HR_WEIGHT)[covered] = weights[covered]
        return dropped


def assert_same_window(window: UserWindow, reference: UserWindow) -> None:
    """The same state bit for bit: every track's array (NaN, signed zeros and all) in the same
    order, and the same bookkeeping (so the same changelog bytes, which ``changelog`` checks)."""
    assert (window.end_minute, window.utc_offset_minutes) == (reference.end_minute, reference.utc_offset_minutes)
    assert [(d, list(m)) for d, m in window.tracks.items()] == [(d, list(m)) for d, m in reference.tracks.items()]
    for device, measures in reference.tracks.items():
        for name, values in measures.items():
            assert window.tracks[device][name].tobytes() == values.tobytes(), (device, name)
    assert window.sleep == reference.sleep and list(window.applied.items()) == list(reference.applied.items())


def apply_both(window: UserWindow, reference: UserWindow, record: Mapping[str, Any]) -> None:
    assert window.apply(record) == reference.apply(record)
    assert_same_window(window, reference)


def changelog(window: UserWindow, reference: UserWindow) -> None:
    assert window.to_bytes() == reference.to_bytes()


@functools.cache
def full_week() -> bytes:
    """A watch's full window of minute steps and heart rate, as changelog bytes."""
    full = UserWindow()
    full.apply(upload(*(sample(kind, T0 - (i + 1) * MINUTE, 1 if kind == "step_count" else 0, 60 + i % 7)
                        for i in range(WINDOW_MINUTES) for kind in ("step_count", "heart_rate")), device="watch"))
    return full.to_bytes()


MINUTE = timedelta(minutes=1)
STAGES = ["in_bed", "asleep_core", "asleep_deep", "asleep_rem", "awake"]


@st.composite
def any_sample(draw: st.DrawFn) -> dict:
    """A sample of any type, anywhere in the last ~11 days: on or off the minute grid, an instant,
    within a minute, across minutes or days, now and then ending before it starts."""
    kind = draw(st.sampled_from(["step_count", "activity_count", "heart_rate", "heart_rate", "sleep_analysis"]))
    at = draw(st.one_of(st.integers(-11 * 1440, 60).map(lambda m: m * MINUTE_MS),
                        st.integers(-11 * 1440 * MINUTE_MS, 60 * MINUTE_MS)))
    length = draw(st.one_of(st.just(0), st.sampled_from([MINUTE_MS // 2, MINUTE_MS, 2 * MINUTE_MS]),
                            st.integers(1, MINUTE_MS), st.integers(1, 4 * 3600_000),
                            st.integers(1, 3 * 86_400_000), st.integers(-MINUTE_MS, -1)))
    start = T0 + timedelta(milliseconds=at)
    value = draw(st.one_of(st.floats(0, 5000, allow_nan=False), st.integers(0, 300).map(float)))
    return {"type": kind, "start": start, "end": start + timedelta(milliseconds=length),
            "utc_offset_minutes": draw(st.sampled_from([-300, 0, 60, 330])),
            "value": None if kind == "sleep_analysis" else value,
            "stage": draw(st.sampled_from(STAGES)) if kind == "sleep_analysis" else None, "unit": "count"}


@st.composite
def upload_sequence(draw: st.DrawFn) -> list[dict]:
    """Uploads from up to three devices, in any order; some re-send an earlier upload's samples,
    or a subset of them with other values (a re-sync), later on."""
    uploads: list[dict] = []
    for index in range(draw(st.integers(1, 6))):
        device = draw(st.sampled_from(["phone", "watch", "band"]))
        received = T0 + timedelta(seconds=draw(st.integers(0, 9 * 86_400)))
        if len(uploads) > 0 and draw(st.booleans()):
            earlier = draw(st.sampled_from(uploads))["samples"]
            picked = draw(st.lists(st.sampled_from(earlier), min_size=1, max_size=len(earlier)))
            scale = draw(st.sampled_from([1.0, 0.5, 3.0]))
            samples = [dict(s, value=None if s["value"] is None else s["value"] * scale) for s in picked]
        else:
            samples = draw(st.lists(any_sample(), min_size=1, max_size=25))
            if draw(st.booleans()):  # one across the start of the window this upload would end
                latest = max(s["end"] for s in samples) - timedelta(minutes=WINDOW_MINUTES)
                into = timedelta(milliseconds=draw(st.integers(-3 * 3600_000, 3 * 3600_000)))
                across = draw(st.integers(1, 6 * 3600_000))
                samples.append(dict(draw(any_sample()), type=draw(st.sampled_from(["step_count", "heart_rate"])),
                                    value=draw(st.floats(0, 500)), start=latest + into,
                                    end=latest + into + timedelta(milliseconds=across)))
        shift = timedelta(minutes=draw(st.sampled_from([0, 0, 1, 37, 1440, 8 * 1440])))
        samples = [dict(s, start=s["start"] + shift, end=s["end"] + shift) for s in samples]
        uploads.append(upload(*samples, device=device, received=received, upload_id=f"upload-{index}"))
    return uploads


@settings(max_examples=250, deadline=None)
@given(uploads=upload_sequence())
def test_vectorised_apply_gives_the_per_sample_window_bit_for_bit(uploads: list[dict]) -> None:
    window, reference = UserWindow(), PerSampleWindow()
    for record in uploads:
        apply_both(window, reference, record)


@settings(max_examples=100, deadline=None)
@given(samples=st.lists(any_sample(), min_size=1, max_size=40), ends_at=st.integers(-3 * 1440, 3 * 1440))
def test_vectorised_apply_into_a_full_window_gives_the_per_sample_one(samples: list[dict], ends_at: int) -> None:
    window, reference = UserWindow.from_bytes(full_week()), PerSampleWindow.from_bytes(full_week())
    assert isinstance(reference, PerSampleWindow)
    shifted = [dict(s, start=s["start"] + ends_at * MINUTE, end=s["end"] + ends_at * MINUTE) for s in samples]
    apply_both(window, reference, upload(*shifted, device="watch"))
    apply_both(window, reference, upload(*shifted[: len(shifted) // 2], device="phone"))
    changelog(window, reference)


def test_vectorised_apply_gives_the_per_sample_window_on_the_traffic_model() -> None:
    """Three users' devices (a watch, a band, a RADAR-style phone) into one window: prefill days,
    then their ongoing uploads interleaved (small ones, sleep, re-syncs, 1 Hz heart rate), each
    decoded from the Avro the gateway writes, as the worker receives it."""
    now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    schemas, rules = SchemaSet.load(), ValidationRules(now=now)
    schema = schemas["io.circadia.health.HealthUpload"]
    model = TrafficModel(seed=5, week_days=2, backlog_fraction=0.15, backlog_days=(0.25, 0.5))
    profile_of = {device[0]: profile for profile, device in DEVICES.items()}
    users: dict[str, str] = {}
    prefills = []
    for index in range(200):
        name = f"window-{index}"
        prefill = model.prefill(name, now)
        profile = profile_of[prefill[0].body["device"]["model"]]
        if profile not in users:
            users[profile] = name
            prefills += prefill
        if len(users) == len(DEVICES):
            break

    def decoded(body: dict, user: str, logical: bool = True) -> dict:
        value = schema.write(UploadRequest.validate_json(json.dumps(body), rules).to_record(user, now))
        return schemas.decode(value, schema.headers(), schema, logical=logical)

    # the worker decodes with logical=False (instants stay integer milliseconds): same window
    window, reference, as_ints = UserWindow(), PerSampleWindow(), UserWindow()
    for item in prefills:
        apply_both(window, reference, decoded(item.body, item.user))
        as_ints.apply(decoded(item.body, item.user, logical=False))
    kinds = set()
    for _ in range(15):
        for name in users.values():
            item = model.next_upload(name, now)
            kinds.add(item.kind)
            apply_both(window, reference, decoded(item.body, name))
            as_ints.apply(decoded(item.body, name, logical=False))
    changelog(window, reference)
    assert as_ints.to_bytes() == window.to_bytes()
    assert {"small", "radar", "backlog"} <= kinds and len(window.tracks) == 3


def test_samples_that_each_span_the_week_are_resampled_in_bounded_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hostile upload of long samples (each spans every minute of the window) is resampled a
    batch of pieces at a time: the same numbers as one sample at a time, within rounding (the
    batches' sums are added in upload order)."""
    from prediction_worker import window as module

    monkeypatch.setattr(module, "MAX_PIECES", 25_000)  # 60 samples × 10,080 minutes: 25 batches
    record = upload(*(sample("step_count", T0, 7 * 1440, value=float(7 * 1440 + i)) for i in range(30)),
                    *(sample("heart_rate", T0 + timedelta(seconds=i), 7 * 1440, value=60.0 + i) for i in range(30)))
    window, reference = UserWindow(), PerSampleWindow()
    assert window.apply(record) == reference.apply(record)
    assert window.end_minute == reference.end_minute
    for name in ("step_count", HR_SUM, HR_WEIGHT):
        np.testing.assert_allclose(window.tracks["phone"][name], reference.tracks["phone"][name], rtol=1e-12)


def test_pending_is_read_from_the_header_alone() -> None:
    window = UserWindow()
    window.apply(upload(sample("step_count", T0, 1, 30)))
    window.pending = ["a", "b"]
    assert UserWindow.pending_in(window.to_bytes()) == ["a", "b"] == UserWindow.from_bytes(window.to_bytes()).pending
    for data in (b"", b"CWIN2\x00\x00\x00\x05{}abc", b"CWIN2\x00\x00\x00\x02{}"):
        with pytest.raises(StateFormatError):
            UserWindow.pending_in(data)
