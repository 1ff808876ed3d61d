"""The device traffic of a population of wearables: a parameterised, seeded model (pure: no I/O).

Every benchmark, soak and load test draws its uploads from :class:`TrafficModel` and records
``TrafficModel.describe()`` (every parameter and the expected mix) with its results.

Grounding
- Apple HealthKit background delivery is at most hourly (``HKUpdateFrequency.hourly`` is the most
  frequent for most types), often later; delivery pauses while the phone is locked, so data
  arrives in catch-up batches.
- Fitbit users sync several times a day; some upload a week at once (a tracker not synced for days).
- RADAR-base's Android client sends every 10 s, at most 1,000 records per request.

The population. Each user has one device and one of three profiles, drawn once from the seed:
``radar`` (``radar_fraction``), ``band`` (``band_fraction``: minute steps, heart rate and activity
counts) or ``watch`` (the rest: minute steps and heart rate), a fixed UTC offset, a resting heart
rate, a walking cadence and a typical time between uploads. A user's data is a fixed function of
(seed, user, time): one-minute step counts with a diurnal pattern (none while asleep, walking bouts
of up to ~120 steps/min, most in the day's middle and evening), one heart-rate reading per minute
(50-150, lower asleep, higher walking), for bands one activity count per minute (0-2,000), and one
night per local day (in bed 22:30-00:30, 6-9 h) as consecutive stage intervals. So any upload of
the same minutes, first or re-synced, carries the same values.

The kinds of upload (``Upload.kind``)
- ``prefill``: :meth:`TrafficModel.prefill`, the user's week before its clock starts, one upload per
  day, with the stages of each night that ended that day: what a user already holds.
- ``small``: the minutes since the user's previous upload: minute steps and heart rate (and counts),
  15-500 samples. The interval is the user's typical one (drawn from ``small_interval_s``) times a
  jitter (``interval_jitter``), and the covered span is clamped to 15-500 samples.
- ``sleep``: the stages of the night the user just woke from, right after the first small upload
  past the wake-up: one batch per user per morning.
- ``backlog`` (``backlog_fraction`` of a non-RADAR user's uploads): a tracker's multi-day sync of
  1-7 days of minute data, capped at ``max_samples``. It re-sends the days up to the user's clock
  (a re-sync), so it does not spend the room the clock has before it reaches now.
- ``radar``: a RADAR-style user's stream: one heart-rate reading per second (instants) for the
  10-60 s since its previous upload, every 10-60 s (``radar_interval_s``), so 10-60 records, at
  most ``radar_max_records``. After its prefill a RADAR-style user sends nothing else.
- ``max``: :meth:`TrafficModel.max_upload`, exactly ``max_samples`` samples (steps and heart rate
  of the 25,000 minutes before the minute before now).

The mix. :meth:`TrafficModel.uploads` picks a user at random for each draw (a closed loop), so the
kinds' shares are per draw: RADAR-style users' share of the users in ``radar``, then for the others
``backlog_fraction`` backlogs, a sleep batch a morning and small uploads. In real time (each user
waiting ``Upload.interval_s``) a RADAR-style user sends ~50 times as often as the others:
``describe()["real_time"]`` gives those rates.

Time. Each user's clock starts ``clock_lag_days`` (minus up to a day, spread over users) before
the ``now`` of its first upload, and its ongoing uploads walk forward from there, never past
``now``: a closed loop sends far faster than real time, and the lag is the room each clock has
(at the defaults ~1,000 small uploads per user). A user whose clock has reached ``now`` re-sends
its latest minutes (``Upload.overlaps``). No sample is older than ``horizon_days``. A
``max_upload`` lies outside the walk: a worker that has applied it holds that user's window at
now and drops the user's later, older samples.

Determinism. Each user's uploads come from its own seeded stream, so they depend on the seed and
on the ``now`` of each call, not on how the calls for different users interleave; upload ids are
UUIDs from the same stream, so a second run with the same seed sends the same upload ids (a
gateway that kept its idempotency ledger answers them as duplicates: give each run its own seed).
"""

from __future__ import annotations

import json
import math
import random
import uuid
from array import array
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Literal, NamedTuple

