"""The benchmarks' traffic model (bench/traffic.py): every body passes the gateway's own validation,
the mix follows the parameters, each user's data walks forward in time, and a seed fixes it all."""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bench.traffic import DESCRIBE_NOW, ONGOING_KINDS, TrafficModel, Upload
from ingest_gateway.models import SLEEP_STAGES, UploadRequest, ValidationRules

NOW = datetime(2026, 3, 10, 9, 17, 23, 500_000, tzinfo=UTC)
RULES = ValidationRules(now=NOW)
USERS = [f"user-{index:03d}" for index in range(300)]
NOW_MINUTE = NOW.replace(second=0, microsecond=0)


def passes(upload: Upload, rules: ValidationRules = RULES) -> UploadRequest:
    """The gateway's validation of the body, and its sample count as the upload reports it."""
    parsed = UploadRequest.validate_json(json.dumps(upload.body), rules)
    assert len(parsed.samples) == upload.samples == len(upload.body["samples"])
    return parsed


def span(upload: Upload) -> tuple[datetime, datetime]:
    samples = upload.body["samples"]
    return (min(datetime.fromisoformat(s["start"]) for s in samples),
            max(datetime.fromisoformat(s["end"]) for s in samples))


def by_user(model: TrafficModel, user: str, count: int, now: datetime = NOW) -> list[Upload]:
    return [model.next_upload(user, now) for _ in range(count)]


def user_with(model: TrafficModel, profile: str) -> str:
    """A user of the given profile (watch, band or radar)."""
    for index in range(1000):
        name = f"{profile}-probe-{index}"
        if model.next_upload(name, NOW).body["device"]["id"].endswith(f"-{profile}"):
            return name
    raise AssertionError(f"no {profile} user")


@pytest.fixture(scope="module")
def drawn() -> list[Upload]:
    """A closed loop's draws without backlogs (tested on their own: they are large)."""
    return list(TrafficModel(seed=3, backlog_fraction=0.0).uploads(USERS, 12_000, NOW))


# --- every body passes the gateway ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["small", "sleep", "radar"])
def test_every_kind_of_ongoing_upload_passes_the_gateway(drawn: list[Upload], kind: str) -> None:
    mine = [upload for upload in drawn if upload.kind == kind][:300]
    assert len(mine) >= 150
    for upload in mine:
        passes(upload)


def test_small_uploads_hold_15_to_500_samples_of_whole_minutes(drawn: list[Upload]) -> None:
    small = [upload for upload in drawn if upload.kind == "small"]
    assert all(15 <= upload.samples <= 500 for upload in small)
    series = {upload.body["device"]["id"]: len({s["type"] for s in upload.body["samples"]}) for upload in small}
    assert set(series.values()) == {2, 3}  # watches: steps and heart rate; bands also counts
    for upload in small[:200]:
        start, end = span(upload)
        assert upload.samples == (end - start) // timedelta(minutes=1) * series[upload.body["device"]["id"]]


def test_backlogs_pass_the_gateway_and_stay_under_the_limit() -> None:
    short = TrafficModel(seed=4, backlog_fraction=0.9, backlog_days=(0.02, 0.2))
    backlogs = [u for u in short.uploads(USERS[:30], 220, NOW) if u.kind == "backlog"]
    full = TrafficModel(seed=5, backlog_fraction=0.9)
    backlogs += [u for u in full.uploads(USERS[:2], 8, NOW) if u.kind == "backlog"]
    assert len(backlogs) >= 150
    for upload in backlogs:
        passes(upload)
        assert upload.samples <= 50_000 and upload.overlaps
    longest = max(backlogs, key=lambda u: u.samples)
    start, end = span(longest)
    assert end - start >= timedelta(days=1)


