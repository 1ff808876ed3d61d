"""The prediction worker's restart after ``kill -9``: time to ready and to its first new result, with
N users' full windows in its table (faust's ``memory://`` store).

The numbers in docs/architecture.md for faust's ``rocksdb://`` store were measured with this benchmark
at commit 7769347, when the store was a worker setting (``CIRCADIA_WORKER_STORE``). The setting is gone:
faust 0.15.3's RocksDB store writes only inside a stream event (``Store._set`` asserts
``current_event()``), and the worker writes windows from its flush timer and its background model runs.

    PYTHONPATH=. .venv/bin/python -m bench.worker_restart [--users 1000 10000] [--stores memory://]
        [--runs 3] [--distinct 200] [--seed 11] [--settle 5] [--session-timeout S] [--static-membership]
        [--workdir DIR] [--json]

Workload (bench/traffic.py, ``TrafficModel(seed=--seed)`` at its defaults; ``now`` = the minute the run
starts):

- Windows: ``--distinct`` users (``restart-user-00000`` ...) each get their full 7-day window built as
  the worker builds it: the user's prefill week (``TrafficModel.prefill(user, now)``, 7 uploads of a
  day) turned into the gateway's Avro record (``UploadRequest.validate_json``, ``to_record``, written
  with the schema headers), decoded as the worker decodes it and applied with ``UserWindow.apply``
  (bench/worker_apply.py ``filled()``, with this run's ``now``). The profiles are the model's mix
  (watch, band, RADAR-style phone). Building one takes about half a second (the gateway's validation
  and the Avro round trip dominate), so the N users of a configuration reuse these windows: user i
  holds the bytes of window ``i % distinct``. The worker never compares users' windows, so a restore
  reads and stores as many bytes, and the rescan after it looks at as many windows, as for N distinct
  users of these sizes.
- The changelog: for each configuration a fresh app id (``CIRCADIA_WORKER_APP_ID``), and its table's
  changelog topic ``<app id>-user-windows-changelog`` created as faust creates it (6 partitions,
  replication 1, ``cleanup.policy=compact``, ``max.message.bytes`` = ``SAMPLES_MAX_MESSAGE_BYTES``),
  then one record per user: key = the user id's bytes, value = ``UserWindow.to_bytes()``, partition =
  aiokafka's default partitioner (murmur2 of the key, as health.samples.v1 and faust's
  ``use_partitioner=True``), produced by ``circadia.kafka.create_producer`` (zstd, acks=all, as the
  worker's producer compresses). Recorded: records, key + value bytes, and the topic's log segments
  on the broker's disk.
- Probe uploads: the next ongoing uploads of user 0 (``next_upload``; kinds other than small and radar
  are skipped so every probe is a small upload), as the gateway publishes them to health.samples.v1:
  key = user id, the Avro value, the schema headers and ``upload_id``.

Method, per store x N, each on a fresh broker (a ``LocalKafka`` of its own on 127.0.0.1 and free
ports, topics from ``ensure_topics``: a new consumer group reads health.samples.v1 from its start, so
one configuration's probes must not reach the next one's worker):

1. Fill the changelog (above).
2. Cold start: start ``python -m prediction_worker`` with ``LocalStack.environment()`` (external
   Kafka; a data dir of its own, the worker's defaults otherwise:
   session timeout 30 s, debounce 0, no model). Wait until it is ready (its metrics port reports
   ``circadia_worker_assigned_partitions`` > 0, as ``circadia up`` waits), then produce a probe and
   wait for its result on predictions.v1 (a consumer on all partitions from their ends, matching the
   probe's ``upload_id`` in the decoded ``source_upload_ids``): the restore is done.
3. ``--runs`` times: wait ``--settle`` s (faust commits offsets every 2.8 s and acknowledges its
   changelog writes meanwhile), SIGKILL the worker's process group, start it again with the same
   settings and data dir, and produce a probe at once (its acknowledgement time is recorded). From
   the process start (``time.monotonic`` before ``Popen``) measure (a) ready: the first metrics scrape
   with assigned partitions (polled every 50 ms) and (b) the first result: arrival of the probe's
   prediction at the consumer; then (c) a second probe produced as soon as that result arrived, from
   its acknowledgement to its result (what the worker still does after its first result delays it).
   Then the worker's RSS (``VmRSS`` of /proc/<pid>/status, when the result arrived and after the
   settle) and its peak (``VmHWM``). The cold start measures (c) too.
4. The worker's log of each start (JSON lines): faust's recovery messages (which changelog
   offsets it read from and to, its "Restore complete" / "Worker ready"), with their times from the
   process start, mode's warnings of the flush timer running over its interval (after a rebalance
   the worker's first flush looks at every window for pending uploads, on the event loop), and
   every WARNING or ERROR.

Reported per configuration: each run and the median of (a) and (b), (b) - (a) (what the store's
restore and the first upload add once the group has assigned the partitions), the median of (b) / N
(cost per user), RSS, the changelog's size. A SIGKILLed member stays in the consumer group until its
session times out (30 s, ``--session-timeout`` sets ``CIRCADIA_WORKER_SESSION_TIMEOUT_SECONDS``), so
the restarted worker's join waits for that first; the cold start shows the time without it. With
``--static-membership`` every start of a configuration's worker has the same
``CIRCADIA_WORKER_INSTANCE_ID`` (Kafka's ``group.instance.id``), so a restart takes the dead member's
place instead.

Not measured: a restart after a clean stop, standby replicas, more than one worker, the PAT model.
Times are wall-clock on this machine with the broker on the same cores, so they include the
broker's share of the CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

import prediction_worker
from bench.common import reporter
from bench.fanout.measure import package_version
from bench.traffic import DEVICES, TrafficModel, Upload
from bench.worker_apply import Codec, Wire, filled
from bench.worker_apply import machine as apply_machine
from circadia.kafka import create_producer, ensure_topics
from circadia.topics import HEALTH_SAMPLES, PREDICTIONS, SAMPLES_MAX_MESSAGE_BYTES, TOPICS
from circadia_dev.devstack.kafka import LocalKafka, kafka_jars
from circadia_dev.devstack.stack import LocalStack, Ports
from ingest_gateway.models import UploadRequest, ValidationRules
from prediction_worker.store import WINDOWS_TABLE

WORKER = "prediction-worker"
PARTITIONS = {spec.name: spec.partitions for spec in TOPICS}
STORES = ("memory://",)
POLL_S = 0.05
STEP_TIMEOUT_S = 900.0
# faust's recovery messages worth keeping from the worker's log (what it read, when it was done)
RECOVERY = re.compile(r"Highwater|offsets at start of reading|Restoring state|Done reading|Restore complete|"
                      r"Worker ready|Recovery|Seek stream|opening partition|Fetcher|Resuming flow|records",
                      re.IGNORECASE)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RestartCodec(Codec):
    """bench.worker_apply's codec at this run's ``now`` instead of its fixed instant."""

    def __init__(self, now: datetime) -> None:
        super().__init__()
        self.now = now
        self.rules = ValidationRules(now=now)

    def wire(self, upload: Upload) -> Wire:
        parsed = UploadRequest.validate_json(json.dumps(upload.body), self.rules)
        value = self.upload_schema.write(parsed.to_record(upload.user, self.now))
        return Wire(upload.kind, upload.samples, value, self.upload_schema.headers())


def user_name(index: int) -> str:
    return f"restart-user-{index:05d}"


@dataclass
class Windows:
    """The distinct windows (bytes) and what they are."""

    values: list[bytes]
    profiles: list[str]
    build_s: float

    def describe(self) -> dict[str, Any]:
        sizes = sorted(len(v) for v in self.values)
        mix = {p: self.profiles.count(p) for p in sorted(set(self.profiles))}
        return {"distinct": len(self.values), "profiles": mix, "bytes_min": sizes[0],
                "bytes_median": int(statistics.median(sizes)), "bytes_max": sizes[-1],
                "bytes_mean": sum(sizes) / len(sizes), "build_s": self.build_s}


def build_windows(codec: Codec, seed: int, now: datetime, distinct: int) -> Windows:
    model = TrafficModel(seed=seed)
    by_model = {device[0]: profile for profile, device in DEVICES.items()}
    began = time.perf_counter()
    values, profiles = [], []
    for index in range(distinct):
        prefill = model.prefill(user_name(index), now)
        profiles.append(by_model[prefill[0].body["device"]["model"]])
        values.append(filled(codec, prefill).to_bytes())
    return Windows(values, profiles, time.perf_counter() - began)


def changelog_topic(app_id: str) -> str:
    return f"{app_id}-{WINDOWS_TABLE}-changelog"


async def fill_changelog(bootstrap: str, topic: str, users: int, windows: Windows) -> dict[str, Any]:
    """Create the changelog topic as faust would and write one window per user into it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-restart-admin")
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS[HEALTH_SAMPLES], 1, topic_configs={
            "cleanup.policy": "compact", "max.message.bytes": str(SAMPLES_MAX_MESSAGE_BYTES)})])
    finally:
        await admin.close()
    producer = create_producer(bootstrap, client_id="bench-restart-fill")
    await producer.start()
    began = time.perf_counter()
    key_bytes = value_bytes = 0
    try:
        pending = []
        for index in range(users):
            key, value = user_name(index).encode(), windows.values[index % len(windows.values)]
            key_bytes += len(key)
            value_bytes += len(value)
            pending.append(await producer.send(topic, key=key, value=value))
            if len(pending) >= 500:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
        await producer.flush()
    finally:
        await producer.stop()
    return {"topic": topic, "records": users, "key_bytes": key_bytes, "value_bytes": value_bytes,
            "produce_s": time.perf_counter() - began}


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS[HEALTH_SAMPLES])]
        ends = await consumer.end_offsets(tps)
        return {tp.partition: int(offset) for tp, offset in sorted(ends.items(), key=lambda item: item[0].partition)}
    finally:
        await consumer.stop()


