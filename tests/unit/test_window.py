"""The per-user window: resampling, merging devices, advancing, and its changelog bytes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from prediction_worker.window import (
    APPLIED_RETENTION_MS,
    WINDOW_MINUTES,
    StateFormatError,
    UserWindow,
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
    from prediction_worker.window import APPLIED_KEPT

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


@pytest.mark.parametrize("data", [b"", b"nonsense", b"CWIN1\x00\x00\x00\x05{}abc", b"CWIN1\x00\x00\x00\x02{}x"])
def test_corrupt_bytes_are_refused(data: bytes) -> None:
    with pytest.raises(StateFormatError):
        UserWindow.from_bytes(data)
