"""What one fan-out replica spends on a result nobody watches: the owner's work alone.

One replica (R = 1, all six partitions) on a fresh Kafka and Redis, no connections. Results for
users without a connection are produced to predictions.v1 — first as fast as the publisher
goes (a backlog), then at a steady rate — and the replica's CPU (utime + stime) and Redis's CPU
are read over each phase, until the replica's ``records_total{outcome="published"}`` says every
result was recorded. Together with the burst cost per delivery of ``bench.fanout.run`` this
splits a replica's work into a part per result (owner: read the head, record, publish) and a
part per delivery (decode once per user, push to each socket), the units of the scale model in
docs/benchmarks.md.

    .venv/bin/python -m bench.fanout.unit_costs [--messages 5000] [--rate 200]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from bench.fanout.gateway import CircadiaGateway
from bench.fanout.measure import cpu_seconds, machine, package_version
from bench.fanout.workload import now, prediction_record

PUBLISHED = 'circadia_fanout_records_total{outcome="published"}'


async def published(client: httpx.AsyncClient, url: str) -> float:
    for line in (await client.get(url)).text.splitlines():
        if line.startswith(PUBLISHED + " "):
            return float(line.split()[-1])
    return 0.0


async def phase(gateway: CircadiaGateway, client: httpx.AsyncClient, count: int, rate: float | None) -> dict:
    url = f"http://127.0.0.1:{gateway.stack.ports.fanout}/metrics"
    pid, kafka, redis = gateway.pid(), gateway.stack.kafka.process.pid(), gateway.stack.redis.process.pid()
    before, cpu0, wall0 = await published(client, url), cpu_seconds(pid), time.monotonic()
    kafka0, redis0 = cpu_seconds(kafka), cpu_seconds(redis)
    records = [prediction_record(f"unwatched-{uuid.uuid4().hex[:12]}", str(uuid.uuid4()), now())
               for _ in range(count)]
    prepared = [gateway.prepare(r["user_id"], r) for r in records]
    if rate is None:
        await gateway.publish_batch(prepared)
    else:
        for item in prepared:
            await gateway.publish_batch([item])
            await asyncio.sleep(1 / rate)
    await gateway.flush()
    deadline = time.monotonic() + 120
    while await published(client, url) - before < count:
        assert time.monotonic() < deadline, "the replica did not record every result"
        await asyncio.sleep(0.1)
    wall = time.monotonic() - wall0
    cpu = cpu_seconds(pid) - cpu0
    return {"results": count, "rate": rate, "wall_s": round(wall, 2), "replica_cpu_s": round(cpu, 3),
            "replica_us_per_result": round(1e6 * cpu / count, 1),
            "redis_us_per_result": round(1e6 * (cpu_seconds(redis) - redis0) / count, 1),
            "kafka_us_per_result": round(1e6 * (cpu_seconds(kafka) - kafka0) / count, 1),
            "results_per_s": round(count / wall, 1)}


async def main(messages: int, rate: float) -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-fanout-units-"))
    gateway = CircadiaGateway(root / "circadia")
    await gateway.setup()
    try:
        await gateway.start(0)
        async with httpx.AsyncClient(timeout=5) as client:
            await phase(gateway, client, 200, None)  # warm-up: imports, first joins, JIT-free but cache-warm
            backlog = await phase(gateway, client, messages, None)
            steady = await phase(gateway, client, min(messages, int(rate * 15)), rate)
        await gateway.stop()
    finally:
        await gateway.teardown()
    print(f"machine: {machine({'websockets': package_version('websockets'), 'aiokafka': package_version('aiokafka')})}")
    print(f"workload: results for users without a connection (~1.1 KB Avro each), one replica owning 6 partitions; "
          f"{messages:,} as fast as the publisher goes, then {min(messages, int(rate * 15)):,} at {rate:g}/s")
    for name, result in (("backlog", backlog), ("steady", steady)):
        print(f"{name}: {result}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=200.0)
    args = parser.parse_args()
    random.seed(1)
    asyncio.run(main(args.messages, args.rate))
