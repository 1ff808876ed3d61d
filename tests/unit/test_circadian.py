"""Circadian metrics on inputs whose answers are known in closed form."""

from __future__ import annotations

import json
import math
import sys
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prediction_worker.science import circadian
from prediction_worker.science.circadian import (
    cosinor,
    interdaily_stability,
    intradaily_variability,
    nonparametric,
)
from prediction_worker.science.series import MinuteSeries, local_days, qualifying_days

DAY = 1440
FLAT_DAY = "flat average day: M10/L5 onsets and RA are undefined"
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
    # a constant week is also a flat average day: no onsets, no RA
    assert result["relative_amplitude"] is None
    assert result["m10_onset"] is None and result["l5_onset"] is None
    assert FLAT_DAY in result["refused"]


def test_all_zero_input_leaves_relative_amplitude_undefined() -> None:
    # M10 + L5 = 0 with non-negative counts means every minute is 0: a flat average day
    result = nonparametric(series_at_local_midnight(np.zeros(3 * DAY)))
    assert result["relative_amplitude"] is None and FLAT_DAY in result["refused"]
    assert result["m10"] == 0.0 and result["l5"] == 0.0
    assert result["m10_onset"] is None and result["l5_onset"] is None


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


# --- extreme magnitudes, finiteness and flat days -----------------------------------------------

LARGEST = sys.float_info.max  # 1.7976931348623157e308, the largest count the gateway accepts
NPCRA_METRICS = ("interdaily_stability", "intradaily_variability", "m10", "m10_onset", "l5",
                 "l5_onset", "relative_amplitude")
COSINOR_METRICS = ("mesor", "amplitude", "acrophase", "acrophase_hours", "r_squared")


def reference_npcra(week: np.ndarray) -> dict:
    """The published formulas written out plainly for whole contiguous days without gaps, summed
    with math.fsum: IS, IV (m = n − 1), M10, L5 and RA of van Someren et al. (1999)."""
    days = week.reshape(-1, DAY)
    hourly = days.reshape(len(days), 24, 60).mean(axis=2)
    x = hourly.ravel().tolist()
    n = len(x)
    mean = math.fsum(x) / n
    total = math.fsum((v - mean) ** 2 for v in x)
    hour_means = [math.fsum(hourly[:, h]) / len(days) for h in range(24)]
    between = math.fsum((m - mean) ** 2 for m in hour_means)
    diffs = math.fsum((b - a) ** 2 for a, b in zip(x, x[1:], strict=False))
    profile = days.mean(axis=0)
    m10 = float(np.max(windows_one_by_one(profile, 600)))
    l5 = float(np.min(windows_one_by_one(profile, 300)))
    return {"interdaily_stability": n * between / (24 * total),
            "intradaily_variability": n * diffs / ((n - 1) * total),
            "m10": m10, "l5": l5, "relative_amplitude": (m10 - l5) / (m10 + l5)}


def reference_cosinor(week: np.ndarray) -> dict:
    """Closed form of the 24-h cosinor for whole days sampled every minute (Nelson et al. 1979):
    1, cos and sin are orthogonal over 1440 equally spaced minutes with Σcos² = Σsin² = 720 a day,
    so M = ȳ, β = 2/N·Σy·cos(ωt), γ = 2/N·Σy·sin(ωt) and SS_model = N·(β² + γ²)/2."""
    y = week.tolist()
    n = len(y)
    angle = 2 * np.pi * (np.arange(n) % DAY) / DAY
    mesor = math.fsum(y) / n
    beta = 2 / n * math.fsum(week * np.cos(angle))
    gamma = 2 / n * math.fsum(week * np.sin(angle))
    ss_total = math.fsum((v - mesor) ** 2 for v in y)
    return {"mesor": mesor, "amplitude": math.hypot(beta, gamma),
            "acrophase_hours": (math.atan2(gamma, beta) * 24 / (2 * math.pi)) % 24,
            "r_squared": n * (beta**2 + gamma**2) / 2 / ss_total}


