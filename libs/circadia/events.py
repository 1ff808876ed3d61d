"""Every process's own view of a small event topic: every partition, from its end, to a callback.

Erasures (every replica drops a user's keys and data) and export replies (the gateway that asked
waits for its answer) are read this way: no consumer group, so every process sees every event;
from the end, so only events published after the feed started. ``listening`` is set once the end
offsets are resolved: an event published after it is seen. A callback that fails is logged and
counted and never stops the feed; an unreachable broker is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import Counter

from circadia.avro import SchemaSet
from circadia.kafka import topic_layout

log = logging.getLogger(__name__)

FEED_FAILURES = Counter("circadia_event_feed_failures_total",
                        "Events a feed could not decode or apply, by topic and reason.", ["topic", "reason"])


class EventFeed:
    def __init__(self, bootstrap_servers: str, topic: str, schemas: SchemaSet, schema_name: str,
                 on_event: Callable[[dict[str, Any]], Awaitable[None]], *, security: dict[str, Any] | None = None,
                 retry_seconds: float = 2.0) -> None:
        self._bootstrap = bootstrap_servers
        self._topic = topic
        self._schemas = schemas
        self._schema = schemas[schema_name]
        self._on_event = on_event
        self._security = security or {}
        self._retry = retry_seconds
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"feed {self._topic}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, enable_auto_commit=False,
                                        client_id=f"circadia-feed-{self._topic}", **self._security)
            try:
                _, partitions = await topic_layout(self._bootstrap, self._topic, **self._security)
                if not partitions:
                    raise KafkaError(f"{self._topic} has no partitions (topic missing?)")
                await consumer.start()
                assigned = [TopicPartition(self._topic, p) for p in partitions]
                consumer.assign(assigned)
                await consumer.seek_to_end(*assigned)
                for tp in assigned:  # resolve the end offsets now: an event after this is seen
                    await consumer.position(tp)
                self.listening.set()
                while True:
                    for messages in (await consumer.getmany(timeout_ms=1000)).values():
                        for message in messages:
                            await self._apply(message)
            except asyncio.CancelledError:
                raise
            except Exception:  # the feed must outlive a broker outage
                self.listening.clear()
                log.warning("event feed interrupted; reconnecting", exc_info=True, extra={"topic": self._topic})
                await asyncio.sleep(self._retry)
            finally:
                await consumer.stop()

    async def _apply(self, message: Any) -> None:
        try:
            record = self._schemas.decode(message.value, list(message.headers), self._schema)
        except Exception:
            FEED_FAILURES.labels(self._topic, "undecodable").inc()
            log.error("undecodable event skipped", exc_info=True,
                      extra={"topic": self._topic, "partition": message.partition, "offset": message.offset})
            return
        try:
            await self._on_event(record)
        except Exception:
            FEED_FAILURES.labels(self._topic, "failed").inc()
            log.error("applying an event failed", exc_info=True,
                      extra={"topic": self._topic, "partition": message.partition, "offset": message.offset})
