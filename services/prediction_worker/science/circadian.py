"""Circadian rhythm metrics of a minute series: nonparametric analysis and a 24-h cosinor.

Nonparametric (``npcra/van-someren-1999@1``; van Someren et al. 1999, Chronobiol Int 16:505):
- only whole local days that qualify (>= 80 % of minutes with data and data in every hour, see
  ``series``) are used; fewer than 3 such days -> refused, every metric None;
- hourly means are means of the present minutes of each hour; missing minutes are never zeros;
- IS = n·Σ_h(x̄_h − x̄)² / (24·Σ_i(x_i − x̄)²) with population (÷n) sums, so a perfectly repeating
  day gives exactly 1;
- IV = n·Σ(x_i − x_{i−1})² / (m·Σ_i(x_i − x̄)²), where the successive differences are taken only
  between hours adjacent in time and m is how many there are. Qualifying days that are not
  contiguous contribute no difference across the gap; for contiguous days m = n − 1 and this is
  the textbook formula;
- M10 / L5 are the highest 10-h and lowest 5-h circular window means of the average day at minute
  resolution (per local minute of day, the mean of the present values over the qualifying days;
  a window averages its present minutes). The onset is the local clock time of the window's first
  minute; on ties the earliest onset after 00:00 wins. RA = (M10 − L5) / (M10 + L5);
- constant input (zero variance of the hourly means) leaves IS and IV None; M10 + L5 == 0 leaves
  RA None. ``refused`` is None only when every metric is present; otherwise it says why.

Cosinor (``cosinor/24h-least-squares@1``; Nelson et al. 1979, Chronobiologia 6:305; Cornelissen
2014, Theor Biol Med Model 11:16):
- y = M + β·cos(ωt) + γ·sin(ωt), ω = 2π/24 h, t = local clock time of each minute's start, fitted
  by linear least squares on the present minutes of the qualifying days (same day rule);
- fewer than 2 qualifying days -> refused: a fit on less than a full cycle confuses trend with
  rhythm;
- amplitude = √(β² + γ²), acrophase = the peak time atan2(γ, β)/ω, reported as local "HH:MM"
  (nearest minute) and as hours in [0, 24); R² = 1 − SS_res/SS_tot;
- constant input leaves acrophase and R² None (amplitude is 0).
"""

from __future__ import annotations

import math

import numpy as np

from .series import (
    HOURS_PER_DAY,
    MIN_DAY_COVERAGE,
    MINUTES_PER_DAY,
    MINUTES_PER_HOUR,
    MinuteSeries,
    clock_time,
    local_days,
    present_fraction,
    qualifying_days,
)

NPCRA_METHOD = "npcra/van-someren-1999@1"
COSINOR_METHOD = "cosinor/24h-least-squares@1"
NPCRA_MIN_DAYS = 3
COSINOR_MIN_DAYS = 2
M10_MINUTES = 600
L5_MINUTES = 300
# Spread below this fraction of the magnitude is floating-point noise on a constant signal
# (the mean of equal floats need not equal them bit for bit).
_CONSTANT_RTOL = 1e-12
_OMEGA = 2 * math.pi / HOURS_PER_DAY  # rad per hour


def hourly_means(days: np.ndarray, use: np.ndarray) -> np.ndarray:
    """(days, 24) means of the present minutes of each hour; rows not in ``use`` are all NaN."""
    hourly = np.full((len(days), HOURS_PER_DAY), np.nan)
    used = days[use].reshape(-1, HOURS_PER_DAY, MINUTES_PER_HOUR)
    hourly[use] = np.nanmean(used, axis=2)
    return hourly


def _is_constant(values: np.ndarray) -> bool:
    return bool(np.ptp(values) <= _CONSTANT_RTOL * np.max(np.abs(values)))


def interdaily_stability(hourly: np.ndarray) -> float | None:
    """IS of van Someren et al. (1999, Chronobiol Int 16:505), population form.

    ``hourly`` is (days, 24) hourly means; all-NaN rows are days left out. Needs whole days (no
    partial rows) and at least one; the caller enforces the coverage rule (>= 3 qualifying days).
    None when the hourly means are constant (IS is 0/0).
    """
    complete = hourly[~np.isnan(hourly).all(axis=1)]
    if np.isnan(complete).any():
        raise ValueError("interdaily stability needs whole days of hourly means")
    if complete.size == 0 or _is_constant(complete):
        return None
    grand_mean = complete.mean()
    total = np.sum((complete - grand_mean) ** 2)
    between_hours = np.sum((complete.mean(axis=0) - grand_mean) ** 2)
    # n / 24 is the number of days
    return float(len(complete) * between_hours / total)