def disk_bytes(kafka: LocalKafka, topic: str) -> int:
    """The topic's log segments on the broker's disk (all partitions)."""
    return sum(path.stat().st_size for path in kafka.data_dir.glob(f"{topic}-*/*.log"))


def proc_status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of ``pid`` in MiB (empty when it is gone)."""
    out = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                out[name] = int(value.split()[0]) / 1024
    return out


class ResultWatcher:
    """Predictions as they arrive on predictions.v1 (all partitions, from their ends when started):
    when the result naming an expected upload id (in ``source_upload_ids``) arrived. Only uploads
    expected before they were sent count, so a result from an earlier run cannot match."""

    def __init__(self, bootstrap: str, codec: Codec) -> None:
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                          fetch_max_wait_ms=50, client_id="bench-restart-results")
        self._codec = codec
        self._waiting: dict[str, asyncio.Future[float]] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        tps = [TopicPartition(PREDICTIONS, p) for p in range(PARTITIONS[PREDICTIONS])]
        self._consumer.assign(tps)
        await self._consumer.seek_to_end(*tps)
        for tp in tps:
            await self._consumer.position(tp)
        self._task = asyncio.create_task(self._read())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    async def _read(self) -> None:
        schema = self._codec.prediction_schema
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            arrived = time.monotonic()
            for messages in batches.values():
                for message in messages:
                    record = self._codec.schemas.decode(message.value, list(message.headers), schema)
                    for upload_id in record["source_upload_ids"]:
                        future = self._waiting.get(upload_id)
                        if future is not None and not future.done():
                            future.set_result(arrived)

    def expect(self, upload_id: str) -> None:
        self._waiting[upload_id] = asyncio.get_running_loop().create_future()

    async def arrival(self, upload_id: str, timeout: float, worker: WorkerUnderTest) -> float:
        """``time.monotonic()`` when the result naming ``upload_id`` arrived (fails if the worker dies)."""
        future = self._waiting[upload_id]
        deadline = time.monotonic() + timeout
        while True:
            try:
                arrived = await asyncio.wait_for(asyncio.shield(future), 0.5)
                del self._waiting[upload_id]
                return arrived
            except TimeoutError:
                if worker.process.exited_early():
                    raise RuntimeError(f"the worker exited before its result:\n{worker.process.log_tail()}") from None
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no result for {upload_id} after {timeout:.0f} s:\n"
                                       f"{worker.process.log_tail()}") from None


class Probes:
    """User 0's next small uploads, as the gateway publishes them to health.samples.v1."""

    def __init__(self, bootstrap: str, codec: Codec, seed: int, now: datetime) -> None:
        self._producer = create_producer(bootstrap, client_id="bench-restart-probe")
        self._codec = codec
        self._model = TrafficModel(seed=seed)
        self._now = now
        self.user = user_name(0)
        self._model.prefill(self.user, now)  # the same stream the window was filled from

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    def next(self) -> tuple[str, Wire]:
        while (upload := self._model.next_upload(self.user, self._now)).kind not in ("small", "radar"):
            pass
        return str(upload.body["upload_id"]), self._codec.wire(upload)

    async def send(self, upload_id: str, wire: Wire) -> None:
        await self._producer.send_and_wait(HEALTH_SAMPLES, key=self.user.encode(), value=wire.value,
                                           headers=[*wire.headers, ("upload_id", upload_id.encode())])


