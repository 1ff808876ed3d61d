"""The predictions.v1 feed: every partition, read by this replica's own consumer.

Each replica consumes all partitions without a consumer group and delivers to the users
connected to it. It starts where the shared history stopped (positions in Redis, advanced
by every replica after each batch, kept per Kafka cluster id), so a replica that was down —
even the only one — records what was published meanwhile and a resuming client misses
nothing; with no recorded position (a new deployment or cluster, Redis emptied) it starts
at the end.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from circadia.avro import AvroSchema, SchemaSet
from circadia.kafka import topic_layout
from circadia.topics import PREDICTIONS
from fanout_gateway import metrics
from fanout_gateway.history import HistoryUnavailable
from fanout_gateway.history import UserHistory as Positions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeedMessage:
    user_id: str
    partition: int
    offset: int
    timestamp_ms: int
    record: dict[str, Any]
    headers: list[tuple[str, bytes]]


class PredictionFeed:
    def __init__(self, bootstrap_servers: str, schemas: SchemaSet, schema: AvroSchema,
                 deliver: Callable[[Sequence[FeedMessage]], Awaitable[None]], ready: asyncio.Event, *,
                 retry_interval: float = 2.0, security: dict[str, object] | None = None,
                 positions: Positions | None = None) -> None:
        self._positions = positions
        self._bootstrap = bootstrap_servers
        self._security = dict(security or {})
        self._schemas = schemas
        self._schema = schema
        self._deliver = deliver
        self._retry_interval = retry_interval
        self._task: asyncio.Task[None] | None = None
        self.ready = ready

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="prediction-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def reconnect(self, security: dict[str, object]) -> None:
        """Rotated credentials: a new consumer with them, positioned at the end again."""
        await self.stop()
        self._security = dict(security)
        self.ready.clear()
        await self.start()

    async def _run(self) -> None:
        while True:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap,
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="latest",
                client_id="fanout-gateway",
                **self._security,
            )
            try:
                await consumer.start()
                await self._assign(consumer)
                self.ready.set()
                await self._consume(consumer)
            except KafkaError as exc:
                self.ready.clear()
                log.warning("prediction feed interrupted, reconnecting", extra={"error": repr(exc)})
                await asyncio.sleep(self._retry_interval)
            finally:
                await consumer.stop()

    async def _assign(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            cluster_id, partitions = await topic_layout(self._bootstrap, PREDICTIONS, **self._security)
            if partitions:
                break
            log.warning("topic not found yet", extra={"topic": PREDICTIONS})
            await asyncio.sleep(self._retry_interval)
        if self._positions is not None:
            self._positions.use_cluster(cluster_id)  # positions and history are this cluster's
        assignment = [TopicPartition(PREDICTIONS, p) for p in partitions]
        consumer.assign(assignment)
        await consumer.seek_to_end(*assignment)
        stored = await self._stored_positions()
        if stored:
            beginnings = await consumer.beginning_offsets(assignment)
            ends = await consumer.end_offsets(assignment)
            for tp in assignment:
                if tp.partition in stored:  # clamped: retention may have removed older records
                    consumer.seek(tp, min(max(stored[tp.partition], beginnings[tp]), ends[tp]))
        for tp in assignment:  # resolve positions now, so nothing published after ready is missed
            await consumer.position(tp)
        log.info("prediction feed assigned", extra={"partitions": len(assignment),
                                                    "resumed_from_history": bool(stored)})

    async def _stored_positions(self) -> dict[int, int]:
        if self._positions is None:
            return {}
        try:
            return await self._positions.positions()
        except HistoryUnavailable:
            log.warning("history positions unavailable: starting at the end", exc_info=True)
            return {}

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=1000, max_records=500)
            decoded = [item for records in batches.values() for message in records
                       if (item := self._decode(message)) is not None]
            if decoded:
                await self._deliver(decoded)  # a batch at a time: one history round trip for all
            if batches and self._positions is not None:
                try:
                    await self._positions.advance({tp.partition: records[-1].offset + 1
                                                   for tp, records in batches.items() if records})
                except HistoryUnavailable:
                    log.warning("history positions not advanced", exc_info=True)

    def _decode(self, message: Any) -> FeedMessage | None:
        headers = list(message.headers or ())
        try:
            record = self._schemas.decode(message.value, headers, self._schema)
        except Exception:  # a bad record must not stop the feed for everyone else
            metrics.RECORDS.labels("undecodable").inc()
            log.error("undecodable prediction skipped", exc_info=True, extra={
                "partition": message.partition, "offset": message.offset})
            return None
        metrics.RECORDS.labels("decoded").inc()
        return FeedMessage(user_id=record["user_id"], partition=message.partition, offset=message.offset,
                           timestamp_ms=message.timestamp, record=record, headers=headers)
