"""faust's Kafka consumer, made safe around rebalances and watched for skipped records.

faust runs aiokafka in a thread of its own and asks it for the records of the partitions
it considers active: a live set that recovery changes while a fetch is waiting. aiokafka
reads an empty set as "every partition". During a rebalance, once recovery has paused the
changelogs as well as the stream partitions, a fetch that was waiting returned records of
the paused stream partitions; faust dropped them as inactive, but aiokafka's position had
already moved past them, undoing the seek to the committed offsets that recovery had just
made. Those uploads, answered 202, were never processed. Here the consumer thread gives
such records back: a partition that is not active when the fetch returns is sought back
to the first record it returned, in the same step, so nothing moves its position but
delivery.

Upstream: faust-streaming/faust#221 reports records prefetched before a rebalance reaching
the stream after it (out of order); faust 0.15.3 has no give-back, and the invariant relied on
(a record of a partition that is not active never moves its position) is tested in
``tests/unit/test_worker_consumer.py``.

Skipped records are also looked for directly: for each partition of health.samples.v1
the consumer knows the next offset it must hand to the streams (the committed offset after
a seek, then one past each record handed over). A record beyond it means records were
skipped: the topic is not compacted and has no transactions, so those are uploads that
will never be processed. Each jump is logged as an error with its offsets and counted in
``circadia_worker_offset_gaps_total``, which the ``CircadiaWorkerSkippedRecords`` alert
watches. What this does not see: records handed over and then lost before processing (a
cleared queue, as in ``prediction_worker.recovery``), and a skip before the first record
of a partition that has no committed offset yet.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiokafka
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer
from faust.types import TP, Message

from circadia.topics import HEALTH_SAMPLES
from prediction_worker import metrics

log = logging.getLogger(__name__)


class GiveBackConsumerThread(AIOKafkaConsumerThread):
    async def _fetch_records(self, consumer: aiokafka.AIOKafkaConsumer, active_partitions: set[TP],
                             timeout: float | None = None, max_records: int | None = None) -> dict[TP, list[Any]]:
        records = dict(await super()._fetch_records(consumer, active_partitions, timeout=timeout,
                                                    max_records=max_records))
        if active_partitions is None:  # a client-only app fetches every partition
            return records
        for tp in [tp for tp in records if tp not in active_partitions]:
            returned = records.pop(tp)
            if returned:
                consumer.seek(tp, returned[0].offset)  # no await since the fetch: nothing moved it
                log.info("records of a paused partition given back, to be fetched again", extra={
                    "topic": tp.topic, "partition": tp.partition, "offset": returned[0].offset})
        return records


class SafeConsumer(Consumer):
    #: topics whose offsets must be contiguous (not compacted, no transactions)
    contiguous_topics = frozenset({HEALTH_SAMPLES})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._next_offset: dict[TP, int] = {}
        deliver: Callable[[Message], Awaitable[Any]] = self.callback

        async def delivering(message: Message) -> Any:
            self._check_contiguous(message)
            return await deliver(message)

        self.callback = delivering

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return GiveBackConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def perform_seek(self) -> None:
        await super().perform_seek()
        # faust sets each sought partition's read offset to its committed offset (None if none)
        self._next_offset = {tp: offset for tp, offset in list(self._read_offset.items()) if offset is not None}

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        for tp in revoked:
            self._next_offset.pop(tp, None)
        self._buffered_partitions.difference_update(revoked)
        await super().on_partitions_revoked(revoked)

    def on_buffer_drop(self, tp: TP) -> None:
        """A full stream buffer drained: faust makes the partition active again, even when it
        was paused meanwhile (a rebalance). A paused partition stays paused here."""
        if tp in self._paused_partitions:
            self._buffered_partitions.discard(tp)
            return
        super().on_buffer_drop(tp)

    def _check_contiguous(self, message: Message) -> None:
        tp = message.tp
        if tp.topic not in self.contiguous_topics:
            return
        expected = self._next_offset.get(tp)
        if expected is not None and message.offset > expected:
            metrics.OFFSET_GAPS.labels(tp.topic).inc(message.offset - expected)
            log.error("records skipped: offsets were never delivered to the stream", extra={
                "topic": tp.topic, "partition": tp.partition, "first": expected, "last": message.offset - 1})
        self._next_offset[tp] = message.offset + 1
