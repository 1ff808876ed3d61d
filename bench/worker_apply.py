"""The prediction worker's CPU per upload, stage by stage, on one core: no Kafka, no servers.

    .venv/bin/python -m bench.worker_apply [--uploads 300] [--backlog-runs 5] [--seed 11] [--json]

Workload (bench/traffic.py, ``TrafficModel`` at its defaults but ``--seed``; a fixed ``now``):

- Users: one of each profile of the traffic model: a watch (one-minute steps and heart rate), a band
  (and one-minute activity counts) and a RADAR-style phone (1 Hz heart-rate instants). Each user's
  window is first filled with its prefill week (``TrafficModel.prefill``: 7 uploads of a day),
  applied as the worker applies it, so every measured upload lands in a full 7-day window.
- Every upload reaches the worker as a record does, untimed: its JSON body is parsed by the
  gateway's ``UploadRequest.validate_json``, turned into the ``HealthUpload`` record
  (``to_record``) and written as Avro with the gateway's schema headers.
- (a) week backlog: a watch user's 7-day re-sync (``backlog_days`` = 7, so 7 × 1440 minutes × 2
  series = 20,160 samples) applied into its full window (it replaces the same minutes) and into
  an empty window (a tracker's first sync); ``--backlog-runs`` runs each, a fresh copy each run.
- (b) ongoing uploads (``next_upload``, in order, after a warm-up of 20): per upload and per sample,
  the cost of ``UserWindow.apply`` into the full window, by kind (small: 15-500 samples).
- (c) the window's state: ``to_bytes`` and ``from_bytes`` of a full window (the faust table holds
  bytes, so the worker does both for every upload: read, apply, write back).
- (d) the whole per-upload path of ``UploadProcessor`` at the default debounce of 0 s (a result after
  every upload), stage by stage: decode the Avro value, read the state (``from_bytes``), apply,
  ``build_prediction`` with the week's blocks reused (the window's coverage and daily totals), the
  week's blocks recomputed (``week_blocks``, also each block called alone, as it calls them), encode
  the ``Prediction``, the two log records (the service's JSON formatter, into memory) and write the
  state back (``to_bytes``). Every upload is timed both ways; the worker recomputes the week's
  blocks at most once per user per ``--interval`` (``prediction_worker.weekly``), so (e) weighs the
  two by how often that happens in real time, from the traffic model's real-time upload rates
  (``describe()["real_time"]``): a user sending u uploads an hour recomputes for
  min(u, 3600 / interval) of them (and at least once an hour per day of new data, which these
  rates never reach).

Not measured: Kafka fetch and produce, faust's table and changelog produce, spans and metric
counters, the PAT forward pass (bench/pat_forward.py; without weights results carry no PAT block).
Times are wall-clock (``time.perf_counter``) of this single thread with BLAS on one thread and the
garbage collector on; p99 is numpy's interpolated percentile over the uploads of that kind.
"""

from __future__ import annotations

import os

# one core: BLAS reads these when numpy is first imported (cosinor's least squares uses it)
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from typing import Any, TypeVar  # noqa: E402

import fastavro  # noqa: E402
import numpy as np  # noqa: E402

from bench.fanout.measure import machine as fanout_machine  # noqa: E402
from bench.traffic import DEVICES, TrafficModel, Upload  # noqa: E402
from circadia.avro import SchemaSet  # noqa: E402
from circadia.logs import JsonFormatter  # noqa: E402
from ingest_gateway.models import UploadRequest, ValidationRules  # noqa: E402
from prediction_worker import daily  # noqa: E402
from prediction_worker.inputs import movement  # noqa: E402
from prediction_worker.processor import PREDICTION_SCHEMA, UPLOAD_SCHEMA  # noqa: E402
from prediction_worker.results import ModelOutcome, build_prediction, week_blocks  # noqa: E402
from prediction_worker.science.circadian import cosinor, nonparametric  # noqa: E402
from prediction_worker.science.series import MinuteSeries  # noqa: E402
from prediction_worker.science.sleep import StageInterval, cole_kripke, sleep_nights  # noqa: E402
from prediction_worker.window import ApplyReport, UserWindow  # noqa: E402

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
PROFILES = ("watch", "band", "radar")
WARMUP = 20
STATE_RUNS = 200
T = TypeVar("T")

