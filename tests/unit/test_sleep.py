"""Cole–Kripke scoring and nights from device stages, on hand-computed cases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from prediction_worker.science.series import MinuteSeries
from prediction_worker.science.sleep import (
    StageInterval,
    cole_kripke,
    cole_kripke_index,
    cole_kripke_scores,
    sleep_nights,
)

NAN = np.nan


def counts_series(values: list[float] | np.ndarray, input: str = "activity_count") -> MinuteSeries:
    return MinuteSeries(start_minute=29_000_000, values=np.asarray(values, dtype=float),
                        utc_offset_minutes=0, input=input)


# --- Cole–Kripke --------------------------------------------------------------------------------

def test_hand_computed_window_with_actilife_scaling() -> None:
    # counts 100, 200, 0, 50, 120, 30, 10 scale (÷100) to 1, 2, 0, 0.5, 1.2, 0.3, 0.1:
    # D = 0.001·(106·1 + 54·2 + 58·0 + 76·0.5 + 230·1.2 + 74·0.3 + 67·0.1)
    #   = 0.001·(106 + 108 + 0 + 38 + 276 + 22.2 + 6.7) = 0.5569 -> sleep
    # (unscaled counts would give 556.9 -> wake)
    counts = [100, 200, 0, 50, 120, 30, 10]
    index = cole_kripke_index(np.array(counts, dtype=float))
    assert index[4] == pytest.approx(0.5569, abs=1e-12)
    assert np.isnan(index[[0, 1, 2, 3, 5, 6]]).all()  # no full window at the edges
    scores = cole_kripke_scores(np.array(counts, dtype=float))
    assert scores[4] == 1.0 and np.isnan(np.delete(scores, 4)).all()


def test_one_burst_seen_through_every_weight() -> None:
    # 1000 counts (scaled 10) at epoch 6, zeros elsewhere; epoch e sees it at offset 6 − e:
    #   e=4: A₊₂ 0.001·67·10 = 0.67 sleep     e=8:  A₋₂ 0.001·58·10  = 0.58 sleep
    #   e=5: A₊₁ 0.001·74·10 = 0.74 sleep     e=9:  A₋₃ 0.001·54·10  = 0.54 sleep
    #   e=6: A₀  0.001·230·10 = 2.30 wake     e=10: A₋₄ 0.001·106·10 = 1.06 wake
    #   e=7: A₋₁ 0.001·76·10 = 0.76 sleep
    counts = np.zeros(13)
    counts[6] = 1000
    index = cole_kripke_index(counts)
    np.testing.assert_allclose(index[4:11], [0.67, 0.74, 2.30, 0.76, 0.58, 0.54, 1.06], atol=1e-12)
    np.testing.assert_array_equal(cole_kripke_scores(counts)[4:11], [1, 1, 0, 1, 1, 1, 0])


def test_threshold_is_strictly_below_one() -> None:
    # A₀ alone: 0.001·230·4.34 = 0.9982 -> sleep; 0.001·230·4.35 = 1.0005 -> wake
    assert cole_kripke_scores(np.array([0, 0, 0, 0, 434, 0, 0.0]))[4] == 1.0
    assert cole_kripke_scores(np.array([0, 0, 0, 0, 435, 0, 0.0]))[4] == 0.0


def test_scaled_counts_are_capped_at_300() -> None:
    # 50 000 counts scale to min(500, 300) = 300: D = 0.001·230·300 = 69, not 115
    assert cole_kripke_index(np.array([0, 0, 0, 0, 50_000, 0, 0.0]))[4] == pytest.approx(69.0)
    assert cole_kripke_index(np.array([0, 0, 0, 0, 30_000, 0, 0.0]))[4] == pytest.approx(69.0)


def test_all_zero_counts_are_sleep_and_large_counts_wake() -> None:
    assert (cole_kripke_scores(np.zeros(100))[4:-2] == 1.0).all()
    assert (cole_kripke_scores(np.full(100, 5000.0))[4:-2] == 0.0).all()


def test_a_missing_minute_leaves_every_epoch_whose_window_holds_it_unscored() -> None:
    counts = np.zeros(20)
    counts[10] = NAN
    scores = cole_kripke_scores(counts)
    # epoch e's window is e−4 .. e+2, so minute 10 is in the windows of epochs 8 .. 14
    assert np.isnan(scores[8:15]).all()
    assert (scores[4:8] == 1.0).all() and (scores[15:18] == 1.0).all()


def test_summary_counts_scored_sleep_and_wake_minutes() -> None:
    counts = np.zeros(200)
    counts[100:150] = 5000.0  # wake from epoch 98 (A₊₂ sees it) to epoch 153 (A₋₄ sees it)
    result = cole_kripke(counts_series(counts))
    assert result["refused"] is None and result["method"] == "cole-kripke-1992/1min-actilife-scaling@1"
    assert result["scored_minutes"] == 194 and result["coverage"] == pytest.approx(194 / 200)
    assert result["wake_minutes"] == 56 and result["sleep_minutes"] == 138


def test_missing_minutes_are_not_scored_as_sleep() -> None:
    # Zero-filling the gap would add 40 + 6 sleep minutes; as missing they are unscored
    counts = np.zeros(200)
    counts[80:120] = NAN
    result = cole_kripke(counts_series(counts))
    assert result["scored_minutes"] == 200 - 6 - 40 - 6
    assert result["sleep_minutes"] == result["scored_minutes"]


def test_step_counts_are_refused() -> None:
    result = cole_kripke(counts_series(np.zeros(1440), input="step_count"))
    assert result["refused"] is not None and "step_count" in result["refused"]
    assert (result["scored_minutes"], result["sleep_minutes"], result["wake_minutes"]) == (0, 0, 0)
    assert result["coverage"] == 0.0 and result["input"] == "step_count"


def test_fewer_than_60_scorable_minutes_are_refused() -> None:
    # n minutes of data give n − 6 scorable epochs
    short = cole_kripke(counts_series(np.zeros(65)))
    assert short["refused"] is not None and short["scored_minutes"] == 0
    assert short["coverage"] == pytest.approx(59 / 65)
    enough = cole_kripke(counts_series(np.zeros(66)))
    assert enough["refused"] is None and enough["scored_minutes"] == 60


# --- nights from device-reported stages ---------------------------------------------------------

OFFSET = -300  # UTC−5


def local_ms(day: int, hour: int, minute: int = 0, offset: int = OFFSET) -> int:
    """Epoch ms of a local clock time in March 2026 at the given UTC offset."""
    local = datetime(2026, 3, day, hour, minute, tzinfo=UTC)
    return int((local - timedelta(minutes=offset)).timestamp() * 1000)


def stage(stage_name: str, start: tuple[int, int, int], end: tuple[int, int, int],
          offset: int = OFFSET) -> StageInterval:
    return StageInterval(local_ms(*start, offset=offset), local_ms(*end, offset=offset), stage_name, offset)


HAND_NIGHT = [
    stage("in_bed", (10, 22, 30), (11, 6, 45)),
    stage("asleep_core", (10, 23, 0), (11, 1, 0)),
    stage("asleep_deep", (11, 1, 0), (11, 2, 0)),  # touches the core interval: no awakening
    stage("awake", (11, 2, 0), (11, 2, 20)),
    stage("asleep_rem", (11, 2, 20), (11, 6, 30)),
]


def test_hand_built_night() -> None:
    (night,) = sleep_nights(HAND_NIGHT)
    assert night["night"] == "2026-03-10" and night["refused"] is None
    assert night["method"] == "sleep-stages/device-reported@1"
    # 22:30 local at UTC−5 is 03:30 UTC the next day
    assert night["bed_start"] == datetime(2026, 3, 11, 3, 30, tzinfo=UTC)
    assert night["bed_end"] == datetime(2026, 3, 11, 11, 45, tzinfo=UTC)
    assert night["time_in_bed_minutes"] == 495.0  # 22:30 -> 06:45
    assert night["total_sleep_minutes"] == 430.0  # 23:00-02:00 (180) + 02:20-06:30 (250)
    assert night["efficiency"] == pytest.approx(430 / 495)
    assert night["onset_latency_minutes"] == 30.0  # 22:30 -> 23:00
    assert night["waso_minutes"] == 20.0  # 23:00 -> 06:30 is 450, minus 430 asleep
    assert night["awakenings"] == 1


def test_overlapping_reports_from_two_devices_count_once() -> None:
    watch = [stage("asleep_unspecified", (10, 23, 30), (11, 1, 30)),  # inside the phone's sleep
             stage("asleep_unspecified", (11, 6, 0), (11, 6, 40))]    # runs 10 min past it
    (night,) = sleep_nights(HAND_NIGHT + watch)
    assert night["total_sleep_minutes"] == 440.0
    assert night["waso_minutes"] == 20.0  # 23:00 -> 06:40 is 460, minus 440
    assert night["awakenings"] == 1
    (duplicated,) = sleep_nights(HAND_NIGHT + HAND_NIGHT)
    assert duplicated["total_sleep_minutes"] == 430.0 and duplicated["time_in_bed_minutes"] == 495.0


def test_night_boundary_is_local_noon() -> None:
    # At UTC+9, 11:00 local on the 11th is 02:00 UTC; 13:00 local is 04:00 UTC
    late_nap = stage("asleep_core", (11, 11, 0), (11, 11, 30), offset=540)
    afternoon_nap = stage("asleep_core", (11, 13, 0), (11, 13, 30), offset=540)
    at_noon = stage("asleep_core", (12, 12, 0), (12, 12, 30), offset=540)
    nights = sleep_nights([at_noon, afternoon_nap, late_nap])
    assert [n["night"] for n in nights] == ["2026-03-10", "2026-03-11", "2026-03-12"]
    assert [n["total_sleep_minutes"] for n in nights] == [30.0, 30.0, 30.0]


def test_interval_belongs_to_the_night_of_its_start() -> None:
    # Starts at 11:50 local, ends 12:30: wholly in the night of the 10th
    (night,) = sleep_nights([stage("asleep_core", (11, 11, 50), (11, 12, 30))])
    assert night["night"] == "2026-03-10" and night["total_sleep_minutes"] == 40.0


def test_night_without_asleep_stage_is_refused() -> None:
    intervals = [stage("in_bed", (10, 22, 0), (11, 7, 0)), stage("awake", (11, 3, 0), (11, 3, 30)),
                 stage("UNKNOWN", (10, 23, 0), (11, 8, 0))]  # unrecognised stages are ignored
    (night,) = sleep_nights(intervals)
    assert night["refused"] is not None and "asleep" in night["refused"]
    assert night["bed_end"] == datetime(2026, 3, 11, 12, 0, tzinfo=UTC)
    for key in ("time_in_bed_minutes", "total_sleep_minutes", "efficiency", "onset_latency_minutes",
                "waso_minutes", "awakenings"):
        assert night[key] is None


def test_nights_come_in_order_and_empty_input_gives_none() -> None:
    second = [stage("asleep_core", (12, 23, 0), (13, 6, 0))]
    nights = sleep_nights(second + HAND_NIGHT)
    assert [n["night"] for n in nights] == ["2026-03-10", "2026-03-12"]
    assert nights[1]["awakenings"] == 0 and nights[1]["waso_minutes"] == 0.0
    assert sleep_nights([]) == []


def test_interval_ending_before_it_starts_is_rejected() -> None:
    with pytest.raises(ValueError):
        StageInterval(start_ms=2_000, end_ms=1_000, stage="awake", utc_offset_minutes=0)