def test_backlogs_are_capped_at_max_samples() -> None:
    model = TrafficModel(seed=6, backlog_fraction=0.9, backlog_days=(6.0, 7.0), max_samples=10_000)
    backlogs = [u for u in model.uploads(USERS[:20], 30, NOW) if u.kind == "backlog"]
    assert backlogs and all(u.samples <= 10_000 for u in backlogs)
    assert all(u.samples >= 9_990 for u in backlogs)  # 7 days would be 20,160 or 30,240
    passes(backlogs[0], ValidationRules(now=NOW, max_samples=10_000))


def test_prefill_is_the_week_before_the_users_clock_and_passes_the_gateway() -> None:
    model = TrafficModel(seed=7)
    for profile in ("watch", "band", "radar"):
        user = user_with(model, profile)
        week = model.prefill(user, NOW)
        assert len(week) == 7 and {u.kind for u in week} == {"prefill"}
        for upload in week:
            passes(upload)
            assert upload.samples <= 50_000
        first, _ = span(week[0])
        stages = [s for u in week for s in u.body["samples"] if s["type"] == "sleep_analysis"]
        assert len(stages) >= 6 * 20  # six or seven nights of 20-60 intervals
        minutes = [s for u in week for s in u.body["samples"] if s["type"] == "step_count"]
        assert len(minutes) == 7 * 1440
        ends = [datetime.fromisoformat(s["end"]) for s in minutes]
        assert ends == sorted(ends) and len(set(ends)) == len(ends)
        assert NOW - first <= timedelta(days=29)
        # the ongoing uploads start where the week ends (the probe's first upload)
        fresh = TrafficModel(seed=7)
        assert span(fresh.next_upload(user, NOW))[0] == ends[-1]


def test_max_upload_has_exactly_50000_samples_ending_a_minute_before_now() -> None:
    model = TrafficModel(seed=8)
    user = user_with(model, "band")
    upload = model.max_upload(user, NOW)
    assert upload.kind == "max" and upload.samples == 50_000
    passes(upload)
    types = Counter(s["type"] for s in upload.body["samples"])
    assert types == {"step_count": 25_000, "heart_rate": 25_000}
    start, end = span(upload)
    assert end == NOW_MINUTE - timedelta(minutes=1)
    assert end - start == timedelta(minutes=25_000) and NOW - start < timedelta(days=29)
    assert model.max_upload(user, NOW).upload_id != upload.upload_id


# --- time ------------------------------------------------------------------------------------------


def test_each_users_minutes_walk_forward_without_overlap() -> None:
    model = TrafficModel(seed=9, backlog_fraction=0.0)
    for profile in ("watch", "band"):
        uploads = by_user(model, user_with(model, profile), 400)
        small = [u for u in uploads if u.kind == "small"]
        assert not any(u.overlaps for u in small)
        for before, after in zip(small, small[1:], strict=False):
            assert span(before)[1] == span(after)[0]
        for upload, following in zip(uploads, uploads[1:], strict=False):
            if upload.kind == "small" and following.kind == "small":
                assert upload.interval_s == (span(following)[1] - span(following)[0]).total_seconds()
            if following.kind == "sleep":
                assert upload.kind == "small" and 5 <= upload.interval_s <= 60
                assert span(following)[1] <= span(upload)[1]  # after waking: the night is over
        for upload in uploads:
            start, end = span(upload)
            assert end <= NOW and NOW - start <= timedelta(days=29)


def test_one_sleep_batch_per_user_per_morning() -> None:
    model = TrafficModel(seed=10, backlog_fraction=0.0)
    uploads = by_user(model, user_with(model, "watch"), 700)
    nights = [u for u in uploads if u.kind == "sleep"]
    covered = span([u for u in uploads if u.kind == "small"][-1])[1] - span(uploads[0])[0]
    assert abs(len(nights) - covered / timedelta(days=1)) <= 1.5
    wakes = [span(u)[1] for u in nights]
    assert all(timedelta(hours=15) < b - a < timedelta(hours=33) for a, b in zip(wakes, wakes[1:], strict=False))
    for night in nights:
        stages = night.body["samples"]
        assert 20 <= len(stages) <= 60
        assert stages[0]["value"] == "in_bed" and stages[-1]["value"] == "awake"
        assert all(s["value"] in SLEEP_STAGES for s in stages)
        assert all(a["end"] == b["start"] for a, b in zip(stages, stages[1:], strict=False))
        assert all(a["value"] != b["value"] for a, b in zip(stages, stages[1:], strict=False))
        start, end = span(night)
        assert timedelta(hours=6) <= end - start <= timedelta(hours=9)