# (key, label, a sub-row of build_prediction); the per-upload total adds the rows that are not sub-rows
STAGES: tuple[tuple[str, str, bool], ...] = (
    ("decode", "decode the Avro value", False),
    ("from_bytes", "read the state (from_bytes)", False),
    ("apply", "apply (UserWindow.apply)", False),
    ("build", "build_prediction, week blocks reused", False),
    ("daily", "daily_activity", True),
    ("rest", "the rest (merge, coverage, record)", True),
    ("encode", "write the Prediction (strict Avro writer)", False),
    ("logs", "log records (2, JSON)", False),
    ("to_bytes", "write the state (to_bytes)", False),
)
# the week's blocks, recomputed (not in the per-upload total: (e) weighs them by how often they are)
WEEK_STAGES: tuple[tuple[str, str, bool], ...] = (
    ("week", "week_blocks, recomputed (whole)", False),
    ("merge", "merge devices, non-wear, valid days (inputs.movement)", True),
    ("input", "choose the rhythm input", True),
    ("npcra", "circadian: nonparametric", True),
    ("cosinor", "cosinor", True),
    ("cole_kripke", "scored_sleep: Cole-Kripke", True),
    ("nights", "sleep_nights", True),
)
INTERVAL_S = 600.0


@dataclass
class Wire:
    """An upload as the worker receives it: the Avro value and headers, and what it holds."""

    kind: str
    samples: int
    value: bytes
    headers: list[tuple[str, bytes]]


@dataclass
class Timings:
    by_kind: dict[str, dict[str, list[float]]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(list)))
    samples: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))


class Codec:
    """The gateway's side (untimed) and the worker's decode of an upload."""

    def __init__(self) -> None:
        self.schemas = SchemaSet.load()
        self.upload_schema = self.schemas[UPLOAD_SCHEMA]
        self.prediction_schema = self.schemas[PREDICTION_SCHEMA]
        self.rules = ValidationRules(now=NOW)

    def wire(self, upload: Upload) -> Wire:
        parsed = UploadRequest.validate_json(json.dumps(upload.body), self.rules)
        value = self.upload_schema.write(parsed.to_record(upload.user, NOW))
        return Wire(upload.kind, upload.samples, value, self.upload_schema.headers())

    def decode(self, wire: Wire) -> dict[str, Any]:
        return self.schemas.decode(wire.value, wire.headers, self.upload_schema, logical=False)  # as the worker does


def timed(action: Callable[..., T], *args: Any) -> tuple[T, float]:
    """(result of ``action(*args)``, milliseconds)."""
    began = time.perf_counter()
    result = action(*args)
    return result, (time.perf_counter() - began) * 1000


