"""The baseline: a raw aiokafka producer publishing the gateway's records, as fast as it goes.

    python -m bench.ingest.baseline SPEC.json

The producer is the gateway's: ``circadia.kafka.create_producer`` (acks=all, idempotent,
``linger_ms`` 5) with the gateway's ``max_request_size``. ``concurrency`` tasks each build
the next ``io.circadia.health.HealthUpload`` record of one of their users (the record the
gateway builds for the same upload body), encode it with ``circadia.avro`` (validate, then
schemaless write, as the gateway does), send it to ``health.samples.v1`` with the gateway's
headers and key, and await the broker's acknowledgement before the next one — for
``warmup + duration`` seconds; the summary covers the last ``duration``.

No HTTP, no token, no validation of a JSON body, no Redis: what is left of the gateway's
path is what this measures. Prints ``started`` and ``done`` JSON lines; the result goes to
SPEC["results"].
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import run_loop
from bench.ingest.load import emit
from bench.ingest.stats import Recorder
from bench.ingest.workload import Uploads
from circadia.avro import SchemaSet
from circadia.kafka import create_producer
from circadia.topics import HEALTH_SAMPLES

UPLOAD_SCHEMA = "io.circadia.health.HealthUpload"
GATEWAY_MAX_REQUEST_SIZE = 8 * 1024 * 1024  # ingest_gateway.publisher


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    schema = SchemaSet.load()[UPLOAD_SCHEMA]
    base_headers = schema.headers()
    uploads = Uploads(samples=spec["samples"], seed=spec.get("seed", 2))
    users: list[str] = spec["users"]
    concurrency: int = spec["concurrency"]
    warmup, duration = float(spec["warmup"]), float(spec["duration"])
    producer = create_producer(spec["bootstrap_servers"], client_id="bench-ingest-baseline",
                               max_request_size=GATEWAY_MAX_REQUEST_SIZE)
    await producer.start()
    recorder = Recorder()
    encode_ms = _encode_cost(schema, uploads, users[0])
    loop = asyncio.get_running_loop()
    try:
        t0 = loop.time()
        end = t0 + warmup + duration
        emit("started", wall=time.time(), cpu=time.process_time())

        async def lane(index: int) -> None:
            mine = users[index::concurrency] or [users[index % len(users)]]
            k = 0
            while loop.time() < end:
                user = mine[k % len(mine)]
                k += 1
                started = loop.time()
                try:
                    upload_id, record = uploads.record(user)
                    value = schema.encode(record)
                    headers = [*base_headers, ("upload_id", upload_id.encode()), ("circadia.idempotency", b"ledger")]
                    await producer.send_and_wait(HEALTH_SAMPLES, value=value, key=user.encode(), headers=headers)
                    outcome = "ack"
                except Exception as exc:  # every failure is an outcome of its own
                    outcome = type(exc).__name__
                now = loop.time()
                recorder.add(now - t0, now - started, outcome)

        await asyncio.gather(*(lane(i) for i in range(concurrency)))
        load_end = loop.time() - t0
    finally:
        await producer.stop()
    return {
        "concurrency": concurrency, "users": len(users), "warmup_s": warmup, "duration_s": duration,
        "samples": spec["samples"], "load_seconds": round(load_end, 2), "encode_ms": encode_ms,
        "window": recorder.summary(warmup, warmup + duration, items_per_success=spec["samples"]),
        "whole": recorder.summary(0.0, load_end + 1e-6, items_per_success=spec["samples"]),
    }


def _encode_cost(schema: Any, uploads: Uploads, user: str, count: int = 300) -> dict[str, float]:
    """Median ms to build one record and to encode it (validate + schemaless write), measured
    before the load starts: how much of the producer's CPU per record is Avro."""
    build, encode = [], []
    for _ in range(count):
        began = time.perf_counter()
        _, record = uploads.record(user)
        built = time.perf_counter()
        schema.encode(record)
        build.append(built - began)
        encode.append(time.perf_counter() - built)
    return {"build": round(sorted(build)[count // 2] * 1000, 3), "encode": round(sorted(encode)[count // 2] * 1000, 3)}


async def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    result = await run(spec)
    Path(spec["results"]).write_text(json.dumps(result))
    emit("done", results=spec["results"], cpu=time.process_time())


if __name__ == "__main__":
    run_loop(main(sys.argv[1]))