def intradaily_variability(hourly: np.ndarray) -> float | None:
    """IV of van Someren et al. (1999, Chronobiol Int 16:505), population form.

    ``hourly`` is hourly means in time order (any shape, flattened row by row); NaN hours are
    missing and successive differences touching them are skipped, so IV = n·Σdiff²/(m·Σ(x − x̄)²)
    with m the differences used (m = n − 1 without gaps). The caller enforces the coverage rule.
    None when fewer than two adjacent hours exist or the hourly means are constant.
    """
    series = hourly.ravel()
    present = series[~np.isnan(series)]
    diffs = np.diff(series)
    diffs = diffs[~np.isnan(diffs)]
    if diffs.size == 0 or _is_constant(present):
        return None
    total = np.sum((present - present.mean()) ** 2)
    return float(present.size * np.sum(diffs**2) / (diffs.size * total))


def average_day(days: np.ndarray) -> np.ndarray:
    """Mean of the present values per local minute of day over ``days`` (rows); NaN if none."""
    present = ~np.isnan(days)
    counts = present.sum(axis=0)
    sums = np.where(present, days, 0.0).sum(axis=0)
    return np.divide(sums, counts, out=np.full(days.shape[1], np.nan), where=counts > 0)


def _circular_window_means(profile: np.ndarray, width: int) -> np.ndarray:
    """Mean of the present values of each circular window of ``width`` minutes, by its first
    minute; NaN where a window holds no value.

    Each window's sum is a dot product of its values with ones (``np.correlate``): every sum is
    formed from the window's own values, so there is no cancellation as with differences of
    running totals, and it agrees with summing each window separately to within a few ulps
    (tests/unit/test_circadian.py), far inside the tolerance that decides ties. The counts are
    exact integer differences of a running count."""
    wrapped = np.concatenate([profile, profile[: width - 1]])
    present = ~np.isnan(wrapped)
    sums = np.correlate(np.where(present, wrapped, 0.0), np.ones(width), "valid")
    running = np.concatenate(([0], np.cumsum(present, dtype=np.int64)))
    counts = running[width:] - running[:-width]
    return np.divide(sums, counts, out=np.full(len(profile), np.nan), where=counts > 0)


def _earliest_extreme(means: np.ndarray, largest: bool) -> tuple[float, int]:
    signed = means if largest else -means
    best = np.nanmax(signed)
    # Windows with the same content can differ in the last bits; treat them as ties.
    tolerance = _CONSTANT_RTOL * max(abs(best), np.finfo(float).tiny)
    onset = int(np.flatnonzero(signed >= best - tolerance)[0])
    return float(means[onset]), onset


def most_active_window(profile: np.ndarray, minutes: int = M10_MINUTES) -> tuple[float, int]:
    """M10 (van Someren et al. 1999): (mean, onset minute of day) of the most active circular
    window of ``minutes`` over a 1440-minute average day; earliest onset on ties."""
    return _earliest_extreme(_circular_window_means(profile, minutes), largest=True)


def least_active_window(profile: np.ndarray, minutes: int = L5_MINUTES) -> tuple[float, int]:
    """L5 (van Someren et al. 1999): (mean, onset minute of day) of the least active circular
    window of ``minutes`` over a 1440-minute average day; earliest onset on ties."""
    return _earliest_extreme(_circular_window_means(profile, minutes), largest=False)


def relative_amplitude(m10: float, l5: float) -> float | None:
    """RA = (M10 − L5) / (M10 + L5) (van Someren et al. 1999); None when M10 + L5 == 0."""
    return None if m10 + l5 == 0 else (m10 - l5) / (m10 + l5)


def _refused_nonparametric(series: MinuteSeries, reason: str) -> dict:
    return {
        "method": NPCRA_METHOD, "input": series.input,
        "coverage": present_fraction(series.values), "days_used": 0, "refused": reason,
        "interdaily_stability": None, "intradaily_variability": None,
        "m10": None, "m10_onset": None, "l5": None, "l5_onset": None, "relative_amplitude": None,
    }


def _too_few_days(found: int, needed: int) -> str:
    return (f"{found} whole local day(s) with >= {MIN_DAY_COVERAGE:.0%} of minutes and data in "
            f"every hour; at least {needed} are needed")