@dataclass
class Start:
    """One start of the worker, times in seconds from the process start."""

    kind: str  # "cold" or "restart"
    pid: int = 0
    probe_sent_s: float = 0.0
    ready_s: float = 0.0
    result_s: float = 0.0
    second_result_s: float = 0.0
    second_latency_s: float = 0.0  # from its acknowledgement to its result
    probe_samples: int = 0
    rss_at_result_mib: float = 0.0
    rss_settled_mib: float = 0.0
    peak_rss_mib: float = 0.0
    recovery: list[str] = field(default_factory=list)
    recovery_summary: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def restore_s(self) -> float:
        return self.result_s - self.ready_s


class WorkerUnderTest:
    """The prediction worker of one configuration: started, SIGKILLed and started again."""

    def __init__(self, root: Path, bootstrap: str, store: str, app_id: str, session_timeout: float | None,
                 instance_id: str | None) -> None:
        if store != "memory://":
            raise ValueError(f"the worker has no store setting: it runs {STORES[0]}")
        overrides = [("CIRCADIA_WORKER_APP_ID", app_id)]
        if session_timeout is not None:
            overrides.append(("CIRCADIA_WORKER_SESSION_TIMEOUT_SECONDS", f"{session_timeout:g}"))
        if instance_id is not None:
            overrides.append(("CIRCADIA_WORKER_INSTANCE_ID", instance_id))
        self.stack = LocalStack(
            root, Ports(kafka=0, kafka_controller=0, redis=0, openbao=free_port(), openbao_cluster=free_port(),
                        worker_metrics=free_port()),
            external_kafka=bootstrap, external_redis="redis://127.0.0.1:1/0", observability=False,
            overrides=tuple(overrides))
        self.stack.issuer  # noqa: B018  # the dev key is generated here, not inside a timed start
        self.stack.start_keys()  # the key service too: a worker's start is timed, OpenBao's is not
        self.process = self.stack.process(WORKER)
        self.metrics_url = f"http://127.0.0.1:{self.stack.ports.worker_metrics}/metrics"
        self._log_offset = 0
        self._started_wall = 0.0

    @property
    def data_dir(self) -> Path:
        return Path(self.stack.environment()["CIRCADIA_WORKER_DATA_DIR"])

    def start(self) -> float:
        """Start the worker; ``time.monotonic()`` just before the process was created."""
        log = self.process.log_file
        self._log_offset = log.stat().st_size if log.exists() else 0
        self._started_wall = time.time()
        began = time.monotonic()
        self.stack.start_service(WORKER, wait=False)
        return began

    def pid(self) -> int:
        pid = self.process.pid()
        if pid is None:
            raise RuntimeError(f"the worker is not running:\n{self.process.log_tail()}")
        return pid

    def kill(self) -> None:
        self.process.kill()  # SIGKILL to the process group, waits until it is gone

    def stop(self) -> None:
        self.process.stop()

    def close(self) -> None:
        """Stop the worker and the key service the stack started."""
        self.process.stop()
        self.stack.openbao.stop()

    async def ready(self, timeout: float) -> float:
        """``time.monotonic()`` of the first scrape reporting assigned partitions."""
        deadline = time.monotonic() + timeout
        pattern = re.compile(r"^circadia_worker_assigned_partitions (\S+)$", re.M)
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    response = await client.get(self.metrics_url)
                    match = pattern.search(response.text)
                    if response.status_code == 200 and match is not None and float(match.group(1)) > 0:
                        return time.monotonic()
                if self.process.exited_early():
                    raise RuntimeError(f"the worker exited during start-up:\n{self.process.log_tail()}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the worker not ready after {timeout:.0f} s:\n{self.process.log_tail()}")
                await asyncio.sleep(POLL_S)

    def log_of_start(self) -> tuple[list[str], dict[str, Any], list[str]]:
        """faust's recovery lines, what they say (``recovery_summary``) and the WARNING/ERROR lines
        of the latest start's log, each line as '+<seconds from the start> <level> <message>'."""
        try:
            with open(self.process.log_file, "rb") as log:
                log.seek(self._log_offset)
                lines = log.read().decode(errors="replace").splitlines()
        except FileNotFoundError:
            return [], {}, []
        recovery, problems = [], []
        summary: dict[str, Any] = {"recoveries": 0, "offsets_to_read": 0, "reads_from": {}, "highwaters": {}}
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                if line.strip():
                    problems.append(f"(not JSON) {line.strip()[:300]}")
                continue
            at = datetime.fromisoformat(entry["ts"]).timestamp() - self._started_wall
            text = f"+{at:.2f}s {entry.get('level')} {entry.get('logger')}: {entry.get('msg', '')}"
            if entry.get("exc"):
                text += f" | {str(entry['exc']).splitlines()[-1]}"
            if entry.get("level") in ("WARNING", "ERROR", "CRITICAL"):
                problems.append(text[:600])
            elif RECOVERY.search(str(entry.get("msg", ""))):
                recovery.append(text[:1500])
            note_recovery(summary, str(entry.get("msg", "")), at)
        return recovery, summary, problems


