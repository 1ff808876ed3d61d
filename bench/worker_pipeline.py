"""The prediction worker on the real broker: capacity, latency, one user's stalled model, soak.

    .venv/bin/python -m bench.worker_pipeline [--users 1000] [--phases capacity,latency,stall,soak]
        [--capacity-uploads 4000] [--latency-seconds 60] [--soak-seconds 600] [--seed 5] [--json]

What runs: a local Kafka broker (the project's, on loopback), the topics of
``circadia.topics``, and the worker as deployed (``python -m prediction_worker``, settings at
their defaults: a result after every upload, the week's blocks at most once per user per
600 s). No gateway and no fan-out: this process writes the records the gateway would write
(the same JSON validation, ``HealthUpload`` record, Avro and headers, done before each phase
so it costs the phase nothing) straight to health.samples.v1, and reads predictions.v1.
"Latency" is from the send of an upload's record to the arrival here of the result that
names it: the worker's hop, Kafka in to Kafka out.

Workload (bench/traffic.py, ``TrafficModel(seed)`` at its defaults):

- Users: ``--users`` users of the model (watch, band and RADAR-style profiles in its mix).
  Each user's window is first filled with its prefill week (``prefill``: 7 uploads of a day,
  with the nights' stages), sent through the worker, so every measured upload lands in a full
  7-day window. The prefill is not measured.
- capacity: ``--capacity-uploads`` uploads drawn with ``TrafficModel.uploads`` (the model's
  mix: small uploads, sleep batches, backlogs of 1-7 days, RADAR-style streams), written as
  fast as the producer goes; the worker drains them. Measured: the uploads and samples per
  second of wall time from the first send to the last result, and the worker process's CPU
  time (``/proc/<pid>/stat``) over the same span, giving CPU per upload and uploads per
  second per core. The worker was restarted just before (so, as after any restart, its first
  result for each user recomputes the week's blocks; the phase reports how many did).
- latency: uploads from the same mix sent open-loop (Poisson arrivals) at ``--load`` (0.5)
  of the measured capacity for ``--latency-seconds``: p50, p99 and max of the worker's hop.
- stall: the worker restarted as ``bench.stalling_worker``, a configured model that stalls
  5 s for one user (who sends an upload every second) and takes no time for the others; the
  same open-loop load for ``--latency-seconds``: the other users' p50/p99, and the stalled
  user's results.
- soak: the latency load for ``--soak-seconds`` (10 minutes): every upload sent must be named
  by exactly one result (nothing lost, no duplicates), and the worker's RSS (``VmRSS``,
  sampled every 5 s) must grow by less than 5 % from the end of the first minute to the end.

The open-loop phases encode at most a minute of distinct uploads before they start (encoding
10 minutes' worth would take minutes and gigabytes); past the first minute they send those
records again, each under a new upload id (the users re-send the same minutes, which the
worker applies afresh: the same work).

The machine also runs the broker and this process: both compete with the worker for the
two cores, so wall-clock rates are lower than the worker alone would reach; CPU per upload
is the worker's own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.common import free_port, reporter
from bench.traffic import TrafficModel, Upload
from bench.worker_apply import machine
from circadia.avro import SchemaSet
from circadia.kafka import COMPRESSION, PRODUCER_MAX_REQUEST_BYTES, ensure_topics
from circadia.topics import HEALTH_SAMPLES, PREDICTIONS
from circadia_dev.devstack.kafka import LocalKafka
from circadia_dev.devstack.stack import LocalStack, Ports
from ingest_gateway.models import UploadRequest, ValidationRules

WORKER = "prediction-worker"
PARTITIONS = 6
RSS_EVERY_S = 5.0
POOL_SECONDS = 60.0
report = reporter()


@dataclass
class Record:
    upload_id: str
    user: str
    kind: str
    samples: int
    value: bytes

    def renamed(self) -> Record:
        """The same upload under a new upload id: ``upload_id`` is the record's first field, a
        36-character string after its one-byte length, so only those bytes change."""
        if self.value[:1] != b"\x48" or self.value[1:37] != self.upload_id.encode():
            raise ValueError("upload_id is not where HealthUpload puts it")
        upload_id = str(uuid.uuid4())
        value = self.value[:1] + upload_id.encode() + self.value[37:]
        return Record(upload_id, self.user, self.kind, self.samples, value)


@dataclass
class Sent:
    at: dict[str, float] = field(default_factory=dict)  # upload id -> monotonic send time
    user: dict[str, str] = field(default_factory=dict)


class Codec:
    """What the gateway does to an upload before it reaches Kafka."""

    def __init__(self) -> None:
        self.schemas = SchemaSet.load()
        self.upload = self.schemas["io.circadia.health.HealthUpload"]
        self.prediction = self.schemas["io.circadia.prediction.Prediction"]

    def record(self, upload: Upload, now: datetime, device: str | None = None) -> Record:
        body = upload.body if device is None else {**upload.body, "device": {**upload.body["device"], "id": device}}
        parsed = UploadRequest.validate_json(json.dumps(body), ValidationRules(now=now))
        value = self.upload.write(parsed.to_record(upload.user, now))
        return Record(str(body["upload_id"]), upload.user, upload.kind, upload.samples, value)


class Pipeline:
    def __init__(self, root: Path, seed: int, users: int) -> None:
        self.root = root
        self.kafka = LocalKafka(root / "kafka", port=free_port(), controller_port=free_port())
        self.ports = Ports(kafka=0, kafka_controller=0, redis=0, openbao=free_port(), openbao_cluster=free_port(),
                           ingest=free_port(), fanout=free_port(), worker_metrics=free_port())
        self.app_id = f"circadia-bench-{uuid.uuid4().hex[:8]}"
        self.codec = Codec()
        self.model = TrafficModel(seed=seed)
        self.seed = seed
        self.users = [f"bench-{seed}-{i:05d}" for i in range(users)]
        self.producer: AIOKafkaProducer | None = None
        self.results: AIOKafkaConsumer | None = None
        self.stack: LocalStack | None = None

    # --- the servers ---------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self.kafka.start)  # it runs its own event loop to probe the broker
        await ensure_topics(self.kafka.bootstrap_servers)
        self.stack = LocalStack(self.root / "stack", self.ports, external_kafka=self.kafka.bootstrap_servers,
                                external_redis="redis://127.0.0.1:1", observability=False,
                                overrides=(("CIRCADIA_WORKER_APP_ID", self.app_id),))
        self.producer = AIOKafkaProducer(bootstrap_servers=self.kafka.bootstrap_servers, acks="all",
                                         enable_idempotence=True, compression_type=COMPRESSION,
                                         max_request_size=PRODUCER_MAX_REQUEST_BYTES, linger_ms=5)
        await self.producer.start()
        self.results = AIOKafkaConsumer(bootstrap_servers=self.kafka.bootstrap_servers, enable_auto_commit=False,
                                        max_partition_fetch_bytes=8 << 20)
        await self.results.start()
        self.results.assign([TopicPartition(PREDICTIONS, p) for p in range(PARTITIONS)])

    def start_worker(self, module: str | None = None, **env: str) -> float:
        """Start the worker; the seconds until it has partitions (its table restored)."""
        assert self.stack is not None
        began = time.monotonic()
        self.stack.start_service(WORKER, timeout=600, module=module, **env)  # type: ignore[arg-type]
        return time.monotonic() - began

    def stop_worker(self) -> None:
        assert self.stack is not None
        self.stack.process(WORKER).stop()

    def worker_pid(self) -> int:
        assert self.stack is not None
        pid = self.stack.process(WORKER).pid()
        if pid is None:
            raise RuntimeError("the worker is not running")
        return pid

    async def stop(self) -> None:
        for client in (self.producer, self.results):
            if client is not None:
                await client.stop()
        if self.stack is not None:
            self.stack.process(WORKER).stop()
            self.stack.openbao.stop()
        await asyncio.to_thread(self.kafka.stop)

    # --- sending and receiving -------------------------------------------------------------

    async def send(self, record: Record, sent: Sent) -> None:
        assert self.producer is not None
        sent.at[record.upload_id] = time.monotonic()
        sent.user[record.upload_id] = record.user
        headers = [*self.codec.upload.headers(), ("upload_id", record.upload_id.encode())]
        await self.producer.send(HEALTH_SAMPLES, value=record.value, key=record.user.encode(), headers=headers)

    async def skip_to_end(self) -> None:
        assert self.results is not None
        await self.results.seek_to_end()

    async def collect(self, sent: Sent, *, until: float, arrivals: dict[str, list[float]],
                      sending: asyncio.Event | None = None) -> None:
        """Read results until ``until`` (monotonic) or until every sent upload has one (once
        ``sending`` is set, when given); each upload id named by a result gets the result's
        arrival time appended."""
        assert self.results is not None
        while time.monotonic() < until:
            batches = await self.results.getmany(timeout_ms=200, max_records=2000)
            now = time.monotonic()
            for messages in batches.values():
                for message in messages:
                    result = self.codec.schemas.decode(message.value, list(message.headers), self.codec.prediction)
                    for upload_id in result["source_upload_ids"]:
                        arrivals.setdefault(upload_id, []).append(now)
            if sending is not None and not sending.is_set():
                continue
            if sent.at and len(arrivals) >= len(sent.at) and set(sent.at) <= set(arrivals):
                return

    # --- the phases -------------------------------------------------------------------------

    async def prefill(self) -> dict[str, Any]:
        now = datetime.now(UTC)
        for user in self.users:  # this process's model must know each user's clock
            self.model.prefill(user, now)
        # encoding 20 million samples takes minutes on one core: two processes build the same
        # uploads (the model is deterministic in seed, user and now) and encode them
        chunks = [self.users[i:i + 50] for i in range(0, len(self.users), 50)]
        with ProcessPoolExecutor(max_workers=2) as pool:
            encoded = await asyncio.gather(*(asyncio.wrap_future(pool.submit(
                _encode_prefill, self.seed, chunk, now.isoformat())) for chunk in chunks))
        records = [record for chunk_records in encoded for record in chunk_records]
        report(f"prefill: {len(records)} uploads, {sum(r.samples for r in records):,} samples")
        await self.skip_to_end()
        sent, arrivals = Sent(), {}  # type: ignore[var-annotated]
        began = time.monotonic()
        for record in records:
            await self.send(record, sent)
        assert self.producer is not None
        await self.producer.flush()
        await self.collect(sent, until=time.monotonic() + 1800, arrivals=arrivals)
        missing = len(set(sent.at) - set(arrivals))
        if missing:
            raise RuntimeError(f"prefill: {missing} uploads without a result")
        return {"uploads": len(records), "samples": sum(r.samples for r in records),
                "seconds": time.monotonic() - began}

    def mix(self, count: int, *, exclude: Sequence[str] = ()) -> list[Record]:
        now = datetime.now(UTC)
        users = [u for u in self.users if u not in exclude]
        return [self.codec.record(upload, now) for upload in self.model.uploads(users, count, now)]

    async def capacity(self, count: int) -> dict[str, Any]:
        records = self.mix(count)
        restart_s = self.restart()
        await self.skip_to_end()
        sent, arrivals = Sent(), {}  # type: ignore[var-annotated]
        pid = self.worker_pid()
        cpu0, began = cpu_seconds(pid), time.monotonic()
        for record in records:
            await self.send(record, sent)
        assert self.producer is not None
        await self.producer.flush()
        await self.collect(sent, until=time.monotonic() + 1800, arrivals=arrivals)
        wall = max(max(times) for times in arrivals.values()) - began
        cpu = cpu_seconds(pid) - cpu0
        missing = set(sent.at) - set(arrivals)
        samples = sum(r.samples for r in records)
        kinds: dict[str, int] = {}
        for r in records:
            kinds[r.kind] = kinds.get(r.kind, 0) + 1
        return {"uploads": len(records), "samples": samples, "kinds": kinds, "missing": len(missing),
                "restart_ready_s": restart_s, "wall_s": wall, "worker_cpu_s": cpu,
                "uploads_per_s": len(records) / wall, "samples_per_s": samples / wall,
                "cpu_ms_per_upload": 1000 * cpu / len(records), "uploads_per_core_s": len(records) / cpu,
                "samples_per_core_s": samples / cpu, "worker_metrics": self.worker_metrics()}

    def restart(self, module: str | None = None, **env: str) -> float:
        self.stop_worker()
        return self.start_worker(module, **env)

    async def open_loop(self, rate: float, seconds: float, *, stalled: str | None = None,
                        rss: list[tuple[float, int]] | None = None) -> dict[str, Any]:
        """Uploads of the mix at ``rate`` per second (Poisson) for ``seconds``; with ``stalled``,
        that user also sends one upload a second, its device named after it."""
        rng = random.Random(7)
        # at most a minute of distinct uploads; a longer phase sends them again under new ids
        pool = self.mix(int(rate * min(seconds, POOL_SECONDS) * 1.2) + 100, exclude=[stalled] if stalled else [])
        stalled_records: list[Record] = []
        if stalled:
            today = datetime.now(UTC)
            stalled_records = [self.codec.record(self.model.next_upload(stalled, today), today, device=stalled)
                               for _ in range(int(seconds) + 5)]
        await self.skip_to_end()
        sent, arrivals = Sent(), {}  # type: ignore[var-annotated]
        pid = self.worker_pid()
        began = time.monotonic()
        sending = asyncio.Event()
        collector = asyncio.create_task(self.collect(sent, until=began + seconds + 60, arrivals=arrivals,
                                                     sending=sending))
        next_at, next_stalled, next_rss, index = began, began, began, 0
        cpu0 = cpu_seconds(pid)
        while (now := time.monotonic()) < began + seconds:
            if rss is not None and now >= next_rss:
                rss.append((now - began, rss_kib(pid)))
                next_rss += RSS_EVERY_S
            if stalled_records and now >= next_stalled:
                await self.send(stalled_records.pop(0), sent)
                next_stalled += 1.0
            if now >= next_at:
                record = pool[index % len(pool)]
                await self.send(record if index < len(pool) else record.renamed(), sent)
                index += 1
                next_at += rng.expovariate(rate)
                continue
            await asyncio.sleep(max(0.0, min(next_at, next_stalled) - time.monotonic()))
        assert self.producer is not None
        await self.producer.flush()
        sending.set()
        cpu = cpu_seconds(pid) - cpu0
        await collector
        if rss is not None:
            rss.append((time.monotonic() - began, rss_kib(pid)))
        latencies = {uid: (min(times) - sent.at[uid]) * 1000 for uid, times in arrivals.items() if uid in sent.at}
        others = [ms for uid, ms in latencies.items() if sent.user[uid] != stalled]
        mine = [ms for uid, ms in latencies.items() if sent.user[uid] == stalled]
        out = {"rate": rate, "seconds": seconds, "sent": len(sent.at), "results_named": len(latencies),
               "missing": len(set(sent.at) - set(arrivals)),
               "duplicates": len([uid for uid, times in arrivals.items() if uid in sent.at and len(times) > 1]),
               "latency_ms": summary(others), "worker_cpu_s": cpu,
               "cpu_ms_per_upload": 1000 * cpu / max(1, len(sent.at)), "worker_metrics": self.worker_metrics()}
        if stalled:
            out["stalled_user"] = {"sent": len([u for u in sent.user.values() if u == stalled]),
                                   "latency_ms": summary(mine)}
        return out

    def worker_metrics(self) -> dict[str, float]:
        import httpx

        wanted = ("circadia_worker_week_blocks_total", "circadia_worker_records_total",
                  "circadia_worker_predictions_total", "circadia_worker_model_refreshes_total",
                  "circadia_worker_dead_letters_total")
        text = httpx.get(f"http://127.0.0.1:{self.ports.worker_metrics}/metrics", timeout=5).text
        return {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
                if line.startswith(wanted) and not line.startswith("#")}


def _encode_prefill(seed: int, users: list[str], now_iso: str) -> list[Record]:
    now = datetime.fromisoformat(now_iso)
    model, codec = TrafficModel(seed=seed), Codec()
    return [codec.record(upload, now) for user in users for upload in model.prefill(user, now)]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def summary(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    a = np.asarray(values)
    return {"n": int(a.size), "p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)),
            "max": float(a.max())}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    root = Path(tempfile.mkdtemp(prefix="worker-pipeline-"))
    pipeline = Pipeline(root, args.seed, args.users)
    out: dict[str, Any] = {"machine": machine(), "workload": {
        "model": pipeline.model.describe(), "users": args.users, "seed": args.seed, "phases": phases,
        "load": args.load, "latency_seconds": args.latency_seconds, "soak_seconds": args.soak_seconds}}
    try:
        await pipeline.start()
        out["first_start_s"] = pipeline.start_worker()
        report(f"worker ready in {out['first_start_s']:.1f} s")
        out["prefill"] = await pipeline.prefill()
        report(f"prefill done: {out['prefill']}")
        capacity = None
        if "capacity" in phases or any(p in phases for p in ("latency", "stall", "soak")):
            out["capacity"] = await pipeline.capacity(args.capacity_uploads)
            capacity = out["capacity"]["uploads_per_s"]
            report(f"capacity: {capacity:.0f} uploads/s, {out['capacity']['cpu_ms_per_upload']:.2f} ms CPU each")
        rate = args.load * (capacity or 100.0)
        if "latency" in phases:
            out["latency"] = await pipeline.open_loop(rate, args.latency_seconds)
            report(f"latency at {rate:.0f}/s: {out['latency']['latency_ms']}")
        if "soak" in phases:
            rss: list[tuple[float, int]] = []
            out["soak"] = await pipeline.open_loop(rate, args.soak_seconds, rss=rss)
            after_minute = [kib for t, kib in rss if t >= 60]
            out["soak"]["rss_kib"] = rss
            if after_minute:
                out["soak"]["rss_growth"] = after_minute[-1] / after_minute[0] - 1
            report(f"soak: missing {out['soak']['missing']}, duplicates {out['soak']['duplicates']}, "
                   f"RSS growth {out['soak'].get('rss_growth', float('nan')):.1%}")
        if "stall" in phases:
            stalled = pipeline.users[0]
            out["stall_restart_s"] = pipeline.restart("bench.stalling_worker", BENCH_STALLED_USERS=stalled,
                                                      BENCH_STALL_SECONDS="5",
                                                      PYTHONPATH=str(Path(__file__).resolve().parents[1]))
            out["stall"] = await pipeline.open_loop(rate, args.latency_seconds, stalled=stalled)
            report(f"stall: others {out['stall']['latency_ms']}, stalled user {out['stall']['stalled_user']}")
    finally:
        await pipeline.stop()
        shutil.rmtree(root, ignore_errors=True)
    return out


def print_report(out: dict[str, Any]) -> None:
    for key, value in out["machine"].items():
        print(f"{key}: {value}")
    w = out["workload"]
    print(f"workload: bench/traffic.py TrafficModel(seed={w['seed']}) defaults, {w['users']} users with full "
          f"windows (prefill {out['prefill']['uploads']} uploads, {out['prefill']['samples']:,} samples, "
          f"{out['prefill']['seconds']:.0f} s)")
    if "capacity" in out:
        c = out["capacity"]
        print(f"\ncapacity: {c['uploads']} uploads of the mix {c['kinds']}, {c['samples']:,} samples, "
              f"worker restarted first ({c['restart_ready_s']:.1f} s to ready)")
        print(f"  wall {c['wall_s']:.1f} s: {c['uploads_per_s']:.0f} uploads/s, {c['samples_per_s']:,.0f} samples/s; "
              f"missing {c['missing']}")
        print(f"  worker CPU {c['worker_cpu_s']:.1f} s: {c['cpu_ms_per_upload']:.2f} ms per upload, "
              f"{c['uploads_per_core_s']:.0f} uploads/s per core, {c['samples_per_core_s']:,.0f} samples/s per core "
              f"(target >= 500 uploads/s per core: {'met' if c['uploads_per_core_s'] >= 500 else 'NOT met'})")
        print(f"  worker counters: {c['worker_metrics']}")
    for phase in ("latency", "soak", "stall"):
        if phase not in out:
            continue
        p = out[phase]
        lat = p["latency_ms"]
        print(f"\n{phase}: {p['rate']:.0f} uploads/s for {p['seconds']:.0f} s, {p['sent']} sent, missing "
              f"{p['missing']}, duplicates {p['duplicates']}; worker CPU {p['cpu_ms_per_upload']:.2f} ms per upload")
        if lat.get("n"):
            print(f"  latency (send -> result) p50 {lat['p50']:.0f} ms, p99 {lat['p99']:.0f} ms, max {lat['max']:.0f} "
                  f"ms (target p99 <= 500 ms: {'met' if lat['p99'] <= 500 else 'NOT met'})")
        if phase == "soak" and "rss_growth" in p:
            print(f"  worker RSS {p['rss_kib'][0][1] / 1024:.0f} -> {p['rss_kib'][-1][1] / 1024:.0f} MiB; growth "
                  f"after the first minute {p['rss_growth']:.1%} (target < 5 %: "
                  f"{'met' if p['rss_growth'] < 0.05 else 'NOT met'})")
        if phase == "stall":
            s = p["stalled_user"]
            print(f"  stalled user (model 5 s): {s['sent']} uploads, results {s['latency_ms']}")
        print(f"  worker counters: {p['worker_metrics']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--phases", default="capacity,latency,stall,soak")
    parser.add_argument("--capacity-uploads", type=int, default=4000)
    parser.add_argument("--load", type=float, default=0.5, help="fraction of the measured capacity")
    parser.add_argument("--latency-seconds", type=float, default=60)
    parser.add_argument("--soak-seconds", type=float, default=600)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    out = asyncio.run(run(args))
    if args.json:
        print(json.dumps(out, indent=2, default=str))
    else:
        print_report(out)


if __name__ == "__main__":
    main()
