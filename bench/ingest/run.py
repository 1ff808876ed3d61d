"""Ingest load and soak: the ingest gateway's throughput against a raw Kafka producer, then a
steady soak of the whole pipeline (gateway → Kafka → worker → fan-out → WebSockets).

    .venv/bin/python -m bench.ingest.run                  # 60 s per throughput phase + 10-min soak (~15 min)
    .venv/bin/python -m bench.ingest.run --quick          # 10 s phases + 1-min soak: a smoke test (~3 min)
    .venv/bin/python -m bench.ingest.run --soak-minutes 30

One command does everything: a LocalStack of its own (Kafka, Redis, the three services) on
free ports in a temporary folder, the phases below, the tables, and stopping everything it
started.

1. **Raw producer** (bench.ingest.baseline, own process): ``--concurrency`` tasks publish the
   gateway's Avro records with the gateway's producer settings, each awaiting its ack.
2. **Gateway** (bench.ingest.load, own process, closed loop): ``--concurrency`` devices post
   uploads of ``--samples`` one-minute step samples to ``POST /v1/uploads``, each as soon
   as its previous one is answered. Target: gateway uploads/s ≥ half the producer's records/s.
3. **Soak**: the worker and the fan-out gateway are started; one WebSocket per user
   listens; uploads arrive at a fixed rate (``--soak-rate``, default 60 % of phase 2's
   throughput) for ``--soak-minutes``. Every ``--sample-seconds`` the VmRSS of the ingest
   gateway, the worker and the fan-out gateway is read. Growth = mean of the last minute
   over mean of the first minute after the warm-up (the soak's first minute). Target < 5 %.

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
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # also runnable as ``python bench/ingest/run.py``
    sys.path.insert(0, str(REPO))

from bench.common import reporter, run_loop  # noqa: E402
from bench.fanout.measure import cpu_seconds, machine, package_version, rss_kib  # noqa: E402
from bench.ingest.report import render_markdown, render_text, update_docs  # noqa: E402
from bench.ingest.stack import FANOUT, INGEST, WORKER, IngestStack  # noqa: E402
from bench.ingest.workload import user_ids  # noqa: E402

DOCS = REPO / "docs" / "benchmarks.md"
RESULTS_DIR = REPO / ".local" / "bench"
COMMAND = ".venv/bin/python -m bench.ingest.run"
SERVICES = (INGEST, WORKER, FANOUT)
SUPPORT = ("kafka", "redis")

Report = Callable[[str], None]


@dataclass(frozen=True)
class Options:
    users: int
    concurrency: int
    samples: int
    load_seconds: float
    warmup_seconds: float
    soak_minutes: float
    soak_rate: float | None  # None: soak_fraction of the gateway's measured throughput
    soak_fraction: float
    sample_seconds: float
    high_concurrency: int  # 0: no such phase
    high_seconds: float
    rate_limit_per_user: str
    rate_limit_per_ip: str
    quick: bool


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
             "circadia_ratelimit_rejected_total"),
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


def cpu_of(pids: dict[str, int | None]) -> dict[str, float]:
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def with_client(cpu: dict[str, float], event: dict[str, Any]) -> dict[str, float]:
    """The child's own CPU time, as it reported it (it may have exited before /proc is read)."""
    return {**cpu, "client": float(event["cpu"])}


def cpu_delta(before: dict[str, float], after: dict[str, float], seconds: float, units: int) -> dict[str, Any]:
    """CPU per process over a phase: seconds, % of one core, and ms per unit of work."""
    return {name: {"cpu_s": round(after[name] - before[name], 2),
                   "core_percent": round((after[name] - before[name]) / seconds * 100, 1),
                   "ms_per_upload": round((after[name] - before[name]) / units * 1000, 3) if units else None}
            for name in before}