FLUSH_STALL = re.compile(r"flush_pending is overlapping \(interval=\S+ runtime=([0-9.]+)\)")
TABLE_ROW = re.compile(r"^\|\s*\S+\s*\|\s*(\d+)\s*\|\s*(-?\d+)\s*\|$", re.M)


def note_recovery(summary: dict[str, Any], message: str, at: float) -> None:
    """faust's recovery tables: the highwater of each changelog partition and the offset reading
    starts at (-1: from the beginning, so highwater + 1 offsets; equal: nothing to read); when
    recovery ended; and mode's warnings of a flush timer that ran over its interval (the rescan of
    every window after a rebalance, on the event loop)."""
    rows = {int(p): int(o) for p, o in TABLE_ROW.findall(message)}
    if message.startswith("[^---") and "Highwater for active" in message:
        summary["highwaters"] = rows
    elif "active offsets at start of reading" in message:
        summary["reads_from"] = rows
        summary["recoveries"] += 1
        summary["offsets_to_read"] += sum(max(0, summary["highwaters"].get(p, o) - o) for p, o in rows.items())
    stall = FLUSH_STALL.search(message)
    if stall is not None:
        summary.setdefault("flush_stalls", []).append({"ended_s": round(at, 3), "runtime_s": float(stall.group(1))})
    for key, text in (("restore_complete_s", "Restore complete!"), ("worker_ready_s", "Worker ready"),
                      ("done_reading_s", "Done reading from changelog")):
        if text in message:
            summary[key] = round(at, 3)