def nonparametric(series: MinuteSeries) -> dict:
    """Nonparametric circadian rhythm analysis (van Someren et al. 1999, Chronobiol Int 16:505).

    IS, IV, M10, L5 (with local onsets) and RA over the qualifying whole local days. Minimum
    coverage: >= 3 local days, each with >= 80 % of its minutes present and data in every hour;
    otherwise refused with every metric None and ``coverage`` over the whole series. When
    computed, ``coverage`` is the fraction of present minutes over the days used.
    """
    days = local_days(series)
    use = qualifying_days(days.values)
    days_used = int(use.sum())
    if days_used < NPCRA_MIN_DAYS:
        return _refused_nonparametric(series, _too_few_days(days_used, NPCRA_MIN_DAYS))

    hourly = hourly_means(days.values, use)
    stability = interdaily_stability(hourly)
    variability = intradaily_variability(hourly)
    profile = average_day(days.values[use])
    m10, m10_onset = most_active_window(profile)
    l5, l5_onset = least_active_window(profile)
    amplitude = relative_amplitude(m10, l5)

    reasons = []
    if stability is None or variability is None:
        reasons.append("constant input: IS and IV are undefined (zero variance)")
    if amplitude is None:
        reasons.append("RA is undefined (M10 + L5 = 0)")
    return {
        "method": NPCRA_METHOD, "input": series.input,
        "coverage": present_fraction(days.values[use]), "days_used": days_used,
        "refused": "; ".join(reasons) or None,
        "interdaily_stability": stability, "intradaily_variability": variability,
        "m10": m10, "m10_onset": clock_time(m10_onset),
        "l5": l5, "l5_onset": clock_time(l5_onset),
        "relative_amplitude": amplitude,
    }


def _acrophase_hours(beta: float, gamma: float) -> float:
    hours = (math.atan2(gamma, beta) / _OMEGA) % HOURS_PER_DAY
    # float modulo of a tiny negative angle lands on 24.0, which is midnight
    return 0.0 if hours >= HOURS_PER_DAY else hours


def cosinor(series: MinuteSeries) -> dict:
    """Single-component 24-h cosinor (Nelson et al. 1979; Cornelissen 2014, Theor Biol Med
    Model 11:16), fitted by linear least squares on cos and sin of local clock time.

    Minimum coverage: >= 2 qualifying whole local days (>= 80 % of minutes present and data in
    every hour); only the present minutes of those days enter the fit and ``coverage`` is their
    share of the series' minutes. Refused otherwise, with ``coverage`` = the series' present
    fraction and every metric None.
    """
    days = local_days(series)
    use = qualifying_days(days.values)
    if int(use.sum()) < COSINOR_MIN_DAYS:
        return {
            "method": COSINOR_METHOD, "input": series.input,
            "coverage": present_fraction(series.values),
            "refused": _too_few_days(int(use.sum()), COSINOR_MIN_DAYS),
            "mesor": None, "amplitude": None, "acrophase": None, "acrophase_hours": None,
            "r_squared": None,
        }

    used = days.values[use]
    present = ~np.isnan(used)
    y = used[present]
    t_hours = np.broadcast_to(np.arange(MINUTES_PER_DAY) / MINUTES_PER_HOUR, used.shape)[present]
    fit = {
        "method": COSINOR_METHOD, "input": series.input,
        "coverage": y.size / series.values.size,
    }
    if _is_constant(y):
        return fit | {
            "refused": "constant input: acrophase and R² are undefined (zero variance)",
            "mesor": float(y.mean()), "amplitude": 0.0, "acrophase": None,
            "acrophase_hours": None, "r_squared": None,
        }

    design = np.column_stack([np.ones_like(y), np.cos(_OMEGA * t_hours), np.sin(_OMEGA * t_hours)])
    (mesor, beta, gamma), *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = np.sum((y - design @ np.array([mesor, beta, gamma])) ** 2)
    r_squared = 1.0 - residual / np.sum((y - y.mean()) ** 2)
    peak = _acrophase_hours(beta, gamma)
    return fit | {
        "refused": None,
        "mesor": float(mesor), "amplitude": float(math.hypot(beta, gamma)),
        "acrophase": clock_time(peak * MINUTES_PER_HOUR), "acrophase_hours": peak,
        "r_squared": float(min(max(r_squared, 0.0), 1.0)),
    }