def test_radar_users_stream_heart_rate_every_10_to_60_seconds() -> None:
    model = TrafficModel(seed=11)
    uploads = by_user(model, user_with(model, "radar"), 200)
    assert {u.kind for u in uploads} == {"radar"}
    for before, after in zip(uploads, uploads[1:], strict=False):
        assert 10 <= after.samples <= 60 and before.interval_s == after.samples
        assert before.body["samples"][-1]["start"] < after.body["samples"][0]["start"]
        seconds = [datetime.fromisoformat(s["start"]) for s in after.body["samples"]]
        assert all(b - a == timedelta(seconds=1) for a, b in zip(seconds, seconds[1:], strict=False))
    for upload in uploads[:100]:
        passes(upload)
        assert {s["type"] for s in upload.body["samples"]} == {"heart_rate"}


def test_a_user_whose_clock_reached_now_re_sends_its_latest_minutes() -> None:
    model = TrafficModel(seed=12, clock_lag_days=0.05, backlog_fraction=0.0)
    uploads = by_user(model, user_with(model, "watch"), 30)
    caught_up = [u for u in uploads if u.kind == "small" and u.overlaps]
    assert caught_up
    for upload in uploads:
        passes(upload)
    assert all(span(u)[1] == NOW_MINUTE for u in caught_up)
    later = NOW + timedelta(hours=2)
    for upload in by_user(model, "late-user", 5, later):
        passes(upload, ValidationRules(now=later))


# --- values ----------------------------------------------------------------------------------------


def test_values_are_realistic_and_follow_the_day() -> None:
    model = TrafficModel(seed=13)
    week = [s for u in model.prefill(user_with(model, "band"), NOW) for s in u.body["samples"]]
    steps = [s for s in week if s["type"] == "step_count"]
    assert all(0 <= s["value"] <= 130 for s in steps)
    assert all(50 <= s["value"] <= 150 for s in week if s["type"] == "heart_rate")
    assert all(0 <= s["value"] <= 2000 for s in week if s["type"] == "activity_count")
    assert max(s["value"] for s in steps) >= 100
    asleep = [(datetime.fromisoformat(s["start"]), datetime.fromisoformat(s["end"]))
              for s in week if s["type"] == "sleep_analysis"]
    for sample in steps:
        start = datetime.fromisoformat(sample["start"])
        if any(a <= start < b for a, b in asleep):
            assert sample["value"] == 0
    hours = Counter[int]()
    for sample in steps:
        hours[datetime.fromisoformat(sample["start"]).hour] += sample["value"]
    assert sum(hours[h] for h in range(1, 5)) < 0.01 * sum(hours.values())
    assert 2_000 <= sum(hours.values()) / 7 <= 25_000  # steps per day


# --- the mix, determinism, describe() -----------------------------------------------------------


@pytest.mark.parametrize("parameters", [{}, {"band_fraction": 0.5, "radar_fraction": 0.2, "backlog_fraction": 0.1}])
def test_the_mix_follows_the_configured_fractions(parameters: dict[str, Any]) -> None:
    model = TrafficModel(**parameters)
    description = model.describe()
    mix, profiles = description["mix"]["fraction"], description["real_time"]["profiles"]
    assert sum(mix.values()) == pytest.approx(1.0, abs=1e-3)
    assert profiles["band"]["users"] == pytest.approx(model.band_fraction, abs=0.04)
    assert profiles["radar"]["users"] == pytest.approx(model.radar_fraction, abs=0.02)
    assert mix["radar"] == pytest.approx(model.radar_fraction, abs=0.02)  # each draw picks a user at random
    assert mix["backlog"] / (1 - mix["radar"]) == pytest.approx(model.backlog_fraction, abs=0.01)
    assert 0.01 <= mix["sleep"] <= 0.035  # one a morning: ~1 in 45 of a user's uploads
    kinds = description["mix"]["kinds"]
    assert 15 <= kinds["small"]["p50"] <= kinds["small"]["max"] <= 500
    assert kinds["backlog"]["max"] <= 50_000