async def one_start(worker: WorkerUnderTest, probes: Probes, results: ResultWatcher, kind: str,
                    settle: float, timeout: float) -> Start:
    upload_id, wire = probes.next()
    start = Start(kind, probe_samples=wire.samples)
    results.expect(upload_id)
    began = worker.start()
    start.pid = worker.pid()
    ready_task = asyncio.create_task(worker.ready(timeout))
    try:
        if kind == "cold":  # the brief's order for the first start: ready, then the probe
            start.ready_s = await ready_task - began
        await probes.send(upload_id, wire)
        start.probe_sent_s = time.monotonic() - began
        arrived = await results.arrival(upload_id, timeout, worker)
        start.result_s = arrived - began
        start.rss_at_result_mib = proc_status(start.pid).get("VmRSS", 0.0)
        if kind != "cold":
            start.ready_s = await ready_task - began
        # a second upload as soon as the first result is in: whatever the worker still does after its
        # first result (the rescan of every window for pending uploads) delays this one
        second_id, second = probes.next()
        results.expect(second_id)
        sent = time.monotonic()
        await probes.send(second_id, second)
        arrived = await results.arrival(second_id, timeout, worker)
        start.second_result_s, start.second_latency_s = arrived - began, arrived - sent
    finally:
        ready_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await ready_task
    await asyncio.sleep(settle)
    status = proc_status(start.pid)
    start.rss_settled_mib, start.peak_rss_mib = status.get("VmRSS", 0.0), status.get("VmHWM", 0.0)
    start.recovery, start.recovery_summary, start.problems = worker.log_of_start()
    return start


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


