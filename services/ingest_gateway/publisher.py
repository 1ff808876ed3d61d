"""Publishing uploads to Kafka, answering only for what the broker acknowledged."""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from circadia.kafka import create_producer

log = logging.getLogger(__name__)


class BrokerUnavailable(Exception):
    """The record was not acknowledged by the broker; nothing may be reported as accepted."""


class UploadPublisher:
    """Owns the idempotent producer; connects in the background until the broker answers.

    The gateway starts (and reports not ready) while Kafka is down, instead of crashing,
    and serves as soon as the broker is reachable.
    """

    def __init__(self, bootstrap_servers: str, *, produce_timeout: float, retry_interval: float = 2.0,
                 security: dict[str, object] | None = None):
        self._bootstrap = bootstrap_servers
        self._security = dict(security or {})
        self._timeout = produce_timeout
        self._retry_interval = retry_interval
        self._producer: AIOKafkaProducer | None = None
        self._connector: asyncio.Task[None] | None = None
        self._probe_at = 0.0
        self._probe_ok = False

    async def start(self) -> None:
        self._connector = asyncio.create_task(self._connect(), name="kafka-connect")

    async def _connect(self) -> None:
        while True:
            producer = create_producer(self._bootstrap, client_id="ingest-gateway",
                                       max_request_size=8 * 1024 * 1024, **self._security)
            try:
                await producer.start()
            except KafkaError as exc:
                await producer.stop()
                # authentication failures say so here (e.g. SaslAuthenticationFailed); the gateway
                # stays up, answers 503 and /readyz false until the credentials work
                log.warning("Kafka not reachable yet, retrying: %r", exc, extra={"error": repr(exc)})
                await asyncio.sleep(self._retry_interval)
                continue
            self._producer = producer
            log.info("connected to Kafka", extra={"bootstrap_servers": self._bootstrap})
            return

    async def stop(self) -> None:
        if self._connector is not None:
            self._connector.cancel()
            await asyncio.gather(self._connector, return_exceptions=True)
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def reconnect(self, security: dict[str, object]) -> None:
        """Rotated credentials: close the producer and connect again with the new ones."""
        await self.stop()
        self._security = dict(security)
        self._probe_at = 0.0
        await self.start()

    async def publish(self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> tuple[int, int]:
        """Send and wait for the acknowledgement; returns (partition, offset)."""
        if self._producer is None:
            raise BrokerUnavailable("not connected to Kafka")
        try:
            metadata = await asyncio.wait_for(
                self._producer.send_and_wait(topic, value=value, key=key, headers=headers),
                self._timeout,
            )
        except (TimeoutError, KafkaError) as exc:
            raise BrokerUnavailable(f"produce to {topic} failed: {exc!r}") from exc
        return metadata.partition, metadata.offset

    async def ready(self) -> bool:
        """Whether the broker answers a metadata request (cached for one second)."""
        if self._producer is None:
            return False
        now = time.monotonic()
        if now - self._probe_at >= 1.0:
            self._probe_at = now
            try:
                await asyncio.wait_for(self._producer.client.fetch_all_metadata(), 2.0)
                self._probe_ok = True
            except (TimeoutError, KafkaError) as exc:
                log.warning("Kafka readiness probe failed", extra={"error": repr(exc)})
                self._probe_ok = False
        return self._probe_ok
