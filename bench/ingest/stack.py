"""The system under test: a ``LocalStack`` of its own (Kafka, Redis and the three services) on
free ports in a temporary folder.

The ingest gateway runs from the start. The prediction worker and the fan-out gateway are
started only for the soak, after the worker's consumer group has been given committed
offsets at the end of ``health.samples.v1``: the records of the throughput phases are not
processed (they would keep the worker busy for minutes and take the CPU from the soak).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from circadia.kafka import ensure_topics
from circadia.topics import HEALTH_SAMPLES, TOPICS
from circadia_dev.devstack.stack import LocalStack, Ports

INGEST, WORKER, FANOUT = "ingest-gateway", "prediction-worker", "fanout-gateway"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class IngestStack:
    def __init__(self, root: Path, *, rate_limit_per_user: str, rate_limit_per_ip: str) -> None:
        self.root = root
        self.worker_app_id = f"bench-ingest-{uuid.uuid4().hex[:8]}"
        self.settings = {
            # raised so that the limiter runs (its Redis round trips are measured) but never refuses
            "CIRCADIA_INGEST_RATE_LIMIT_PER_USER": rate_limit_per_user,
            "CIRCADIA_INGEST_RATE_LIMIT_PER_IP": rate_limit_per_ip,
            "CIRCADIA_WORKER_APP_ID": self.worker_app_id,
        }
        ports = Ports(kafka=free_port(), kafka_controller=free_port(), redis=free_port(), ingest=free_port(),
                      fanout=free_port(), worker_metrics=free_port())
        # No Jaeger/Prometheus: without a collector spans are created but not exported.
        self.stack = LocalStack(root, ports, observability=False, overrides=tuple(self.settings.items()))

    @property
    def ingest_url(self) -> str:
        return f"http://127.0.0.1:{self.stack.ports.ingest}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.stack.ports.fanout}/v1/stream"

    @property
    def bootstrap_servers(self) -> str:
        return self.stack.bootstrap_servers

    def pid(self, name: str) -> int | None:
        if name == "kafka":
            return self.stack.kafka.process.pid()
        if name == "redis":
            return self.stack.redis.process.pid()
        return self.stack.process(name).pid()

    def tokens(self, users: list[str]) -> list[str]:
        """ID tokens from the stack's dev issuer (valid for an hour; the run is shorter)."""
        issuer = self.stack.issuer
        return [issuer.mint(user) for user in users]

    async def setup(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self.stack.redis.start)
        await asyncio.to_thread(self.stack.kafka.start)
        await ensure_topics(self.bootstrap_servers)
        await asyncio.to_thread(self.stack.start_service, INGEST, timeout=120.0)

    async def start_pipeline(self) -> None:
        """Worker (from the current end of health.samples.v1) and fan-out gateway."""
        await self._skip_backlog()
        await asyncio.to_thread(self.stack.start_service, FANOUT, timeout=120.0)
        await asyncio.to_thread(self.stack.start_service, WORKER, timeout=180.0)

    async def _skip_backlog(self) -> None:
        partitions = next(spec.partitions for spec in TOPICS if spec.name == HEALTH_SAMPLES)
        tps = [TopicPartition(HEALTH_SAMPLES, p) for p in range(partitions)]
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap_servers, group_id=self.worker_app_id,
                                    enable_auto_commit=False, client_id="bench-ingest-offsets")
        await consumer.start()
        try:
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            await consumer.commit({tp: ends[tp] for tp in tps})
        finally:
            await consumer.stop()

    def log_tail(self, name: str) -> str:
        return self.stack.process(name).log_tail()

    async def teardown(self, keep: bool = False) -> None:
        await asyncio.to_thread(self.stack.down)
        if not keep:
            shutil.rmtree(self.root, ignore_errors=True)
