"""Circadian metrics on inputs whose answers are known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest

from prediction_worker.science import circadian
from prediction_worker.science.circadian import (
    cosinor,
    interdaily_stability,
    intradaily_variability,
    nonparametric,
)
from prediction_worker.science.series import MinuteSeries, local_days, qualifying_days

DAY = 1440
FIRST_LOCAL_DAY = 20_000  # 2024-10-04, any whole day will do


def series_at_local_midnight(values: np.ndarray, offset: int = 0, input: str = "activity_count",
                             local_minute: int = 0) -> MinuteSeries:
    """A series whose first value is at ``local_minute`` of FIRST_LOCAL_DAY in local time."""
    start = FIRST_LOCAL_DAY * DAY + local_minute - offset
    return MinuteSeries(start_minute=start, values=np.asarray(values, dtype=float),
                        utc_offset_minutes=offset, input=input)


def hourly_steps(hour_values: list[float]) -> np.ndarray:
    """One day of minutes, each hour constant at its value."""
    return np.repeat(np.asarray(hour_values, dtype=float), 60)


def repeating_day() -> np.ndarray:
    minute = np.arange(DAY)
    return 20 + (minute // 60) ** 2 + minute % 7  # varies within and between hours


# --- interdaily stability and intradaily variability -------------------------------------------

def test_perfectly_repeating_day_has_interdaily_stability_one() -> None:
    result = nonparametric(series_at_local_midnight(np.tile(repeating_day(), 7), offset=120))
    assert result["refused"] is None and result["days_used"] == 7
    assert result["interdaily_stability"] == pytest.approx(1.0, abs=1e-12)
    assert result["coverage"] == 1.0


def test_white_noise_has_intradaily_variability_two_and_no_stability() -> None:
    rng = np.random.default_rng(20240501)
    result = nonparametric(series_at_local_midnight(rng.normal(100, 15, 28 * DAY)))
    assert result["intradaily_variability"] == pytest.approx(2.0, abs=0.15)
    # expected IS of white noise is 23 / (n - 1) = 23 / 671 ≈ 0.034
    assert result["interdaily_stability"] < 0.1


def test_smooth_sine_has_small_intradaily_variability() -> None:
    minutes = np.arange(7 * DAY)
    result = nonparametric(series_at_local_midnight(100 + 50 * np.sin(2 * np.pi * minutes / DAY)))
    assert result["intradaily_variability"] < 0.1
    assert result["interdaily_stability"] == pytest.approx(1.0, abs=1e-12)


# Hourly means of three days: hours 0-11 are 0 on every day; hours 12-23 are 2, 2 and 5.
HAND_DAYS = [[0.0] * 12 + [2.0] * 12, [0.0] * 12 + [2.0] * 12, [0.0] * 12 + [5.0] * 12]
# n = 72, sum = 24·2 + 12·5 = 108, mean = 1.5
# Σ(x − x̄)² = 36·1.5² + 24·0.5² + 12·3.5² = 81 + 6 + 147 = 234
# hour means: 0 (hours 0-11), (2 + 2 + 5)/3 = 3 (hours 12-23); Σ_h(x̄_h − x̄)² = 24·1.5² = 54
# IS = 72·54 / (24·234) = 9/13
HAND_IS = 72 * 54 / (24 * 234)
# successive differences: 0→2, 0→2, 0→5 at noon, 2→0, 2→0 at the two midnights in between:
# Σdiff² = 4 + 4 + 25 + 4 + 4 = 41 over n − 1 = 71 differences; IV = 72·41 / (71·234)
HAND_IV = 72 * 41 / (71 * 234)


def test_hand_computed_interdaily_stability_and_intradaily_variability() -> None:
    assert HAND_IS == pytest.approx(9 / 13)
    result = nonparametric(series_at_local_midnight(np.concatenate([hourly_steps(d) for d in HAND_DAYS])))
    assert result["interdaily_stability"] == pytest.approx(HAND_IS, abs=1e-12)
    assert result["intradaily_variability"] == pytest.approx(HAND_IV, abs=1e-12)
    hourly = np.array(HAND_DAYS)
    assert interdaily_stability(hourly) == pytest.approx(HAND_IS, abs=1e-12)
    assert intradaily_variability(hourly) == pytest.approx(HAND_IV, abs=1e-12)


def test_intradaily_variability_skips_the_difference_across_a_missing_day() -> None:
    # Days 1, 3, 4 hold the three hand days; day 2 has no data. The 2→0 step from day 1 into
    # day 3 is not a step between adjacent hours, so it is dropped:
    # Σdiff² = 4 + 4 + 25 + 4 = 37 over m = 3·23 + 1 = 70 differences; IV = 72·37 / (70·234).
    gap = np.full(DAY, np.nan)
    first, second, third = (hourly_steps(d) for d in HAND_DAYS)
    result = nonparametric(series_at_local_midnight(np.concatenate([first, gap, second, third])))
    assert result["days_used"] == 3
    assert result["interdaily_stability"] == pytest.approx(HAND_IS, abs=1e-12)
    assert result["intradaily_variability"] == pytest.approx(72 * 37 / (70 * 234), abs=1e-12)
    assert result["coverage"] == 1.0  # over the days used, not the empty one


def test_missing_minutes_are_not_zeros() -> None:
    # Each hour is constant, so dropping minutes leaves every hourly mean and every minute of the
    # average day unchanged (day 7 is complete); zero-filling the same gaps would change them.
    days = [[10.0 * ((h * 7) % 24) + 5 for h in range(24)] for _ in range(7)]
    values = np.concatenate([hourly_steps(d) for d in days])
    holed = values.copy()
    rng = np.random.default_rng(7)
    holed[: 6 * DAY][rng.random(6 * DAY) < 0.1] = np.nan
    full = nonparametric(series_at_local_midnight(values))
    with_gaps = nonparametric(series_at_local_midnight(holed))
    assert with_gaps["days_used"] == 7 and with_gaps["coverage"] < 0.95
    for key in ("interdaily_stability", "intradaily_variability", "m10", "l5", "relative_amplitude"):
        assert with_gaps[key] == pytest.approx(full[key], abs=1e-12), key
    assert (with_gaps["m10_onset"], with_gaps["l5_onset"]) == (full["m10_onset"], full["l5_onset"])
    zero_filled = nonparametric(series_at_local_midnight(np.nan_to_num(holed, nan=0.0)))
    assert abs(zero_filled["interdaily_stability"] - full["interdaily_stability"]) > 0.01


def test_constant_input_leaves_stability_and_variability_undefined() -> None:
    # 0.1 is not exact in binary: hourly means may differ from it in the last bit
    result = nonparametric(series_at_local_midnight(np.full(4 * DAY, 0.1)))
    assert result["interdaily_stability"] is None and result["intradaily_variability"] is None
    assert "IS and IV" in result["refused"]
    assert result["m10"] == pytest.approx(0.1) and result["l5"] == pytest.approx(0.1)
    assert result["relative_amplitude"] == pytest.approx(0.0, abs=1e-12)


def test_all_zero_input_leaves_relative_amplitude_undefined() -> None:
    result = nonparametric(series_at_local_midnight(np.zeros(3 * DAY)))
    assert result["relative_amplitude"] is None and "M10 + L5 = 0" in result["refused"]
    assert result["m10"] == 0.0 and result["l5"] == 0.0


# --- M10, L5, RA -------------------------------------------------------------------------------

def profile_day(spans: list[tuple[int, int, float]], base: float) -> np.ndarray:
    """One day at ``base`` with [start_hour, end_hour) spans set to values; end < start wraps."""
    day = np.full(DAY, base)
    for start, end, value in spans:
        if end > start:
            day[start * 60:end * 60] = value
        else:
            day[start * 60:] = value
            day[:end * 60] = value
    return day


def test_m10_and_l5_on_a_known_profile_with_l5_wrapping_midnight() -> None:
    # 100 from 08:00 to 18:00, 2 from 22:00 to 03:00, 10 elsewhere; UTC offset −5 h
    day = profile_day([(8, 18, 100.0), (22, 3, 2.0)], base=10.0)
    result = nonparametric(series_at_local_midnight(np.tile(day, 3), offset=-300))
    assert result["m10"] == pytest.approx(100.0, abs=1e-12) and result["m10_onset"] == "08:00"
    assert result["l5"] == pytest.approx(2.0, abs=1e-12) and result["l5_onset"] == "22:00"
    assert result["relative_amplitude"] == pytest.approx(98 / 102, abs=1e-12)


def test_l5_ties_resolve_to_the_earliest_onset_after_midnight() -> None:
    # 100 from 08:00 to 18:00, 1 elsewhere: every 5-h window within 18:00-08:00 has mean 1
    day = profile_day([(8, 18, 100.0)], base=1.0)
    result = nonparametric(series_at_local_midnight(np.tile(day, 3), offset=330))
    assert (result["m10"], result["m10_onset"]) == (pytest.approx(100.0), "08:00")
    assert (result["l5"], result["l5_onset"]) == (pytest.approx(1.0), "00:00")
    assert result["relative_amplitude"] == pytest.approx(99 / 101, abs=1e-12)


def test_m10_window_wraps_midnight() -> None:
    # Night worker: 50 from 20:00 to 06:00 (wraps), 5 elsewhere
    day = profile_day([(20, 6, 50.0)], base=5.0)
    result = nonparametric(series_at_local_midnight(np.tile(day, 4)))
    assert (result["m10"], result["m10_onset"]) == (pytest.approx(50.0), "20:00")
    assert result["l5_onset"] == "06:00"


def test_m10_onset_is_minute_resolution() -> None:
    # The active block starts at 08:17 local; hourly resolution could not see that
    day = np.full(DAY, 3.0)
    day[8 * 60 + 17:18 * 60 + 17] = 80.0
    result = nonparametric(series_at_local_midnight(np.tile(day, 3), offset=60))
    assert result["m10_onset"] == "08:17" and result["m10"] == pytest.approx(80.0)


# --- day rules and refusals --------------------------------------------------------------------

def day_with_present_minutes(present: int) -> np.ndarray:
    """A varying day with exactly ``present`` minutes of data, spread so every hour has data."""
    day = repeating_day().astype(float)
    missing = DAY - present
    order = np.argsort(np.arange(DAY) % 60, kind="stable")  # minute :00 of every hour first
    day[order[:missing]] = np.nan
    return day


def test_fewer_than_three_qualifying_days_is_refused() -> None:
    result = nonparametric(series_at_local_midnight(np.tile(repeating_day(), 2)))
    assert result["refused"] is not None and "at least 3" in result["refused"]
    assert result["days_used"] == 0 and result["coverage"] == 1.0
    for key in ("interdaily_stability", "intradaily_variability", "m10", "m10_onset", "l5",
                "l5_onset", "relative_amplitude"):
        assert result[key] is None


def test_a_day_at_79_percent_coverage_is_not_counted() -> None:
    full = np.tile(repeating_day(), 3)
    at_79 = day_with_present_minutes(1151)  # 1151 / 1440 = 79.9 % < 80 %
    at_80 = day_with_present_minutes(1152)  # exactly 80 %
    assert nonparametric(series_at_local_midnight(np.concatenate([full, at_79])))["days_used"] == 3
    assert nonparametric(series_at_local_midnight(np.concatenate([full, at_80])))["days_used"] == 4
    two_and_79 = nonparametric(series_at_local_midnight(np.concatenate([full[: 2 * DAY], at_79])))
    assert two_and_79["refused"] is not None
    assert two_and_79["coverage"] == pytest.approx((2 * DAY + 1151) / (3 * DAY))


def test_an_hour_without_data_disqualifies_its_day() -> None:
    day = repeating_day().astype(float)
    day[3 * 60:4 * 60] = np.nan  # 95.8 % coverage, but 03:00-04:00 is empty
    result = nonparametric(series_at_local_midnight(np.concatenate([np.tile(repeating_day(), 2), day])))
    assert result["refused"] is not None and result["interdaily_stability"] is None


def test_days_are_split_at_local_midnight() -> None:
    # Three whole local days at UTC−5: in UTC they straddle four days, none of them whole
    values = np.tile(repeating_day(), 3)
    local = series_at_local_midnight(values, offset=-300)
    assert nonparametric(local)["days_used"] == 3
    as_utc = MinuteSeries(local.start_minute, values, 0, "activity_count")
    assert qualifying_days(local_days(as_utc).values).sum() == 2


def test_partial_days_at_the_edges_are_padded_not_used() -> None:
    # Starts at 06:00 local, runs 4 × 1440 minutes: two partial days around three whole ones
    values = np.tile(repeating_day(), 4)
    result = nonparametric(series_at_local_midnight(values, offset=60, local_minute=360))
    assert result["days_used"] == 3 and result["coverage"] == 1.0


def test_empty_series_is_refused() -> None:
    result = nonparametric(series_at_local_midnight(np.array([])))
    assert result["refused"] is not None and result["coverage"] == 0.0


def test_step_counts_are_analysed_and_labelled() -> None:
    result = nonparametric(series_at_local_midnight(np.tile(repeating_day(), 3), input="step_count"))
    assert result["input"] == "step_count" and result["method"] == "npcra/van-someren-1999@1"


def test_series_rejects_a_malformed_input() -> None:
    with pytest.raises(ValueError):
        MinuteSeries(0, np.zeros(10), 0, "heart_rate")
    with pytest.raises(ValueError):
        MinuteSeries(0, np.array([1.0, np.inf]), 0, "step_count")


# --- cosinor -----------------------------------------------------------------------------------

def cosine_minutes(n: int, start_local_minute: int, mesor: float, amplitude: float,
                   acrophase_hours: float) -> np.ndarray:
    local_hours = ((start_local_minute + np.arange(n)) % DAY) / 60
    return mesor + amplitude * np.cos(2 * np.pi * (local_hours - acrophase_hours) / 24)


def test_cosinor_recovers_a_pure_cosine() -> None:
    # Acrophase 14:30 local at UTC+05:30; starts at 06:17 local, so the first and last days are
    # partial and left out: 3 whole days of 4 × 1440 minutes enter the fit.
    values = cosine_minutes(4 * DAY, 6 * 60 + 17, mesor=120.0, amplitude=45.0, acrophase_hours=14.5)
    result = cosinor(series_at_local_midnight(values, offset=330, local_minute=6 * 60 + 17))
    assert result["refused"] is None and result["method"] == "cosinor/24h-least-squares@1"
    assert result["mesor"] == pytest.approx(120.0, abs=1e-9)
    assert result["amplitude"] == pytest.approx(45.0, abs=1e-9)
    assert result["acrophase_hours"] == pytest.approx(14.5, abs=1e-9)
    assert result["acrophase"] == "14:30"
    assert result["r_squared"] == pytest.approx(1.0, abs=1e-12)
    assert result["coverage"] == pytest.approx(0.75)


def test_cosinor_acrophase_at_midnight_stays_in_range() -> None:
    values = cosine_minutes(2 * DAY, 0, mesor=10.0, amplitude=3.0, acrophase_hours=0.0)
    result = cosinor(series_at_local_midnight(values, offset=-420))
    assert 0.0 <= result["acrophase_hours"] < 24.0
    assert min(result["acrophase_hours"], 24 - result["acrophase_hours"]) < 1e-9
    assert result["acrophase"] == "00:00"


def test_cosinor_ignores_missing_minutes() -> None:
    values = cosine_minutes(3 * DAY, 0, mesor=50.0, amplitude=20.0, acrophase_hours=21.25)
    values[np.random.default_rng(3).random(values.size) < 0.15] = np.nan
    result = cosinor(series_at_local_midnight(values))
    assert result["mesor"] == pytest.approx(50.0, abs=1e-9)
    assert result["amplitude"] == pytest.approx(20.0, abs=1e-9)
    assert result["acrophase_hours"] == pytest.approx(21.25, abs=1e-9)
    assert result["coverage"] == pytest.approx(np.count_nonzero(~np.isnan(values)) / values.size)


def test_cosinor_r_squared_of_a_cosine_plus_a_square_wave() -> None:
    # y = cos + s with s = ±1 on alternating hours: s is orthogonal to 1, cos and sin over whole
    # days, so the fit returns the cosine and R² = var(cos) / (var(cos) + var(s)) = 0.5 / 1.5
    hours = np.arange(2 * DAY) / 60
    square = np.where(np.floor(hours) % 2 == 0, 1.0, -1.0)
    values = 5 + np.cos(2 * np.pi * hours / 24) + square
    result = cosinor(series_at_local_midnight(values))
    assert result["amplitude"] == pytest.approx(1.0, abs=1e-9)
    assert result["r_squared"] == pytest.approx(1 / 3, abs=1e-9)


def test_cosinor_needs_two_qualifying_days() -> None:
    values = cosine_minutes(DAY + 600, 0, mesor=10.0, amplitude=3.0, acrophase_hours=12.0)
    result = cosinor(series_at_local_midnight(values))
    assert result["refused"] is not None and "at least 2" in result["refused"]
    assert all(result[k] is None for k in ("mesor", "amplitude", "acrophase", "acrophase_hours", "r_squared"))


def test_cosinor_of_constant_input_has_no_acrophase() -> None:
    result = cosinor(series_at_local_midnight(np.full(2 * DAY, 7.0)))
    assert result["mesor"] == 7.0 and result["amplitude"] == 0.0
    assert result["acrophase"] is None and result["r_squared"] is None and result["refused"]


def test_cosinor_amplitude_is_never_negative() -> None:
    # A trough at 14:30 is a peak at 02:30 with a positive amplitude
    values = cosine_minutes(2 * DAY, 0, mesor=0.0, amplitude=-8.0, acrophase_hours=14.5)
    result = cosinor(series_at_local_midnight(values))
    assert result["amplitude"] == pytest.approx(8.0, abs=1e-9)
    assert result["acrophase_hours"] == pytest.approx(2.5, abs=1e-9)
    assert math.isclose(result["mesor"], 0.0, abs_tol=1e-9)


def windows_one_by_one(profile: np.ndarray, width: int) -> np.ndarray:
    """The circular window means written plainly: each window's present values, summed alone."""
    wrapped = np.concatenate([profile, profile[: width - 1]])
    means = np.full(len(profile), np.nan)
    for first in range(len(profile)):
        window = wrapped[first:first + width]
        if (~np.isnan(window)).any():
            means[first] = np.nansum(window) / np.count_nonzero(~np.isnan(window))
    return means