Kind = Literal["small", "backlog", "sleep", "radar", "prefill", "max"]
ONGOING_KINDS: tuple[Kind, ...] = ("small", "sleep", "backlog", "radar")
PROFILES = ("watch", "band", "radar")
DEVICES = {"watch": ("Watch7,1", "watchOS 11.2"), "band": ("Band 2", "BandOS 4.1"), "radar": ("Pixel 8", "Android 15")}
# the band's counts are ActiGraph-compatible (what Cole–Kripke sleep scoring was validated on)
COUNT_CLASSES = {"band": "actigraph"}
DAY = 1440  # minutes
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DESCRIBE_NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)  # describe() draws at a fixed instant
MAX_WALK_STEPS = 125  # per minute; the gateway accepts up to 400
HEART_RATE = (50, 150)  # count/min; the gateway accepts 20-300
MAX_COUNTS = 2000  # activity counts per minute
DAY_CACHE = 4096  # user-days of minute values kept (~3-6 KB each)
NIGHTS_KEPT = 64  # per user, night bounds kept

_CLOCK = tuple(f"T{m // 60:02d}:{m % 60:02d}:00" for m in range(DAY))
_SECONDS = tuple(f"{s:02d}" for s in range(60))


def _rhythm(hour: float) -> float:
    """How likely a walk starts at this local hour, relative to the day's busiest time."""
    bumps = ((8.5, 1.0, 0.6), (12.75, 1.2, 0.7), (17.75, 1.5, 1.0), (20.5, 1.0, 0.35))
    return 0.15 + sum(height * math.exp(-(((hour - at) / width) ** 2)) for at, width, height in bumps)


_RHYTHM = tuple(_rhythm(m / 60) for m in range(DAY))


@lru_cache(maxsize=4096)
def _date(day: int) -> str:
    return (EPOCH + timedelta(days=day)).date().isoformat()


def _offset_text(minutes: int) -> str:
    hours, rest = divmod(abs(minutes), 60)
    return f"{'-' if minutes < 0 else '+'}{hours:02d}:{rest:02d}"


def _percentile(ordered: Sequence[int], p: float) -> int:
    """Nearest-rank percentile of an ascending sequence."""
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


@dataclass(frozen=True, slots=True)
class Upload:
    """One upload: its kind, user, sample count, the JSON body of ``POST /v1/uploads`` and the
    seconds until this user's next upload (0 for prefill and max uploads)."""

    kind: Kind
    user: str
    samples: int
    body: dict[str, Any]
    interval_s: float
    overlaps: bool = False  # re-sends minutes of this device (backlog, max, a small one at now)

    @property
    def upload_id(self) -> str:
        return str(self.body["upload_id"])

    def encoded(self) -> bytes:
        return json.dumps(self.body, separators=(",", ":")).encode()


class _Now(NamedTuple):
    second: int  # epoch seconds, floored
    minute: int  # epoch minutes, floored: no sample ends later
    earliest: int  # epoch minute: no sample starts earlier



def _device(name: str, profile: str, model: str, system: str) -> dict[str, str]:
    device = {"id": f"{name}-{profile}", "model": model, "os": system}
    if profile in COUNT_CLASSES:
        device["activity_counts"] = COUNT_CLASSES[profile]
    return device

@dataclass(slots=True, eq=False)
class _User:
    name: str
    profile: str
    series: int  # minute series: 2 (steps, heart rate) or 3 (and activity counts)
    offset: int  # minutes east of UTC: local = UTC + offset
    suffix: str  # the offset as RFC 3339 writes it
    device: dict[str, str]
    plan: random.Random  # kinds, spans, upload ids: the user's upload sequence
    typical_s: float  # the user's typical time between small uploads
    rest_hr: float
    cadence: float  # steps per minute of a brisk walk
    activity: float  # how often the user walks, relative to others
    salt: int
    start: int  # epoch minute where the ongoing uploads begin (the prefill ends here)
    cursor: int  # end of the data sent: epoch minute (radar: epoch second)
    next_kind: Kind = "small"
    next_span: int = 0  # minutes (radar: seconds) the next small (radar) upload covers
    next_night: int = 0  # local day of the first night whose wake-up is after the cursor
    pending: deque[int] = field(default_factory=deque)  # nights woken from, stages not sent yet
    nights: dict[int, tuple[int, int]] = field(default_factory=dict)  # local day -> (bed, wake), local minutes
    side_uploads: int = 0  # prefill and max uploads so far (their upload ids)


