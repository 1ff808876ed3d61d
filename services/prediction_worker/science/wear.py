"""Wear time: which minutes of a movement series were recorded on the body. Pure: no I/O.

A device left on the nightstand sends zeros, and zeros read as rest: two such days in a regular
sleeper's week move IS from 0.94 to 0.41 and add a day and a half of "sleep". So minutes that were
not worn are missing data for every metric downstream, and every day says how its wear was decided.

Activity counts, per device (``non-wear/choi-2011@1``; Choi et al. 2011, Med Sci Sports Exerc
43(2):357–364). The paper's rule, in its words: "1-min time intervals with consecutive zero counts
for at least 90-min time window (window 1), allowing a short time intervals with nonzero counts
lasting up to 2 min (allowance interval) if no counts are detected during both the 30 min (window 2)
of upstream and downstream from that interval; any nonzero counts except the allowed short interval
are considered as wearing". Implemented exactly so:

- a zero minute has a count of 0; a missing minute (no data) is neither zero nor a count, and ends
  a period as a count would (a non-wear period is made of recorded minutes);
- an *allowance interval* is a run of at most 2 consecutive non-zero minutes whose 30 minutes
  upstream **and** 30 minutes downstream are all zero minutes ("both", as the paper says; some
  implementations accept either side);
- a non-wear period is a run of at least 90 consecutive minutes, each a zero minute or a minute of
  an allowance interval; its allowance minutes are non-wear too. Everything else is worn.

Troiano et al. 2008 (Med Sci Sports Exerc 40(1):181–188; the NHANES 2003–04 rule) is the documented
alternative (``non-wear/troiano-2008@1``): at least 60 consecutive zero minutes, allowing runs of up
to 2 minutes of counts between 1 and 100 between zero minutes; a minute above 100 ends the period.

Choi's rule was validated on hip-worn ActiGraph counts. During sleep a still wrist can also give 90
zero minutes. Where the same device also measures heart rate, its readings settle it (the project's
own rule, ``heart-rate-overrides@1``): a non-wear period in which at least 80 % of the 10-minute
blocks hold a heart-rate reading of that device is worn after all (a device off the wrist reads no
pulse). Without heart rate such minutes stay not worn (missing, never invented sleep).

Step counts (``valid-day/hr-600min-or-steps-10h@1``). Steps read 0 whenever a phone or watch is
not carried, so no minute-level rule can tell rest from absence. Whole local days are judged instead,
as in studies of consumer wearables (RAPIDS' Fitbit data yield; e.g. Tudor-Locke's valid-day
criteria): a day is valid when it has at least 600 minutes with heart rate (the wear signal, where the
user has a heart-rate device; rule ``heart-rate``), or else at least 10 hours with at least one step
(rule ``steps``). The minutes of a day that is not valid (rule ``none``) are missing for the rhythm
analysis; its step total is still reported (a step counted is a step taken).
"""

from __future__ import annotations

import numpy as np

CHOI_METHOD = "non-wear/choi-2011@1"
TROIANO_METHOD = "non-wear/troiano-2008@1"
VALID_DAY_METHOD = "valid-day/hr-600min-or-steps-10h@1"
CHOI_PERIOD_MINUTES = 90
CHOI_ALLOWANCE_MINUTES = 2
CHOI_WINDOW_MINUTES = 30
TROIANO_PERIOD_MINUTES = 60
TROIANO_ALLOWANCE_MINUTES = 2
TROIANO_ALLOWANCE_MAX_COUNT = 100.0
VALID_DAY_HEART_RATE_MINUTES = 600
VALID_DAY_STEP_HOURS = 10
RULE_HEART_RATE, RULE_STEPS, RULE_NONE = "heart-rate", "steps", "none"
NONWEAR_METHODS = {"choi-2011": CHOI_METHOD, "troiano-2008": TROIANO_METHOD}


def runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of the runs of True in a boolean array; ``ends`` are exclusive."""
    padded = np.zeros(mask.size + 2, dtype=np.int8)
    padded[1:-1] = mask
    changes = np.flatnonzero(np.diff(padded))  # alternately a run's start and its end
    return changes[::2], changes[1::2]


def _long_runs(mask: np.ndarray, minimum: int) -> np.ndarray:
    """True on every run of True at least ``minimum`` long."""
    starts, ends = runs(mask)
    long = ends - starts >= minimum
    edges = np.zeros(mask.size + 1, dtype=np.int32)
    edges[starts[long]] += 1  # runs are disjoint: no index repeats within starts or within ends
    edges[ends[long]] -= 1
    return np.cumsum(edges[:-1]) > 0


def _allow(allowed: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> None:
    """Set ``allowed`` on the runs [start, end) given, each at most 2 minutes long."""
    allowed[starts] = True
    allowed[starts[ends - starts == 2] + 1] = True


def choi_nonwear(counts: np.ndarray) -> np.ndarray:
    """Non-wear minutes of 1-minute activity counts by Choi et al. (2011, MSSE 43:357): True = not
    worn. NaN minutes are missing: never non-wear themselves, and they end a period (module rules)."""
    counts = np.asarray(counts, dtype=np.float64)
    present = ~np.isnan(counts)
    zero = present & (counts <= 0)
    starts, ends = runs(present & ~zero)
    window, n = CHOI_WINDOW_MINUTES, counts.size
    short = (ends - starts <= CHOI_ALLOWANCE_MINUTES) & (starts >= window) & (ends + window <= n)
    starts, ends = starts[short], ends[short]
    # zeros[i] = zero minutes among the first i, so [a, b) is all zero when zeros[b] - zeros[a] == b - a
    zeros = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(zero, out=zeros[1:])
    upstream = zeros[starts] - zeros[starts - window] == window
    downstream = zeros[ends + window] - zeros[ends] == window
    allowed = zero.copy()
    _allow(allowed, starts[upstream & downstream], ends[upstream & downstream])
    return _long_runs(allowed, CHOI_PERIOD_MINUTES)


def troiano_nonwear(counts: np.ndarray) -> np.ndarray:
    """Non-wear minutes by Troiano et al. (2008, MSSE 40:181): runs of >= 60 zero minutes, allowing
    up to 2 consecutive minutes of counts 1..100 between zero minutes; True = not worn."""
    counts = np.asarray(counts, dtype=np.float64)
    present = ~np.isnan(counts)
    zero = present & (counts <= 0)
    small = present & (counts > 0) & (counts <= TROIANO_ALLOWANCE_MAX_COUNT)
    starts, ends = runs(small)
    inside = (ends - starts <= TROIANO_ALLOWANCE_MINUTES) & (starts > 0) & (ends < counts.size)
    starts, ends = starts[inside], ends[inside]
    flanked = zero[starts - 1] & zero[ends]
    allowed = zero.copy()
    _allow(allowed, starts[flanked], ends[flanked])
    return _long_runs(allowed, TROIANO_PERIOD_MINUTES)


NONWEAR = {"choi-2011": choi_nonwear, "troiano-2008": troiano_nonwear}
HEART_RATE_OVERRIDE_METHOD = "heart-rate-overrides@1"
HEART_RATE_BLOCK_MINUTES = 10
HEART_RATE_BLOCK_SHARE = 0.8


def worn_by_heart_rate(nonwear: np.ndarray, heart_rate: np.ndarray) -> np.ndarray:
    """``nonwear`` without the periods that the same device's heart rate shows worn: a period whose
    10-minute blocks (counted from its start; a shorter last block counts as one) hold a reading in
    at least 80 % of them. ``heart_rate`` is True where the device read a pulse in that minute."""
    out = nonwear.copy()
    starts, ends = runs(nonwear)
    for start, end in zip(starts, ends, strict=True):
        blocks = np.add.reduceat(heart_rate[start:end], np.arange(0, end - start, HEART_RATE_BLOCK_MINUTES)) > 0
        if blocks.mean() >= HEART_RATE_BLOCK_SHARE:
            out[start:end] = False
    return out


def valid_step_days(step_days: np.ndarray, heart_rate_days: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The valid-day rule for step data, per row of (days, 1440) arrays: the rule that made each
    day valid ("heart-rate" or "steps", "none" when neither holds), and the day's wear minutes under
    that rule (minutes with heart rate; 60 per hour with a step; 0). ``step_days`` holds steps per
    minute (NaN = no data); ``heart_rate_days`` is True where a heart rate was read in that minute."""
    hr_minutes = heart_rate_days.sum(axis=1)
    hours = np.where(np.isnan(step_days), 0.0, step_days).reshape(len(step_days), 24, 60)
    step_hours = (hours.sum(axis=2) >= 1).sum(axis=1)
    by_heart_rate = hr_minutes >= VALID_DAY_HEART_RATE_MINUTES
    by_steps = ~by_heart_rate & (step_hours >= VALID_DAY_STEP_HOURS)
    rules = np.where(by_heart_rate, RULE_HEART_RATE, np.where(by_steps, RULE_STEPS, RULE_NONE))
    minutes = np.where(by_heart_rate, hr_minutes, np.where(by_steps, 60 * step_hours, 0))
    return rules, minutes.astype(np.int64)