def regular_week() -> np.ndarray:
    """Seven whole days of the same shape at day-to-day varying level and gain: IS < 1, R² < 1."""
    return np.concatenate([repeating_day() * (1 + 0.1 * k) + 5 * k for k in range(7)]).astype(float)


def assert_all_floats_finite(result: dict) -> None:
    for key, value in result.items():
        assert value is None or not isinstance(value, float) or math.isfinite(value), (key, value)
    json.dumps(result, allow_nan=False)  # and it is valid JSON


@pytest.mark.parametrize("factor", [1.0, 1e300, 1e-300])
def test_scaling_the_week_scales_only_the_level_metrics(factor: float) -> None:
    week = regular_week()
    scaled = week * factor
    assert np.isfinite(scaled).all() and scaled[scaled > 0].min() > sys.float_info.min  # normal
    expected, fit = reference_npcra(week), reference_cosinor(week)
    assert 0.5 < expected["interdaily_stability"] < 0.99 and 0.1 < fit["r_squared"] < 0.99
    result = nonparametric(series_at_local_midnight(scaled, offset=90))
    rhythm = cosinor(series_at_local_midnight(scaled, offset=90))
    assert result["refused"] is None and rhythm["refused"] is None
    for key in ("interdaily_stability", "intradaily_variability", "relative_amplitude"):
        assert result[key] == pytest.approx(expected[key], rel=1e-9), key
    for key in ("m10", "l5"):
        assert result[key] == pytest.approx(expected[key] * factor, rel=1e-9), key
    assert rhythm["r_squared"] == pytest.approx(fit["r_squared"], rel=1e-9)
    assert rhythm["acrophase_hours"] == pytest.approx(fit["acrophase_hours"], rel=1e-9)
    assert rhythm["mesor"] == pytest.approx(fit["mesor"] * factor, rel=1e-9)
    assert rhythm["amplitude"] == pytest.approx(fit["amplitude"] * factor, rel=1e-9)
    unscaled = nonparametric(series_at_local_midnight(week, offset=90))
    assert (result["m10_onset"], result["l5_onset"]) == (unscaled["m10_onset"], unscaled["l5_onset"])
    assert rhythm["acrophase"] == cosinor(series_at_local_midnight(week, offset=90))["acrophase"]


def test_a_week_of_the_largest_accepted_count_has_finite_metrics() -> None:
    # LARGEST from 08:00 to 18:00 and 0 elsewhere, seven days; every square and sum of these
    # overflows. Per hour x is LARGEST·u with u ∈ {0, 1}, 10 of 24 hours at 1 (p = 10/24):
    # IS = 1; Σ(x − x̄)² = n·LARGEST²·p(1 − p) and Σdiff² = 14·LARGEST² (two steps a day, none at
    # midnight), so IV = 14 / ((n − 1)·p(1 − p)) with n = 168; M10 = LARGEST, L5 = 0, RA = 1.
    unit_day = profile_day([(8, 18, 1.0)], base=0.0)
    week = np.tile(unit_day * LARGEST, 7)
    p = 10 / 24
    result = nonparametric(series_at_local_midnight(week))
    assert_all_floats_finite(result)
    assert result["refused"] is None
    assert result["interdaily_stability"] == pytest.approx(1.0, rel=1e-12)
    assert result["intradaily_variability"] == pytest.approx(14 / (167 * p * (1 - p)), rel=1e-12)
    assert result["m10"] == pytest.approx(LARGEST, rel=1e-12) and result["m10_onset"] == "08:00"
    assert result["l5"] == 0.0 and result["l5_onset"] == "00:00"
    assert result["relative_amplitude"] == pytest.approx(1.0, rel=1e-12)
    # cosinor of the same week: the closed form on the 0/1 pattern, level metrics times LARGEST
    rhythm = cosinor(series_at_local_midnight(week))
    fit = reference_cosinor(np.tile(unit_day, 7))
    assert_all_floats_finite(rhythm)
    assert rhythm["refused"] is None
    assert rhythm["mesor"] == pytest.approx(p * LARGEST, rel=1e-9)
    assert rhythm["amplitude"] == pytest.approx(fit["amplitude"] * LARGEST, rel=1e-9)
    assert rhythm["acrophase_hours"] == pytest.approx(fit["acrophase_hours"], rel=1e-9)
    assert rhythm["r_squared"] == pytest.approx(fit["r_squared"], rel=1e-9)


