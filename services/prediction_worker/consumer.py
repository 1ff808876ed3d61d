"""faust's Kafka consumer, without committing past records it skipped during a rebalance.

Around a rebalance faust's streams skip the events they already hold (fetched in the previous
consumer generation, or while flow control is suspended for recovery) and acknowledge them.
An acknowledged offset may be committed before the consumer seeks back to the committed
offsets, and then the skipped record is never read again: an upload that got its 202 would
never reach a result. Here such acknowledgements release the message but are not counted
towards the commit, so the record is read again after the seek. A record that was in fact
processed is then delivered twice, and the worker drops it by its ``upload_id``.
"""

from __future__ import annotations

import logging

from faust.transport.drivers.aiokafka import Consumer
from faust.types import Message
from faust.types.tuples import ack_lock

from prediction_worker import metrics

log = logging.getLogger(__name__)


class RebalanceSafeConsumer(Consumer):
    def ack(self, message: Message) -> bool:
        app = self.app
        if message.generation_id == app.consumer_generation_id and app.flow_control.is_active():
            return super().ack(message)
        with ack_lock:
            if message.acked:
                return False
            message.acked = True  # released, so waiting for the streams to drain ends
            self._unacked_messages.discard(message)
        metrics.RECORDS_REREAD.inc()
        log.info("event from before a rebalance not committed; it is read again",
                 extra={"topic": message.topic, "partition": message.partition, "offset": message.offset})
        return False