async def configuration(root: Path, kafka: LocalKafka, codec: RestartCodec, windows: Windows, store: str,
                        users: int, args: argparse.Namespace, report: Any) -> dict[str, Any]:
    """One store x N on ``kafka`` (a broker of its own: a new consumer group reads health.samples.v1
    from the start, so probes of another configuration must not be there)."""
    bootstrap = kafka.bootstrap_servers
    await ensure_topics(bootstrap)
    name = root.name
    app_id = f"circadia-bench-restart-{name}-{uuid.uuid4().hex[:6]}"
    topic = changelog_topic(app_id)
    report(f"{name}: filling {topic} with {users:,} windows")
    changelog = await fill_changelog(bootstrap, topic, users, windows)
    changelog["end_offsets"] = await end_offsets(bootstrap, topic)
    changelog["disk_bytes"] = disk_bytes(kafka, topic)
    report(f"{name}: changelog {changelog['value_bytes'] / 2**20:.1f} MiB of values, "
           f"{changelog['disk_bytes'] / 2**20:.1f} MiB on disk, ends {changelog['end_offsets']}")
    worker = WorkerUnderTest(root, bootstrap, store, app_id, args.session_timeout,
                             f"bench-restart-{name}" if args.static_membership else None)
    results = ResultWatcher(bootstrap, codec)
    probes = Probes(bootstrap, codec, args.seed, codec.now)
    starts: list[Start] = []
    await results.start()
    await probes.start()
    try:
        cold = await one_start(worker, probes, results, "cold", args.settle, STEP_TIMEOUT_S)
        report(f"{name}: cold start ready {cold.ready_s:.2f} s, result {cold.result_s:.2f} s, "
               f"peak RSS {cold.peak_rss_mib:.0f} MiB")
        starts.append(cold)
        for run in range(1, args.runs + 1):
            worker.kill()
            restart = await one_start(worker, probes, results, "restart", args.settle, STEP_TIMEOUT_S)
            report(f"{name}: restart {run} ready {restart.ready_s:.2f} s, result {restart.result_s:.2f} s, "
                   f"second upload {restart.second_latency_s:.2f} s, peak RSS {restart.peak_rss_mib:.0f} MiB")
            starts.append(restart)
        local_db = dir_bytes(worker.data_dir)
    finally:
        worker.close()
        await probes.stop()
        await results.stop()
    restarts = [s for s in starts if s.kind == "restart"]
    return {
        "store": store, "users": users, "app_id": app_id, "changelog": changelog, "local_data_bytes": local_db,
        "starts": [asdict(s) | {"restore_s": s.restore_s} for s in starts],
        "median": {"ready_s": median([s.ready_s for s in restarts]),
                   "result_s": median([s.result_s for s in restarts]),
                   "second_result_s": median([s.second_result_s for s in restarts]),
                   "second_latency_s": median([s.second_latency_s for s in restarts]),
                   "restore_s": median([s.restore_s for s in restarts]),
                   "per_user_ms": 1000 * median([s.result_s for s in restarts]) / users,
                   "restore_per_user_ms": 1000 * median([s.restore_s for s in restarts]) / users,
                   "peak_rss_mib": median([s.peak_rss_mib for s in restarts]),
                   "rss_settled_mib": median([s.rss_settled_mib for s in restarts])},
    }


