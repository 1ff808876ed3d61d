"""Fan-out benchmark: circadia's fan-out gateway against Centrifugo v6, on loopback.

    .venv/bin/python -m bench.fanout.run            # N = 100, 1,000, 10,000 (~10 min)
    .venv/bin/python -m bench.fanout.run --quick    # N = 100, few messages (< 1 min once built)

For each system and each N: a fresh server; a client fleet process (bench.fanout.client)
opens N WebSockets, ``--per-user`` per user, and waits until all are ready; the server's
RSS is read before and after (memory per connection); an idle window gives the server's
CPU rate with N idle connections; then the **steady** phase publishes ``--messages`` at
``--rate`` per second (latency, exactly-once), and the **burst** phase publishes
``--burst`` messages as fast as the publisher can (deliveries per second). Every message
goes to one user and must arrive exactly once at each of that user's connections.

Results are printed, saved as JSON under .local/bench/, and written into the "Fan-out"
section of docs/benchmarks.md (``--no-docs`` to skip, and always skipped with --quick).
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # also runnable as ``python bench/fanout/run.py``
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from bench.common import reporter, run_loop  # noqa: E402
from bench.fanout import centrifugo as centrifugo_module  # noqa: E402
from bench.fanout.centrifugo import Centrifugo  # noqa: E402
from bench.fanout.gateway import CircadiaGateway, free_port  # noqa: E402
from bench.fanout.measure import (  # noqa: E402
    analyse_phase,
    command_output,
    cpu_seconds,
    machine,
    package_version,
    phase_dict,
    rss_kib,
)
from bench.fanout.report import render_markdown, render_text, update_docs  # noqa: E402
from bench.fanout.workload import Plan, now, prediction_record  # noqa: E402

DOCS = REPO / "docs" / "benchmarks.md"
RESULTS_DIR = REPO / ".local" / "bench"


class Target(Protocol):
    name: str
    protocol: str

    @property
    def ws_url(self) -> str: ...
    @property
    def version(self) -> str: ...
    def pid(self) -> int: ...
    def tokens(self, user_ids: list[str]) -> list[str]: ...
    def prepare(self, user_id: str, record: dict[str, Any]) -> Any: ...
    async def setup(self) -> None: ...
    async def start(self, connections: int) -> None: ...
    async def stop(self) -> None: ...
    async def teardown(self) -> None: ...
    async def publish(self, user_id: str, record: dict[str, Any]) -> float: ...
    async def publish_batch(self, prepared: list[Any]) -> list[float]: ...
    async def flush(self) -> None: ...


@dataclass(frozen=True)
class Workload:
    connections: tuple[int, ...]
    per_user: int
    rate: float  # messages per second in the steady phase
    messages: int  # steady phase
    burst: int  # burst phase
    idle_seconds: float
    connect_concurrency: int
    deflate: str  # "off", or "both": circadia also with a fleet offering permessage-deflate, as browsers do
    quiet_timeout: float = 15.0  # a phase ends when nothing new arrived for this long


class Fleet:
    """The client fleet process, driven over its stdin/stdout (see bench/fanout/client.py)."""

    def __init__(self, process: asyncio.subprocess.Process, log: Path) -> None:
        self.process = process
        self.log = log

    @classmethod
    async def spawn(cls, spec: dict[str, Any], workdir: Path) -> Fleet:
        spec_path = workdir / "fleet.json"
        spec_path.write_text(json.dumps(spec))
        log = workdir / "fleet.log"
        with open(log, "wb") as stderr:  # noqa: ASYNC230 -- a local file, opened once per run
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.fanout.client", str(spec_path), cwd=REPO,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=stderr,
                limit=2**20)
        return cls(process, log)

    @property
    def pid(self) -> int:
        return self.process.pid

    async def event(self, name: str, within: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        while True:
            line = await asyncio.wait_for(self.process.stdout.readline(), within)
            if not line:
                raise RuntimeError(f"client fleet exited:\n{self.log.read_text()[-3000:]}")
            event = json.loads(line)
            if event.get("event") == name:
                return event

    async def command(self, **command: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(command) + "\n").encode())
        await self.process.stdin.drain()

    async def finish(self, phase: str, first: int, end: int, quiet: float) -> dict[str, Any]:
        await self.command(cmd="finish", phase=phase, first=first, end=end, quiet=quiet)
        return await self.event("phase-done", within=quiet * 40 + 120)

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


async def publish_steady(target: Target, plan: Plan, first: int, count: int, rate: float,
                         published: np.ndarray) -> None:
    """``count`` messages at ``rate`` per second, each on its own schedule slot."""
    loop = asyncio.get_running_loop()

    async def one(seq: int) -> None:
        user = plan.user_id(plan.user_of_message(seq))
        published[seq] = await target.publish(user, prediction_record(user, plan.prediction_id(seq), now()))

    tasks = []
    start = loop.time()
    for k in range(count):
        delay = start + k / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(first + k)))
    await asyncio.gather(*tasks)
    await target.flush()


async def run_one(target: Target, system: str, deflate: bool, n: int, work: Workload, workdir: Path,
                  report: Any) -> dict[str, Any]:
    plan = Plan.new(n, work.per_user)
    total = work.messages + work.burst
    published = np.zeros(total, dtype=np.float64)
    user_ids = [plan.user_id(i) for i in range(plan.users)]
    tokens = target.tokens(user_ids)
    await target.start(n)
    report(f"  {system} N={n}: server started, {plan.users:,} users")
    fleet: Fleet | None = None
    try:
        pid = target.pid()
        await asyncio.sleep(1.0)
        rss_before = rss_kib(pid)
        fleet = await Fleet.spawn({
            "protocol": target.protocol, "url": target.ws_url, "tokens": tokens,
            "nonce_hex": f"{plan.nonce:08x}", "connections_per_user": plan.connections_per_user,
            "connect_concurrency": work.connect_concurrency, "deflate": deflate,
            "results": str(workdir / "receipts.json"),
        }, workdir)
        ready = await fleet.event("ready", within=900)
        report(f"  {system} N={n}: {ready['connected']} ready in {ready['seconds']}s"
               f" ({ready['failed']} failed; extensions {ready['extensions']})")
        await asyncio.sleep(1.0)
        rss_after = rss_kib(pid)

        cpu0, wall0 = cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(work.idle_seconds)
        idle_cpu_per_s = (cpu_seconds(pid) - cpu0) / (time.monotonic() - wall0)

        phases: dict[str, Any] = {}
        load_before = os.getloadavg()[0]
        # the burst's records are built and encoded before its window opens
        burst = [target.prepare(user, prediction_record(user, plan.prediction_id(seq), now()))
                 for seq in range(work.messages, total) for user in (plan.user_id(plan.user_of_message(seq)),)]
        for phase, first, end in (("steady", 0, work.messages), ("burst", work.messages, total)):
            cpu0, wall0 = cpu_seconds(pid), time.monotonic()
            support = getattr(target, "support_pids", list)()
            support0 = sum(cpu_seconds(p) for p in support)
            if phase == "steady":
                await publish_steady(target, plan, first, end - first, work.rate, published)
            else:
                published[first:end] = await target.publish_batch(burst)
                await target.flush()
            done = await fleet.finish(phase, first, end, work.quiet_timeout)
            # The window ends when the fleet has every delivery (at once when nothing is
            # lost; after `quiet_timeout` of silence otherwise, and then includes idle time).
            wall = time.monotonic() - wall0
            phases[phase] = {"cpu_s": cpu_seconds(pid) - cpu0, "wall_s": wall, "client": done,
                             "support_cpu_s": sum(cpu_seconds(p) for p in support) - support0}
            report(f"  {system} N={n}: {phase} {done['received']}/{done['expected']} deliveries")

        load_after = os.getloadavg()[0]
        await fleet.command(cmd="quit")
        await fleet.event("written", within=300)
        await fleet.process.wait()
        receipts = json.loads((workdir / "receipts.json").read_text())
    finally:
        if fleet is not None:
            await fleet.kill()
        await target.stop()
        report(f"  {system} N={n}: server stopped")

    result: dict[str, Any] = {
        "system": system, "deflate": deflate, "connections": n, "users": plan.users,
        "connect_s": ready["seconds"], "connected": ready["connected"], "connect_failed": ready["failed"],
        "connect_errors": ready["errors"], "extensions": ready["extensions"],
        "rss_before_kib": rss_before, "rss_after_kib": rss_after,
        "rss_per_connection_kib": round((rss_after - rss_before) / n, 2),
        "idle_cpu_percent": round(idle_cpu_per_s * 100, 2),
        "loadavg_1m": [round(load_before, 2), round(load_after, 2)],  # machine load around the phases
        "client_rss_kib": receipts["client_rss_kib"], "foreign": receipts["foreign"],
        "other_messages": receipts["other"], "closed_by_server": receipts["closed"],
    }
    for phase, first, end in (("steady", 0, work.messages), ("burst", work.messages, total)):
        measured = phases[phase]
        analysed = analyse_phase(plan, receipts, published, first, end, measured["cpu_s"],
                                 measured["wall_s"], idle_cpu_per_s)
        support_us = measured["support_cpu_s"] / analysed.received * 1e6 if analysed.received else float("nan")
        result[phase] = {**phase_dict(analysed), "support_cpu_s": round(measured["support_cpu_s"], 3),
                         "support_cpu_us_per_delivery": round(support_us, 1)}
    return result


def make_targets(names: list[str], workdir: Path, gomaxprocs: int | None, report: Any) -> list[Target]:
    targets: list[Target] = []
    for name in names:
        if name == "circadia":
            targets.append(CircadiaGateway(workdir / "circadia"))
        elif name == "centrifugo":
            binary = centrifugo_module.ensure_binary(report)
            targets.append(Centrifugo(workdir / "centrifugo", free_port(), binary, gomaxprocs=gomaxprocs))
        else:
            raise SystemExit(f"unknown system {name!r}")
    return targets


async def run(work: Workload, systems: list[str], gomaxprocs: int | None, report: Any) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-fanout-"))
    started = time.monotonic()
    try:
        targets = make_targets(systems, workdir, gomaxprocs, report)  # builds Centrifugo first
        results = []
        for target in targets:
            report(f"{target.name}: setting up")
            # Centrifugo's default config does not negotiate permessage-deflate; the gateway
            # accepts it when the client offers it, as browsers do.
            variants = [(target.name, False)]
            if work.deflate == "both" and target.name == "circadia":
                variants.append(("circadia+deflate", True))
            try:
                await target.setup()  # inside: a failed start still stops what it started
                for n in work.connections:
                    for system, deflate in variants:
                        run_dir = workdir / f"{system}-{n}"
                        run_dir.mkdir()
                        results.append(await run_one(target, system, deflate, n, work, run_dir, report))
            finally:
                await target.teardown()
        versions = {
            "go": command_output([centrifugo_module.go_binary(), "version"]) if "centrifugo" in systems else "-",
            "centrifugo": next((t.version for t in targets if t.name == "centrifugo"), "-"),
            "websockets": package_version("websockets"), "aiokafka": package_version("aiokafka"),
            "uvloop": package_version("uvloop"),
        }
        return {"machine": machine(versions), "workload": work.__dict__, "results": results,
                "gomaxprocs": gomaxprocs, "elapsed_s": round(time.monotonic() - started, 1)}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="N = 100, few messages: a smoke test")
    parser.add_argument("--connections", default="100,1000,10000", help="comma-separated N values")
    parser.add_argument("--systems", default="circadia,centrifugo")
    parser.add_argument("--per-user", type=int, default=2, help="connections per user (gateway cap: 10)")
    parser.add_argument("--rate", type=float, default=200.0, help="steady phase, messages per second")
    parser.add_argument("--messages", type=int, default=3000, help="steady phase, messages")
    parser.add_argument("--burst", type=int, default=5000, help="burst phase, messages")
    parser.add_argument("--idle-seconds", type=float, default=3.0)
    parser.add_argument("--connect-concurrency", type=int, default=100)
    parser.add_argument("--deflate", choices=("off", "both"), default=None,
                        help="both: circadia is run a second time with the fleet offering permessage-deflate, "
                             "as browsers do (default: both; off with --quick)")
    parser.add_argument("--gomaxprocs", type=int, default=None, help="GOMAXPROCS for Centrifugo")
    parser.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md")
    parser.add_argument("--from-json", type=Path, default=None,
                        help="run nothing: print (and, unless --no-docs, write) the tables of a saved result")
    args = parser.parse_args(argv)
    if args.from_json is not None:
        outcome = json.loads(args.from_json.read_text())
        print(render_text(outcome))
        if not args.no_docs:
            update_docs(DOCS, render_markdown(outcome, outcome.get("command", ".venv/bin/python -m bench.fanout.run")))
            print(f"wrote the Fan-out section of {DOCS.relative_to(REPO)}")
        return

    if args.quick:
        work = Workload(connections=(100,), per_user=args.per_user, rate=args.rate, messages=400,
                        burst=1000, idle_seconds=1.0, connect_concurrency=args.connect_concurrency,
                        deflate=args.deflate or "off", quiet_timeout=5.0)
    else:
        work = Workload(connections=tuple(int(n) for n in args.connections.split(",")), per_user=args.per_user,
                        rate=args.rate, messages=args.messages, burst=args.burst, idle_seconds=args.idle_seconds,
                        connect_concurrency=args.connect_concurrency, deflate=args.deflate or "both")

    report = reporter()
    # aiokafka logs an error for every refused connection while the broker is still starting
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    outcome = run_loop(run(work, args.systems.split(","), args.gomaxprocs, report))

    outcome["command"] = " ".join([".venv/bin/python -m bench.fanout.run",
                                   *(argv if argv is not None else sys.argv[1:])])
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    saved = RESULTS_DIR / f"fanout-{time.strftime('%Y%m%d-%H%M%S')}.json"
    saved.write_text(json.dumps(outcome, indent=2))
    print(render_text(outcome))
    print(f"\nraw results: {saved.relative_to(REPO)} ({outcome['elapsed_s']}s in all)")
    if not (args.quick or args.no_docs):
        update_docs(DOCS, render_markdown(outcome, outcome["command"]))
        print(f"wrote the Fan-out section of {DOCS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