def test_the_largest_count_in_scattered_minutes_gives_finite_or_refused_metrics() -> None:
    rng = np.random.default_rng(308)
    unit = (rng.random(7 * DAY) < 0.3).astype(float)
    week = unit * LARGEST
    week[rng.random(week.size) < 0.05] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow along the way either
        result = nonparametric(series_at_local_midnight(week))
        rhythm = cosinor(series_at_local_midnight(week))
    for block, metrics in ((result, NPCRA_METRICS), (rhythm, COSINOR_METRICS)):
        assert_all_floats_finite(block)
        assert all(block[key] is not None for key in metrics) or block["refused"]
    assert result["m10"] <= LARGEST and 0.0 <= result["l5"] <= result["m10"]
    assert 0.0 <= result["relative_amplitude"] <= 1.0


def test_an_amplitude_beyond_the_float_range_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # No fit to counts in [0, LARGEST] is known to reach it; force one: at the scale 2^1023 of a
    # week at LARGEST, a scaled amplitude of 2 is 2^1024, past the largest float.
    week = np.tile(profile_day([(8, 18, LARGEST)], base=0.0), 2)
    monkeypatch.setattr(np.linalg, "lstsq", lambda *args, **kwargs: (np.array([0.5, 2.0, 0.0]),))
    rhythm = cosinor(series_at_local_midnight(week))
    assert rhythm["amplitude"] is None and rhythm["refused"] == "amplitude exceeds the float range"
    assert rhythm["mesor"] == 0.5 * 2.0**1023 and rhythm["acrophase"] == "00:00"


def test_a_non_finite_value_is_never_returned(monkeypatch: pytest.MonkeyPatch) -> None:
    week = np.tile(repeating_day(), 3).astype(float)
    monkeypatch.setattr(np.linalg, "lstsq", lambda *args, **kwargs: (np.array([np.nan, 1.0, 0.0]),))
    rhythm = cosinor(series_at_local_midnight(week))
    assert_all_floats_finite(rhythm)
    assert rhythm["mesor"] is None and rhythm["r_squared"] is None
    assert rhythm["refused"] == "non-finite result for mesor; non-finite result for r_squared"
    monkeypatch.setattr(circadian, "intradaily_variability", lambda hourly: math.inf)
    result = nonparametric(series_at_local_midnight(week))
    assert_all_floats_finite(result)
    assert result["intradaily_variability"] is None
    assert result["refused"] == "non-finite result for intradaily_variability"


def test_a_flat_week_has_no_onsets_and_no_relative_amplitude() -> None:
    result = nonparametric(series_at_local_midnight(np.full(7 * DAY, 37.3)))
    assert result["m10"] == pytest.approx(37.3, rel=1e-12) and result["l5"] == pytest.approx(37.3, rel=1e-12)
    assert result["m10_onset"] is None and result["l5_onset"] is None
    assert result["relative_amplitude"] is None
    assert result["interdaily_stability"] is None and result["intradaily_variability"] is None
    assert result["refused"] == ("constant input: IS and IV are undefined (zero variance); " + FLAT_DAY)
    at_the_top = nonparametric(series_at_local_midnight(np.full(7 * DAY, LARGEST)))
    assert at_the_top["m10"] == pytest.approx(LARGEST, rel=1e-12) and FLAT_DAY in at_the_top["refused"]
    assert_all_floats_finite(at_the_top)


