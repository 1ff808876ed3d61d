"""The circadia fan-out gateway as the system under test, with the Kafka and Redis it needs.

Kafka (the project's own KRaft launcher) and Redis run for the whole benchmark on free
ports in a temporary folder; the gateway process is started fresh for every run through
``LocalStack.start_service`` (the worker and the ingest gateway are not needed).
Predictions are produced to ``predictions.v1`` with aiokafka exactly as the worker writes
them: schemaless Avro, key = user id, the schema headers; each record's timestamp is the
moment of publishing, and latency is measured from it.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import jwt
from aiokafka import AIOKafkaProducer
from cryptography.hazmat.primitives import serialization

from bench.common import free_port
from circadia.avro import SchemaSet
from circadia.kafka import create_producer, ensure_topics
from circadia.topics import PREDICTIONS
from circadia_dev.devkeys import PRIVATE_KEY_FILE
from circadia_dev.devstack.stack import LocalStack, Ports

SERVICE = "fanout-gateway"
PREDICTION_SCHEMA = "io.circadia.prediction.Prediction"


@dataclass
class CircadiaGateway:
    root: Path
    max_connections_per_user: int = 10
    name: str = "circadia"
    protocol: str = "circadia"
    stack: LocalStack = field(init=False)
    _producer: AIOKafkaProducer | None = None
    _pending: list[asyncio.Future] = field(default_factory=list)

    def __post_init__(self) -> None:
        ports = Ports(kafka=free_port(), kafka_controller=free_port(), redis=free_port(),
                      ingest=free_port(), fanout=free_port(), worker_metrics=free_port())
        # No Jaeger/Prometheus beside the gateway: without a collector the OTLP exporter would
        # retry in the gateway's own process (its CPU) and hold up its shutdown for ~30 s.
        extra = {"observability": False} if "observability" in {f.name for f in fields(LocalStack)} else {}
        self.stack = LocalStack(self.root, ports, **extra)
        self._schema = SchemaSet.load()[PREDICTION_SCHEMA]
        self._headers = self._schema.headers()

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.stack.ports.fanout}/v1/stream"

    @property
    def version(self) -> str:
        from circadia import __version__

        return f"circadia {__version__}"

    def pid(self) -> int:
        pid = self.stack.process(SERVICE).pid()
        if pid is None:
            raise RuntimeError(f"{SERVICE} is not running:\n{self.stack.process(SERVICE).log_tail()}")
        return pid

    def support_pids(self) -> list[int]:
        """The Kafka broker and Redis: the gateway's CPU is measured without them."""
        return [pid for pid in (self.stack.kafka.process.pid(), self.stack.redis.process.pid()) if pid]

    def tokens(self, user_ids: Sequence[str]) -> list[str]:
        """ID tokens from the stack's issuer. ``DevIssuer.mint`` parses the PEM key for every
        token (~40 ms each here): mint one, then sign copies of its claims with the key
        loaded once, changing only the user."""
        issuer = self.stack.issuer
        template = issuer.mint(user_ids[0], ttl=3600)
        header = jwt.get_unverified_header(template)
        claims = jwt.decode(template, options={"verify_signature": False})
        key = serialization.load_pem_private_key((issuer.directory / PRIVATE_KEY_FILE).read_bytes(), None)
        return [jwt.encode({**claims, "sub": user, "user_id": user}, key, algorithm=header["alg"],
                           headers={"kid": header["kid"]}) for user in user_ids]

    async def setup(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self.stack.redis.start)
        await asyncio.to_thread(self.stack.kafka.start)
        await ensure_topics(self.stack.bootstrap_servers)
        # linger 0: the record leaves at once, so the publish path adds no batching delay
        self._producer = create_producer(self.stack.bootstrap_servers, client_id="bench-fanout", linger_ms=0)
        await self._producer.start()

    async def start(self, connections: int) -> None:
        settings = {"CIRCADIA_FANOUT_MAX_CONNECTIONS": str(max(20_000, 2 * connections)),
                    "CIRCADIA_FANOUT_MAX_CONNECTIONS_PER_USER": str(self.max_connections_per_user)}
        if "CIRCADIA_KAFKA_SECURITY_PROTOCOL" not in self.stack.environment():
            settings["CIRCADIA_KAFKA_SECURITY_PROTOCOL"] = "PLAINTEXT"  # the launcher's loopback broker
        await asyncio.to_thread(self.stack.start_service, SERVICE, timeout=120.0, **settings)

    async def stop(self) -> None:
        await asyncio.to_thread(self.stack.process(SERVICE).stop)

    async def teardown(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        await asyncio.to_thread(self.stack.down)
        shutil.rmtree(self.root, ignore_errors=True)

    def prepare(self, user_id: str, record: dict[str, Any]) -> tuple[bytes, bytes]:
        return user_id.encode(), self._schema.encode(record)  # encode() validates first

    async def publish(self, user_id: str, record: dict[str, Any]) -> float:
        """Append one record; returns its timestamp (the moment of publishing, in seconds)."""
        key, value = self.prepare(user_id, record)
        return await self._send(key, value)

    async def publish_batch(self, prepared: Sequence[tuple[bytes, bytes]]) -> list[float]:
        return [await self._send(key, value) for key, value in prepared]

    async def _send(self, key: bytes, value: bytes) -> float:
        assert self._producer is not None
        timestamp_ms = round(time.time() * 1000)
        self._pending.append(await self._producer.send(
            PREDICTIONS, value, key=key, headers=self._headers, timestamp_ms=timestamp_ms))
        return timestamp_ms / 1000

    async def flush(self) -> None:
        """Wait for the broker's acknowledgement of everything sent (raises if any failed)."""
        pending, self._pending = self._pending, []
        await asyncio.gather(*pending)
