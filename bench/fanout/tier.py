"""Fan-out tier benchmark: R = 1, 2, 3 replicas of the gateway in one consumer group, on loopback.

    .venv/bin/python -m bench.fanout.tier            # N = 3,000 connections, R = 1, 2, 3 (~6 min)
    .venv/bin/python -m bench.fanout.tier --quick    # N = 300, 300 messages, R = 1, 2 (~1 min)

For each R, on a fresh Kafka + Redis (``--shared-stack``: one Kafka + Redis for all R, Redis
emptied between them; --quick does that) with a consumer group of its own: the R replicas
are started (``LocalStack(fanout_replicas=R)``) and the benchmark waits until their
``circadia_fanout_owned_partitions`` gauges add up to the topic's partitions. The client
fleet (bench/fanout/client.py) spreads its connections over the replicas' URLs: users round
robin, both connections of a user on the same replica. Then:

- **steady**: ``--messages`` at ``--rate``/s, message ``seq`` to user ``seq % users``, through
  the project's publisher (Kafka, as the worker writes them). Per replica, the deltas of its
  counters (read, published = history writes = Redis publishes, live messages,
  deliveries) and of its CPU (utime + stime); each is compared with the cluster's results
  (ideal: read, published and live messages each ~1/R of the results).
- **rebalance** (R >= 2): the same again with the fleet reconnecting: half-way through, one
  replica is SIGKILLed and restarted ``--restart-after`` seconds later. Its clients reconnect
  to the other replicas with ``resume`` (cursor + epoch of the last prediction they got);
  its partitions move to the others after the group's session timeout and come back to it
  after the restart. Exactly-once is judged after everything settled.
- **split** (R >= 2, ``--no-split`` to skip): a new fleet whose two connections of each user
  are on different replicas, steady phase only: what it costs the tier (live messages).

Every phase's exactly-once check is per connection: lost, duplicate and misrouted (delivered
to another user's connection) must all be 0. A markdown table is printed; raw results go
to .local/bench/fanout-tier-<time>.json (``--from-json`` renders a saved one again).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # also runnable as ``python bench/fanout/tier.py``
    sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import redis  # noqa: E402

from bench.common import free_port, reporter, run_loop  # noqa: E402
from bench.fanout.gateway import SERVICE, CircadiaGateway  # noqa: E402
from bench.fanout.measure import analyse_phase, cpu_seconds, machine, package_version, phase_dict  # noqa: E402
from bench.fanout.run import Fleet, publish_steady  # noqa: E402
from bench.fanout.workload import Plan, now, prediction_record  # noqa: E402
from circadia.jsonable import jsonable  # noqa: E402
from circadia.topics import PREDICTIONS, TOPICS  # noqa: E402

RESULTS_DIR = REPO / ".local" / "bench"
PARTITIONS = next(t.partitions for t in TOPICS if t.name == PREDICTIONS)

# the counters compared between replicas (Prometheus sample name -> short name)
COUNTERS = {
    'circadia_fanout_records_total{outcome="read"}': "read",
    'circadia_fanout_records_total{outcome="published"}': "published",
    'circadia_fanout_records_total{outcome="republished"}': "republished",
    'circadia_fanout_rendered_total{outcome="rendered"}': "rendered",
    'circadia_fanout_records_total{outcome="repeat"}': "repeat",
    'circadia_fanout_records_total{outcome="stale"}': "stale",
    'circadia_fanout_records_total{outcome="undecodable"}': "undecodable",
    "circadia_fanout_live_messages_total": "live",
    "circadia_fanout_deliveries_total": "deliveries",
    'circadia_fanout_resumes_total{outcome="resumed"}': "resumes",
    'circadia_fanout_resumes_total{outcome="reset"}': "resume_resets",
    "circadia_fanout_gaps_total": "gaps",
    "circadia_fanout_delivered_locally_total": "delivered_locally",
}
GAUGES = {"circadia_fanout_owned_partitions": "partitions", "circadia_fanout_connections": "connections"}
_SAMPLE = re.compile(r"^(circadia_fanout_\w+(?:\{[^}]*\})?) (\S+)$", re.MULTILINE)


@dataclass(frozen=True)
class TierWork:
    connections: int
    per_user: int
    messages: int  # per phase
    rate: float
    replicas: tuple[int, ...]
    connect_concurrency: int
    quiet_timeout: float  # a steady phase ends when nothing new arrived for this long
    rebalance_quiet: float  # the same for the rebalance phase (a dead member is noticed after ~10 s)
    kill_at: float  # fraction of the rebalance phase's publishing after which a replica is killed
    restart_after: float  # seconds between the kill and the restart
    settle: float  # seconds waited after a phase before the receipts are read (late duplicates)
    split: bool
    fresh_stack: bool
    keep_logs: Path | None = None  # copy the services' logs here at the end


# --- the tier as a target -----------------------------------------------------------------------


def consecutive_free_ports(count: int) -> int:
    """The first of ``count`` consecutive ports free on loopback now."""
    for _ in range(200):
        base = free_port()
        if base + count > 65535:
            continue
        socks = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError(f"no {count} consecutive free ports")


class TierGateway(CircadiaGateway):
    """``CircadiaGateway`` with R replicas on consecutive ports, one consumer group per run."""

    def __init__(self, root: Path, max_replicas: int) -> None:
        super().__init__(root)
        base = consecutive_free_ports(max_replicas)
        self.stack = replace(self.stack, ports=replace(self.stack.ports, fanout=base), fanout_replicas=1)
        self._settings: dict[str, str] = {}

    def use_replicas(self, replicas: int) -> None:
        self.stack = replace(self.stack, fanout_replicas=replicas)

    @property
    def replicas(self) -> list[tuple[str, int]]:
        return self.stack.fanout_gateways()

    @property
    def urls(self) -> list[str]:
        return [f"ws://127.0.0.1:{port}/v1/stream" for _, port in self.replicas]

    def replica_pid(self, index: int) -> int:
        name = self.replicas[index][0]
        pid = self.stack.process(name).pid()
        if pid is None:
            raise RuntimeError(f"{name} is not running:\n{self.stack.process(name).log_tail()}")
        return pid

    async def start_tier(self, connections: int, group_id: str) -> None:
        self._settings = {"CIRCADIA_FANOUT_MAX_CONNECTIONS": str(max(20_000, 2 * connections)),
                          "CIRCADIA_FANOUT_MAX_CONNECTIONS_PER_USER": str(self.max_connections_per_user),
                          "CIRCADIA_FANOUT_GROUP_ID": group_id}
        if "CIRCADIA_KAFKA_SECURITY_PROTOCOL" not in self.stack.environment():
            self._settings["CIRCADIA_KAFKA_SECURITY_PROTOCOL"] = "PLAINTEXT"
        await self.restart_missing()

    async def restart_missing(self) -> None:
        """Start the replicas that are not running (same settings, same group); wait for all."""
        settings = self._settings
        await asyncio.to_thread(lambda: self.stack.start_service(SERVICE, timeout=120.0, **settings))

    async def kill(self, index: int) -> None:
        await asyncio.to_thread(self.stack.process(self.replicas[index][0]).kill)

    async def stop_tier(self) -> dict[str, float]:
        """SIGTERM every replica (SIGKILL after 30 s); how long each took to exit."""
        async def stop(name: str) -> float:
            began = time.monotonic()
            await asyncio.to_thread(self.stack.process(name).stop)
            return round(time.monotonic() - began, 1)

        names = [name for name, _ in self.replicas]
        return dict(zip(names, await asyncio.gather(*(stop(name) for name in names)), strict=True))

    def flush_redis(self) -> None:
        client = redis.Redis.from_url(self.stack.redis_url)
        try:
            client.flushall()
        finally:
            client.close()

    def redis_commands(self) -> dict[str, int]:
        """Redis' own count of the commands that record and publish (scripts' commands included):
        XADD calls (a failed one: the entry was already in the history), SPUBLISH calls."""
        client = redis.Redis.from_url(self.stack.redis_url)
        try:
            stats = client.info("commandstats")
        finally:
            client.close()
        out = {}
        for command in ("xadd", "spublish", "evalsha"):
            entry = stats.get(f"cmdstat_{command}", {})
            out[f"{command}_calls"] = int(entry.get("calls", 0))
            out[f"{command}_failed"] = int(entry.get("failed_calls", 0))
        return out

    def redis_pid(self) -> int | None:
        return self.stack.redis.process.pid()

    def kafka_pid(self) -> int | None:
        return self.stack.kafka.process.pid()


async def scrape(client: httpx.AsyncClient, port: int) -> dict[str, float]:
    response = await client.get(f"http://127.0.0.1:{port}/metrics", timeout=10.0)
    response.raise_for_status()
    samples = {name: float(value) for name, value in _SAMPLE.findall(response.text)}
    return {short: samples.get(name, 0.0) for name, short in {**COUNTERS, **GAUGES}.items()}


async def snapshot(client: httpx.AsyncClient, tier: TierGateway, index: int) -> dict[str, float]:
    pid = tier.replica_pid(index)
    reading = await scrape(client, tier.replicas[index][1])
    return {**reading, "cpu_s": cpu_seconds(pid), "pid": pid}


async def snapshot_all(client: httpx.AsyncClient, tier: TierGateway) -> list[dict[str, float]]:
    return [await snapshot(client, tier, i) for i in range(len(tier.replicas))]


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {key: after[key] - before[key] for key in (*COUNTERS.values(), "cpu_s")}


async def wait_owned(client: httpx.AsyncClient, tier: TierGateway, timeout: float = 120.0) -> tuple[list[int], float]:
    """Until the replicas' owned partitions add up to the topic's, each replica owning some
    (when there are enough partitions), in two readings in a row."""
    started = time.monotonic()
    stable = 0
    owned: list[int] = []
    while time.monotonic() - started < timeout:
        try:
            owned = [int((await scrape(client, port))["partitions"]) for _, port in tier.replicas]
        except httpx.HTTPError:
            owned = []
        every = len(tier.replicas) > PARTITIONS or all(o > 0 for o in owned)
        stable = stable + 1 if owned and sum(owned) == PARTITIONS and every else 0
        if stable >= 2:
            return owned, round(time.monotonic() - started, 1)
        await asyncio.sleep(0.5)
    raise RuntimeError(f"owned partitions {owned} do not add up to {PARTITIONS} after {timeout:.0f}s")


# --- phases -------------------------------------------------------------------------------------


def support_cpu(tier: TierGateway) -> dict[str, float]:
    return {"redis": cpu_seconds(tier.redis_pid()), "kafka": cpu_seconds(tier.kafka_pid())}


def per_replica_latency(plan: Plan, receipts: dict[str, Any], published: np.ndarray, first: int, end: int,
                        replica_of_connection: np.ndarray, replicas: int) -> list[dict[str, float]]:
    seqs = np.asarray(receipts["seqs"], dtype=np.int64)
    conns = np.asarray(receipts["conns"], dtype=np.int64)
    times = np.asarray(receipts["times"], dtype=np.float64)
    keep = (seqs >= first) & (seqs < end)
    seqs, conns, times = seqs[keep], conns[keep], times[keep]
    latency = (times - published[seqs]) * 1000.0
    where = replica_of_connection[conns]
    out = []
    for r in range(replicas):
        mine = latency[where == r]
        out.append({"p50_ms": round(float(np.percentile(mine, 50)), 1) if len(mine) else float("nan"),
                    "p99_ms": round(float(np.percentile(mine, 99)), 1) if len(mine) else float("nan")})
    return out


class TierRun:
    """One R: the replicas, one or two fleets, the phases."""

    def __init__(self, tier: TierGateway, replicas: int, work: TierWork, workdir: Path, report: Any) -> None:
        self.tier = tier
        self.r = replicas
        self.work = work
        self.workdir = workdir
        self.report = report
        self.http = httpx.AsyncClient()
        self._events: dict[str, float] = {}

    def log(self, line: str) -> None:
        self.report(f"  R={self.r}: {line}")

    async def spawn_fleet(self, plan: Plan, url_index: list[int], reconnect: bool, name: str) -> tuple[Fleet, dict]:
        tokens = self.tier.tokens([plan.user_id(i) for i in range(plan.users)])
        fleet_dir = self.workdir / name
        fleet_dir.mkdir()
        fleet = await Fleet.spawn({
            "protocol": "circadia", "url": self.tier.urls[0], "urls": self.tier.urls, "url_index": url_index,
            "tokens": tokens, "nonce_hex": f"{plan.nonce:08x}", "connections_per_user": plan.connections_per_user,
            "connect_concurrency": self.work.connect_concurrency, "deflate": False,
            "reconnect": reconnect, "reconnect_deadline": 120, "reconnect_jitter": 0.5,
            "results": str(fleet_dir / "receipts.json"),
        }, fleet_dir)
        ready = await fleet.event("ready", within=900)
        self.log(f"{name} fleet: {ready['connected']}/{plan.connections} ready in {ready['seconds']}s"
                 f" ({ready['failed']} failed)")
        if ready["failed"]:
            raise RuntimeError(f"{ready['failed']} connections failed: {ready['errors']}")
        return fleet, ready

    async def receipts(self, fleet: Fleet, name: str) -> dict[str, Any]:
        await fleet.command(cmd="quit")
        await fleet.event("written", within=300)
        await fleet.process.wait()
        return json.loads((self.workdir / name / "receipts.json").read_text())

    async def steady(self, fleet: Fleet, plan: Plan, first: int, published: np.ndarray, phase: str,
                     chaos: Any = None) -> dict[str, Any]:
        """Publish ``messages`` from ``first``; ``chaos`` (a coroutine function) runs alongside and
        returns {replica index: its counters just before it was killed} for the replicas it restarted."""
        count = self.work.messages
        before = await snapshot_all(self.http, self.tier)
        commands0 = await asyncio.to_thread(self.tier.redis_commands)
        support0, fleet0 = support_cpu(self.tier), cpu_seconds(fleet.pid)
        load0 = os.getloadavg()[0]
        wall0 = time.monotonic()
        chaos_task = asyncio.create_task(chaos()) if chaos is not None else None
        try:
            await publish_steady(self.tier, plan, first, count, self.work.rate, published)
            killed: dict[int, dict[str, float]] = await chaos_task if chaos_task is not None else {}
        finally:
            if chaos_task is not None and not chaos_task.done():
                chaos_task.cancel()
        quiet = self.work.rebalance_quiet if chaos is not None else self.work.quiet_timeout
        done = await fleet.finish(phase, first, first + count, quiet)
        owned_after = None
        if chaos is not None:
            owned_after, _ = await wait_owned(self.http, self.tier)
        await asyncio.sleep(self.work.settle)  # late repeats would arrive now
        wall = time.monotonic() - wall0
        after = await snapshot_all(self.http, self.tier)
        commands1 = await asyncio.to_thread(self.tier.redis_commands)
        support1, fleet1 = support_cpu(self.tier), cpu_seconds(fleet.pid)
        replicas = []
        for i in range(self.r):
            if i in killed:  # the counters of the killed process, then those of its successor (from 0)
                first_life = delta(killed[i], before[i])
                d = {key: first_life[key] + after[i][key] for key in first_life}
            else:
                d = delta(after[i], before[i])
            d["partitions_before"] = before[i]["partitions"]
            d["partitions_after"] = after[i]["partitions"]
            d["connections_before"] = before[i]["connections"]
            d["connections_after"] = after[i]["connections"]
            replicas.append(d)
        self.log(f"{phase}: {done['received']}/{done['expected']} deliveries in {done['waited']}s after publishing")
        redis_commands = {key: commands1[key] - commands0[key] for key in commands0}
        # an entry written = an XADD that did not fail (a failed one: already in the history)
        redis_commands["history_writes"] = redis_commands["xadd_calls"] - redis_commands["xadd_failed"]
        return {"client": done, "wall_s": round(wall, 2), "replicas": replicas, "owned_after": owned_after,
                "redis_commands": redis_commands,
                "loadavg_1m": [round(load0, 2), round(os.getloadavg()[0], 2)],  # the machine around the phase
                "support_cpu_s": {k: round(support1[k] - support0[k], 3) for k in support0},
                "fleet_cpu_s": round(fleet1 - fleet0, 3)}

    def summarise(self, plan: Plan, receipts: dict[str, Any], published: np.ndarray, first: int,
                  measured: dict[str, Any], replica_of_connection: np.ndarray | None) -> dict[str, Any]:
        end = first + self.work.messages
        results = self.work.messages
        tier_cpu = sum(r["cpu_s"] for r in measured["replicas"])
        analysed = analyse_phase(plan, receipts, published, first, end, tier_cpu, measured["wall_s"], 0.0)
        replicas = []
        for r in measured["replicas"]:
            row = {key: (round(v, 3) if isinstance(v, float) else v) for key, v in r.items()}
            row.update({
                "read_share": round(r["read"] / results, 3),
                "published_share": round(r["published"] / results, 3),
                "live_share": round(r["live"] / results, 3),
                "cpu_us_per_delivery": round(r["cpu_s"] / r["deliveries"] * 1e6, 1) if r["deliveries"] else None,
            })
            replicas.append(row)
        if replica_of_connection is not None:
            for row, lat in zip(replicas, per_replica_latency(plan, receipts, published, first, end,
                                                             replica_of_connection, self.r), strict=True):
                row.update(lat)
        sums = {key: int(sum(r[key] for r in measured["replicas"])) for key in COUNTERS.values()}
        return {**measured, "results": results, "analysis": phase_dict(analysed), "replicas": replicas,
                "sums": sums, "tier_cpu_s": round(tier_cpu, 3),
                "tier_cpu_us_per_delivery": round(tier_cpu / analysed.received * 1e6, 1) if analysed.received else None,
                "redis_cpu_us_per_result": round(measured["support_cpu_s"]["redis"] / results * 1e6, 1)}

    async def run(self) -> dict[str, Any]:
        work, tier = self.work, self.tier
        group = f"bench-tier-r{self.r}-{int(time.time())}"
        out: dict[str, Any] = {"replicas": self.r, "group_id": group}
        await tier.start_tier(work.connections, group)
        owned, waited = await wait_owned(self.http, tier)
        self.log(f"{self.r} replicas ready; owned partitions {owned} ({waited}s)")
        out["owned_partitions"] = owned

        plan = Plan.new(work.connections, work.per_user)
        # users round robin over the replicas, both connections of a user on the same one
        url_index = [plan.user_of_connection(c) % self.r for c in range(plan.connections)]
        fleet, ready = await self.spawn_fleet(plan, url_index, reconnect=self.r > 1, name="grouped")
        out["connect_s"] = ready["seconds"]
        published = np.zeros(2 * work.messages, dtype=np.float64)
        try:
            steady = await self.steady(fleet, plan, 0, published, "steady")
            rebalance = None
            if self.r > 1:
                victim = self.r - 1
                rebalance = await self.steady(fleet, plan, work.messages, published, "rebalance",
                                              chaos=lambda: self.chaos(victim))
                rebalance["victim"] = tier.replicas[victim][0]
                rebalance["events"] = self._events
            receipts = await self.receipts(fleet, "grouped")
        finally:
            await fleet.kill()
        where = np.asarray(url_index)
        out["steady"] = self.summarise(plan, receipts, published, 0, steady, where)
        if rebalance is not None:
            out["rebalance"] = self.summarise(plan, receipts, published, work.messages, rebalance, None)
            out["rebalance"]["fleet"] = {key: receipts[key] for key in (
                "reconnects", "resumed", "resets", "reconnect_errors", "reconnect_error_samples", "given_up",
                "closed")}
            final = np.bincount(np.asarray(receipts["url_index"]), minlength=self.r)
            out["rebalance"]["fleet"]["connections_per_replica_after"] = final.tolist()
        out["foreign"], out["other_messages"] = receipts["foreign"], receipts["other"]
        self._log_phase("steady", out["steady"])
        if rebalance is not None:
            self._log_phase("rebalance", out["rebalance"])

        if work.split and self.r > 1:
            await wait_owned(self.http, tier)
            plan = Plan.new(work.connections, work.per_user)
            # the k-th connection of user u on replica (u + k) % R: a user's connections apart
            split_index = [(plan.user_of_connection(c) + c % plan.connections_per_user) % self.r
                           for c in range(plan.connections)]
            fleet, _ = await self.spawn_fleet(plan, split_index, reconnect=False, name="split")
            published = np.zeros(work.messages, dtype=np.float64)
            try:
                split = await self.steady(fleet, plan, 0, published, "split")
                receipts = await self.receipts(fleet, "split")
            finally:
                await fleet.kill()
            out["split"] = self.summarise(plan, receipts, published, 0, split, np.asarray(split_index))
            self._log_phase("split", out["split"])
        return out

    def _log_phase(self, phase: str, result: dict[str, Any]) -> None:
        a = result["analysis"]
        shares = " ".join(f"{r['read_share']:.2f}/{r['published_share']:.2f}/{r['live_share']:.2f}"
                          for r in result["replicas"])
        self.log(f"{phase}: lost {a['lost']} dup {a['duplicates']} misrouted {a['misrouted']};"
                 f" p50 {a['p50_ms']:.1f} ms p99 {a['p99_ms']:.1f} ms; read/published/live shares {shares}")

    async def chaos(self, victim: int) -> dict[int, dict[str, float]]:
        """Half-way through the phase: SIGKILL ``victim``, restart it ``restart_after`` s later."""
        began = time.monotonic()
        await asyncio.sleep(self.work.messages / self.work.rate * self.work.kill_at)
        last = await snapshot(self.http, self.tier, victim)
        await self.tier.kill(victim)
        self._events["killed_at_s"] = round(time.monotonic() - began, 2)
        self.log(f"rebalance: {self.tier.replicas[victim][0]} SIGKILLed")
        await asyncio.sleep(self.work.restart_after)
        self._events["restarted_at_s"] = round(time.monotonic() - began, 2)
        await self.tier.restart_missing()
        self._events["ready_again_at_s"] = round(time.monotonic() - began, 2)
        self.log(f"rebalance: {self.tier.replicas[victim][0]} restarted, ready after"
                 f" {self._events['ready_again_at_s'] - self._events['restarted_at_s']:.1f}s")
        return {victim: last}

    async def close(self) -> None:
        await self.http.aclose()


# --- the whole benchmark --------------------------------------------------------------------------


def payload_sizes(tier: TierGateway) -> dict[str, int]:
    plan = Plan.new(2, 2)
    user = plan.user_id(0)
    record = prediction_record(user, plan.prediction_id(0), now())
    _, avro = tier.prepare(user, record)
    text = json.dumps(jsonable(record))
    return {"avro_bytes": len(avro), "json_bytes": len(text)}


async def run(work: TierWork, report: Any) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-fanout-tier-"))

    async def close_stack(tier: TierGateway) -> None:
        """Stop everything the stack started and remove its folder (its logs kept if asked)."""
        if work.keep_logs is not None:
            for log in (*tier.root.glob("logs/*.log"), *tier.root.glob("redis/*.log"), *tier.root.glob("kafka/*.log")):
                target = work.keep_logs / tier.root.name / log.relative_to(tier.root)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(log, target)
        await tier.teardown()

    started = time.monotonic()
    results: list[dict[str, Any]] = []
    sizes: dict[str, int] = {}
    tier: TierGateway | None = None
    try:
        for index, replicas in enumerate(work.replicas):
            if tier is None or work.fresh_stack:
                tier = TierGateway(workdir / f"stack-{index}", max(work.replicas))
                report(f"R={replicas}: starting Kafka and Redis")
                t0 = time.monotonic()
                try:
                    await tier.setup()
                except BaseException:
                    await close_stack(tier)
                    raise
                report(f"R={replicas}: Kafka and Redis ready ({time.monotonic() - t0:.1f}s)")
                sizes = sizes or payload_sizes(tier)
            else:
                await asyncio.to_thread(tier.flush_redis)  # no history, positions or epochs of the last R
            tier.use_replicas(replicas)
            run_dir = workdir / f"r{replicas}-{index}"
            run_dir.mkdir()
            one = TierRun(tier, replicas, work, run_dir, report)
            try:
                results.append(await one.run())
            finally:
                await one.close()
                stopped = await tier.stop_tier()
                if results and results[-1]["replicas"] == replicas:
                    results[-1]["stop_s"] = stopped  # SIGTERM to exit, per replica (30: killed)
                if work.fresh_stack:
                    await close_stack(tier)
                    tier = None
                report(f"R={replicas}: stopped {stopped}")
    finally:
        if tier is not None:
            await close_stack(tier)
        shutil.rmtree(workdir, ignore_errors=True)
    versions = {"websockets": package_version("websockets"), "aiokafka": package_version("aiokafka"),
                "redis-py": package_version("redis"), "uvloop": package_version("uvloop")}
    return {"machine": machine(versions), "workload": {**asdict(work), "keep_logs": str(work.keep_logs),
                                                       "users": work.connections // work.per_user,
                                                       "partitions": PARTITIONS, **sizes},
            "results": results, "elapsed_s": round(time.monotonic() - started, 1)}


# --- output ---------------------------------------------------------------------------------------


def _f(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _redis(phase: dict[str, Any]) -> str:
    commands = phase.get("redis_commands")
    return f"{commands['history_writes']:,} / {commands['spublish_calls']:,}" if commands else "–"


def render(outcome: dict[str, Any]) -> str:
    w, m = outcome["workload"], outcome["machine"]
    lines = [
        "## Fan-out tier: R replicas in one consumer group",
        "",
        f"Workload: N = {w['connections']:,} connections, {w['users']:,} users x {w['per_user']} connections;"
        f" {w['messages']:,} messages per phase at {w['rate']:g}/s, message seq to user seq % users"
        f" ({w['messages'] * w['per_user']:,} deliveries); payload {w.get('avro_bytes', '?')} B Avro on Kafka,"
        f" {w.get('json_bytes', '?')} B JSON record per delivery; predictions.v1 has {w['partitions']} partitions;"
        f" {'fresh Kafka + Redis per R' if w['fresh_stack'] else 'one Kafka + Redis, emptied between R'},"
        " a new consumer group per R.",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram']}, {m['kernel']}, Python {m['python']},"
        f" websockets {m['websockets']}, aiokafka {m['aiokafka']}, redis-py {m['redis-py']}, uvloop {m['uvloop']};"
        f" {m['date']}. Everything (replicas, fleet, publisher, Kafka, Redis) shares the cores.",
        "",
        "### Steady: users round robin over the replicas, both connections of a user on one replica",
        "",
        "Shares are of the cluster's results (ideal 1/R each); CPU is the replica's utime + stime over the phase.",
        "",
        "| R | replica | partitions | conns | read / results | published / results | live / results |"
        " deliveries | CPU s | CPU µs / delivery | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for res in outcome["results"]:
        for i, r in enumerate(res["steady"]["replicas"]):
            lines.append(f"| {res['replicas']} | {i + 1} | {int(r['partitions_before'])}"
                         f" | {int(r['connections_before']):,}"
                         f" | {r['read_share']:.3f} | {r['published_share']:.3f} | {r['live_share']:.3f}"
                         f" | {int(r['deliveries']):,} | {r['cpu_s']:.2f} | {_f(r['cpu_us_per_delivery'], 0)}"
                         f" | {_f(r.get('p50_ms'), 1)} | {_f(r.get('p99_ms'), 1)} |")
    lines += ["", "| R | results | deliveries | lost / dup / misrouted | p50 ms | p99 ms | max ms |"
              " Redis: entries written / SPUBLISH | tier CPU µs / delivery | Redis CPU µs / result | Kafka CPU s"
              " | fleet CPU s |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for res in outcome["results"]:
        s, a = res["steady"], res["steady"]["analysis"]
        lines.append(f"| {res['replicas']} | {s['results']:,} | {a['received']:,} / {a['expected']:,}"
                     f" | {a['lost']} / {a['duplicates']} / {a['misrouted']} | {a['p50_ms']:.1f} | {a['p99_ms']:.1f}"
                     f" | {a['max_ms']:.1f} | {_redis(s)} | {_f(s['tier_cpu_us_per_delivery'], 0)}"
                     f" | {_f(s['redis_cpu_us_per_result'], 0)}"
                     f" | {s['support_cpu_s']['kafka']:.2f} | {s['fleet_cpu_s']:.2f} |")
    rebalanced = [res for res in outcome["results"] if "rebalance" in res]
    if rebalanced:
        lines += ["", "### Rebalance: one replica SIGKILLed half-way, restarted "
                  f"{w['restart_after']:g} s later; its clients resume on the others",
                  "",
                  "| R | killed | results | read (sum) | published (sum) | Redis: entries written / SPUBLISH"
                  " | repeat + stale | lost / dup / misrouted | reconnects (resumed) | resets | p50 ms | p99 ms"
                  " | max ms"
                  " | conns per replica after |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for res in rebalanced:
            b, a, f = res["rebalance"], res["rebalance"]["analysis"], res["rebalance"]["fleet"]
            lines.append(f"| {res['replicas']} | {b['victim']} | {b['results']:,} | {b['sums']['read']:,}"
                         f" | {b['sums']['published']:,} | {_redis(b)} | {b['sums']['repeat'] + b['sums']['stale']}"
                         f" | {a['lost']} / {a['duplicates']} / {a['misrouted']}"
                         f" | {f['reconnects']:,} ({f['resumed']:,})"
                         f" | {f['resets']} | {a['p50_ms']:.1f} | {a['p99_ms']:.1f} | {a['max_ms']:.1f}"
                         f" | {' / '.join(str(c) for c in f['connections_per_replica_after'])} |")
        lines += ["", "Per replica over the rebalance phase (the killed replica: its first life up to the kill,"
                  " plus its successor from the restart):", "",
                  "| R | replica | partitions before → after | read | published | repeat + stale | live"
                  " | deliveries | resumes served | CPU s |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for res in rebalanced:
            for i, r in enumerate(res["rebalance"]["replicas"]):
                lines.append(f"| {res['replicas']} | {i + 1}"
                             f" | {int(r['partitions_before'])} → {int(r['partitions_after'])}"
                             f" | {int(r['read']):,} | {int(r['published']):,} | {int(r['repeat'] + r['stale'])}"
                             f" | {int(r['live']):,} | {int(r['deliveries']):,} | {int(r['resumes']):,}"
                             f" | {r['cpu_s']:.2f} |")
    split = [res for res in outcome["results"] if "split" in res]
    if split:
        lines += ["", "### Split: the two connections of each user on different replicas (steady phase)", "",
                  "| R | replica | live / results | deliveries | CPU µs / delivery | lost / dup / misrouted |"
                  " p50 ms | p99 ms |", "|---|---|---|---|---|---|---|---|"]
        for res in split:
            a = res["split"]["analysis"]
            for i, r in enumerate(res["split"]["replicas"]):
                lines.append(f"| {res['replicas']} | {i + 1} | {r['live_share']:.3f} | {int(r['deliveries']):,}"
                             f" | {_f(r['cpu_us_per_delivery'], 0)}"
                             f" | {a['lost']} / {a['duplicates']} / {a['misrouted']}"
                             f" | {_f(r.get('p50_ms'), 1)} | {_f(r.get('p99_ms'), 1)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="N = 300, 300 messages, R = 1,2, one Kafka + Redis: a smoke test (~1 min)")
    parser.add_argument("--connections", type=int, default=3000, help="N, the fleet's connections (all R)")
    parser.add_argument("--per-user", type=int, default=2, help="connections per user")
    parser.add_argument("--messages", type=int, default=3000, help="messages per phase")
    parser.add_argument("--rate", type=float, default=200.0, help="messages per second")
    parser.add_argument("--replicas", default=None, help="comma-separated R values (default 1,2,3; --quick: 1,2)")
    parser.add_argument("--connect-concurrency", type=int, default=100)
    parser.add_argument("--restart-after", type=float, default=3.0,
                        help="rebalance phase: seconds between the SIGKILL and the restart")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds waited after each phase before its counters and receipts are read")
    parser.add_argument("--no-split", action="store_true", help="skip the split-users variant")
    parser.add_argument("--shared-stack", action="store_true",
                        help="one Kafka + Redis for every R (Redis emptied between them) instead of fresh ones")
    parser.add_argument("--keep-logs", type=Path, default=None, metavar="DIR",
                        help="copy the replicas' (and Kafka's, Redis') logs to DIR at the end")
    parser.add_argument("--from-json", type=Path, default=None, help="run nothing: render a saved result")
    args = parser.parse_args(argv)
    if args.from_json is not None:
        print(render(json.loads(args.from_json.read_text())))
        return
    if args.quick:
        work = TierWork(connections=300, per_user=args.per_user, messages=300, rate=args.rate,
                        replicas=tuple(int(r) for r in (args.replicas or "1,2").split(",")),
                        connect_concurrency=args.connect_concurrency, quiet_timeout=5.0, rebalance_quiet=20.0,
                        kill_at=0.3, restart_after=1.0, settle=1.0, split=not args.no_split, fresh_stack=False,
                        keep_logs=args.keep_logs)
    else:
        work = TierWork(connections=args.connections, per_user=args.per_user, messages=args.messages,
                        rate=args.rate, replicas=tuple(int(r) for r in (args.replicas or "1,2,3").split(",")),
                        connect_concurrency=args.connect_concurrency, quiet_timeout=15.0, rebalance_quiet=30.0,
                        kill_at=0.5, restart_after=args.restart_after, settle=args.settle,
                        split=not args.no_split, fresh_stack=not args.shared_stack,
                        keep_logs=args.keep_logs)
    if work.connections % work.per_user:
        parser.error("--connections must be a multiple of --per-user")
    report = reporter()
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # refused connections while the broker starts
    outcome = run_loop(run(work, report))
    outcome["command"] = " ".join([".venv/bin/python -m bench.fanout.tier",
                                   *(argv if argv is not None else sys.argv[1:])])
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    saved = RESULTS_DIR / f"fanout-tier-{time.strftime('%Y%m%d-%H%M%S')}.json"
    saved.write_text(json.dumps(outcome, indent=2))
    print(render(outcome))
    print(f"\nraw results: {saved.relative_to(REPO)} ({outcome['elapsed_s']}s in all)")


if __name__ == "__main__":
    main()
