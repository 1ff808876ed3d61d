"""Ingest load and soak on the project's traffic model (bench/traffic.py): the ingest gateway's
capacity against a raw Kafka producer on the same mix, small-upload latency with and without
backlog syncs, the maximum upload, then a soak of the whole pipeline (gateway → Kafka →
worker → fan-out → WebSockets).

    .venv/bin/python -m bench.ingest.run                  # the full run (~17 min)
    .venv/bin/python -m bench.ingest.run --quick          # short phases + 1-min soak: a smoke test (~3 min)
    .venv/bin/python -m bench.ingest.run --soak-minutes 30

One command does everything: a LocalStack of its own (Kafka, Redis, the three services) on
free ports in a temporary folder, the phases below, the tables, and stopping everything it
started. Every phase draws its uploads from ``TrafficModel(seed=--seed)`` at the defaults
(the soak and the small uploads of phase 3 with ``backlog_fraction=0``), each phase from
users of its own, at one ``now`` fixed for the run; ``describe()`` of both goes with the
result.

1. **Raw producer** (bench.ingest.baseline, own process, run after phase 2's first closed
   loop): ``--concurrency`` tasks publish the records of that loop's uploads (drawn again and
   built beforehand, ``--pool`` of them with its mix), written with ``AvroSchema.write``, with
   ``create_producer``'s defaults, each awaiting its ack.
2. **Gateway capacity** (bench.ingest.load, closed loop): ``--concurrency`` devices post the
   model's uploads as JSON, each as soon as its previous one is answered; then
   ``--high-concurrency`` devices, and a short small-uploads-only closed loop (the capacity
   that sets phase 3's and the soak's rates). Uploads and samples per CPU-second of the
   gateway and its parser processes. Target: gateway uploads/s ≥ 0.5 × the producer's.
3. **Small-upload latency** (open loop): small/radar/sleep uploads at ``--latency-rate``
   (default ``--latency-fraction`` of the small-only capacity) for ``--latency-seconds``
   without backlogs, then the same schedule with backlog syncs at ``--backlog-rate`` on
   connections of their own. Target: small-upload p99 with backlogs ≤ 2 × without.
4. **The maximum upload**: ``max_upload`` (50,000 samples) ``--max-runs`` times, each for a
   new user, on an idle gateway: time to the 202.
5. **Soak**: the worker and the fan-out gateway are started; one WebSocket per user
   listens; small uploads (no backlogs, no prefill) arrive at ``--soak-rate`` (default
   ``--soak-fraction`` of the small-only capacity) for ``--soak-minutes``. Every
   ``--sample-seconds`` the VmRSS of the ingest gateway, the worker and the fan-out gateway is
   read. Growth = mean of the last minute over mean of the first minute after the warm-up.
   Target < 5 %.

The full run writes the "Ingest load and soak" section of docs/benchmarks.md (replacing its
previous one); ``--quick`` and ``--no-docs`` only print. Raw results go to
.local/bench/ingest-<time>.json; ``--from-json`` re-renders one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # also runnable as ``python bench/ingest/run.py``
    sys.path.insert(0, str(REPO))

from bench.common import reporter, run_loop  # noqa: E402
from bench.fanout.measure import CLOCK_TICKS, cpu_seconds, machine, package_version, rss_kib  # noqa: E402
from bench.ingest.report import render_markdown, render_text, update_docs  # noqa: E402
from bench.ingest.stack import FANOUT, INGEST, WORKER, IngestStack  # noqa: E402
from bench.ingest.workload import model, parameters, user_ids  # noqa: E402

DOCS = REPO / "docs" / "benchmarks.md"
RESULTS_DIR = REPO / ".local" / "bench"
COMMAND = ".venv/bin/python -m bench.ingest.run"
SERVICES = (INGEST, WORKER, FANOUT)
SUPPORT = ("kafka", "redis")
PARSERS = "ingest-parsers"  # the gateway's parser processes (its children), CPU summed
PHASES = ("capacity", "latency", "max", "soak")
# The soak's users start a day behind now (the model's default: 22 days), so each reaches now
# within the first minutes and then re-sends its latest minutes: every window stays at about a
# day, and the worker's cost per upload and its memory level off instead of growing with
# windows that fill for the whole soak (full windows are measured by bench/worker_apply.py).
SOAK_CLOCK_LAG_DAYS = 1.0

Report = Callable[[str], None]


@dataclass(frozen=True)
class Options:
    users: int
    concurrency: int
    seed: int
    pool: int  # uploads the raw producer draws and builds before its load
    load_seconds: float
    warmup_seconds: float
    high_concurrency: int  # 0: no such phase
    high_seconds: float
    small_seconds: float  # the small-uploads-only closed loop (phase 3's and the soak's rates)
    latency_seconds: float
    latency_rate: float | None  # None: latency_fraction of the small-only capacity
    latency_fraction: float
    backlog_rate: float | None  # None: the model's share of backlogs at the latency rate
    backlog_users: int
    max_runs: int
    soak_minutes: float
    soak_rate: float | None  # None: soak_fraction of the small-only capacity
    soak_fraction: float
    sample_seconds: float
    rate_limit_per_user: str
    rate_limit_per_ip: str
    quick: bool
    phases: tuple[str, ...] = PHASES


class Child:
    """A benchmark process (load generator or raw producer) speaking JSON lines on stdout."""

    def __init__(self, process: asyncio.subprocess.Process, log: Path) -> None:
        self.process, self.log = process, log

    @classmethod
    async def spawn(cls, module: str, spec: dict[str, Any], workdir: Path, name: str) -> Child:
        spec_path = workdir / f"{name}.json"
        spec_path.write_text(json.dumps(spec))
        log = workdir / f"{name}.log"
        with open(log, "wb") as stderr:  # noqa: ASYNC230 -- a local file, opened once per phase
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", module, str(spec_path), cwd=REPO, stdout=asyncio.subprocess.PIPE,
                stderr=stderr, limit=2**20)
        return cls(process, log)

    @property
    def pid(self) -> int:
        return self.process.pid

    async def next_event(self, within: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), within)
        if not line:
            await self.process.wait()
            raise RuntimeError(f"{self.log.stem} exited ({self.process.returncode}):\n"
                               f"{self.log.read_text()[-3000:]}")
        return json.loads(line)

    async def wait_for(self, name: str, within: float, on_event: Callable[[dict[str, Any]], None] | None = None
                       ) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while True:
            event = await self.next_event(max(1.0, deadline - time.monotonic()))
            if event["event"] == name:
                return event
            if on_event is not None:
                on_event(event)

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


# counters whose increase over a phase is reported (Prometheus text format from /metrics)
WATCHED = {
    INGEST: ("circadia_ingest_requests_total", "circadia_ingest_idempotency_total",
             "circadia_ingest_rejections_total", "circadia_ratelimit_unavailable_total",
             "circadia_ratelimit_rejected_total", "circadia_ingest_parse_offloaded_total",
             "circadia_ingest_samples_accepted_total", "circadia_ingest_produce_errors_total",
             "circadia_ingest_producer_renewals_total", "circadia_ingest_produce_duration_seconds_sum",
             "circadia_ingest_produce_duration_seconds_count"),
    FANOUT: ("circadia_fanout_deliveries_total", "circadia_fanout_dropped_total", "circadia_fanout_closes_total",
             "circadia_fanout_auth_failures_total", "circadia_fanout_history_errors_total",
             "circadia_fanout_resumes_total"),
    WORKER: ("circadia_worker_records_total", "circadia_worker_predictions_total",
             "circadia_worker_dead_letters_total", "circadia_worker_retries_total",
             "circadia_worker_publish_failures_total", "circadia_worker_metric_errors_total"),
}


async def scrape(stack: IngestStack, names: tuple[str, ...] = SERVICES) -> dict[str, float]:
    """The watched counters of each running service, as ``service:metric{labels}`` -> value."""
    import httpx

    urls = {INGEST: f"{stack.ingest_url}/metrics", FANOUT: f"http://127.0.0.1:{stack.stack.ports.fanout}/metrics",
            WORKER: f"http://127.0.0.1:{stack.stack.ports.worker_metrics}/metrics"}
    values: dict[str, float] = {}
    async with httpx.AsyncClient(timeout=10) as client:
        for name in names:
            if stack.pid(name) is None:
                continue
            try:
                text = (await client.get(urls[name])).text
            except httpx.HTTPError:
                continue
            for line in text.splitlines():
                if line.startswith(WATCHED[name]) and not line.startswith("#"):
                    key, _, value = line.rpartition(" ")
                    if key.split("{")[0].endswith("_created"):
                        continue
                    values[f"{name}:{key}"] = float(value)
    return values


def counter_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {key: value - before.get(key, 0.0) for key, value in sorted(after.items())
            if value - before.get(key, 0.0)}


def children(pid: int) -> list[int]:
    """The direct children of ``pid``: from /proc/<pid>/task/*/children, else by scanning /proc."""
    found: list[int] = []
    tasks = Path(f"/proc/{pid}/task")
    try:
        listed = [task / "children" for task in tasks.iterdir()]
    except OSError:
        return found
    if listed and listed[0].exists():
        for path in listed:
            try:
                found += [int(p) for p in path.read_text().split()]
            except OSError:
                continue  # a thread that ended
        return sorted(set(found))
    for entry in Path("/proc").iterdir():  # kernels without CONFIG_PROC_CHILDREN
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _own_and_reaped(pid: int) -> float:
    """utime + stime + cutime + cstime of ``pid``: its CPU and that of its children it has reaped
    (a parser process that died moves its CPU there, so a tree's total does not drop)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / CLOCK_TICKS


def tree_cpu(pid: int | None) -> tuple[float, float, int]:
    """(CPU seconds of ``pid`` itself, of all its descendants, how many descendants)."""
    if pid is None:
        return 0.0, 0.0, 0
    try:
        own = _own_and_reaped(pid)
    except OSError:
        return 0.0, 0.0, 0
    rest, count, queue = 0.0, 0, children(pid)
    while queue:
        child = queue.pop()
        try:
            rest += _own_and_reaped(child)
        except OSError:
            continue  # gone since it was listed
        count += 1
        queue += children(child)
    return own, rest, count


def cpu_of(stack: IngestStack, names: tuple[str, ...]) -> dict[str, float]:
    """CPU seconds so far of each named process; the ingest gateway as itself and its parsers."""
    out: dict[str, float] = {}
    for name in names:
        pid = stack.pid(name)
        if name == INGEST:
            out[INGEST], out[PARSERS], _ = tree_cpu(pid)
        else:
            out[name] = cpu_seconds(pid)
    return out


def with_client(cpu: dict[str, float], event: dict[str, Any]) -> dict[str, float]:
    """The child's own CPU time, as it reported it (it may have exited before /proc is read)."""
    return {**cpu, "client": float(event["cpu"])}


def cpu_delta(before: dict[str, float], after: dict[str, float], seconds: float, units: int) -> dict[str, Any]:
    """CPU per process over a phase: seconds, % of one core, and ms per unit of work."""
    return {name: {"cpu_s": round(after[name] - before[name], 2),
                   "core_percent": round((after[name] - before[name]) / seconds * 100, 1),
                   "ms_per_upload": round((after[name] - before[name]) / units * 1000, 3) if units else None}
            for name in before}


def per_core(result: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """Uploads and samples per CPU-second of the named processes, over the whole phase."""
    cpu = sum(result["cpu"][name]["cpu_s"] for name in names if name in result["cpu"])
    whole = result["whole"]
    return {"processes": list(names), "cpu_s": round(cpu, 2),
            "uploads_per_cpu_s": round(whole["succeeded"] / cpu, 1) if cpu else None,
            "samples_per_cpu_s": round(whole["samples"] / cpu) if cpu else None}


def _progress(report: Report, label: str) -> Callable[[dict[str, Any]], None]:
    def progress(event: dict[str, Any]) -> None:
        if event["event"] == "bucket":
            kinds = " ".join(f"{kind} {n}/p99 {p99}" for kind, (n, p99) in sorted(event.get("kinds", {}).items()))
            report(f"  {label}: {event['t']:.0f}s {event['per_s']:,.0f}/s {event['samples_per_s']:,.0f} samples/s "
                   f"p50 {event['p50_ms']} ms p99 {event['p99_ms']} ms errors {event['errors']} | {kinds}")
        elif event["event"] == "max-run":
            report(f"  {label}: {event['samples']:,} samples ({event['body_bytes']:,} B) -> {event['status']} "
                   f"in {event['seconds']} s")
    return progress


async def phase(stack: IngestStack, workdir: Path, report: Report, name: str, module: str, spec: dict[str, Any],
                within: float) -> dict[str, Any]:
    """Run one benchmark process to its end: its result, plus the CPU of the gateway (and its
    parsers), Kafka and Redis over it, the gateway's counters and the load average."""
    spec = spec | {"results": str(workdir / f"{name}-result.json")}
    child = await Child.spawn(module, spec, workdir, name)
    names = (INGEST, *SUPPORT)
    try:
        counters = await scrape(stack, (INGEST,))
        started = await child.wait_for("started", within=300)
        before, began = with_client(cpu_of(stack, names), started), time.monotonic()
        load_before = os.getloadavg()[0]
        done = await child.wait_for("done", within=within, on_event=_progress(report, name))
        seconds = time.monotonic() - began
        after = with_client(cpu_of(stack, names), done)
        await child.process.wait()
        counters = counter_delta(counters, await scrape(stack, (INGEST,)))
    finally:
        await child.kill()
    result: dict[str, Any] = json.loads(Path(spec["results"]).read_text())
    result["cpu"] = cpu_delta(before, after, seconds, result["whole"]["succeeded"])
    result["counters"] = counters
    result["loadavg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    result["parser_processes"] = tree_cpu(stack.pid(INGEST))[2]
    result["users_prefix"] = spec["users"][0].rsplit("-", 1)[0] if spec.get("users") else None
    result["traffic_parameters"] = spec.get("traffic")  # the model this phase drew from
    if spec.get("backlog"):
        result["backlog_traffic_parameters"] = spec["backlog"]["traffic"]
    return result


def _line(name: str, result: dict[str, Any]) -> str:
    w = result["window"]
    return (f"{name}: {w['per_s']:,.1f} uploads/s ({w['items_per_s']:,.0f} samples/s, mean {w['mean_samples']} "
            f"samples), p50 {w['latency_ms']['p50']} ms, p99 {w['latency_ms']['p99']} ms, outcomes {w['outcomes']}")


async def closed_phase(stack: IngestStack, opts: Options, workdir: Path, report: Report, name: str, *,
                       traffic: dict[str, Any], now: str, prefix: str, concurrency: int, seconds: float,
                       baseline: bool = False, lane_counts: list[int] | None = None) -> dict[str, Any]:
    """Phase 1 (``baseline``: the raw producer, replaying the uploads of a gateway phase that
    drew ``lane_counts``) or a closed loop of the gateway (phase 2)."""
    users = user_ids(opts.users, prefix)
    spec: dict[str, Any] = {"users": users, "concurrency": concurrency, "traffic": traffic, "now": now,
                            "warmup": opts.warmup_seconds, "duration": seconds, "bucket_seconds": 10}
    if baseline:
        spec |= {"bootstrap_servers": stack.bootstrap_servers, "pool": opts.pool, "seed": opts.seed,
                 "lane_counts": lane_counts}
        module = "bench.ingest.baseline"
    else:
        spec |= {"mode": "closed", "url": stack.ingest_url, "tokens": stack.tokens(users)}
        module = "bench.ingest.load"
    result = await phase(stack, workdir, report, name, module, spec, within=opts.warmup_seconds + seconds + 180)
    names = ("client",) if baseline else (INGEST, PARSERS)
    result["per_core"] = per_core(result, names)
    report(_line(name, result) + f"; {result['per_core']['uploads_per_cpu_s']} uploads per CPU-s of "
           f"{' + '.join(names)}")
    return result


async def latency_phases(stack: IngestStack, opts: Options, workdir: Path, report: Report, *, now: str,
                         small: dict[str, Any], mix: dict[str, Any], rate: float, backlog_rate: float
                         ) -> dict[str, Any]:
    """Phase 3: the same schedule of small uploads without, then with backlog syncs alongside."""
    users = user_ids(opts.users, "bench-latency")
    warmup = min(opts.warmup_seconds, 3.0)
    spec: dict[str, Any] = {"mode": "open", "url": stack.ingest_url, "users": users, "tokens": stack.tokens(users),
                            "concurrency": opts.concurrency, "traffic": small, "now": now, "rate": rate,
                            "warmup": warmup, "duration": opts.latency_seconds, "pregenerate": True,
                            "bucket_seconds": 10, "max_in_flight": 1000}
    within = warmup + opts.latency_seconds + 300
    without = await phase(stack, workdir, report, "latency-without", "bench.ingest.load", spec, within)
    report(_line("latency without backlogs", without))
    backlog_users = user_ids(opts.backlog_users, "bench-backlog")
    spec |= {"id_salt": "with-backlogs",  # the same schedule, other upload ids (no 200 duplicate)
             "backlog": {"rate": backlog_rate, "traffic": mix, "users": backlog_users,
                         "tokens": stack.tokens(backlog_users)}}
    with_ = await phase(stack, workdir, report, "latency-with", "bench.ingest.load", spec, within)
    report(_line("latency with backlogs", with_) + f"; backlogs {with_['backlog']['whole']['outcomes']}, "
           f"p50 {with_['backlog']['whole']['latency_ms']['p50']} ms")
    return {"rate": rate, "backlog_rate": backlog_rate, "warmup_s": warmup, "duration_s": opts.latency_seconds,
            "without": without, "with": with_}


async def max_phase(stack: IngestStack, opts: Options, workdir: Path, report: Report, *, now: str,
                    mix: dict[str, Any]) -> dict[str, Any]:
    """Phase 4: ``max_upload`` for a new user each time, one at a time on an idle gateway."""
    users = user_ids(opts.max_runs, "bench-max")
    spec: dict[str, Any] = {"mode": "max", "url": stack.ingest_url, "users": [], "tokens": [],
                            "concurrency": 1, "traffic": mix, "now": now, "bucket_seconds": 10,
                            "max": {"users": users, "tokens": stack.tokens(users), "pause_s": 2.0}}
    result = await phase(stack, workdir, report, "max", "bench.ingest.load", spec, within=opts.max_runs * 180 + 60)
    seconds = [run["seconds"] for run in result["max_runs"]]
    result["seconds"] = {"median": round(statistics.median(seconds), 3), "max": round(max(seconds), 3),
                         "min": round(min(seconds), 3)}
    result["all_202"] = all(run["status"] == "202" for run in result["max_runs"])
    report(f"max upload: {len(seconds)} runs, median {result['seconds']['median']} s, "
           f"max {result['seconds']['max']} s, statuses {[run['status'] for run in result['max_runs']]}")
    return result


async def sample_memory(pids: dict[str, int | None], every: float, seconds: float, began: float,
                        samples: list[dict[str, Any]], report: Report) -> None:
    """VmRSS (KiB) of each process at 0, every, 2·every, ... up to ``seconds`` after ``began``."""
    index = 0
    while True:
        target = began + index * every
        if target > began + seconds + 1e-6:
            return
        await asyncio.sleep(max(0.0, target - time.monotonic()))
        row: dict[str, Any] = {"t": round(time.monotonic() - began, 1)}
        for name, pid in pids.items():
            try:
                row[name] = rss_kib(pid) if pid else None
            except (OSError, RuntimeError):
                row[name] = None  # the process is gone: shows up as a gap
        samples.append(row)
        if index % max(1, round(60 / every)) == 0:
            report("  soak RSS " + " ".join(f"{k}={v / 1024:.0f}MiB" for k, v in row.items()
                                            if k != "t" and v is not None) + f" at {row['t']:.0f}s")
        index += 1


async def soak_phase(stack: IngestStack, opts: Options, rate: float, workdir: Path, report: Report, *,
                     traffic: dict[str, Any], now: str) -> dict[str, Any]:
    seconds = opts.soak_minutes * 60
    warmup = min(60.0, seconds / 6)
    users = user_ids(opts.users, "bench-soak")
    spec: dict[str, Any] = {"mode": "open", "url": stack.ingest_url, "ws_url": stack.ws_url, "users": users,
            "tokens": stack.tokens(users), "concurrency": opts.concurrency, "traffic": traffic, "now": now,
            "rate": rate, "warmup": warmup, "duration": seconds - warmup, "fleet": True,
            "bucket_seconds": opts.sample_seconds, "settle_quiet": 15, "settle_max": 120,
            "max_in_flight": 1000, "results": str(workdir / "soak-result.json")}
    child = await Child.spawn("bench.ingest.load", spec, workdir, "soak")
    samples: list[dict[str, Any]] = []
    sampler: asyncio.Task[None] | None = None
    names = (*SERVICES, *SUPPORT)
    try:
        counters = await scrape(stack)
        ready = await child.wait_for("fleet-ready", within=180)
        report(f"soak: {ready['ready']}/{opts.users} WebSockets ready in {ready['seconds']}s "
               f"({ready['failed']} failed)")
        started = await child.wait_for("started", within=60)
        began = time.monotonic()
        pids = {name: stack.pid(name) for name in names}
        before = with_client(cpu_of(stack, names), started)
        load_before = os.getloadavg()[0]
        sampler = asyncio.create_task(sample_memory(pids | {"client": child.pid}, opts.sample_seconds, seconds,
                                                    began, samples, report))
        every_minute = max(1, round(60 / opts.sample_seconds))
        count = 0

        def progress(event: dict[str, Any]) -> None:
            nonlocal count
            if event["event"] != "bucket":
                return
            count += 1
            if count % every_minute == 0 or opts.quick:
                report(f"  soak: {event['t']:.0f}s {event['per_s']:.0f}/s p50 {event['p50_ms']} ms p99 "
                       f"{event['p99_ms']} ms errors {event['errors']} | delivered {event['delivered_per_s']:.0f}/s "
                       f"e2e p50 {event['e2e_p50_ms']} ms p99 {event['e2e_p99_ms']} ms, "
                       f"undelivered {event['undelivered']}")

        # the load ends after ``seconds``; the fleet then waits for the last deliveries
        done = await child.wait_for("done", within=seconds + 300, on_event=progress)
        after = with_client(cpu_of(stack, names), done)
        wall = time.monotonic() - began
        await sampler
        await child.process.wait()
        counters = counter_delta(counters, await scrape(stack))
    finally:
        if sampler is not None:
            sampler.cancel()
        await child.kill()
    result = json.loads(Path(spec["results"]).read_text())
    result["memory"] = {"samples": samples, "warmup_s": warmup, "every_s": opts.sample_seconds,
                        "window_s": min(60.0, (seconds - warmup) / 2)}
    result["cpu"] = cpu_delta(before, after, wall, result["whole"]["succeeded"])
    result["counters"] = counters
    result["loadavg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    result["traffic_parameters"] = traffic
    fleet = result["fleet"]
    report(f"soak: {result['whole']['per_s']:.0f}/s, outcomes {result['whole']['outcomes']}, delivered "
           f"{fleet['delivered']}/{fleet['accepted']} (e2e p50 {fleet['e2e_ms']['p50']} ms, "
           f"p99 {fleet['e2e_ms']['p99']} ms), settled in {fleet['settle_s']}s")
    return result


async def run(opts: Options, report: Report, keep: bool = False) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    stack = IngestStack(workdir / "stack", rate_limit_per_user=opts.rate_limit_per_user,
                        rate_limit_per_ip=opts.rate_limit_per_ip)
    started = time.monotonic()
    # one instant for the whole run: every body only gets older (the model's horizon is 29 days,
    # the gateway's 30), and two processes given the same spec draw the same uploads
    now = datetime.now(UTC).replace(second=0, microsecond=0).isoformat()
    mix, small = parameters(seed=opts.seed), parameters(seed=opts.seed, backlog_fraction=0.0)
    soak = parameters(seed=opts.seed, backlog_fraction=0.0, clock_lag_days=SOAK_CLOCK_LAG_DAYS)
    described = {"mix": model(mix).describe(), "small": model(small).describe(), "soak": model(soak).describe()}
    outcome: dict[str, Any] = {"options": asdict(opts), "now": now, "traffic": described}
    phases = set(opts.phases)
    try:
        report("starting Kafka, Redis and the ingest gateway")
        await stack.setup()
        report(f"stack up ({stack.bootstrap_servers}, {stack.ingest_url})")
        capacity = None
        if "capacity" in phases:
            # the gateway first: the raw producer replays its uploads (how many each lane drew)
            outcome["gateway"] = await closed_phase(stack, opts, workdir, report, "gateway", traffic=mix,
                                                    prefix="bench-user", seconds=opts.load_seconds, now=now,
                                                    concurrency=opts.concurrency)
            outcome["baseline"] = await closed_phase(
                stack, opts, workdir, report, "baseline", traffic=mix, prefix="bench-user",
                seconds=opts.load_seconds, baseline=True, lane_counts=outcome["gateway"]["lane_counts"], now=now,
                concurrency=opts.concurrency)
            if opts.high_concurrency:
                # more devices at once than the gateway's Redis pool has connections
                outcome["gateway_high"] = await closed_phase(
                    stack, opts, workdir, report, "gateway-high", traffic=mix, prefix="bench-high", now=now,
                    concurrency=opts.high_concurrency, seconds=opts.high_seconds)
            outcome["gateway_small"] = await closed_phase(
                stack, opts, workdir, report, "gateway-small", traffic=small, prefix="bench-small",
                seconds=opts.small_seconds, now=now, concurrency=opts.concurrency)
            capacity = outcome["gateway_small"]["window"]["per_s"]
        if "latency" in phases:
            rate = opts.latency_rate or max(1.0, round(opts.latency_fraction * (capacity or 0)))
            share = described["mix"]["mix"]["fraction"]["backlog"]
            model_backlog_rate = round(rate * share / (1 - share), 2)
            backlog_rate = opts.backlog_rate or model_backlog_rate
            report(f"latency phases: small uploads at {rate:g}/s, backlogs at {backlog_rate:g}/s "
                   f"(the model's share would be {model_backlog_rate:g}/s), {opts.latency_seconds:g} s each")
            outcome["latency"] = await latency_phases(stack, opts, workdir, report, now=now, small=small, mix=mix,
                                                      rate=rate, backlog_rate=backlog_rate)
            outcome["latency"] |= {
                "rate_source": "--latency-rate" if opts.latency_rate else
                f"{opts.latency_fraction:.0%} of the small-upload capacity ({capacity:,.0f}/s)",
                "backlog_rate_source": "--backlog-rate" if opts.backlog_rate else "the model's share of backlogs",
                "model_backlog_rate": model_backlog_rate}
        if "max" in phases and opts.max_runs:
            outcome["max"] = await max_phase(stack, opts, workdir, report, now=now, mix=mix)
        if "soak" in phases:
            soak_rate = opts.soak_rate or max(1.0, round(opts.soak_fraction * (capacity or 0)))
            report(f"starting the worker and the fan-out gateway; soak at {soak_rate:g} uploads/s "
                   f"for {opts.soak_minutes:g} min")
            await stack.start_pipeline()
            outcome["soak"] = await soak_phase(stack, opts, soak_rate, workdir, report, traffic=soak, now=now)
            outcome["soak"]["rate_source"] = "--soak-rate" if opts.soak_rate else \
                f"{opts.soak_fraction:.0%} of the small-upload capacity"
        outcome["service_logs"] = {name: _log_problems(stack, name) for name in SERVICES}
    except BaseException:
        for name in SERVICES:
            tail = stack.log_tail(name)
            if tail:
                print(f"--- {name} log tail ---\n{tail}", file=sys.stderr)
        raise
    finally:
        report("stopping everything")
        await stack.teardown(keep=keep)
        if keep:
            report(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    versions = {name: package_version(name) for name in
                ("aiokafka", "aiohttp", "uvicorn", "starlette", "pydantic", "fastavro", "redis", "limits",
                 "websockets", "faust-streaming", "uvloop", "cramjam")}
    outcome |= {"machine": machine(versions), "elapsed_s": round(time.monotonic() - started, 1)}
    return outcome


def _log_problems(stack: IngestStack, name: str) -> dict[str, int]:
    """Warnings and errors in a service's JSON log, counted by message."""
    path = stack.root / "logs" / f"{name}.log"
    counts: dict[str, int] = {}
    if not path.exists():
        return counts
    with path.open(errors="replace") as handle:
        for line in handle:
            if '"WARNING"' not in line and '"ERROR"' not in line and '"CRITICAL"' not in line:
                if "Traceback" not in line:
                    continue
            try:
                entry = json.loads(line)
                key = f"{entry.get('level', '?')}: {entry.get('msg') or entry.get('message', '')}"[:160]
            except ValueError:
                key = line.strip()[:160]
            counts[key] = counts.get(key, 0) + 1
    return counts


def _rate(text: str) -> float | None:
    """``--backlog-rate``: uploads per second, or ``model`` (the model's share of backlogs)."""
    return None if text == "model" else float(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short phases and a 1-minute soak: a smoke test")
    parser.add_argument("--seed", type=int, default=1, help="the traffic model's seed (every phase)")
    parser.add_argument("--users", type=int, default=200, help="users per phase (one WebSocket each in the soak)")
    parser.add_argument("--concurrency", type=int, default=32,
                        help="concurrent devices (gateway) and producer tasks (raw producer)")
    parser.add_argument("--pool", type=int, default=None,
                        help="uploads of the gateway phase the raw producer builds and cycles through "
                             "(1,000; --quick 300)")
    parser.add_argument("--high-concurrency", type=int, default=128,
                        help="a further, shorter gateway phase at this concurrency (0: none)")
    parser.add_argument("--high-seconds", type=float, default=None, help="its measured seconds (20; --quick 5)")
    parser.add_argument("--load-seconds", type=float, default=None,
                        help="measured seconds of phases 1 and 2 (60; --quick 10)")
    parser.add_argument("--warmup-seconds", type=float, default=None, help="unmeasured seconds before them (5; 2)")
    parser.add_argument("--small-seconds", type=float, default=None,
                        help="measured seconds of the small-uploads-only closed loop (15; --quick 5)")
    parser.add_argument("--latency-seconds", type=float, default=None,
                        help="measured seconds of each latency phase (60; --quick 10)")
    parser.add_argument("--latency-rate", type=float, default=None,
                        help="small uploads/s in the latency phases (default: --latency-fraction of the "
                             "small-upload capacity)")
    parser.add_argument("--latency-fraction", type=float, default=0.4)
    parser.add_argument("--backlog-rate", type=_rate, default=0.5,
                        help="backlog syncs/s alongside the small uploads (0.5: one every 2 s), or 'model': "
                             "the model's share of backlogs at the small-upload rate")
    parser.add_argument("--backlog-users", type=int, default=16, help="users (connections) sending backlogs")
    parser.add_argument("--max-runs", type=int, default=None, help="50,000-sample uploads posted (5; --quick 2)")
    parser.add_argument("--soak-minutes", type=float, default=None, help="soak length (default 10; --quick 1)")
    parser.add_argument("--soak-rate", type=float, default=None, help="uploads/s in the soak (default: "
                                                                      "--soak-fraction of the small-upload capacity)")
    parser.add_argument("--soak-fraction", type=float, default=0.2,
                        help="soak rate as a fraction of the small-upload capacity (the worker is the bottleneck)")
    parser.add_argument("--sample-seconds", type=float, default=None, help="RSS sampling interval (10; --quick 5)")
    parser.add_argument("--phases", default=",".join(PHASES),
                        help="which phases to run, comma-separated (latency and soak without capacity need "
                             "--latency-rate and --soak-rate); the docs are written only for a run of all")
    parser.add_argument("--rate-limit-per-user", default="100000/minute")
    parser.add_argument("--rate-limit-per-ip", default="1000000/minute")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (service logs) and print it")
    parser.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md")
    parser.add_argument("--from-json", type=Path, default=None,
                        help="run nothing: print (and, unless --no-docs, write) the tables of a saved result")
    args = parser.parse_args(argv)
    if args.from_json is not None:
        outcome = json.loads(args.from_json.read_text())
        print(render_text(outcome))
        if not all(outcome.get(key) for key in ("gateway", "baseline", "latency", "max", "soak")):
            print("not every phase ran: the docs section is not written")
        elif not args.no_docs:
            update_docs(DOCS, render_markdown(outcome))
            print(f"wrote the Ingest load and soak section of {DOCS.relative_to(REPO)}")
        return

    quick = args.quick

    def pick(value: Any, full: Any, short: Any) -> Any:
        return value if value is not None else (short if quick else full)

    opts = Options(
        users=args.users, concurrency=args.concurrency, seed=args.seed, pool=pick(args.pool, 1000, 300),
        load_seconds=pick(args.load_seconds, 60.0, 10.0), warmup_seconds=pick(args.warmup_seconds, 5.0, 2.0),
        high_concurrency=args.high_concurrency, high_seconds=pick(args.high_seconds, 20.0, 5.0),
        small_seconds=pick(args.small_seconds, 15.0, 5.0), latency_seconds=pick(args.latency_seconds, 60.0, 10.0),
        latency_rate=args.latency_rate, latency_fraction=args.latency_fraction, backlog_rate=args.backlog_rate,
        backlog_users=args.backlog_users, max_runs=pick(args.max_runs, 5, 2),
        soak_minutes=pick(args.soak_minutes, 10.0, 1.0), soak_rate=args.soak_rate,
        soak_fraction=args.soak_fraction, sample_seconds=pick(args.sample_seconds, 10.0, 5.0),
        rate_limit_per_user=args.rate_limit_per_user, rate_limit_per_ip=args.rate_limit_per_ip, quick=quick,
        phases=tuple(phase.strip() for phase in args.phases.split(",") if phase.strip()))
    if unknown := set(opts.phases) - set(PHASES):
        raise SystemExit(f"--phases: unknown {', '.join(sorted(unknown))}; choose from {', '.join(PHASES)}")
    if "capacity" not in opts.phases and (("latency" in opts.phases and not opts.latency_rate)
                                          or ("soak" in opts.phases and not opts.soak_rate)):
        raise SystemExit("without the capacity phase, give --latency-rate and --soak-rate")
    lanes = opts.users + max(opts.backlog_users, opts.max_runs)
    if max(opts.concurrency, opts.high_concurrency, lanes) > 250 * 250:
        raise SystemExit("--concurrency, --high-concurrency, --users: at most 62,500 (one loopback address each)")

    report = reporter()
    # aiokafka logs an error for every refused connection while the broker is still starting
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    outcome = run_loop(run(opts, report, args.keep))
    outcome["command"] = " ".join([COMMAND, *(argv if argv is not None else sys.argv[1:])])
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    saved = RESULTS_DIR / f"ingest-{time.strftime('%Y%m%d-%H%M%S')}.json"
    saved.write_text(json.dumps(outcome, indent=2))
    print(render_text(outcome))
    print(f"\nraw results: {saved.relative_to(REPO)} ({outcome['elapsed_s']}s in all)")
    if not (quick or args.no_docs or set(opts.phases) != set(PHASES)):
        update_docs(DOCS, render_markdown(outcome))
        print(f"wrote the Ingest load and soak section of {DOCS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