def test_days_each_constant_but_different_have_zero_stability_and_a_flat_average_day() -> None:
    # Day k is constant at c_k. Every hour's mean over the days is c̄, so Σ_h(x̄_h − x̄)² = 0 and
    # IS = 0 exactly. Only the six midnights change level: IV = n·Σ(c_{k+1} − c_k)² / ((n − 1)·
    # 24·Σ(c_k − c̄)²) with n = 168. The average day is c̄ at every minute: flat.
    levels = [0.1, 5.3, 2.7, 40.0, 0.0, 13.9, 7.7]
    week = np.repeat(levels, DAY)
    mean = math.fsum(levels) / 7
    expected_iv = 168 * math.fsum((b - a) ** 2 for a, b in zip(levels, levels[1:], strict=False)) / (
        167 * 24 * math.fsum((c - mean) ** 2 for c in levels))
    result = nonparametric(series_at_local_midnight(week, offset=-240))
    assert result["interdaily_stability"] == 0.0
    assert result["intradaily_variability"] == pytest.approx(expected_iv, rel=1e-12)
    assert result["m10"] == pytest.approx(mean, rel=1e-12) and result["l5"] == pytest.approx(mean, rel=1e-12)
    assert result["m10_onset"] is None and result["l5_onset"] is None
    assert result["relative_amplitude"] is None and result["refused"] == FLAT_DAY


def test_an_average_day_repeating_every_hour_is_flat() -> None:
    # Not constant, but every 10-h and 5-h window holds whole hours of the same pattern, so
    # M10 == L5 and no window is most or least active; the hourly means are constant too.
    day = 10.0 + np.arange(DAY) % 60
    result = nonparametric(series_at_local_midnight(np.tile(day, 3)))
    assert result["m10"] == pytest.approx(39.5, rel=1e-12) and result["l5"] == pytest.approx(39.5, rel=1e-12)
    assert result["m10_onset"] is None and result["l5_onset"] is None
    assert result["relative_amplitude"] is None and FLAT_DAY in result["refused"]


EXTREMES = [0.0, 1.0, 400.0, 1e-300, 5e-324, sys.float_info.min, 1e154, 1e300, 1e308, LARGEST / 3,
            LARGEST]
finite_counts = st.one_of(st.sampled_from(EXTREMES), st.floats(min_value=0.0, max_value=LARGEST))


@st.composite
def minute_weeks(draw: st.DrawFn) -> tuple[np.ndarray, int]:
    """2-5 days of hour blocks (sometimes all one level) overlaid with scattered minute values,
    huge, tiny or NaN (missing); the days may or may not qualify."""
    n_days = draw(st.integers(2, 5))
    if draw(st.booleans()):
        hours = [draw(finite_counts)] * (n_days * 24)
    else:
        hours = draw(st.lists(st.one_of(finite_counts, st.just(math.nan)), min_size=n_days * 24,
                              max_size=n_days * 24))
    values = np.repeat(np.asarray(hours, dtype=float), 60)
    minutes = draw(st.lists(st.tuples(st.integers(0, values.size - 1),
                                      st.one_of(finite_counts, st.just(math.nan))), max_size=300))
    for index, value in minutes:
        values[index] = value
    if draw(st.booleans()):
        values[draw(st.integers(0, values.size - 1))::draw(st.integers(2, 9))] = math.nan
    return values, draw(st.integers(-14, 14)) * 60


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(minute_weeks())
def test_every_float_of_both_analyses_is_finite_or_none(week: tuple[np.ndarray, int]) -> None:
    values, offset = week
    series = series_at_local_midnight(values, offset=offset)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow on the way would be a warning
        result, rhythm = nonparametric(series), cosinor(series)
    for block, metrics in ((result, NPCRA_METRICS), (rhythm, COSINOR_METRICS)):
        assert_all_floats_finite(block)
        # a metric is left out exactly when ``refused`` says why
        missing = [key for key in metrics if block[key] is None]
        assert bool(missing) == (block["refused"] is not None), (missing, block["refused"])
        assert block["refused"] is None or (isinstance(block["refused"], str) and block["refused"])
