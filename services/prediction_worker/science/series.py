"""A per-minute series in the user's local time, and its split into whole local days.

- A value belongs to the minute that starts at its label; minutes without data are NaN, never 0.
- Local time is UTC + ``utc_offset_minutes`` (the user's current offset, applied to the whole
  series). A local day runs from local midnight to local midnight.
- A day *qualifies* for rhythm analysis when >= 80 % of its 1440 minutes have data and every one
  of its 24 hours has at least one minute of data (so every hourly mean exists).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MINUTES_PER_HOUR = 60
MINUTES_PER_DAY = 1440
HOURS_PER_DAY = 24
MIN_DAY_COVERAGE = 0.8
INPUTS = ("activity_count", "step_count")


@dataclass(frozen=True, eq=False)  # eq=False: element-wise array comparison has no truth value
class MinuteSeries:
    start_minute: int          # first minute as minutes since the Unix epoch, UTC
    values: np.ndarray         # float64, one value per minute, NaN = missing (never zero-filled)
    utc_offset_minutes: int    # local time = UTC + this offset (the user's current offset)
    input: str                 # "activity_count" or "step_count"

    def __post_init__(self) -> None:
        values = np.asarray(self.values, dtype=np.float64)
        if values.ndim != 1:
            raise ValueError("values must be one-dimensional, one value per minute")
        if np.isinf(values).any():
            raise ValueError("values must be finite or NaN (missing)")
        if self.input not in INPUTS:
            raise ValueError(f"input must be one of {', '.join(INPUTS)}")
        object.__setattr__(self, "values", values)


@dataclass(frozen=True, eq=False)
class LocalDays:
    """The series laid out as whole local days: row k is local day ``first_day + k``."""

    first_day: int        # local days since 1970-01-01 of row 0
    values: np.ndarray    # shape (days, 1440), NaN where the series has no data or does not reach


def present_fraction(values: np.ndarray) -> float:
    """Fraction of entries that hold data; 0.0 for an empty array."""
    return float(np.count_nonzero(~np.isnan(values)) / values.size) if values.size else 0.0


@dataclass(frozen=True)
class DayLayout:
    """Where the minutes of a series fall in whole local days: row k is local day ``first + k``, and
    the series starts ``lead`` minutes into row 0."""

    first: int
    lead: int
    count: int

    @classmethod
    def of(cls, start_minute: int, utc_offset_minutes: int, minutes: int) -> DayLayout:
        first, lead = divmod(start_minute + utc_offset_minutes, MINUTES_PER_DAY)
        return cls(first, lead, -(-(lead + minutes) // MINUTES_PER_DAY))

    def fold(self, values: np.ndarray, fill: float | bool = np.nan) -> np.ndarray:
        """``values`` padded with ``fill`` to whole local days, one row per day."""
        padded = np.full(self.count * MINUTES_PER_DAY, fill, dtype=values.dtype)
        padded[self.lead:self.lead + values.size] = values
        return padded.reshape(self.count, MINUTES_PER_DAY)


def local_days(series: MinuteSeries) -> LocalDays:
    """Pad the series with NaN to whole local days and fold it into one row per day."""
    layout = DayLayout.of(series.start_minute, series.utc_offset_minutes, series.values.size)
    return LocalDays(first_day=layout.first, values=layout.fold(series.values))


def qualifying_days(days: np.ndarray) -> np.ndarray:
    """Boolean mask over rows of a (days, 1440) array: >= 80 % coverage and data in every hour."""
    present = ~np.isnan(days)
    coverage = present.mean(axis=1)
    hours_with_data = present.reshape(len(days), HOURS_PER_DAY, MINUTES_PER_HOUR).any(axis=2)
    return (coverage >= MIN_DAY_COVERAGE) & hours_with_data.all(axis=1)


def local_minute_of_day(series: MinuteSeries) -> np.ndarray:
    """Local clock minute (0..1439) of every value of the series."""
    local_start = series.start_minute + series.utc_offset_minutes
    return (local_start + np.arange(series.values.size)) % MINUTES_PER_DAY


def clock_time(minute_of_day: float) -> str:
    """'HH:MM' of a local minute of day, rounded to the nearest minute (23:59.6 -> '00:00')."""
    minute = int(round(minute_of_day)) % MINUTES_PER_DAY
    return f"{minute // MINUTES_PER_HOUR:02d}:{minute % MINUTES_PER_HOUR:02d}"
