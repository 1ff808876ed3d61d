"""The predictions.v1 partitions this replica owns, shared out in the deployment's consumer group.

Replicas of one deployment form a consumer group (``CIRCADIA_FANOUT_GROUP_ID``), so each
partition has one owner at a time. The owner reads each result's head (``records.py``),
records the result in the user's history and publishes it on the user's live channel in the
same Redis step (``UserHistory.record_many``); every replica, the owner included, receives it
from there only if one of its connections belongs to that user, and decodes it then. A replica's Kafka work is therefore
proportional to the partitions it owns, and its socket work to its own users.

Where a partition's new owner starts: the history's position for it in Redis (advanced in
the same round trip that records a batch, kept per Kafka cluster id), else the group's
committed offset (committed at most once a second, and when the partition is given up),
else the end — and a start that did not come from the history is written there at once.
A rebalance waits for the batch in hand to be recorded before giving a partition up
(``on_partitions_revoked`` takes the same lock), so the next owner re-reads at most what
was recorded but not yet positioned, and the history refuses those second writes. A
replica that dies mid-batch is replaced after the group's session timeout; its unrecorded
records are read again by the next owner.

When Redis is unreachable the owner cannot record or publish. It then delivers the results
of its partitions to its own connections directly (no history, no repeat detection),
remembers the first offset it could not record per partition, and keeps the group's offsets
where they were; once Redis answers again it rewinds those partitions and records (and
publishes) everything since, so connections elsewhere receive the outage's results then,
once each and in order, and resumes find them in the history.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from circadia.kafka import topic_layout
from circadia.topics import PREDICTIONS
from circadia.tracing import context_from_headers, traceparent_of
from fanout_gateway import metrics
from fanout_gateway.history import Appended, HistoryUnavailable, Outcome, UserHistory
from fanout_gateway.records import Head, Renderer, UnreadableRecord

log = logging.getLogger(__name__)
tracer = trace.get_tracer("fanout_gateway")
_RECORDED = {outcome: metrics.RECORDS.labels(outcome.name.lower()) for outcome in Outcome}

COMMIT_INTERVAL = 1.0  # seconds between commits of the group's offsets


@dataclass(frozen=True)
class FeedMessage:
    partition: int
    offset: int
    timestamp_ms: int
    head: Head
    value: bytes  # the record, Avro, as the worker wrote it
    headers: list[tuple[str, bytes]]

    @property
    def user_id(self) -> str:
        return self.head.user_id


class PredictionFeed:
    def __init__(self, bootstrap_servers: str, renderer: Renderer, history: UserHistory,
                 local: Callable[[Sequence[FeedMessage]], None], ready: asyncio.Event, *,
                 group_id: str, fetch_wait_ms: int = 10, retry_interval: float = 2.0,
                 security: dict[str, object] | None = None) -> None:
        self._fetch_wait_ms = fetch_wait_ms
        self._bootstrap = bootstrap_servers
        self._security = dict(security or {})
        self._renderer = renderer
        self._history = history
        self._local = local
        self._group_id = group_id
        self._retry_interval = retry_interval
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # a batch is recorded, or a partition changes hands: not both
        self._owned: set[TopicPartition] = set()
        self._unrecorded: dict[TopicPartition, int] = {}  # first offset not recorded while Redis was down
        self._uncommitted: dict[TopicPartition, int] = {}  # recorded, not yet committed to the group
        # where each partition was sought to on assignment: the fetcher may already have read from
        # the group's (trailing) committed offset while the assignment callback ran
        self._floor: dict[TopicPartition, int] = {}
        self._committed_at = 0.0
        self._probed = 0.0
        self.ready = ready

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="prediction-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def reconnect(self, security: dict[str, object]) -> None:
        """Rotated credentials: a new consumer with them (it rejoins the group)."""
        await self.stop()
        self._security = dict(security)
        self.ready.clear()
        await self.start()

    async def _run(self) -> None:
        while True:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap,
                group_id=self._group_id,
                enable_auto_commit=False,
                auto_offset_reset="latest",
                client_id="fanout-gateway",
                heartbeat_interval_ms=1000,  # a replica joining or leaving is noticed within a second
                # the broker answers a fetch once 64 KiB are there or after the wait: batches
                # instead of one fetch round trip per record at low rates (0: answer at the
                # first record, waiting up to 500 ms when there is none)
                fetch_max_wait_ms=self._fetch_wait_ms or 500, fetch_min_bytes=64 * 1024 if self._fetch_wait_ms else 1,
                session_timeout_ms=10_000,  # a crashed replica's partitions move after this long
                **self._security,
            )
            try:
                await consumer.start()
                await self._wait_for_topic()
                consumer.subscribe([PREDICTIONS], listener=_Ownership(self, consumer))
                await self._consume(consumer)
            except KafkaError as exc:
                self.ready.clear()
                log.warning("prediction feed interrupted, reconnecting", extra={"error": repr(exc)})
                await asyncio.sleep(self._retry_interval)
            finally:
                async with self._lock:
                    self._owned.clear()
                    self._unrecorded.clear()
                    self._uncommitted.clear()
                metrics.OWNED_PARTITIONS.set(0)
                await consumer.stop()

    async def _wait_for_topic(self) -> None:
        while True:
            cluster_id, partitions = await topic_layout(self._bootstrap, PREDICTIONS, **self._security)
            if partitions:
                self._history.use_cluster(cluster_id)  # positions and history are this cluster's
                return
            log.warning("topic not found yet", extra={"topic": PREDICTIONS})
            await asyncio.sleep(self._retry_interval)

    # --- ownership (called by the group coordinator, between batches) -------------------

    async def assigned(self, consumer: AIOKafkaConsumer, partitions: set[TopicPartition]) -> None:
        """Seek each partition to where the history stopped; a partition the history has no
        position for starts at the group's committed offset, else at the end, and that start
        is written to the history at once, so a record published while the partition changes
        hands later is read by its next owner instead of being skipped by an "end" of its own."""
        async with self._lock:
            self._owned = set(partitions)
            self._floor = {}
            self._unrecorded = {tp: o for tp, o in self._unrecorded.items() if tp in partitions}
            metrics.OWNED_PARTITIONS.set(len(partitions))
            stored = await self._stored_positions()
            starts: dict[TopicPartition, int] = {}
            if partitions:
                beginnings = await consumer.beginning_offsets(list(partitions))
                ends = await consumer.end_offsets(list(partitions))
                for tp in partitions:
                    if tp.partition in stored:  # clamped: retention may have removed older records
                        self._floor[tp] = min(max(stored[tp.partition], beginnings[tp]), ends[tp])
                    else:
                        committed = await consumer.committed(tp)
                        self._floor[tp] = starts[tp] = (min(max(committed, beginnings[tp]), ends[tp])
                                                        if committed is not None else ends[tp])
                    consumer.seek(tp, self._floor[tp])
            if starts:
                try:
                    await self._history.advance({tp.partition: offset for tp, offset in starts.items()})
                except HistoryUnavailable:
                    log.warning("history positions of new partitions not written", exc_info=True)
            self.ready.set()
        log.info("prediction feed partitions assigned", extra={
            "partitions": sorted(tp.partition for tp in partitions), "from_history": len(partitions) - len(starts)})

    async def revoked(self, consumer: AIOKafkaConsumer, partitions: set[TopicPartition]) -> None:
        async with self._lock:  # the batch in hand is recorded first
            await self._commit(consumer, {tp: o for tp, o in self._uncommitted.items() if tp in partitions})
            self._owned -= partitions
            for tp in partitions:
                self._unrecorded.pop(tp, None)
            metrics.OWNED_PARTITIONS.set(len(self._owned))
        log.info("prediction feed partitions revoked", extra={"partitions": sorted(tp.partition for tp in partitions)})

    async def _stored_positions(self) -> dict[int, int]:
        try:
            return await self._history.positions()
        except HistoryUnavailable:
            log.warning("history positions unavailable: starting at the group's committed offsets",
                        exc_info=True)
            return {}

    # --- records ----------------------------------------------------------------------------

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=1000, max_records=500)
            async with self._lock:
                # a batch that starts below where its partition was sought to predates the seek
                # (fetched from the committed offset during the assignment): it is read again
                batches = {tp: records for tp, records in batches.items() if records and tp in self._owned
                           and records[0].offset >= self._floor.get(tp, 0)}
                if self._unrecorded and await self._redis_is_back():
                    for tp, offset in self._unrecorded.items():
                        consumer.seek(tp, offset)  # record (and publish) what the outage left out
                        batches.pop(tp, None)
                    log.info("history back: re-reading what was not recorded", extra={
                        "partitions": {tp.partition: o for tp, o in self._unrecorded.items()}})
                    self._unrecorded.clear()
                if batches:
                    await self._handle(consumer, batches)

    async def _handle(self, consumer: AIOKafkaConsumer, batches: dict[TopicPartition, list[Any]]) -> None:
        read = [item for records in batches.values() for message in records
                if (item := self._read(message)) is not None]
        next_offsets = {tp: records[-1].offset + 1 for tp, records in batches.items()}
        if self._unrecorded or not await self._record(read, next_offsets):
            for tp, records in batches.items():
                self._unrecorded.setdefault(tp, records[0].offset)
            self._local(read)
            return
        self._uncommitted.update(next_offsets)
        if time.monotonic() - self._committed_at >= COMMIT_INTERVAL:
            await self._commit(consumer, self._uncommitted)

    async def _commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        """The group's offsets trail the history's positions (the next owner prefers those):
        committed at most once per COMMIT_INTERVAL, and when a partition is given up."""
        self._committed_at = time.monotonic()
        if not offsets:
            return
        try:
            await consumer.commit(dict(offsets))
        except KafkaError as exc:  # the next owner may re-read these; the history refuses repeats
            log.warning("offsets not committed", extra={"error": repr(exc)})
            return
        for tp, offset in list(offsets.items()):
            if self._uncommitted.get(tp) == offset:
                del self._uncommitted[tp]

    async def _record(self, messages: Sequence[FeedMessage], next_offsets: dict[TopicPartition, int]) -> bool:
        """Record and publish a batch and advance the history's positions past it, in one round
        trip; False when Redis is unreachable."""
        spans = [tracer.start_span(
            f"{PREDICTIONS} deliver", context=context_from_headers(m.headers), kind=SpanKind.CONSUMER,
            attributes={"messaging.system": "kafka", "messaging.destination.name": PREDICTIONS,
                        "messaging.operation.type": "process",
                        "messaging.destination.partition.id": str(m.partition),
                        "messaging.kafka.offset": m.offset}) for m in messages]
        entries = [Appended(message.user_id, message.partition, message.offset, message.value,
                            message.head.fingerprint, message.head.sources, message.timestamp_ms,
                            traceparent_of(span))
                   for message, span in zip(messages, spans, strict=True)]
        try:
            recorded = await self._history.record_many(
                entries, advance={tp.partition: offset for tp, offset in next_offsets.items()})
        except HistoryUnavailable:
            metrics.HISTORY_ERRORS.inc()
            log.warning("history unavailable: results delivered to this replica's connections only",
                        exc_info=True)
            for span in spans:
                span.end()
            self._probed = time.monotonic()
            return False
        for message, entry, span in zip(messages, recorded, spans, strict=True):
            _RECORDED[entry.outcome].inc()
            span.set_attribute("circadia.fanout.receivers", entry.receivers)
            if entry.outcome is Outcome.REPEAT:
                log.info("repeated result not delivered", extra={"partition": message.partition,
                                                                 "offset": message.offset})
            span.end()
        return True

    async def _redis_is_back(self) -> bool:
        if time.monotonic() - self._probed < self._retry_interval:
            return False
        self._probed = time.monotonic()
        try:
            await self._history.positions()
        except HistoryUnavailable:
            return False
        return True

    def _read(self, message: Any) -> FeedMessage | None:
        """The record's head only: routing and repeat detection need no more (``records.py``)."""
        headers = list(message.headers or ())
        try:
            head = self._renderer.head(message.value, headers)
        except UnreadableRecord:  # a bad record must not stop the feed for everyone else
            metrics.RECORDS.labels("undecodable").inc()
            log.error("unreadable prediction skipped", exc_info=True, extra={
                "partition": message.partition, "offset": message.offset})
            return None
        metrics.RECORDS.labels("read").inc()
        return FeedMessage(partition=message.partition, offset=message.offset,
                           timestamp_ms=message.timestamp, head=head, value=message.value, headers=headers)


class _Ownership(ConsumerRebalanceListener):
    def __init__(self, feed: PredictionFeed, consumer: AIOKafkaConsumer) -> None:
        self._feed = feed
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._feed.revoked(self._consumer, set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._feed.assigned(self._consumer, set(assigned))
