"""Circadian rhythm metrics of a minute series: nonparametric analysis and a 24-h cosinor.

Nonparametric (``npcra/van-someren-1999@1``; van Someren et al. 1999, Chronobiol Int 16:505):
- only whole local days that qualify (>= 80 % of minutes with data and data in every hour, see
  ``series``) are used; fewer than 3 such days -> refused, every metric None;
- hourly means are means of the present minutes of each hour; missing minutes are never zeros;
- IS = n·Σ_h(x̄_h − x̄)² / (24·Σ_i(x_i − x̄)²) with population (÷n) sums, so a perfectly repeating
  day gives exactly 1; when every hourly mean over the days is the same (the days differ but the
  average day is flat) the between-hours sum is exactly 0 and so is IS;
- IV = n·Σ(x_i − x_{i−1})² / (m·Σ_i(x_i − x̄)²), where the successive differences are taken only
  between hours adjacent in time and m is how many there are. Qualifying days that are not
  contiguous contribute no difference across the gap; for contiguous days m = n − 1 and this is
  the textbook formula;
- M10 / L5 are the highest 10-h and lowest 5-h circular window means of the average day at minute
  resolution (per local minute of day, the mean of the present values over the qualifying days;
  a window averages its present minutes). The onset is the local clock time of the window's first
  minute; on ties the earliest onset after 00:00 wins. RA = (M10 − L5) / (M10 + L5);
- constant input (zero variance of the hourly means) leaves IS and IV None; M10 + L5 == 0 leaves
  RA None;
- a flat average day (constant within ``_CONSTANT_RTOL`` of its magnitude, or M10 == L5 within
  it, as for a day that repeats every hour) has no most or least active window: m10_onset,
  l5_onset and RA are None, ``refused`` says "flat average day: M10/L5 onsets and RA are
  undefined", and M10 and L5 (both the mean level) are still reported. IS and IV keep their own
  rule: days that differ but average to a flat day have IS = 0, a real value;
- ``refused`` is None only when every metric is present; otherwise it says why ("; "-joined).

Cosinor (``cosinor/24h-least-squares@1``; Nelson et al. 1979, Chronobiologia 6:305; Cornelissen
2014, Theor Biol Med Model 11:16):
- y = M + β·cos(ωt) + γ·sin(ωt), ω = 2π/24 h, t = local clock time of each minute's start, fitted
  by linear least squares on the present minutes of the qualifying days (same day rule);
- fewer than 2 qualifying days -> refused: a fit on less than a full cycle confuses trend with
  rhythm;
- amplitude = √(β² + γ²), acrophase = the peak time atan2(γ, β)/ω, reported as local "HH:MM"
  (nearest minute) and as hours in [0, 24); R² = 1 − SS_res/SS_tot;
- constant input leaves acrophase and R² None (amplitude is 0).

Finite results for every finite input (both analyses):
- the ingest gateway accepts any finite non-negative count, up to the largest float
  (1.797…e308), whose squares and sums overflow. Every computation therefore runs on the values
  divided by a power of two 2^e that brings the largest present magnitude into [1, 2) (1 when all
  are zero). Division by a power of two is exact, so for ordinary inputs the results are those
  of the unscaled formulas (only a value below ~2^-1022 of the largest loses bits, and below
  ~2^-1074 of it counts as 0 — far below any meaningful difference);
- IS, IV, RA, R² and the acrophase are scale-invariant and are taken from the scaled values as
  they are; M10, L5, the hourly means and the average day are means of the scaled values, kept
  within the range of the values they average (a mean that rounds past its largest value would
  overflow when multiplied back; the clamp moves it by at most a few ulps) and multiplied back
  by 2^e, so they are finite. The mesor and the amplitude are multiplied back too; if such a
  product exceeds the float range, that metric is None and ``refused`` says "<field> exceeds
  the float range";
- last line of defence: no metric is ever NaN or ±inf. A non-finite value is replaced by None
  and ``refused`` names it: "non-finite result for <field>".
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
FLAT_DAY_REASON = "flat average day: M10/L5 onsets and RA are undefined"


def _scale_of(values: np.ndarray) -> float:
    """The power of two 2^e that brings the largest present magnitude of ``values`` into [1, 2);
    1.0 when no present value is nonzero. Dividing by it is exact (see the module docstring)."""
    present = values[~np.isnan(values)]
    top = float(np.max(np.abs(present))) if present.size else 0.0
    if top == 0.0 or not math.isfinite(top):
        return 1.0
    return math.ldexp(1.0, math.frexp(top)[1] - 1)


def _rescaled(scaled: float, scale: float) -> float | None:
    """``scaled · scale`` as a float; None if a finite ``scaled`` overflows when multiplied back.
    A non-finite ``scaled`` is passed on for ``_finite_or_refused`` to name."""
    value = float(scaled) * scale
    return None if math.isfinite(scaled) and not math.isfinite(value) else value


def _overflow_reason(field: str) -> str:
    return f"{field} exceeds the float range"


def _finite_or_refused(result: dict, reasons: list[str]) -> dict:
    """Last line of defence: every non-finite float in ``result`` becomes None, and ``reasons``
    gains "non-finite result for <field>"; ``refused`` is then set from ``reasons``."""
    for key, value in result.items():
        if isinstance(value, float) and not math.isfinite(value):
            result[key] = None
            reasons.append(f"non-finite result for {key}")
    result["refused"] = "; ".join(reasons) or None
    return result


def hourly_means(days: np.ndarray, use: np.ndarray) -> np.ndarray:
    """(days, 24) means of the present minutes of each hour; rows not in ``use`` are all NaN.

    Averaged at a power-of-two scale and kept within each hour's own range, so a mean of finite
    values is finite however large they are."""
    hourly = np.full((len(days), HOURS_PER_DAY), np.nan)
    used = days[use]
    scale = _scale_of(used)
    scaled = (used / scale).reshape(-1, HOURS_PER_DAY, MINUTES_PER_HOUR)
    means = np.clip(np.nanmean(scaled, axis=2), np.nanmin(scaled, axis=2), np.nanmax(scaled, axis=2))
    hourly[use] = means * scale
    return hourly


def _is_constant(values: np.ndarray) -> bool:
    return bool(np.ptp(values) <= _CONSTANT_RTOL * np.max(np.abs(values)))


def interdaily_stability(hourly: np.ndarray) -> float | None:
    """IS of van Someren et al. (1999, Chronobiol Int 16:505), population form.

    ``hourly`` is (days, 24) hourly means; all-NaN rows are days left out. Needs whole days (no
    partial rows) and at least one; the caller enforces the coverage rule (>= 3 qualifying days).
    None when the hourly means are constant (IS is 0/0); exactly 0 when the mean of every hour over
    the days is the same. Computed at a power-of-two scale, so it is finite for any finite input.
    """
    complete = hourly[~np.isnan(hourly).all(axis=1)]
    if np.isnan(complete).any():
        raise ValueError("interdaily stability needs whole days of hourly means")
    if complete.size == 0:
        return None
    complete = complete / _scale_of(complete)
    if _is_constant(complete):
        return None
    grand_mean = complete.mean()
    total = np.sum((complete - grand_mean) ** 2)
    hour_means = complete.mean(axis=0)
    # Equal hour means each equal the grand mean: the between-hours sum is 0, not rounding noise
    # from a grand mean summed in another order.
    between_hours = 0.0 if np.ptp(hour_means) == 0 else np.sum((hour_means - grand_mean) ** 2)
    # n / 24 is the number of days
    return float(len(complete) * between_hours / total)


def intradaily_variability(hourly: np.ndarray) -> float | None:
    """IV of van Someren et al. (1999, Chronobiol Int 16:505), population form.

    ``hourly`` is hourly means in time order (any shape, flattened row by row); NaN hours are
    missing and successive differences touching them are skipped, so IV = n·Σdiff²/(m·Σ(x − x̄)²)
    with m the differences used (m = n − 1 without gaps). The caller enforces the coverage rule.
    None when fewer than two adjacent hours exist or the hourly means are constant. Computed at a
    power-of-two scale, so it is finite for any finite input.
    """
    series = hourly.ravel()
    series = series / _scale_of(series)
    present = series[~np.isnan(series)]
    diffs = np.diff(series)
    diffs = diffs[~np.isnan(diffs)]
    if diffs.size == 0 or _is_constant(present):
        return None
    total = np.sum((present - present.mean()) ** 2)
    return float(present.size * np.sum(diffs**2) / (diffs.size * total))


def average_day(days: np.ndarray) -> np.ndarray:
    """Mean of the present values per local minute of day over ``days`` (rows); NaN if none.

    Averaged at a power-of-two scale and kept within each minute's own range of values, so it is
    finite for any finite input."""
    if len(days) == 0:
        return np.full(days.shape[1], np.nan)
    scale = _scale_of(days)
    scaled = days / scale
    present = ~np.isnan(scaled)
    counts = present.sum(axis=0)
    sums = np.where(present, scaled, 0.0).sum(axis=0)
    means = np.divide(sums, counts, out=np.full(days.shape[1], np.nan), where=counts > 0)
    # fmin/fmax skip NaN and leave all-NaN minutes NaN
    return np.clip(means, np.fmin.reduce(scaled, axis=0), np.fmax.reduce(scaled, axis=0)) * scale


def _circular_window_means(profile: np.ndarray, width: int) -> np.ndarray:
    """Mean of the present values of each circular window of ``width`` minutes, by its first
    minute; NaN where a window holds no value.

    Each window's sum is a dot product of its values with ones (``np.correlate``): every sum is
    formed from the window's own values, so there is no cancellation as with differences of
    running totals, and it agrees with summing each window separately to within a few ulps
    (tests/unit/test_circadian.py), far inside the tolerance that decides ties. The counts are
    exact integer differences of a running count. The sums can overflow for values near the top of
    the float range: callers pass a profile scaled into [0, 2) (``_window_extreme``)."""
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


def _window_extreme(profile: np.ndarray, minutes: int, largest: bool) -> tuple[float, int]:
    """Window means of the profile divided by a power of two (exact), the extreme kept within the
    profile's range (a mean cannot leave it) and multiplied back, so it is finite."""
    scale = _scale_of(profile)
    scaled = profile / scale
    mean, onset = _earliest_extreme(_circular_window_means(scaled, minutes), largest)
    return float(min(max(mean, np.nanmin(scaled)), np.nanmax(scaled)) * scale), onset


