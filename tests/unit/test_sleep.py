"""Cole–Kripke scoring and sleep periods / nights from device stages, on hand-computed cases."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prediction_worker.science.series import MinuteSeries
from prediction_worker.science.sleep import (
    PERIOD_GAP_MINUTES,
    STAGES,
    StageInterval,
    cole_kripke,
    cole_kripke_index,
    cole_kripke_scores,
    sleep_nights,
    sleep_periods,
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


# --- sleep periods and nights from device-reported stages --------------------------------------

OFFSET = -300  # UTC−5
KEYS = {"night", "date_of_sleep", "main_sleep", "method", "bed_start", "bed_end", "refused",
        "time_in_bed_minutes", "total_sleep_minutes", "efficiency", "onset_latency_minutes",
        "waso_minutes", "awakenings"}
NUMBERS = ("time_in_bed_minutes", "total_sleep_minutes", "efficiency", "onset_latency_minutes",
           "waso_minutes", "awakenings")


def local_ms(day: int, hour: int, minute: int = 0, offset: int = OFFSET) -> int:
    """Epoch ms of a local clock time in March 2026 at the given UTC offset."""
    local = datetime(2026, 3, day, hour, minute, tzinfo=UTC)
    return int((local - timedelta(minutes=offset)).timestamp() * 1000)


def stage(stage_name: str, start: tuple[int, int, int], end: tuple[int, int, int],
          offset: int = OFFSET) -> StageInterval:
    return StageInterval(local_ms(*start, offset=offset), local_ms(*end, offset=offset), stage_name, offset)


def utc(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC)


HAND_NIGHT = [
    stage("in_bed", (10, 22, 30), (11, 6, 45)),
    stage("asleep_core", (10, 23, 0), (11, 1, 0)),
    stage("asleep_deep", (11, 1, 0), (11, 2, 0)),  # touches the core interval: no awakening
    stage("awake", (11, 2, 0), (11, 2, 20)),
    stage("asleep_rem", (11, 2, 20), (11, 6, 30)),
]


def test_hand_built_night() -> None:
    (night,), naps = sleep_nights(HAND_NIGHT)
    assert naps == [] and set(night) == KEYS
    # ends 06:45 on the 11th: date of sleep the 11th, "night" the evening before
    assert night["date_of_sleep"] == "2026-03-11" and night["night"] == "2026-03-10"
    assert night["main_sleep"] is True and night["refused"] is None
    assert night["method"] == "sleep-stages/device-reported@2"
    # 22:30 local at UTC−5 is 03:30 UTC the next day
    assert night["bed_start"] == utc(11, 3, 30)
    assert night["bed_end"] == utc(11, 11, 45)
    assert night["time_in_bed_minutes"] == 495.0  # 22:30 -> 06:45
    assert night["total_sleep_minutes"] == 430.0  # 23:00-02:00 (180) + 02:20-06:30 (250)
    assert night["efficiency"] == pytest.approx(430 / 495)
    assert night["onset_latency_minutes"] == 30.0  # 22:30 -> 23:00
    assert night["waso_minutes"] == 20.0  # 23:00 -> 06:30 is 450, minus 430 asleep
    assert night["awakenings"] == 1


def test_overlapping_reports_from_two_devices_count_once() -> None:
    watch = [stage("asleep_unspecified", (10, 23, 30), (11, 1, 30)),  # inside the phone's sleep
             stage("asleep_unspecified", (11, 6, 0), (11, 6, 40))]    # runs 10 min past it
    (night,), naps = sleep_nights(HAND_NIGHT + watch)
    assert naps == []
    assert night["total_sleep_minutes"] == 440.0
    assert night["waso_minutes"] == 20.0  # 23:00 -> 06:40 is 460, minus 440
    assert night["awakenings"] == 1
    (duplicated,), naps = sleep_nights(HAND_NIGHT + HAND_NIGHT)
    assert naps == []
    assert duplicated["total_sleep_minutes"] == 430.0 and duplicated["time_in_bed_minutes"] == 495.0


def test_afternoon_nap_is_not_merged_into_the_night() -> None:
    # Noon-to-noon grouping put the 14:00 nap and the 23:00 night in one "night" of 17 h in bed
    previous_night = [stage("asleep_core", (9, 23, 0), (10, 7, 0))]
    nap = [stage("asleep_core", (10, 14, 0), (10, 15, 0))]
    night = [stage("in_bed", (10, 23, 0), (11, 7, 0)),
             stage("asleep_core", (10, 23, 20), (11, 2, 0)),
             stage("awake", (11, 2, 0), (11, 2, 30)),
             stage("asleep_rem", (11, 2, 30), (11, 6, 40))]
    mains, naps = sleep_nights(night + nap + previous_night)
    assert [m["date_of_sleep"] for m in mains] == ["2026-03-10", "2026-03-11"]
    assert all(m["main_sleep"] for m in mains)
    main = mains[1]
    assert main["night"] == "2026-03-10"
    assert main["bed_start"] == utc(11, 4, 0) and main["bed_end"] == utc(11, 12, 0)
    assert main["time_in_bed_minutes"] == 480.0  # 23:00 -> 07:00, not 17 h
    assert main["total_sleep_minutes"] == 410.0  # 23:20-02:00 (160) + 02:30-06:40 (250)
    assert main["efficiency"] == pytest.approx(410 / 480)
    assert main["onset_latency_minutes"] == 20.0
    assert main["waso_minutes"] == 30.0  # 23:20 -> 06:40 is 440, minus 410
    assert main["awakenings"] == 1
    # the nap ends on the 10th, whose main sleep is the 480-minute previous night
    assert mains[0]["total_sleep_minutes"] == 480.0
    (nap_entry,) = naps
    assert set(nap_entry) == KEYS and nap_entry["main_sleep"] is False
    assert nap_entry["date_of_sleep"] == "2026-03-10" and nap_entry["night"] == "2026-03-09"
    assert nap_entry["bed_start"] == utc(10, 19, 0) and nap_entry["bed_end"] == utc(10, 20, 0)
    assert nap_entry["total_sleep_minutes"] == 60.0 and nap_entry["time_in_bed_minutes"] == 60.0
    assert nap_entry["efficiency"] == 1.0 and nap_entry["waso_minutes"] == 0.0


def test_shift_worker_day_sleep_is_the_main_sleep_of_its_date() -> None:
    night_before = [stage("asleep_core", (9, 23, 0), (10, 7, 0))]
    day_sleep = [stage("in_bed", (11, 8, 0), (11, 15, 0)),
                 stage("asleep_core", (11, 8, 15), (11, 14, 45))]
    pre_shift_nap = [stage("asleep_core", (11, 18, 0), (11, 19, 30))]
    night_after = [stage("asleep_core", (12, 23, 0), (13, 6, 0))]
    mains, naps = sleep_nights(night_after + pre_shift_nap + day_sleep + night_before)
    assert [m["date_of_sleep"] for m in mains] == ["2026-03-10", "2026-03-11", "2026-03-13"]
    assert [m["night"] for m in mains] == ["2026-03-09", "2026-03-10", "2026-03-12"]
    assert [m["time_in_bed_minutes"] for m in mains] == [480.0, 420.0, 420.0]
    day = mains[1]
    assert day["bed_start"] == utc(11, 13, 0) and day["bed_end"] == utc(11, 20, 0)
    assert day["total_sleep_minutes"] == 390.0  # 08:15 -> 14:45
    assert day["efficiency"] == pytest.approx(390 / 420)
    assert day["onset_latency_minutes"] == 15.0 and day["waso_minutes"] == 0.0
    assert day["awakenings"] == 0
    # 90 minutes of sleep on the same date, 3 h after the day sleep: a nap, not part of it
    (nap,) = naps
    assert nap["date_of_sleep"] == "2026-03-11" and nap["total_sleep_minutes"] == 90.0


def test_intervals_59_minutes_apart_join_and_60_apart_do_not() -> None:
    assert PERIOD_GAP_MINUTES == 60
    joined = [stage("asleep_core", (10, 23, 0), (11, 1, 0)), stage("asleep_core", (11, 1, 59), (11, 6, 0))]
    assert len(sleep_periods(joined)) == 1
    (night,), naps = sleep_nights(joined)
    assert naps == []
    assert night["time_in_bed_minutes"] == 420.0  # 23:00 -> 06:00
    assert night["total_sleep_minutes"] == 361.0  # 120 + 241
    assert night["waso_minutes"] == 59.0 and night["awakenings"] == 1

    split = [stage("asleep_core", (10, 23, 0), (11, 1, 0)), stage("asleep_core", (11, 2, 0), (11, 6, 0))]
    assert len(sleep_periods(split)) == 2
    (main,), (nap,) = sleep_nights(split)
    # both end on the 11th: the 240-minute period is the main sleep, the 120-minute one a nap
    assert main["bed_start"] == utc(11, 7, 0) and main["total_sleep_minutes"] == 240.0
    assert main["time_in_bed_minutes"] == 240.0 and main["onset_latency_minutes"] == 0.0
    assert nap["bed_start"] == utc(11, 4, 0) and nap["total_sleep_minutes"] == 120.0
    assert nap["date_of_sleep"] == "2026-03-11"


def test_gap_is_measured_from_the_latest_end_so_far() -> None:
    # The asleep interval ends at 00:00 but in_bed runs to 06:00: 06:59 is 59 min after 06:00
    intervals = [stage("in_bed", (10, 22, 0), (11, 6, 0)),
                 stage("asleep_core", (10, 23, 0), (11, 0, 0)),
                 stage("asleep_rem", (11, 6, 59), (11, 7, 30)),
                 stage("awake", (11, 9, 0), (11, 9, 0)),  # empty: ignored, does not open a period
                 stage("UNKNOWN", (11, 7, 30), (11, 8, 0))]  # unrecognised: ignored
    (period,) = sleep_periods(intervals)
    assert len(period.intervals) == 3
    (night,), naps = sleep_nights(intervals)
    assert naps == []
    assert night["time_in_bed_minutes"] == 570.0  # 22:00 -> 07:30
    assert night["total_sleep_minutes"] == 91.0  # 60 + 31
    assert night["onset_latency_minutes"] == 60.0
    assert night["waso_minutes"] == 419.0  # 23:00 -> 07:30 is 510, minus 91
    assert night["awakenings"] == 1


def test_equal_sleep_then_equal_bed_time_picks_the_earlier_period() -> None:
    # At UTC+9: three 30-minute sleeps; 11:00 and 13:00 on the 11th are 90 min apart
    late_morning = stage("asleep_core", (11, 11, 0), (11, 11, 30), offset=540)
    afternoon = stage("asleep_core", (11, 13, 0), (11, 13, 30), offset=540)
    next_day = stage("asleep_core", (12, 12, 0), (12, 12, 30), offset=540)
    mains, naps = sleep_nights([next_day, afternoon, late_morning])
    assert [m["date_of_sleep"] for m in mains] == ["2026-03-11", "2026-03-12"]
    assert mains[0]["bed_start"] == utc(11, 2, 0)  # 11:00 at UTC+9
    assert [n["bed_start"] for n in naps] == [utc(11, 4, 0)]
    # more time in bed wins over an earlier start when sleep is equal
    in_bed_longer = [stage("in_bed", (11, 12, 50), (11, 13, 40), offset=540), afternoon]
    (main,), (nap,) = sleep_nights([late_morning, *in_bed_longer])
    assert main["time_in_bed_minutes"] == 50.0 and nap["bed_start"] == utc(11, 2, 0)


def test_date_of_sleep_at_local_midnight() -> None:
    crosses = [stage("asleep_core", (10, 23, 30), (11, 1, 0))]
    one_ms_after = [StageInterval(local_ms(12, 20), local_ms(13, 0) + 1, "asleep_core", OFFSET)]
    at_midnight = [stage("asleep_core", (14, 20, 0), (15, 0, 0))]
    # 21:00-23:30 local on the 16th ends 04:30 UTC on the 17th: the local date counts
    late_evening = [stage("asleep_core", (16, 21, 0), (16, 23, 30))]
    mains, naps = sleep_nights(late_evening + at_midnight + one_ms_after + crosses)
    assert naps == []
    assert [m["date_of_sleep"] for m in mains] == ["2026-03-11", "2026-03-13", "2026-03-14", "2026-03-16"]
    assert [m["night"] for m in mains] == ["2026-03-10", "2026-03-12", "2026-03-13", "2026-03-15"]
    assert mains[0]["time_in_bed_minutes"] == 90.0
    assert mains[1]["time_in_bed_minutes"] == 240.0 + 1 / 60_000
    assert mains[2]["time_in_bed_minutes"] == 240.0 and mains[2]["bed_end"] == utc(15, 5, 0)


def test_offset_change_during_the_night() -> None:
    # US clocks go forward on 8 March 2026 at 02:00 EST (UTC−5) -> 03:00 EDT (UTC−4)
    intervals = [
        StageInterval(local_ms(7, 23, 0, offset=-300), local_ms(8, 7, 0, offset=-240), "in_bed", -240),
        stage("asleep_core", (7, 23, 30), (8, 1, 30), offset=-300),  # 04:30-06:30 UTC
        stage("asleep_deep", (8, 1, 30), (8, 2, 0), offset=-300),    # 06:30-07:00 UTC
        stage("asleep_rem", (8, 3, 0), (8, 6, 30), offset=-240),     # 07:00-10:30 UTC
    ]
    (night,), naps = sleep_nights(intervals)
    assert naps == [] and night["date_of_sleep"] == "2026-03-08"
    assert night["bed_start"] == utc(8, 4, 0) and night["bed_end"] == utc(8, 11, 0)
    assert night["time_in_bed_minutes"] == 420.0  # 7 h on UTC instants (the clock shows 23:00 -> 07:00)
    assert night["total_sleep_minutes"] == 360.0  # 120 + 30 + 210
    assert night["efficiency"] == pytest.approx(360 / 420)
    assert night["onset_latency_minutes"] == 30.0
    assert night["waso_minutes"] == 0.0 and night["awakenings"] == 0


def test_the_interval_that_ends_the_period_gives_the_offset() -> None:
    # Both end at 02:00 UTC on the 11th: 21:00 on the 10th at UTC−5, 12:00 on the 11th at UTC+10.
    # The one starting later decides: the 11th.
    end = int(utc(11, 2, 0).timestamp() * 1000)
    intervals = [StageInterval(end - 300 * 60_000, end, "asleep_core", -300),
                 StageInterval(end - 60 * 60_000, end, "asleep_rem", 600)]
    (main,), _ = sleep_nights(intervals)
    assert main["date_of_sleep"] == "2026-03-11" and main["total_sleep_minutes"] == 300.0
    # the first interval's offset is not used: a flight east ends the period at 14:00 on the 11th
    flight = [stage("asleep_core", (10, 20, 0), (10, 23, 30)),  # 01:00-04:30 UTC on the 11th
              StageInterval(int(utc(11, 4, 30).timestamp() * 1000), int(utc(11, 5, 0).timestamp() * 1000),
                            "asleep_core", 540)]  # 05:00 UTC is 00:00 on the 11th at UTC−5
    (main,), _ = sleep_nights(flight)
    assert main["date_of_sleep"] == "2026-03-11" and main["total_sleep_minutes"] == 240.0


def test_in_bed_only_date_gives_a_refused_main_entry() -> None:
    (main,), naps = sleep_nights([stage("in_bed", (10, 22, 0), (11, 7, 0))])
    assert naps == [] and set(main) == KEYS
    assert main["main_sleep"] is True and main["date_of_sleep"] == "2026-03-11"
    assert main["refused"] == "no asleep stage reported in this sleep period"
    assert main["bed_start"] == utc(11, 3, 0) and main["bed_end"] == utc(11, 12, 0)
    for key in NUMBERS:
        assert main[key] is None


def test_period_without_asleep_stage_is_refused() -> None:
    intervals = [stage("in_bed", (10, 22, 0), (11, 7, 0)), stage("awake", (11, 3, 0), (11, 3, 30)),
                 stage("UNKNOWN", (10, 23, 0), (11, 8, 0)),  # unrecognised stages are ignored
                 stage("in_bed", (11, 13, 0), (11, 13, 30))]  # shorter, same date: not reported
    (main,), naps = sleep_nights(intervals)
    assert naps == []
    assert main["refused"] is not None and "asleep" in main["refused"]
    assert main["bed_start"] == utc(11, 3, 0) and main["bed_end"] == utc(11, 12, 0)
    for key in NUMBERS:
        assert main[key] is None
    # a date with sleep never reports its sleepless periods, as main or nap
    sleep = [stage("in_bed", (11, 22, 0), (12, 6, 0)), stage("asleep_core", (11, 23, 0), (12, 5, 0)),
             stage("in_bed", (12, 10, 0), (12, 18, 0))]  # 8 h in bed (more than the night), no sleep
    mains, naps = sleep_nights(intervals + sleep)
    assert [m["refused"] is None for m in mains] == [False, True] and naps == []
    assert mains[1]["bed_start"] == utc(12, 3, 0) and mains[1]["total_sleep_minutes"] == 360.0  # 23:00 -> 05:00


def test_nights_come_in_order_and_empty_input_gives_none() -> None:
    second = [stage("asleep_core", (12, 23, 0), (13, 6, 0))]
    mains, naps = sleep_nights(second + HAND_NIGHT)
    assert [n["date_of_sleep"] for n in mains] == ["2026-03-11", "2026-03-13"]
    assert [n["night"] for n in mains] == ["2026-03-10", "2026-03-12"]
    assert mains[1]["awakenings"] == 0 and mains[1]["waso_minutes"] == 0.0 and naps == []
    assert sleep_nights([]) == ([], [])
    assert sleep_periods([]) == []


def test_interval_ending_before_it_starts_is_rejected() -> None:
    with pytest.raises(ValueError):
        StageInterval(start_ms=2_000, end_ms=1_000, stage="awake", utc_offset_minutes=0)


ALL_STAGES = sorted(STAGES) + ["UNKNOWN"]
OFFSETS = [-720, -300, -240, 0, 60, 330, 540, 840]


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_total_sleep_over_mains_and_naps_is_the_asleep_union(data: st.DataObject) -> None:
    # Blocks >= 60 min apart; inside a block every used interval starts < 60 min after the latest
    # used end so far, so each block is one period. Times are whole minutes from 1 March 2026.
    base_ms = int(utc(1, 0).timestamp() * 1000)
    intervals: list[StageInterval] = []
    asleep_minutes: set[int] = set()
    blocks_with_sleep = 0
    cursor = 0
    for _ in range(data.draw(st.integers(0, 6), label="blocks")):
        block_start = block_end = cursor
        block_has_sleep = False
        for k in range(data.draw(st.integers(1, 6))):
            if k == 0:
                start, length = block_start, data.draw(st.integers(1, 600))
                name = data.draw(st.sampled_from(sorted(STAGES)))
            else:
                start = data.draw(st.integers(block_start, block_end + PERIOD_GAP_MINUTES - 1))
                length = data.draw(st.integers(0, 600))
                name = data.draw(st.sampled_from(ALL_STAGES))
            offset = data.draw(st.sampled_from(OFFSETS))
            intervals.append(StageInterval(base_ms + start * 60_000, base_ms + (start + length) * 60_000,
                                           name, offset))
            if name in STAGES and length > 0:
                block_end = max(block_end, start + length)
                if name.startswith("asleep_"):
                    asleep_minutes.update(range(start, start + length))
                    block_has_sleep = True
        blocks_with_sleep += block_has_sleep
        cursor = block_end + data.draw(st.integers(PERIOD_GAP_MINUTES, 3 * 1440))
    shuffled = data.draw(st.permutations(intervals))

    mains, naps = sleep_nights(shuffled)
    slept = [m for m in mains if m["refused"] is None] + naps
    assert sum(e["total_sleep_minutes"] for e in slept) == pytest.approx(len(asleep_minutes))
    assert len(slept) == blocks_with_sleep
    dates = [m["date_of_sleep"] for m in mains]
    assert dates == sorted(set(dates))
    assert [n["bed_start"] for n in naps] == sorted(n["bed_start"] for n in naps)
    by_date = {m["date_of_sleep"]: m for m in mains}
    for entry in mains + naps:
        assert set(entry) == KEYS and entry["bed_start"] < entry["bed_end"]
        if entry["refused"] is not None:
            assert entry["main_sleep"] and all(entry[key] is None for key in NUMBERS)
            continue
        assert all(math.isfinite(entry[key]) for key in NUMBERS)
        assert 0 < entry["efficiency"] <= 1
        assert entry["total_sleep_minutes"] <= entry["time_in_bed_minutes"]
        assert entry["onset_latency_minutes"] >= 0 and entry["waso_minutes"] >= 0
        assert entry["awakenings"] >= 0
    for nap in naps:
        main = by_date[nap["date_of_sleep"]]
        assert main["refused"] is None and main["total_sleep_minutes"] >= nap["total_sleep_minutes"]
