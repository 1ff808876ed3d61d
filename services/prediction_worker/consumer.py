"""faust's Kafka consumer, reporting records it skipped.

When the offsets the consumer delivers jump (``offset > previous + 1``), faust counts the
offsets in between as acknowledged, so they are committed as if processed. On a compacted
or transactional topic that is right; health.samples.v1 is neither (idempotent producers,
no transactions, deletion by retention only), so a jump means records that were never
processed: an upload answered 202 with no result. faust's own behaviour is kept (the
commit goes on), and each jump is logged as an error and counted in
``circadia_worker_offset_gaps_total``, which the ``CircadiaWorkerSkippedRecords`` alert watches.
"""

from __future__ import annotations

import logging

from faust.transport.drivers.aiokafka import Consumer
from faust.types import TP

from prediction_worker import metrics

log = logging.getLogger(__name__)


class GapReportingConsumer(Consumer):
    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        # faust passes the first missing offset and the offset just delivered
        skipped = offset_to - offset_from
        if skipped > 0:
            metrics.OFFSET_GAPS.labels(tp.topic).inc(skipped)
            log.error("records skipped: offsets were never delivered to the stream", extra={
                "topic": tp.topic, "partition": tp.partition, "first": offset_from, "last": offset_to - 1})
        await super()._add_gap(tp, offset_from, offset_to)
