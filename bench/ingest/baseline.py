"""The baseline: a raw aiokafka producer publishing the gateway's records for the same uploads,
as fast as it goes.

    python -m bench.ingest.baseline SPEC.json

The uploads are the gateway phase's: the same ``TrafficModel`` (parameters, seed and ``now``
from the spec), the same users spread over ``concurrency`` lanes the same way, each lane
drawing ``next_upload`` for its users in turn — the run starts this process after the
gateway phase and passes how many uploads each of its lanes drew (``lane_counts``). Drawing
a body costs the model ~1 µs a sample and building its record ~2-3 µs, against ~5 µs for
the Avro write: done inside the timed loop, they would charge the producer for work the
gateway's client does (drawing) and for a conversion that is not the gateway's path either.
So before the load the gateway phase's uploads are drawn again, ``pool`` of them chosen so
that they have its mix (``choose``: each kind's share, and its sizes at evenly spaced ranks),
and their ``io.circadia.health.HealthUpload`` records built (``workload.record_of``: a direct
conversion of the body, checked against ``UploadRequest.to_record`` for one upload of each
kind); the draw and the build are timed and reported apart. The load cycles through the pool.

Each send: the record with a fresh ``upload_id`` and ``received_at``, written with
``AvroSchema.write`` (as the gateway does: no separate validation pass), produced to
``health.samples.v1`` with ``circadia.kafka.create_producer``'s defaults (acks=all,
idempotent, zstd, ``linger_ms`` 5) and the gateway's ``max_request_size``, keyed by the user,
with the gateway's headers (schema, ``upload_id``, ``circadia.idempotency``, and a
``traceparent`` like the one its instrumentation adds), awaiting the acknowledgement before
the next — for ``warmup + duration`` seconds; the summary covers the last ``duration``.

No HTTP, no token, no JSON, no validation, no Redis: what is left of the gateway's path is
what this measures. Prints ``started``, ``bucket`` and ``done`` JSON lines; the result goes
to SPEC["results"].
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import run_loop
from bench.ingest.load import emit, report_buckets
from bench.ingest.stats import Recorder
from bench.ingest.workload import check_record_of, model, parse_now, record_of
from bench.traffic import Upload
from circadia.avro import SchemaSet
from circadia.kafka import PRODUCER_MAX_REQUEST_BYTES, create_producer
from circadia.topics import HEALTH_SAMPLES
from ingest_gateway.limits import upload_record_bound
from ingest_gateway.publisher import TRACE_HEADER_BYTES

UPLOAD_SCHEMA = "io.circadia.health.HealthUpload"


def gateway_request_size(max_samples: int) -> int:
    """The producer's ``max_request_size`` as the gateway's publisher sets it."""
    return max(PRODUCER_MAX_REQUEST_BYTES, upload_record_bound(max_samples) + TRACE_HEADER_BYTES)


def traceparent(rng: random.Random) -> tuple[str, bytes]:
    """A W3C ``traceparent`` header of the size the gateway's aiokafka instrumentation adds."""
    return "traceparent", f"00-{rng.getrandbits(128):032x}-{rng.getrandbits(64):016x}-01".encode()


Entry = tuple[bytes, str, int, dict[str, Any]]  # key, kind, samples, record


def _sequence(spec: dict[str, Any], counts: list[int]) -> Iterator[tuple[int, int, str, Upload]]:
    """The gateway phase's uploads: (lane, k, user, upload) for lane i's first ``counts[i]``
    draws — its users ``users[i::concurrency]`` in turn, as the closed loop draws them. Each
    user's stream is its own, so drawing lane by lane gives the same uploads."""
    traffic, now = model(spec["traffic"]), parse_now(spec["now"])
    users: list[str] = spec["users"]
    concurrency = len(counts)
    for lane, count in enumerate(counts):
        mine = users[lane::concurrency] or [users[lane % len(users)]]
        for k in range(count):
            user = mine[k % len(mine)]
            yield lane, k, user, traffic.next_upload(user, now)


def choose(drawn: list[tuple[int, int, str, int]], size: int) -> set[tuple[int, int]]:
    """About ``size`` of the drawn (lane, k, kind, samples): per kind its share of the draws, at
    evenly spaced ranks of its sample counts. The pool then has the gateway phase's mix — the
    kinds' shares and each kind's sizes — without the noise of a plain sample (backlogs are
    ~3 % of the uploads and ~85 % of the samples: 30 more or fewer would move the mean by 30 %)."""
    if len(drawn) <= size:
        return {(lane, k) for lane, k, _, _ in drawn}
    by_kind: dict[str, list[tuple[int, int, int]]] = {}
    for lane, k, kind, samples in drawn:
        by_kind.setdefault(kind, []).append((samples, lane, k))
    chosen: set[tuple[int, int]] = set()
    for entries in by_kind.values():
        entries.sort()
        quota = max(1, round(size * len(entries) / len(drawn)))
        for i in range(quota):
            _, lane, k = entries[min(len(entries) - 1, int((i + 0.5) * len(entries) / quota))]
            chosen.add((lane, k))
    return chosen