@dataclass(slots=True, eq=False)
class _State:
    lag: int  # minutes
    horizon: int  # minutes
    spans: dict[int, tuple[int, int]]  # series -> (fewest, most) minutes of a small upload
    pick: random.Random
    users: dict[str, _User] = field(default_factory=dict)
    days: OrderedDict[tuple[str, int], tuple[bytes, bytes, array[int] | None]] = field(default_factory=OrderedDict)


@dataclass(frozen=True)
class TrafficModel:
    """The parameters of the traffic (frozen, all recorded by :meth:`describe`). An instance also
    keeps each user's clock; two instances with the same parameters give the same uploads for the
    same calls."""

    seed: int = 1
    band_fraction: float = 0.2  # of users: a band that also reports one-minute activity counts
    radar_fraction: float = 0.05  # of users: a RADAR-style stream of 1 Hz heart rate
    backlog_fraction: float = 0.03  # of a non-RADAR user's uploads: a multi-day re-sync
    small_interval_s: tuple[float, float] = (120.0, 3600.0)  # each user's typical interval is drawn here
    interval_jitter: float = 0.5  # each interval: typical x U(1 - jitter, 1 + jitter), kept in the range
    small_samples: tuple[int, int] = (15, 500)  # the covered span of a small upload is clamped to these
    backlog_days: tuple[float, float] = (1.0, 7.0)
    radar_interval_s: tuple[int, int] = (10, 60)  # seconds between RADAR-style uploads (1 record/s)
    radar_max_records: int = 1000
    follow_up_s: tuple[float, float] = (5.0, 60.0)  # before a sleep batch or a backlog
    bedtime_h: tuple[float, float] = (22.5, 24.5)  # local hour of going to bed
    night_h: tuple[float, float] = (6.0, 9.0)  # hours in bed
    week_days: int = 7  # prefill
    clock_lag_days: float = 22.0  # where users' clocks start, before now (less up to a day)
    horizon_days: float = 29.0  # no sample older (the gateway accepts 30 days)
    max_samples: int = 50_000  # the gateway's limit per upload
    utc_offsets_min: tuple[int, ...] = (-480, -300, -180, 0, 60, 120, 330, 480, 540, 600)
    _state: _State = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._check()
        lag, horizon = round(self.clock_lag_days * DAY), math.floor(self.horizon_days * DAY)
        spans = {series: (-(-self.small_samples[0] // series), self.small_samples[1] // series) for series in (2, 3)}
        object.__setattr__(self, "_state", _State(lag=lag, horizon=horizon, spans=spans,
                                                  pick=random.Random(f"{self.seed}:pick")))

    def _check(self) -> None:
        problems = []
        for name in ("band_fraction", "radar_fraction", "backlog_fraction", "interval_jitter"):
            if not 0 <= getattr(self, name) < 1:
                problems.append(f"{name} must be in [0, 1)")
        if self.band_fraction + self.radar_fraction > 1:
            problems.append("band_fraction + radar_fraction must be at most 1")
        for name in ("small_interval_s", "small_samples", "backlog_days", "radar_interval_s", "follow_up_s",
                     "bedtime_h", "night_h"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                problems.append(f"{name} must be an ascending pair of non-negative numbers")
        fewest, most = self.small_samples
        if fewest < 1 or most > self.max_samples or any(-(-fewest // k) > most // k for k in (2, 3)):
            problems.append("small_samples must leave room for whole minutes of 2 and 3 series")
        if self.small_interval_s[0] <= 0 or self.backlog_days[0] <= 0 or self.radar_interval_s[0] < 1:
            problems.append("intervals and backlogs must be positive")
        if not 1 <= self.radar_max_records <= self.max_samples:
            problems.append("radar_max_records must be in [1, max_samples]")
        if self.night_h[0] <= 0 or self.bedtime_h[1] + self.night_h[1] >= 24 + self.bedtime_h[0]:
            problems.append("nights must be positive and must not overlap")
        if self.max_samples < 3 * DAY + 100:
            problems.append(f"max_samples must hold a day of minute data: at least {3 * DAY + 100}")
        if self.week_days < 0 or round(self.clock_lag_days * DAY) < 2:
            problems.append("week_days must be >= 0 and clock_lag_days at least 2 minutes")
        if round(self.clock_lag_days * DAY) + self.week_days * DAY > math.floor(self.horizon_days * DAY):
            problems.append("clock_lag_days + week_days must fit in horizon_days")
        if not self.utc_offsets_min or any(abs(o) > 14 * 60 for o in self.utc_offsets_min):
            problems.append("utc_offsets_min: one or more offsets within +-14 h")
        if problems:
            raise ValueError("; ".join(problems))

    # --- the public calls -----------------------------------------------------------------------

    def next_upload(self, user: str, now: datetime) -> Upload:
        """The user's next ongoing upload (small, backlog, sleep or radar)."""
        at = self._now(now)
        return self._advance(self._user(user, at), at, build=True)

    def uploads(self, users: Sequence[str], count: int, now: datetime) -> Iterator[Upload]:
        """``count`` uploads for a closed loop: each picks one of ``users`` at random (seeded) and is
        that user's next upload. A fixed ``now`` stays valid while the run lasts (bodies only age)."""
        if not users:
            raise ValueError("uploads() needs at least one user")
        return self._draw(users, count, self._now(now), build=True)

    def prefill(self, user: str, now: datetime) -> list[Upload]:
        """The user's week before its clock starts, one upload per day, each with the stages of the
        nights that ended that day: send them first to fill the windows before measuring."""
        at = self._now(now)
        u = self._user(user, at)
        first = max(u.start - self.week_days * DAY, at.earliest)
        chunk = min(DAY, (self.max_samples - 100) // u.series)
        out = []
        for m0 in range(first, u.start, chunk):
            m1 = min(m0 + chunk, u.start)
            samples = self._minute_samples(u, m0, m1, u.series)
            for night in range((m0 + u.offset) // DAY - 2, (m1 + u.offset) // DAY + 1):
                bed, wake = self._night_bounds(u, night)
                if m0 < wake - u.offset <= m1 and bed - u.offset >= first:
                    samples += self._sleep_samples(u, self._night_stages(u, night))
            out.append(Upload("prefill", user, len(samples), self._body(u, self._side_id(u), samples), 0.0))
        return out

    def max_upload(self, user: str, now: datetime) -> Upload:
        """Exactly ``max_samples`` samples: steps and heart rate of the minutes before the minute
        before now (25,000 at the defaults). Outside the user's walk (see the module notes)."""
        at = self._now(now)
        u = self._user(user, at)
        minutes = self.max_samples - self.max_samples // 2
        m1 = at.minute - 1
        if m1 - minutes < at.earliest:
            raise ValueError(f"{minutes} minutes do not fit in the {self.horizon_days}-day horizon")
        samples = self._minute_samples(u, m1 - minutes, m1, 2)[:self.max_samples]
        return Upload("max", user, len(samples), self._body(u, self._side_id(u), samples), 0.0, overlaps=True)

    def describe(self, draws: int = 10_000, users: int = 1_000) -> dict[str, Any]:
        """Every parameter and the expected mix: ``draws`` uploads of a closed loop over ``users``
        users (a fresh model with these parameters, at a fixed instant), by kind and in real time."""
        probe = replace(self)
        names = [f"describe-{index:05d}" for index in range(users)]
        drawn = list(probe._draw(names, draws, probe._now(DESCRIBE_NOW), build=False))
        counts = sorted(upload.samples for upload in drawn)
        kinds: dict[str, Any] = {}
        for kind in ONGOING_KINDS:
            mine = sorted(upload.samples for upload in drawn if upload.kind == kind)
            kinds[kind] = {"fraction": round(len(mine) / len(drawn), 4),
                           "mean_samples": round(sum(mine) / len(mine), 1) if mine else None,
                           **({f"p{p}": _percentile(mine, p) for p in (50, 90, 99)} if mine else {}),
                           "max": mine[-1] if mine else None}
        profiles: dict[str, dict[str, Any]] = {}
        uploads_per_hour = samples_per_hour = 0.0  # of the population, per user
        for profile in PROFILES:
            share = sum(u.profile == profile for u in probe._state.users.values()) / len(probe._state.users)
            theirs = [upload for upload in drawn if probe._state.users[upload.user].profile == profile]
            hours = sum(upload.interval_s for upload in theirs) / 3600
            rate = len(theirs) / hours if hours else 0.0
            samples = sum(upload.samples for upload in theirs) / hours if hours else 0.0
            profiles[profile] = {"users": round(share, 4), "uploads_per_hour": round(rate, 2),
                                 "samples_per_hour": round(samples)}
            uploads_per_hour += share * rate
            samples_per_hour += share * samples
        return {
            "model": "bench/traffic.py",
            "parameters": {f.name: _jsonable(getattr(self, f.name)) for f in fields(self) if f.init},
            "mix": {
                "draws": len(drawn), "users": len(probe._state.users), "at": DESCRIBE_NOW.isoformat(),
                "fraction": {kind: kinds[kind]["fraction"] for kind in ONGOING_KINDS},
                "mean_samples": round(sum(counts) / len(counts), 1),
                "samples_percentiles": {f"p{p}": _percentile(counts, p) for p in (50, 90, 99, 99.9)} | {
                    "min": counts[0], "max": counts[-1]},
                "kinds": kinds,
            },
            "real_time": {
                "profiles": profiles,
                "uploads_per_user_hour": round(uploads_per_hour, 2),
                "samples_per_user_hour": round(samples_per_hour),
            },
            "prefill": {"uploads_per_user": self.week_days,
                        "samples_per_day": {"watch": 2 * DAY, "band": 3 * DAY, "radar": 2 * DAY},
                        "plus": "the stages of each night (20-60 intervals)"},
            "max_upload_samples": self.max_samples,
        }

    # --- users and their clocks -----------------------------------------------------------------

    def _now(self, now: datetime) -> _Now:
        if now.utcoffset() is None:
            raise ValueError("now must be an aware datetime")
        second = (now - EPOCH) // timedelta(seconds=1)
        minute = second // 60
        return _Now(second, minute, minute - self._state.horizon + 1)

    def _user(self, name: str, at: _Now) -> _User:
        user = self._state.users.get(name)
        if user is None:
            user = self._state.users[name] = self._new_user(name, at)
        return user

    def _new_user(self, name: str, at: _Now) -> _User:
        if not isinstance(name, str) or not 1 <= len(name) <= 100:
            raise ValueError("a user id is a string of 1-100 characters")
        plan = random.Random(f"{self.seed}:{name}:plan")
        draw = plan.random()
        profile = ("radar" if draw < self.radar_fraction
                   else "band" if draw < self.radar_fraction + self.band_fraction else "watch")
        offset = plan.choice(self.utc_offsets_min)
        lag = self._state.lag
        start = at.minute - lag + 1 + int(plan.random() * min(DAY, lag - 1))
        typical = plan.uniform(*self.small_interval_s)
        traits = random.Random(f"{self.seed}:{name}:traits")
        model, system = DEVICES[profile]
        user = _User(name=name, profile=profile, series=3 if profile == "band" else 2, offset=offset,
                     suffix=_offset_text(offset), device=_device(name, profile, model, system),
                     plan=plan, typical_s=typical, rest_hr=traits.uniform(56, 70), cadence=traits.uniform(95, 118),
                     activity=traits.uniform(0.6, 1.4), salt=traits.getrandbits(32), start=start,
                     cursor=start * 60 if profile == "radar" else start)
        if profile == "radar":
            user.next_kind, user.next_span = "radar", self._radar_span(user)
        else:
            user.next_span = self._small_span(user)
            user.next_night = (start + offset) // DAY - 2
            self._pass_nights(user, keep=False)
        return user

    def _small_span(self, u: _User) -> int:
        low, high = self.small_interval_s
        jitter = self.interval_jitter
        interval = min(high, max(low, u.typical_s * u.plan.uniform(1 - jitter, 1 + jitter)))
        fewest, most = self._state.spans[u.series]
        return min(most, max(fewest, math.ceil(interval / 60)))

    def _radar_span(self, u: _User) -> int:
        return min(self.radar_max_records, u.plan.randint(*self.radar_interval_s))

    def _pass_nights(self, u: _User, keep: bool) -> None:
        """Move ``next_night`` past the wake-ups up to the cursor; with ``keep``, their stages are due."""
        while self._night_bounds(u, u.next_night)[1] - u.offset <= u.cursor:
            if keep:
                u.pending.append(u.next_night)
            u.next_night += 1

    def _draw(self, users: Sequence[str], count: int, at: _Now, build: bool) -> Iterator[Upload]:
        pick = self._state.pick
        for _ in range(count):
            yield self._advance(self._user(users[pick.randrange(len(users))], at), at, build)

    def _advance(self, u: _User, at: _Now, build: bool) -> Upload:
        """The user's next upload (its kind was decided with the previous one), then the next kind."""
        radar = u.profile == "radar"
        if u.cursor < at.earliest * (60 if radar else 1):  # the device was off for weeks: a gap
            u.cursor = at.earliest * (60 if radar else 1)
            if not radar:
                self._pass_nights(u, keep=False)
                u.pending.clear()
        kind, overlaps, samples = u.next_kind, False, 0
        m0 = m1 = 0
        stages: list[tuple[int, int, str]] = []
        if kind == "sleep":
            night = u.pending.popleft()
            stages = [s for s in self._night_stages(u, night) if s[0] - u.offset >= at.earliest]
            samples = len(stages)
        elif kind == "backlog":
            minutes = min(round(u.plan.uniform(*self.backlog_days) * DAY), self.max_samples // u.series)
            m1 = u.cursor
            m0 = max(m1 - minutes, at.earliest)
            samples, overlaps = (m1 - m0) * u.series, True
        if kind in ("sleep", "backlog") and samples <= 0:  # nothing left inside the horizon
            kind, u.next_span = "small", self._small_span(u)
        if kind == "small":
            m0, m1, overlaps = self._take(u, u.next_span, at.minute)
            samples = (m1 - m0) * u.series
            self._pass_nights(u, keep=True)
        elif kind == "radar":
            m0, m1, overlaps = self._take(u, u.next_span, at.second)
            samples = m1 - m0
        upload_id = uuid.UUID(int=u.plan.getrandbits(128), version=4)
        if radar:
            u.next_span = self._radar_span(u)
            interval = float(u.next_span)
        elif u.plan.random() < self.backlog_fraction:
            u.next_kind, interval = "backlog", u.plan.uniform(*self.follow_up_s)
        elif u.pending:
            u.next_kind, interval = "sleep", u.plan.uniform(*self.follow_up_s)
        else:
            u.next_kind, u.next_span = "small", self._small_span(u)
            interval = 60.0 * u.next_span
        body: dict[str, Any] = {}
        if build:
            if kind == "sleep":
                content = self._sleep_samples(u, stages)
            elif kind == "radar":
                content = self._radar_samples(u, m0, m1)
            else:
                content = self._minute_samples(u, m0, m1, u.series)
            body = self._body(u, upload_id, content)
        return Upload(kind, u.name, samples, body, interval, overlaps)

    @staticmethod
    def _take(u: _User, span: int, now: int) -> tuple[int, int, bool]:
        """The next ``span`` units after the cursor, or, once the clock reached now, the last ``span``
        before now (a re-send); moves the cursor."""
        start = u.cursor
        end = start + span
        if end > now:
            end, start = now, now - span
        overlaps = start < u.cursor
        u.cursor = max(u.cursor, end)
        return start, end, overlaps

    # --- the data: a fixed function of (seed, user, time) ---------------------------------------

    def _night_bounds(self, u: _User, day: int) -> tuple[int, int]:
        """(bed, wake) of the night that starts on local ``day``, in local minutes."""
        bounds = u.nights.get(day)
        if bounds is None:
            rng = random.Random(f"{self.seed}:{u.name}:night:{day}")
            bed = day * DAY + round(rng.uniform(*self.bedtime_h) * 60)
            bounds = u.nights[day] = (bed, bed + round(rng.uniform(*self.night_h) * 60))
            if len(u.nights) > NIGHTS_KEPT:
                for old in sorted(u.nights)[:NIGHTS_KEPT // 2]:
                    del u.nights[old]
        return bounds

    def _night_stages(self, u: _User, day: int) -> list[tuple[int, int, str]]:
        """The night as consecutive (start, end, stage) intervals, local minutes: in bed, then cycles
        of core, deep (early in the night) and REM sleep (longer late), brief awakenings, awake
        before getting up; ~54 % core, 14 % deep, 25 % REM, 20-47 intervals at the defaults."""
        rng = random.Random(f"{self.seed}:{u.name}:night:{day}")
        bed = day * DAY + round(rng.uniform(*self.bedtime_h) * 60)
        wake = bed + round(rng.uniform(*self.night_h) * 60)
        settle, final = rng.randint(5, 25), rng.randint(2, 10)
        stages = [(bed, bed + settle, "in_bed")]
        at, stop, cycle = bed + settle, wake - final, 0
        while at < stop:
            deep = rng.randint(20, 45) - 12 * cycle
            rem = min(28, rng.randint(5, 10) + 4 * cycle)
            split = rng.randint(2, 4) if rem >= 15 else 0  # a long REM period, interrupted
            steps = [("asleep_core", rng.randint(20, 40)), ("asleep_deep", deep),
                     ("asleep_core", rng.randint(5, 12) if deep > 0 else 0),
                     ("asleep_rem", rem - rem // 2 if split else rem), ("asleep_core", split),
                     ("asleep_rem", rem // 2 if split else 0),
                     ("awake", rng.randint(1, 4) if rng.random() < 0.5 else 0)]
            for stage, minutes in steps:
                if minutes > 0 and at < stop:
                    stages.append((at, min(stop, at + minutes), stage))
                    at = stages[-1][1]
            cycle += 1
        if stages[-1][2] == "awake":
            stages[-1] = (stages[-1][0], wake, "awake")
        else:
            stages.append((stop, wake, "awake"))
        return stages

    def _day(self, u: _User, day: int) -> tuple[bytes, bytes, array[int] | None]:
        """Steps, heart rate and (bands) activity counts of each minute of local ``day``."""
        cache = self._state.days
        key = (u.name, day)
        got = cache.get(key)
        if got is not None:
            cache.move_to_end(key)
            return got
        r = random.Random(f"{self.seed}:{u.name}:day:{day}").random
        asleep = bytearray(DAY)
        for night in (day - 1, day):
            bed, wake = self._night_bounds(u, night)
            low, high = max(0, bed - day * DAY), min(DAY, wake - day * DAY)
            if low < high:
                asleep[low:high] = b"\x01" * (high - low)
        steps, beats = bytearray(DAY), bytearray(DAY)
        counts = array("H", bytes(2 * DAY)) if u.series == 3 else None
        rest, cadence, starts = u.rest_hr, u.cadence, 0.02 * u.activity
        low_hr, high_hr = HEART_RATE
        beat, walking, count = rest, False, 0
        for minute in range(DAY):
            if asleep[minute]:
                walking, n = False, 0
                target = rest - 7 + 4 * r()
                if counts is not None:
                    count = 0 if r() < 0.75 else int(40 * r())
            else:
                walking = r() < (0.85 if walking else starts * _RHYTHM[minute])
                if walking:
                    n = min(MAX_WALK_STEPS, int(cadence * (0.6 + 0.45 * r())))
                    target = rest + 22 + 0.45 * (n - 60) + 8 * r()
                    if counts is not None:
                        count = min(MAX_COUNTS, int(n * (11 + 5 * r())))
                else:
                    x = r()
                    n = int(x * 50) if x < 0.3 else 0
                    target = rest + 4 + 14 * r()
                    if counts is not None:
                        count = int(250 * r() ** 2)
            beat += 0.5 * (target - beat)
            steps[minute] = n
            beats[minute] = min(high_hr, max(low_hr, round(beat)))
            if counts is not None:
                counts[minute] = count
        got = cache[key] = (bytes(steps), bytes(beats), counts)
        if len(cache) > DAY_CACHE:
            cache.popitem(last=False)
        return got

    def _series(self, u: _User, m0: int, m1: int, counts: bool) -> tuple[list[int], list[int], list[int]]:
        """Steps, heart rate and activity counts (empty unless ``counts``) of epoch minutes [m0, m1)."""
        steps: list[int] = []
        beats: list[int] = []
        activity: list[int] = []
        local, end = m0 + u.offset, m1 + u.offset
        while local < end:
            day, first = divmod(local, DAY)
            last = min(DAY, first + end - local)
            day_steps, day_beats, day_counts = self._day(u, day)
            steps += day_steps[first:last]
            beats += day_beats[first:last]
            if counts and day_counts is not None:
                activity += day_counts[first:last]
            local += last - first
        return steps, beats, activity

    def _stamps(self, u: _User, m0: int, m1: int) -> list[str]:
        """RFC 3339 local times of epoch minutes m0..m1 (both ends)."""
        out: list[str] = []
        suffix = u.suffix
        local, end = m0 + u.offset, m1 + u.offset + 1
        while local < end:
            day, first = divmod(local, DAY)
            last = min(DAY, first + end - local)
            date = _date(day)
            out += [date + clock + suffix for clock in _CLOCK[first:last]]
            local += last - first
        return out

    def _minute_samples(self, u: _User, m0: int, m1: int, series: int) -> list[dict[str, Any]]:
        stamps = self._stamps(u, m0, m1)
        steps, beats, counts = self._series(u, m0, m1, counts=series == 3)
        ends = stamps[1:]
        out = [{"type": "step_count", "start": s, "end": e, "value": v, "unit": "count"}
               for s, e, v in zip(stamps, ends, steps, strict=False)]
        out += [{"type": "heart_rate", "start": s, "end": s, "value": v, "unit": "count/min"}
                for s, v in zip(stamps, beats, strict=False)]
        out += [{"type": "activity_count", "start": s, "end": e, "value": v, "unit": "count"}
                for s, e, v in zip(stamps, ends, counts, strict=False)]
        return out

    def _sleep_samples(self, u: _User, stages: list[tuple[int, int, str]]) -> list[dict[str, Any]]:
        def stamp(local: int) -> str:
            return _date(local // DAY) + _CLOCK[local % DAY] + u.suffix

        return [{"type": "sleep_analysis", "start": stamp(a), "end": stamp(b), "value": stage, "unit": "stage"}
                for a, b, stage in stages]

    def _radar_samples(self, u: _User, s0: int, s1: int) -> list[dict[str, Any]]:
        """One heart-rate reading per second of [s0, s1): the minute's value and a small wobble."""
        first = s0 // 60
        _, beats, _ = self._series(u, first, (s1 - 1) // 60 + 1, counts=False)
        low, high = HEART_RATE
        out = []
        for second in range(s0, s1):
            day, rest = divmod(second + 60 * u.offset, 86_400)
            minute, sec = divmod(rest, 60)
            wobble = (((second ^ u.salt) * 2_654_435_761) >> 16) % 7 - 3
            stamp = _date(day) + _CLOCK[minute][:-2] + _SECONDS[sec] + u.suffix
            value = min(high, max(low, beats[second // 60 - first] + wobble))
            out.append({"type": "heart_rate", "start": stamp, "end": stamp, "value": value, "unit": "count/min"})
        return out

    def _side_id(self, u: _User) -> uuid.UUID:
        """Upload ids of prefill and max uploads: seeded, apart from the user's ongoing stream."""
        u.side_uploads += 1
        bits = random.Random(f"{self.seed}:{u.name}:side:{u.side_uploads}").getrandbits(128)
        return uuid.UUID(int=bits, version=4)

    @staticmethod
    def _body(u: _User, upload_id: uuid.UUID, samples: list[dict[str, Any]]) -> dict[str, Any]:
        return {"upload_id": str(upload_id), "device": dict(u.device), "samples": samples}


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