async def throughput_phase(stack: IngestStack, opts: Options, kind: str, workdir: Path, report: Report, *,
                           concurrency: int | None = None, seconds: float | None = None) -> dict[str, Any]:
    """Phase 1 (``baseline``) or 2 (``gateway``): closed loop at ``opts.concurrency``."""
    users = user_ids(opts.users)
    concurrency = concurrency or opts.concurrency
    seconds = seconds or opts.load_seconds
    spec: dict[str, Any] = {"users": users, "concurrency": concurrency, "samples": opts.samples,
                            "warmup": opts.warmup_seconds, "duration": seconds,
                            "results": str(workdir / f"{kind}-{concurrency}-result.json")}
    if kind == "baseline":
        module = "bench.ingest.baseline"
        spec |= {"bootstrap_servers": stack.bootstrap_servers}
    else:
        module = "bench.ingest.load"
        spec |= {"mode": "closed", "url": stack.ingest_url, "tokens": stack.tokens(users), "bucket_seconds": 10}
    child = await Child.spawn(module, spec, workdir, f"{kind}-{concurrency}")
    try:
        counters = await scrape(stack, (INGEST,))
        started = await child.wait_for("started", within=120)
        pids = {INGEST: stack.pid(INGEST), **{name: stack.pid(name) for name in SUPPORT}}
        before, began = with_client(cpu_of(pids), started), time.monotonic()
        load_before = os.getloadavg()[0]

        def progress(event: dict[str, Any]) -> None:
            if event["event"] == "bucket":
                report(f"  {kind} ({concurrency}): {event['t']:.0f}s {event['per_s']:.0f}/s p50 {event['p50_ms']} ms "
                       f"p99 {event['p99_ms']} ms errors {event['errors']}")

        done = await child.wait_for("done", within=opts.warmup_seconds + seconds + 120, on_event=progress)
        seconds = time.monotonic() - began
        after = with_client(cpu_of(pids), done)
        await child.process.wait()
        counters = counter_delta(counters, await scrape(stack, (INGEST,)))
    finally:
        await child.kill()
    result = json.loads(Path(spec["results"]).read_text())
    result["cpu"] = cpu_delta(before, after, seconds, result["whole"]["succeeded"])
    result["counters"] = counters
    result["loadavg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    window = result["window"]
    report(f"{kind} ({concurrency} concurrent): {window['per_s']:,.0f} uploads/s "
           f"({window['items_per_s']:,.0f} samples/s), "
           f"p50 {window['latency_ms']['p50']} ms, p99 {window['latency_ms']['p99']} ms, "
           f"outcomes {window['outcomes']}")
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


async def soak_phase(stack: IngestStack, opts: Options, rate: float, workdir: Path, report: Report
                     ) -> dict[str, Any]:
    seconds = opts.soak_minutes * 60
    warmup = min(60.0, seconds / 6)
    users = user_ids(opts.users)
    spec: dict[str, Any] = {"mode": "open", "url": stack.ingest_url, "ws_url": stack.ws_url, "users": users,
            "tokens": stack.tokens(users), "concurrency": opts.concurrency, "samples": opts.samples,
            "rate": rate, "warmup": warmup, "duration": seconds - warmup, "fleet": True,
            "bucket_seconds": opts.sample_seconds, "settle_quiet": 15, "settle_max": 120,
            "max_in_flight": 1000, "results": str(workdir / "soak-result.json")}
    child = await Child.spawn("bench.ingest.load", spec, workdir, "soak")
    samples: list[dict[str, Any]] = []
    sampler: asyncio.Task[None] | None = None
    try:
        counters = await scrape(stack)
        ready = await child.wait_for("fleet-ready", within=180)
        report(f"soak: {ready['ready']}/{opts.users} WebSockets ready in {ready['seconds']}s "
               f"({ready['failed']} failed)")
        started = await child.wait_for("started", within=60)
        began = time.monotonic()
        pids = {name: stack.pid(name) for name in (*SERVICES, *SUPPORT)}
        before = with_client(cpu_of(pids), started)
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
        after = with_client(cpu_of(pids), done)
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
    outcome: dict[str, Any] = {"options": asdict(opts)}
    try:
        report("starting Kafka, Redis and the ingest gateway")
        await stack.setup()
        report(f"stack up ({stack.bootstrap_servers}, {stack.ingest_url})")
        outcome["baseline"] = await throughput_phase(stack, opts, "baseline", workdir, report)
        outcome["gateway"] = await throughput_phase(stack, opts, "gateway", workdir, report)
        if opts.high_concurrency:
            # more devices at once than the gateway's Redis pool has connections (50 by default)
            outcome["gateway_high"] = await throughput_phase(
                stack, opts, "gateway", workdir, report, concurrency=opts.high_concurrency,
                seconds=opts.high_seconds)
        rate = opts.soak_rate or max(1.0, round(opts.soak_fraction * outcome["gateway"]["window"]["per_s"]))
        report(f"starting the worker and the fan-out gateway; soak at {rate:g} uploads/s "
               f"for {opts.soak_minutes:g} min")
        await stack.start_pipeline()
        outcome["soak"] = await soak_phase(stack, opts, rate, workdir, report)
        outcome["soak"]["rate_source"] = "--soak-rate" if opts.soak_rate else \
            f"{opts.soak_fraction:.0%} of the gateway's throughput"
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
                 "websockets", "faust-streaming", "uvloop")}
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10 s throughput phases and a 1-minute soak")
    parser.add_argument("--users", type=int, default=200, help="users (one WebSocket each in the soak)")
    parser.add_argument("--concurrency", type=int, default=32,
                        help="concurrent devices (gateway) and producer tasks (baseline)")
    parser.add_argument("--high-concurrency", type=int, default=128,
                        help="a further, shorter gateway phase at this concurrency (0: none)")
    parser.add_argument("--high-seconds", type=float, default=None, help="its measured seconds (20; --quick 10)")
    parser.add_argument("--samples", type=int, default=60, help="one-minute step samples per upload")
    parser.add_argument("--load-seconds", type=float, default=None, help="measured seconds per throughput phase")
    parser.add_argument("--warmup-seconds", type=float, default=None, help="unmeasured seconds before them")
    parser.add_argument("--soak-minutes", type=float, default=None, help="soak length (default 10; --quick 1)")
    parser.add_argument("--soak-rate", type=float, default=None, help="uploads/s in the soak (default: a fraction "
                                                                      "of the gateway's measured throughput)")
    parser.add_argument("--soak-fraction", type=float, default=0.35,
                        help="soak rate as a fraction of the gateway's measured throughput")
    parser.add_argument("--sample-seconds", type=float, default=None, help="RSS sampling interval (10; --quick 5)")
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
        if not args.no_docs:
            update_docs(DOCS, render_markdown(outcome))
            print(f"wrote the Ingest load and soak section of {DOCS.relative_to(REPO)}")
        return

    quick = args.quick
    opts = Options(
        users=args.users, concurrency=args.concurrency, samples=args.samples,
        load_seconds=args.load_seconds or (10.0 if quick else 60.0),
        warmup_seconds=args.warmup_seconds if args.warmup_seconds is not None else (2.0 if quick else 5.0),
        soak_minutes=args.soak_minutes or (1.0 if quick else 10.0), soak_rate=args.soak_rate,
        soak_fraction=args.soak_fraction, sample_seconds=args.sample_seconds or (5.0 if quick else 10.0),
        high_concurrency=args.high_concurrency, high_seconds=args.high_seconds or (10.0 if quick else 20.0),
        rate_limit_per_user=args.rate_limit_per_user, rate_limit_per_ip=args.rate_limit_per_ip, quick=quick)
    if max(opts.concurrency, opts.high_concurrency, opts.users) > 250 * 250:
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
    if not (quick or args.no_docs):
        update_docs(DOCS, render_markdown(outcome))
        print(f"wrote the Ingest load and soak section of {DOCS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
