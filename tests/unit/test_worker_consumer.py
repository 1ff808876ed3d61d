"""The worker's consumer never counts an event skipped around a rebalance towards a commit."""

from __future__ import annotations

import faust
from faust.types import TP
from faust.types.tuples import Message

from circadia.topics import HEALTH_SAMPLES
from prediction_worker.consumer import RebalanceSafeConsumer

TOPIC_PARTITION = TP(HEALTH_SAMPLES, 3)


def message(offset: int, generation_id: int) -> Message:
    return Message(HEALTH_SAMPLES, 3, offset, 0.0, 0, None, b"user", b"record", None, tp=TOPIC_PARTITION,
                   generation_id=generation_id)


async def test_events_of_an_earlier_generation_or_during_recovery_are_released_not_committed() -> None:
    app = faust.App("consumer-test", broker="kafka://127.0.0.1:1", web_enabled=False)
    app.topics.add(app.topic(HEALTH_SAMPLES))
    await app.topics._update_indices()  # acks are tracked only for topics the app consumes
    consumer = RebalanceSafeConsumer(app.transport, callback=app.topics.on_message,
                                     on_partitions_revoked=None, on_partitions_assigned=None)
    app.consumer_generation_id = 4
    app.flow_control.resume()

    current = message(10, generation_id=4)
    consumer.track_message(current)
    assert consumer.ack(current) and list(consumer._acked[TOPIC_PARTITION]) == [10]

    stale = message(11, generation_id=3)  # fetched before the rebalance, skipped by the stream
    consumer.track_message(stale)
    assert not consumer.ack(stale) and stale.acked and stale not in consumer._unacked_messages
    app.flow_control.suspend()  # recovery in progress
    recovering = message(12, generation_id=4)
    consumer.track_message(recovering)
    assert not consumer.ack(recovering) and recovering.acked
    assert list(consumer._acked[TOPIC_PARTITION]) == [10]  # a commit cannot pass offset 11