@pytest.mark.parametrize("seed", range(12))
def test_window_means_agree_with_summing_each_window_alone(seed: int) -> None:
    rng = np.random.default_rng(seed)
    profile = rng.random(1440) * rng.choice([1.0, 100.0, 2000.0])
    profile[rng.random(1440) < rng.random() * 0.3] = np.nan
    if seed % 3 == 0:
        profile[300:700] = 0.0  # a quiet night: windows of exact zeros stay exact zeros
    for width in (circadian.M10_MINUTES, circadian.L5_MINUTES):
        fast, plain = circadian._circular_window_means(profile, width), windows_one_by_one(profile, width)
        assert np.array_equal(np.isnan(fast), np.isnan(plain))
        present = ~np.isnan(plain)
        assert np.allclose(fast[present], plain[present], rtol=1e-14, atol=0)
        assert np.array_equal(fast[plain == 0], plain[plain == 0])
        # and the onsets: the earliest window within the tie tolerance of the extreme
        largest = width == circadian.M10_MINUTES
        signed = plain if largest else -plain
        best = np.nanmax(signed)
        expected = int(np.flatnonzero(signed >= best - 1e-12 * max(abs(best), np.finfo(float).tiny))[0])
        extreme = circadian.most_active_window if largest else circadian.least_active_window
        assert extreme(profile, width)[1] == expected