def most_active_window(profile: np.ndarray, minutes: int = M10_MINUTES) -> tuple[float, int]:
    """M10 (van Someren et al. 1999): (mean, onset minute of day) of the most active circular
    window of ``minutes`` over a 1440-minute average day; earliest onset on ties."""
    return _window_extreme(profile, minutes, largest=True)


def least_active_window(profile: np.ndarray, minutes: int = L5_MINUTES) -> tuple[float, int]:
    """L5 (van Someren et al. 1999): (mean, onset minute of day) of the least active circular
    window of ``minutes`` over a 1440-minute average day; earliest onset on ties."""
    return _window_extreme(profile, minutes, largest=False)


def relative_amplitude(m10: float, l5: float) -> float | None:
    """RA = (M10 − L5) / (M10 + L5) (van Someren et al. 1999); None when M10 + L5 == 0.

    Scale-invariant, so computed on both divided by a power of two: M10 + L5 cannot overflow."""
    scale = _scale_of(np.array([m10, l5], dtype=float))
    m10, l5 = m10 / scale, l5 / scale
    return None if m10 + l5 == 0 else float((m10 - l5) / (m10 + l5))


def _is_flat_day(profile: np.ndarray, m10: float, l5: float) -> bool:
    """The average day has no most or least active window: it is constant, or M10 == L5 (a
    profile that repeats every hour), within the constant tolerance."""
    values = profile[~np.isnan(profile)]
    return _is_constant(values) or abs(m10 - l5) <= _CONSTANT_RTOL * max(abs(m10), abs(l5))


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
    computed, ``coverage`` is the fraction of present minutes over the days used. A flat average
    day leaves the onsets and RA None; every float is finite (module docstring).
    """
    days = local_days(series)
    use = qualifying_days(days.values)
    days_used = int(use.sum())
    if days_used < NPCRA_MIN_DAYS:
        return _refused_nonparametric(series, _too_few_days(days_used, NPCRA_MIN_DAYS))

    # Everything below runs on the used days divided by a power of two (exact); IS, IV and RA are
    # scale-invariant, M10 and L5 are multiplied back.
    used = days.values[use]
    scale = _scale_of(used)
    scaled = np.where(use[:, None], days.values, np.nan) / scale
    hourly = hourly_means(scaled, use)
    stability = interdaily_stability(hourly)
    variability = intradaily_variability(hourly)
    profile = average_day(scaled[use])
    m10, m10_onset = most_active_window(profile)
    l5, l5_onset = least_active_window(profile)
    flat = _is_flat_day(profile, m10, l5)
    amplitude = None if flat else relative_amplitude(m10, l5)

    reasons = []
    if stability is None or variability is None:
        reasons.append("constant input: IS and IV are undefined (zero variance)")
    if flat:
        reasons.append(FLAT_DAY_REASON)
    elif amplitude is None:
        reasons.append("RA is undefined (M10 + L5 = 0)")
    m10_value, l5_value = _rescaled(m10, scale), _rescaled(l5, scale)
    for field, value in (("m10", m10_value), ("l5", l5_value)):
        if value is None:
            reasons.append(_overflow_reason(field))
    result = {
        "method": NPCRA_METHOD, "input": series.input,
        "coverage": present_fraction(used), "days_used": days_used,
        "refused": None,
        "interdaily_stability": stability, "intradaily_variability": variability,
        "m10": m10_value, "m10_onset": None if flat else clock_time(m10_onset),
        "l5": l5_value, "l5_onset": None if flat else clock_time(l5_onset),
        "relative_amplitude": amplitude,
    }
    return _finite_or_refused(result, reasons)


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
    fraction and every metric None. The fit runs on y divided by a power of two; mesor and
    amplitude are multiplied back, and every float is finite (module docstring).
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
    scale = _scale_of(y)
    y = y / scale  # exact; R² and the acrophase are scale-invariant
    t_hours = np.broadcast_to(np.arange(MINUTES_PER_DAY) / MINUTES_PER_HOUR, used.shape)[present]
    fit = {
        "method": COSINOR_METHOD, "input": series.input,
        "coverage": y.size / series.values.size,
    }
    reasons: list[str] = []
    if _is_constant(y):
        reasons.append("constant input: acrophase and R² are undefined (zero variance)")
        # a mean of equal values, kept within their range (it cannot leave it)
        mesor = _rescaled(min(max(y.mean(), y.min()), y.max()), scale)
        if mesor is None:
            reasons.append(_overflow_reason("mesor"))
        return _finite_or_refused(fit | {
            "refused": None, "mesor": mesor, "amplitude": 0.0, "acrophase": None,
            "acrophase_hours": None, "r_squared": None,
        }, reasons)

    design = np.column_stack([np.ones_like(y), np.cos(_OMEGA * t_hours), np.sin(_OMEGA * t_hours)])
    (mesor, beta, gamma), *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = np.sum((y - design @ np.array([mesor, beta, gamma])) ** 2)
    r_squared = 1.0 - residual / np.sum((y - y.mean()) ** 2)
    peak = _acrophase_hours(beta, gamma)
    mesor_value = _rescaled(mesor, scale)
    amplitude_value = _rescaled(math.hypot(beta, gamma), scale)
    for field, value in (("mesor", mesor_value), ("amplitude", amplitude_value)):
        if value is None:
            reasons.append(_overflow_reason(field))
    return _finite_or_refused(fit | {
        "refused": None,
        "mesor": mesor_value, "amplitude": amplitude_value,
        "acrophase": clock_time(peak * MINUTES_PER_HOUR) if math.isfinite(peak) else None,
        "acrophase_hours": float(peak),
        "r_squared": float(min(max(r_squared, 0.0), 1.0)),
    }, reasons)
