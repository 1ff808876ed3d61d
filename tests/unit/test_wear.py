"""Wear time: Choi et al. 2011 and Troiano et al. 2008 on hand-built minute series whose
non-wear minutes are known from the published rules, and the valid-day rule for steps."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from prediction_worker.science.wear import (
    RULE_HEART_RATE,
    RULE_NONE,
    RULE_STEPS,
    choi_nonwear,
    troiano_nonwear,
    valid_step_days,
    worn_by_heart_rate,
)


def series(*pieces: tuple[float, int]) -> np.ndarray:
    """Minutes from (value, how many) pieces; value NaN = missing."""
    return np.concatenate([np.full(n, value, dtype=np.float64) for value, n in pieces])


def flagged(mask: np.ndarray) -> list[tuple[int, int]]:
    """The non-wear periods of a mask as [start, end) minute pairs."""
    edges = np.diff(np.concatenate(([0], mask.astype(int), [0])))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))


# --- Choi et al. 2011 ------------------------------------------------------------------------------

def test_ninety_zero_minutes_are_non_wear_and_eighty_nine_are_not() -> None:
    assert flagged(choi_nonwear(series((50, 10), (0, 90), (50, 10)))) == [(10, 100)]
    assert flagged(choi_nonwear(series((50, 10), (0, 89), (50, 10)))) == []


def test_a_two_minute_spike_inside_thirty_zero_minutes_each_side_is_allowed() -> None:
    # 40 zeros, 2 minutes of counts, 50 zeros: 92 minutes, the spike with >= 30 zeros both sides
    counts = series((300, 5), (0, 40), (12, 2), (0, 50), (300, 5))
    assert flagged(choi_nonwear(counts)) == [(5, 97)]


def test_a_three_minute_spike_ends_the_period() -> None:
    counts = series((300, 5), (0, 60), (12, 3), (0, 60), (300, 5))
    assert flagged(choi_nonwear(counts)) == []


def test_the_spike_needs_thirty_zeros_upstream_and_downstream() -> None:
    # the paper's "both": 29 zeros before the spike are not enough, even with 80 after it
    counts = series((300, 5), (0, 29), (12, 1), (0, 80), (300, 5))
    assert flagged(choi_nonwear(counts)) == []  # 80 zeros alone are < 90
    counts = series((300, 5), (0, 30), (12, 1), (0, 80), (300, 5))
    assert flagged(choi_nonwear(counts)) == [(5, 116)]
    # and downstream: 80 before, 29 after
    counts = series((300, 5), (0, 80), (12, 1), (0, 29), (300, 5))
    assert flagged(choi_nonwear(counts)) == []


def test_two_spikes_each_allowed_join_one_long_period() -> None:
    counts = series((0, 30), (5, 2), (0, 30), (7, 1), (0, 30))
    assert flagged(choi_nonwear(counts)) == [(0, 93)]


def test_missing_minutes_end_a_period_and_are_never_non_wear() -> None:
    counts = series((0, 60), (np.nan, 10), (0, 60))
    mask = choi_nonwear(counts)
    assert flagged(mask) == []
    counts = series((0, 95), (np.nan, 10), (0, 95))
    assert flagged(choi_nonwear(counts)) == [(0, 95), (105, 200)]


def test_a_nightstand_day_is_non_wear_from_its_first_to_its_last_zero() -> None:
    day = np.full(1440, 0.0)
    day[:480] = 40.0   # worn until 08:00 ...
    day[1200:] = 40.0  # ... and again from 20:00
    assert flagged(choi_nonwear(day)) == [(480, 1200)]


def test_a_quiet_but_worn_night_is_not_non_wear() -> None:
    rng = np.random.default_rng(3)
    night = np.where(rng.random(480) < 0.2, rng.integers(1, 30, 480), 0).astype(float)  # a count every ~5 min
    assert not choi_nonwear(night).any()


@given(st.lists(st.tuples(st.sampled_from([0.0, 1.0, 250.0, np.nan]), st.integers(1, 100)), max_size=12))
def test_choi_flags_only_zeros_and_allowed_spikes_in_periods_of_ninety(pieces: list[tuple[float, int]]) -> None:
    counts = series(*pieces) if pieces else np.empty(0)
    mask = choi_nonwear(counts)
    assert not mask[np.isnan(counts)].any()
    for start, end in flagged(mask):
        assert end - start >= 90
        period = counts[start:end]
        assert period[0] == 0 and period[-1] == 0
        # non-zero minutes inside come in runs of at most 2
        nonzero = flagged(period > 0)
        assert all(b - a <= 2 for a, b in nonzero)


# --- Troiano et al. 2008 ---------------------------------------------------------------------------

def test_troiano_sixty_zero_minutes_with_small_counts_allowed() -> None:
    assert flagged(troiano_nonwear(series((500, 5), (0, 60), (500, 5)))) == [(5, 65)]
    assert flagged(troiano_nonwear(series((500, 5), (0, 59), (500, 5)))) == []
    # up to 2 minutes of counts 1..100 between zeros do not end the period
    assert flagged(troiano_nonwear(series((500, 5), (0, 30), (100, 2), (0, 30), (500, 5)))) == [(5, 67)]
    # a count above 100 does, as do 3 minutes of small counts
    assert flagged(troiano_nonwear(series((500, 5), (0, 30), (101, 1), (0, 30), (500, 5)))) == []
    assert flagged(troiano_nonwear(series((500, 5), (0, 30), (50, 3), (0, 30), (500, 5)))) == []


# --- the valid-day rule for steps ------------------------------------------------------------------

def day_rows(*days: np.ndarray) -> np.ndarray:
    return np.vstack(days)


def test_a_day_with_600_heart_rate_minutes_is_valid_by_heart_rate() -> None:
    steps = day_rows(np.zeros(1440))  # a bedridden day: no step, watch worn
    heart_rate = day_rows(np.arange(1440) < 600)
    rules, minutes = valid_step_days(steps, heart_rate)
    assert rules.tolist() == [RULE_HEART_RATE] and minutes.tolist() == [600]


def test_ten_hours_with_a_step_make_a_valid_day_and_nine_do_not() -> None:
    ten, nine = np.zeros(1440), np.zeros(1440)
    ten[[h * 60 + 5 for h in range(8, 18)]] = 1.0
    nine[[h * 60 + 5 for h in range(8, 17)]] = 30.0
    rules, minutes = valid_step_days(day_rows(ten, nine), np.zeros((2, 1440), dtype=bool))
    assert rules.tolist() == [RULE_STEPS, RULE_NONE] and minutes.tolist() == [600, 0]


def test_a_phone_left_at_home_gives_an_invalid_day_with_missing_minutes_kept_missing() -> None:
    zeros = np.zeros(1440)
    partial = np.full(1440, np.nan)
    partial[:300] = 0.0
    heart_rate = np.zeros((2, 1440), dtype=bool)
    heart_rate[1, :599] = True
    rules, minutes = valid_step_days(day_rows(zeros, partial), heart_rate)
    assert rules.tolist() == [RULE_NONE, RULE_NONE] and minutes.tolist() == [0, 0]


@pytest.mark.parametrize("fraction", [0.5, 0.99])
def test_fractional_steps_count_once_they_add_up_to_a_step_in_the_hour(fraction: float) -> None:
    day = np.zeros(1440)
    for h in range(10):
        day[h * 60:(h * 60) + 2] = fraction  # two prorated pieces of one step per hour
    rules, _ = valid_step_days(day_rows(day), np.zeros((1, 1440), dtype=bool))
    assert rules.tolist() == [RULE_STEPS if 2 * fraction >= 1 else RULE_NONE]


def choi_by_loops(counts: np.ndarray) -> np.ndarray:
    """The paper's rule minute by minute, with plain loops (the reference for the vectorised one)."""
    n = counts.size
    zero = [not np.isnan(c) and c == 0 for c in counts]
    allowed = list(zero)
    i = 0
    while i < n:
        if np.isnan(counts[i]) or zero[i]:
            i += 1
            continue
        j = i
        while j < n and not np.isnan(counts[j]) and not zero[j]:
            j += 1
        if j - i <= 2 and i >= 30 and j + 30 <= n and all(zero[i - 30:i]) and all(zero[j:j + 30]):
            allowed[i:j] = [True] * (j - i)
        i = j
    out = [False] * n
    i = 0
    while i < n:
        j = i
        while j < n and allowed[j]:
            j += 1
        if j - i >= 90:
            out[i:j] = [True] * (j - i)
        i = max(j, i + 1)
    return np.array(out, dtype=bool)