def build_pool(spec: dict[str, Any]) -> tuple[list[Entry], dict[str, Any]]:
    """The records the load cycles through, and what drawing and building them cost.

    With ``lane_counts`` (how many uploads each lane of the gateway phase drew), the gateway
    phase's uploads are drawn again and ``pool`` of them chosen (:func:`choose`); without, each
    of ``concurrency`` lanes' first ``pool / concurrency`` uploads. Drawn twice: once for the
    kinds and sizes, once more to build the chosen ones (keeping every body would hold
    gigabytes)."""
    concurrency: int = spec["concurrency"]
    counts: list[int] = spec.get("lane_counts") or [max(1, math.ceil(spec["pool"] / concurrency))] * concurrency
    drawn: list[tuple[int, int, str, int]] = []
    began = time.perf_counter()
    for lane, k, _, upload in _sequence(spec, counts):
        drawn.append((lane, k, upload.kind, upload.samples))
    draw_s = time.perf_counter() - began
    drawn_samples = sum(samples for *_, samples in drawn)
    chosen = choose(drawn, spec["pool"])
    now = parse_now(spec["now"])
    received = datetime.now(UTC)
    pool: list[Entry] = []
    build_s: list[float] = []
    checked: set[str] = set()
    for lane, k, user, upload in _sequence(spec, counts):
        if (lane, k) not in chosen:
            continue
        began = time.perf_counter()
        record = record_of(upload.body, user, received)
        build_s.append(time.perf_counter() - began)
        if upload.kind not in checked:
            check_record_of(upload, now)
            checked.add(upload.kind)
        pool.append((user.encode(), upload.kind, upload.samples, record))
    random.Random(spec.get("seed", 0)).shuffle(pool)  # the kinds spread over the run
    samples = sum(entry[2] for entry in pool)
    kinds: dict[str, int] = {}
    for entry in pool:
        kinds[entry[1]] = kinds.get(entry[1], 0) + 1
    drawn_kinds: dict[str, int] = {}
    for *_, kind, _ in drawn:
        drawn_kinds[kind] = drawn_kinds.get(kind, 0) + 1
    return pool, {
        "source": "the gateway phase's uploads" if spec.get("lane_counts") else "each lane's first uploads",
        "drawn": {"uploads": len(drawn), "samples": drawn_samples,
                  "mean_samples": round(drawn_samples / len(drawn), 1), "kinds": drawn_kinds},
        "uploads": len(pool), "samples": samples, "mean_samples": round(samples / len(pool), 1), "kinds": kinds,
        "checked_against_to_record": sorted(checked),
        "draw_ms": {"mean": round(draw_s / len(drawn) * 1000, 3),
                    "us_per_sample": round(draw_s / drawn_samples * 1e6, 2)},
        "build_ms": {"median": round(statistics.median(build_s) * 1000, 3),
                     "mean": round(sum(build_s) / len(build_s) * 1000, 3),
                     "us_per_sample": round(sum(build_s) / samples * 1e6, 2)},
    }


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    schema = SchemaSet.load()[UPLOAD_SCHEMA]
    base_headers = schema.headers()
    concurrency: int = spec["concurrency"]
    warmup, duration = float(spec["warmup"]), float(spec["duration"])
    pool, pool_info = build_pool(spec)
    max_samples = int(spec["traffic"]["max_samples"])
    producer = create_producer(spec["bootstrap_servers"], client_id="bench-ingest-baseline",
                               max_request_size=gateway_request_size(max_samples))
    await producer.start()
    recorder = Recorder()
    encode_s, encoded_samples, value_bytes = 0.0, 0, 0
    rng = random.Random(spec.get("seed", 0))
    loop = asyncio.get_running_loop()
    buckets: list[dict[str, Any]] = []
    try:
        t0 = loop.time()
        end = t0 + warmup + duration
        emit("started", wall=time.time(), cpu=time.process_time())
        reporter = asyncio.create_task(report_buckets(recorder, loop, t0, float(spec.get("bucket_seconds", 10)),
                                                      buckets))

        cursor = 0

        async def lane() -> None:
            nonlocal encode_s, encoded_samples, value_bytes, cursor
            while loop.time() < end:
                key, kind, samples, record = pool[cursor % len(pool)]
                cursor += 1
                started = loop.time()
                try:
                    upload_id = str(uuid.uuid4())
                    began = time.perf_counter()
                    value = schema.write(record | {"upload_id": upload_id, "received_at": datetime.now(UTC)})
                    encode_s += time.perf_counter() - began
                    encoded_samples += samples
                    value_bytes += len(value)
                    headers = [*base_headers, ("upload_id", upload_id.encode()), ("circadia.idempotency", b"ledger"),
                               traceparent(rng)]
                    await producer.send_and_wait(HEALTH_SAMPLES, value=value, key=key, headers=headers)
                    outcome = "ack"
                except Exception as exc:  # every failure is an outcome of its own
                    outcome = type(exc).__name__
                now = loop.time()
                recorder.add(now - t0, now - started, outcome, items=samples, kind=kind)

        await asyncio.gather(*(lane() for _ in range(concurrency)))
        load_end = loop.time() - t0
        reporter.cancel()
    finally:
        await producer.stop()
    sends = len(recorder)
    return {
        "concurrency": concurrency, "users": len(spec["users"]), "warmup_s": warmup, "duration_s": duration,
        "load_seconds": round(load_end, 2), "pool": pool_info,
        "encode": {"ms_per_upload": round(encode_s / sends * 1000, 3) if sends else None,
                   "us_per_sample": round(encode_s / encoded_samples * 1e6, 2) if encoded_samples else None,
                   "avro_bytes_per_sample": round(value_bytes / encoded_samples, 1) if encoded_samples else None},
        "window": recorder.summary(warmup, warmup + duration),
        "whole": recorder.summary(0.0, load_end + 1e-6),
        "by_kind": recorder.by_kind(warmup, warmup + duration),
        "buckets": buckets,
    }


async def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    result = await run(spec)
    Path(spec["results"]).write_text(json.dumps(result))
    emit("done", results=spec["results"], cpu=time.process_time())


if __name__ == "__main__":
    run_loop(main(sys.argv[1]))