def test_describe_reports_what_uploads_draws() -> None:
    description = TrafficModel().describe(draws=1500)
    names = [f"describe-{index:05d}" for index in range(1000)]
    uploads = list(TrafficModel().uploads(names, 1500, DESCRIBE_NOW))
    kinds = Counter(u.kind for u in uploads)
    assert description["mix"]["fraction"] == {k: round(kinds[k] / 1500, 4) for k in ONGOING_KINDS}
    assert description["mix"]["mean_samples"] == round(sum(u.samples for u in uploads) / 1500, 1)


def test_describe_is_json_and_names_every_parameter() -> None:
    model = TrafficModel(seed=2, utc_offsets_min=(0, 60))
    description = model.describe(draws=2000)
    assert json.loads(json.dumps(description)) == description
    assert set(description["parameters"]) == {f.name for f in fields(TrafficModel) if f.init}
    assert description["parameters"]["utc_offsets_min"] == [0, 60]
    assert description["mix"]["draws"] == 2000
    assert set(description["mix"]["samples_percentiles"]) >= {"p50", "p90", "p99", "max"}
    assert model.describe(draws=2000) == description  # describe() leaves the users' clocks alone


def test_same_seed_same_uploads_other_seed_other_uploads() -> None:
    def run(seed: int) -> list[str]:
        model = TrafficModel(seed=seed, backlog_fraction=0.1, backlog_days=(0.05, 0.2))
        return [json.dumps(u.body) for u in model.uploads(USERS[:50], 300, NOW)]

    first = run(21)
    assert run(21) == first
    assert run(22) != first
    assert len({json.loads(body)["upload_id"] for body in first}) == len(first)


def test_a_users_uploads_do_not_depend_on_other_users() -> None:
    alone, mixed = TrafficModel(seed=23), TrafficModel(seed=23)
    expected = [u.encoded() for u in by_user(alone, "ada", 40)]
    got = []
    for index in range(40):
        mixed.next_upload(f"other-{index % 7}", NOW)
        got.append(mixed.next_upload("ada", NOW).encoded())
    assert got == expected


@pytest.mark.parametrize(("parameters", "message"), [
    ({"band_fraction": 0.7, "radar_fraction": 0.4}, r"band_fraction \+ radar_fraction"),
    ({"backlog_fraction": 1.5}, "backlog_fraction"),
    ({"small_samples": (600, 500)}, "small_samples"),
    ({"clock_lag_days": 25.0}, "horizon_days"),
    ({"utc_offsets_min": ()}, "utc_offsets_min"),
])
def test_impossible_parameters_are_refused(parameters: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrafficModel(**parameters)


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        TrafficModel().next_upload("ada", datetime(2026, 3, 10, 9, 0))


# --- speed -----------------------------------------------------------------------------------------


def test_bodies_are_fast_to_generate() -> None:
    model = TrafficModel(seed=24, backlog_fraction=0.0)
    users = USERS[:100]
    list(model.uploads(users, 200, NOW))  # the users' current days
    began = time.perf_counter()
    list(model.uploads(users, 2000, NOW))
    per_upload = (time.perf_counter() - began) / 2000
    began = time.perf_counter()
    model.max_upload(users[0], NOW)
    largest = time.perf_counter() - began
    assert per_upload < 0.001, f"{per_upload * 1e3:.2f} ms per small upload"
    assert largest < 1.0, f"{largest:.2f} s for a 50,000-sample body"
    assert math.isfinite(per_upload)