def stats(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    a = np.asarray(values, dtype=float)
    return {"n": int(a.size), "median": float(np.median(a)), "p99": float(np.percentile(a, 99)),
            "mean": float(a.mean()), "min": float(a.min()), "max": float(a.max())}


def find_users(model: TrafficModel) -> dict[str, tuple[str, list[Upload]]]:
    """The first user of each profile, with its prefill week (the profile shows in the device model)."""
    by_model = {device[0]: profile for profile, device in DEVICES.items()}
    found: dict[str, tuple[str, list[Upload]]] = {}
    index = 0
    while len(found) < len(PROFILES):
        name = f"bench-user-{index:04d}"
        prefill = model.prefill(name, NOW)
        profile = by_model[prefill[0].body["device"]["model"]]
        found.setdefault(profile, (name, prefill))
        index += 1
    return found


def filled(codec: Codec, prefill: Sequence[Upload]) -> UserWindow:
    window = UserWindow()
    for upload in prefill:
        window.apply(codec.decode(codec.wire(upload)))
    return window


# --- (a) the week backlog --------------------------------------------------------------------------

def week_backlog(codec: Codec, seed: int, user: str, runs: int) -> dict[str, Any]:
    model = TrafficModel(seed=seed, backlog_fraction=0.99, backlog_days=(7.0, 7.0))
    window = filled(codec, model.prefill(user, NOW))
    upload = model.next_upload(user, NOW)  # the first ongoing upload is always a small one
    window.apply(codec.decode(codec.wire(upload)))
    while (upload := model.next_upload(user, NOW)).kind != "backlog":
        window.apply(codec.decode(codec.wire(upload)))
    wire = codec.wire(upload)
    full = window.to_bytes()
    decode_ms, into_full, into_empty = [], [], []
    for _ in range(runs):
        record, ms = timed(codec.decode, wire)
        decode_ms.append(ms)
        into_full.append(timed(UserWindow.from_bytes(full).apply, record)[1])
        into_empty.append(timed(UserWindow().apply, record)[1])
    return {"samples": upload.samples, "decode_ms": stats(decode_ms), "apply_full_ms": stats(into_full),
            "apply_empty_ms": stats(into_empty), "per_sample_full_us": into_full and
            1000 * float(np.median(into_full)) / upload.samples}


# --- (c) the state ---------------------------------------------------------------------------------

def state_cost(window: UserWindow) -> dict[str, Any]:
    data = window.to_bytes()
    dump = [timed(window.to_bytes)[1] for _ in range(STATE_RUNS)]
    load = [timed(UserWindow.from_bytes, data)[1] for _ in range(STATE_RUNS)]
    arrays = sum(len(measures) for measures in window.tracks.values())
    return {"bytes": len(data), "arrays": arrays, "applied": len(window.applied), "sleep": len(window.sleep),
            "to_bytes_ms": stats(dump), "from_bytes_ms": stats(load)}


# --- (b) and (d) the per-upload path ---------------------------------------------------------------

def metric_blocks(window: UserWindow, out: dict[str, float]) -> None:
    """The blocks of week_blocks and build_prediction, each called alone as they call them
    (without the guard)."""
    def merge() -> tuple[Any, ...]:
        steps, moved = window.movement("step_count"), movement(window)
        activity = moved.activity if moved.activity is not None else np.full(steps.size, np.nan)
        return steps, activity, moved

    (steps, activity, moved), out["merge"] = timed(merge)  # with non-wear and the valid-day rule
    series, out["input"] = timed(moved.rhythm_series)
    total, weight = window.heart_rate()
    out["npcra"] = timed(lambda: nonparametric(series))[1] if series is not None else 0.0
    out["cosinor"] = timed(lambda: cosinor(series))[1] if series is not None else 0.0
    if moved.scorable_activity is not None:
        counts = MinuteSeries(start_minute=window.start_minute, values=moved.scorable_activity,
                              utc_offset_minutes=window.utc_offset_minutes, input="activity_count")
        out["cole_kripke"] = timed(lambda: cole_kripke(counts))[1]
    else:
        out["cole_kripke"] = 0.0
    out["nights"] = timed(lambda: sleep_nights([
        StageInterval(iv.start_ms, iv.end_ms, iv.stage, iv.utc_offset_minutes) for iv in window.sleep]))[1]
    out["daily"] = timed(lambda: daily.daily_activity(
        window.start_minute, window.utc_offset_minutes, steps, activity, total, weight, moved.days))[1]


def worker_logger() -> tuple[logging.Logger, io.StringIO]:
    sink = io.StringIO()
    handler = logging.StreamHandler(sink)
    handler.setFormatter(JsonFormatter("prediction-worker"))
    logger = logging.getLogger("bench.worker_apply.prediction_worker")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger, sink


def ongoing(codec: Codec, model: TrafficModel, user: str, window: UserWindow,
            count: int) -> tuple[Timings, UserWindow]:
    """``count`` uploads (after the warm-up) through the worker's per-upload path, stage by stage;
    the timings and the window they leave."""
    log, sink = worker_logger()
    state = window.to_bytes()
    result = Timings()
    for index in range(WARMUP + count):
        wire = codec.wire(model.next_upload(user, NOW))
        t, state = one_upload(codec, log, user, wire, state)
        sink.seek(0)
        sink.truncate()
        if index < WARMUP:
            continue
        for key, value in t.items():
            result.by_kind[wire.kind][key].append(value)
        result.by_kind[wire.kind]["total"].append(sum(t[key] for key, _, sub in STAGES if not sub))
        result.by_kind[wire.kind]["total_recomputed"].append(result.by_kind[wire.kind]["total"][-1] + t["week"])
        result.by_kind[wire.kind]["apply_per_sample_us"].append(1000 * t["apply"] / wire.samples)
        result.samples[wire.kind].append(wire.samples)
    return result, UserWindow.from_bytes(state)


def one_upload(codec: Codec, log: logging.Logger, user: str, wire: Wire,
               state: bytes) -> tuple[dict[str, float], bytes]:
    """What UploadProcessor does for one upload with a result due (debounce 0), each stage timed;
    the stages' milliseconds and the state written back."""
    t: dict[str, float] = {}
    upload, t["decode"] = timed(codec.decode, wire)
    window, t["from_bytes"] = timed(UserWindow.from_bytes, state)
    upload_id = str(upload["upload_id"])

    def apply() -> ApplyReport:
        if window.holds(upload_id):
            raise AssertionError("the traffic model sent an upload id twice")
        report = window.apply(upload)
        window.pending.append(upload_id)
        return report

    report, t["apply"] = timed(apply)
    blocks, t["week"] = timed(week_blocks, window, NOW)
    record, t["build"] = timed(build_prediction, window, user, window.pending, NOW, ModelOutcome(), blocks)
    metric_blocks(window, t)
    t["rest"] = t["build"] - t["daily"]
    _, t["encode"] = timed(codec.prediction_schema.write, record)

    def logs() -> None:
        log.info("upload applied", extra={"upload_id": upload_id, "samples": report.samples,
                                          "dropped_too_old": report.dropped_too_old})
        log.info("prediction published", extra={"prediction_id": record["prediction_id"],
                                                "uploads": len(window.pending)})

    t["logs"] = timed(logs)[1]
    window.pending = []
    window.last_published_ms = int(NOW.timestamp() * 1000)
    state, t["to_bytes"] = timed(window.to_bytes)
    return t, state


def amortised(ongoing: dict[str, Any], model: TrafficModel, interval: float) -> dict[str, Any]:
    """Mean CPU per upload in real time: each profile's mean per upload with the blocks reused
    and recomputed (its most frequent kind), weighted by how many of its uploads recompute."""
    rates = model.describe()["real_time"]["profiles"]
    profiles, weight_sum, mix, recomputes = {}, 0.0, 0.0, 0.0
    for profile in PROFILES:
        kind = "radar" if profile == "radar" else "small"
        stats_ = ongoing[profile][kind]
        rate = rates[profile]["uploads_per_hour"]
        fraction = min(rate, 3600 / interval) / rate if interval > 0 else 1.0
        reused, recomputed = stats_["total"]["mean"], stats_["total_recomputed"]["mean"]
        value = reused + fraction * (recomputed - reused)
        uploads = rates[profile]["users"] * rate
        profiles[profile] = {"users": rates[profile]["users"], "uploads_per_hour": rate,
                             "recompute_fraction": fraction, "reused_ms": reused, "recomputed_ms": recomputed,
                             "amortised_ms": value}
        weight_sum += uploads
        mix += uploads * value
        recomputes += uploads * fraction
    return {"interval_s": interval, "profiles": profiles, "mix_ms": mix / weight_sum,
            "mix_recompute_fraction": recomputes / weight_sum}


# --- the report ------------------------------------------------------------------------------------

def machine() -> dict[str, str]:
    """The machine as every benchmark describes it, with the libraries this one exercises."""
    return fanout_machine({"numpy": np.__version__, "fastavro": fastavro.__version__})


def fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_report(out: dict[str, Any]) -> None:
    for key, value in out["machine"].items():
        print(f"{key}: {value}")
    print(f"workload: {out['workload']}")
    a = out["week_backlog"]
    print(f"\n(a) week backlog: {a['samples']:,} samples (7 days x 1440 minutes x steps + heart rate), "
          f"{a['apply_full_ms']['n']} runs")
    print(f"{'':<34}{'median ms':>11}{'min ms':>9}{'max ms':>9}")
    for label, key in (("decode (Avro, not apply)", "decode_ms"), ("apply into the full window", "apply_full_ms"),
                       ("apply into an empty window", "apply_empty_ms")):
        s = a[key]
        print(f"{label:<34}{s['median']:>11.1f}{s['min']:>9.1f}{s['max']:>9.1f}")
    print(f"per sample (full window): {a['per_sample_full_us']:.2f} us; target <= 100 ms: "
          f"{'met' if a['apply_full_ms']['median'] <= 100 else 'NOT met'}")

    print("\n(b) apply into a full window, ongoing uploads (next_upload), by profile and kind")
    print(f"{'profile':<7} {'kind':<8}{'n':>5}{'samples p50':>12}{'max':>6}{'apply p50 ms':>14}{'p99 ms':>9}"
          f"{'per sample p50 us':>19}{'p99 us':>9}")
    for profile, kinds in out["ongoing"].items():
        for kind, k in kinds.items():
            ap, ps = k["apply"], k["apply_per_sample_us"]
            print(f"{profile:<7} {kind:<8}{ap['n']:>5}{k['samples']['median']:>12.0f}{k['samples']['max']:>6.0f}"
                  f"{ap['median']:>14.3f}{ap['p99']:>9.3f}{ps['median']:>19.2f}{ps['p99']:>9.2f}")

    print("\n(c) a full window's state (the faust table's value), per call")
    print(f"{'profile':<8}{'bytes':>9}{'arrays':>7}{'to_bytes p50 ms':>17}{'p99':>8}"
          f"{'from_bytes p50 ms':>19}{'p99':>8}")
    for profile, c in out["state"].items():
        print(f"{profile:<8}{c['bytes']:>9,}{c['arrays']:>7}{c['to_bytes_ms']['median']:>17.3f}"
              f"{c['to_bytes_ms']['p99']:>8.3f}{c['from_bytes_ms']['median']:>19.3f}{c['from_bytes_ms']['p99']:>8.3f}")

    print("\n(d) CPU per upload by stage, full windows, a result after every upload (debounce 0)")
    columns = [(profile, kind) for profile, kinds in out["ongoing"].items() for kind in kinds
               if kind in ("small", "radar")]
    header = f"{'stage (ms)':<40}" + "".join(f"{f'{p} {k} p50':>16}{'p99':>8}{'share':>7}" for p, k in columns)
    print(header)
    print(" " * 40 + "".join(f"{'n = ' + str(out['ongoing'][p][k]['total']['n']):>31}" for p, k in columns))
    for key, label, sub in (*STAGES, ("total", "total per upload, week blocks reused", False), *WEEK_STAGES,
                            ("total_recomputed", "total per upload, week blocks recomputed", False)):
        row = f"{('  ' if sub else '') + label:<40}"
        for p, k in columns:
            s = out["ongoing"][p][k][key]
            share = s["mean"] / out["ongoing"][p][k]["total"]["mean"]
            row += f"{s['median']:>16.3f}{s['p99']:>8.3f}{share:>7.1%}"
        print(row)
    print("share = the stage's mean over the mean total with the blocks reused; sub-rows are blocks called alone "
          "(build's 'rest' = whole minus daily_activity)")
    e = out["amortised"]
    print(f"\n(e) amortised CPU per upload in real time, week blocks at most once per user per {e['interval_s']:g} s")
    print(f"{'profile':<8}{'users':>7}{'uploads/h':>11}{'recomputed':>12}{'reused ms':>11}{'recomputed ms':>15}"
          f"{'amortised ms':>14}")
    for profile, r in e["profiles"].items():
        print(f"{profile:<8}{r['users']:>7.3f}{r['uploads_per_hour']:>11.2f}{r['recompute_fraction']:>12.1%}"
              f"{r['reused_ms']:>11.3f}{r['recomputed_ms']:>15.3f}{r['amortised_ms']:>14.3f}")
    print(f"the mix (weighted by real-time uploads): {e['mix_ms']:.3f} ms per upload "
          f"({e['mix_recompute_fraction']:.1%} of uploads recompute the week); target <= 2 ms: "
          f"{'met' if e['mix_ms'] <= 2 else 'NOT met'}")
    print("\nother kinds, total per upload (all stages):")
    for profile, kinds in out["ongoing"].items():
        for kind, k in kinds.items():
            if kind not in ("small", "radar"):
                print(f"  {profile} {kind}: n {k['total']['n']}, samples p50 {k['samples']['median']:.0f}, "
                      f"total p50 {k['total']['median']:.2f} ms (apply {k['apply']['median']:.2f}, "
                      f"decode {k['decode']['median']:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uploads", type=int, default=300, help="measured ongoing uploads per profile")
    parser.add_argument("--backlog-runs", type=int, default=5, help="runs of the week backlog (each target)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--interval", type=float, default=INTERVAL_S,
                        help="CIRCADIA_WORKER_WEEK_METRICS_INTERVAL_SECONDS for (e)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()

    codec = Codec()
    model = TrafficModel(seed=args.seed)
    users = find_users(model)
    out: dict[str, Any] = {
        "machine": machine(),
        "workload": (f"bench/traffic.py TrafficModel(seed={args.seed}) defaults, now {NOW.isoformat()}; users "
                     + ", ".join(f"{p} {users[p][0]}" for p in PROFILES)
                     + f"; prefill week, then {WARMUP} warm-up + {args.uploads} next_upload per user"),
        "week_backlog": week_backlog(codec, args.seed, users["watch"][0], args.backlog_runs),
        "state": {}, "ongoing": {},
    }
    for profile in PROFILES:
        name, prefill = users[profile]
        timings, window = ongoing(codec, model, name, filled(codec, prefill), args.uploads)
        out["state"][profile] = state_cost(window)
        out["ongoing"][profile] = {
            kind: {key: stats(values) for key, values in stages.items()} | {"samples": stats(timings.samples[kind])}
            for kind, stages in sorted(timings.by_kind.items(), key=lambda item: -len(item[1]["total"]))}
    out["amortised"] = amortised(out["ongoing"], model, args.interval)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print_report(out)


if __name__ == "__main__":
    main()