# series made of runs, so that long zero runs, short spikes and gaps all occur
run_series = st.lists(st.tuples(st.sampled_from([0.0, 3.0, 400.0, np.nan]), st.integers(1, 120)),
                      max_size=14).map(lambda pieces: series(*pieces) if pieces else np.empty(0))


@given(run_series)
def test_the_vectorised_choi_is_the_minute_by_minute_rule(counts: np.ndarray) -> None:
    assert choi_nonwear(counts).tolist() == choi_by_loops(counts).tolist()


def test_a_period_with_heart_rate_in_four_blocks_of_five_is_worn() -> None:
    nonwear = np.zeros(200, dtype=bool)
    nonwear[50:150] = True  # a 100-minute period: ten 10-minute blocks
    pulse = np.zeros(200, dtype=bool)
    pulse[[55 + 10 * k for k in range(8)]] = True  # a reading in 8 of the 10 blocks
    assert not worn_by_heart_rate(nonwear, pulse).any()
    pulse[125] = False  # 7 of 10
    assert worn_by_heart_rate(nonwear, pulse).tolist() == nonwear.tolist()
    pulse[:] = False
    pulse[:50] = True  # readings only outside the period: it stays not worn
    assert worn_by_heart_rate(nonwear, pulse).tolist() == nonwear.tolist()