def machine() -> dict[str, str]:
    jars = sorted(path.name for path in kafka_jars().glob("kafka_*.jar") if "-" in path.name)
    return apply_machine() | {
        "faust-streaming": package_version("faust-streaming"), "aiokafka": package_version("aiokafka"),
        "rocksdict": package_version("rocksdict"), "kafka broker": jars[0] if jars else "unknown"}


def print_report(out: dict[str, Any]) -> None:
    for key, value in out["machine"].items():
        print(f"{key}: {value}")
    print(f"workload: {out['workload']}")
    print(f"worker code: {out.get('worker_code')}")
    w = out["windows"]
    print(f"windows: {w['distinct']} distinct (profiles {w['profiles']}), bytes min {w['bytes_min']:,} / "
          f"median {w['bytes_median']:,} / max {w['bytes_max']:,}, built in {w['build_s']:.0f} s")
    print(f"\n{'store':<11}{'users':>7}{'changelog MiB':>14}{'on disk':>9}  {'cold ready/result s':>20}  "
          f"{'restart ready s (runs)':<24}{'med':>6}  {'first result s (runs)':<24}{'med':>6}"
          f"{'result-ready':>13}{'ms/user':>9}{'2nd upload s':>13}{'peak RSS MiB':>13}{'RSS MiB':>9}")
    for c in out["configurations"]:
        cold = c["starts"][0]
        restarts = [s for s in c["starts"] if s["kind"] == "restart"]
        m = c["median"]
        ready = " ".join(f"{s['ready_s']:.2f}" for s in restarts)
        result = " ".join(f"{s['result_s']:.2f}" for s in restarts)
        print(f"{c['store']:<11}{c['users']:>7,}{c['changelog']['value_bytes'] / 2**20:>14.1f}"
              f"{c['changelog']['disk_bytes'] / 2**20:>9.1f}  {cold['ready_s']:>9.2f} /{cold['result_s']:>8.2f}  "
              f"{ready:<24}{m['ready_s']:>6.2f}  {result:<24}{m['result_s']:>6.2f}{m['restore_s']:>13.2f}"
              f"{m['per_user_ms']:>9.3f}{m['second_latency_s']:>13.2f}{m['peak_rss_mib']:>13.0f}"
              f"{m['rss_settled_mib']:>9.0f}")
    print("\nready = first metrics scrape with assigned partitions; first result = the probe's prediction "
          "arrived; both from the process start. result-ready, ms/user (first result / users) and 2nd upload "
          "(a second probe sent when the first result arrived: its acknowledgement to its result) are medians "
          "of the restarts; RSS after the settle, peak = VmHWM.")
    for c in out["configurations"]:
        print(f"\n{c['store']} {c['users']:,} users: local data dir {c['local_data_bytes'] / 2**20:.1f} MiB")
        for index, s in enumerate(c["starts"]):
            label = "cold start" if s["kind"] == "cold" else f"restart {index}"
            print(f"  {label}: probe acknowledged at {s['probe_sent_s']:.2f} s, ready {s['ready_s']:.2f} s, "
                  f"result {s['result_s']:.2f} s, second upload's result {s['second_result_s']:.2f} s "
                  f"({s['second_latency_s']:.2f} s after it was sent), RSS at result {s['rss_at_result_mib']:.0f} MiB")
            r = s["recovery_summary"]
            print(f"    recovery: {r.get('offsets_to_read', '?')} changelog offsets to read (reading from "
                  f"{r.get('reads_from')}, highwaters {r.get('highwaters')}); done reading "
                  f"{r.get('done_reading_s', '-')} s, restore complete {r.get('restore_complete_s', '-')} s, "
                  f"worker ready {r.get('worker_ready_s', '-')} s")
            for stall in r.get("flush_stalls", []):
                print(f"    flush timer ran {stall['runtime_s']:.2f} s on the event loop, "
                      f"until {stall['ended_s']:.2f} s")
            for line in s["problems"]:
                print(f"    ! {line}")


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def workdir(path: str | None) -> Iterator[Path]:
    if path:
        Path(path).mkdir(parents=True, exist_ok=True)
        yield Path(path)
        return
    folder = Path(tempfile.mkdtemp(prefix="worker-restart-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run(args: argparse.Namespace, root: Path, report: Any) -> dict[str, Any]:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    codec = RestartCodec(now)
    report(f"building {args.distinct} distinct windows (about 0.5 s each)")
    windows = build_windows(codec, args.seed, now, args.distinct)
    out: dict[str, Any] = {
        "machine": machine(),
        "command": " ".join([Path(sys.executable).name, "-m", "bench.worker_restart", *sys.argv[1:]]),
        "workload": (f"bench/traffic.py TrafficModel(seed={args.seed}) defaults, now {now.isoformat()}; "
                     f"{args.distinct} distinct full 7-day windows from prefill weeks, user i holds window "
                     f"i % {args.distinct}; users {args.users}, stores {args.stores}; a cold start then "
                     f"{args.runs} kill -9 restarts each, {args.settle:g} s settle before each kill; "
                     "a fresh loopback broker per configuration; worker session timeout "
                     + (f"{args.session_timeout:g} s" if args.session_timeout else "30 s (its default)")
                     + ("; static membership (CIRCADIA_WORKER_INSTANCE_ID)" if args.static_membership
                        else "; dynamic membership (no CIRCADIA_WORKER_INSTANCE_ID)")),
        "worker_code": str(Path(prediction_worker.__file__).parent),
        "windows": windows.describe(), "configurations": [],
    }
    for users in args.users:
        for store in args.stores:
            folder = root / f"{store.removesuffix('://')}-{users}"
            kafka = LocalKafka(folder / "kafka", port=free_port(), controller_port=free_port())
            report(f"{folder.name}: kafka starting on {kafka.bootstrap_servers}")
            try:
                kafka.start()  # outside the event loop: it polls the broker with asyncio.run
                out["configurations"].append(
                    asyncio.run(configuration(folder, kafka, codec, windows, store, users, args, report)))
            finally:
                kafka.stop()
                report(f"{folder.name}: kafka stopped")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--stores", nargs="+", choices=STORES, default=list(STORES))
    parser.add_argument("--runs", type=int, default=3, help="kill -9 restarts per configuration")
    parser.add_argument("--distinct", type=int, default=200, help="distinct windows built from prefill weeks")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after a result before the next kill")
    parser.add_argument("--session-timeout", type=float,
                        help="CIRCADIA_WORKER_SESSION_TIMEOUT_SECONDS (default: the worker's, 30 s)")
    parser.add_argument("--static-membership", action="store_true",
                        help="set CIRCADIA_WORKER_INSTANCE_ID (Kafka's group.instance.id), the same for every "
                             "start of a configuration's worker")
    parser.add_argument("--workdir", help="keep the broker, data dirs and worker logs here (default: a temp dir)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _terminate)
    report = reporter()
    with workdir(args.workdir) as root:
        out = run(args, root, report)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print_report(out)


if __name__ == "__main__":
    main()
