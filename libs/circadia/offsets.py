"""Moving a consumer group's committed offset back, so skipped records are processed.

When the worker reports skipped offsets (``circadia_worker_offset_gaps_total``, the
``CircadiaWorkerSkippedRecords`` alert, an error log naming topic, partition and offsets),
``circadia worker rewind --partition P --offset N`` commits N for the worker's group with
the worker stopped; the worker then reads from N when it starts. It never moves an offset
forward (that would skip records) or before the first record the topic still holds.
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from circadia.kafka import topic_partitions


class RewindRefused(Exception):
    """The offset cannot be committed; the message says why."""


async def rewind(bootstrap_servers: str, group: str, topic: str, partition: int, offset: int) -> int | None:
    """Commit ``offset`` for ``group`` on ``topic[partition]``; returns the offset committed before."""
    tp = TopicPartition(topic, partition)
    if partition not in await topic_partitions(bootstrap_servers, topic):
        raise RewindRefused(f"{topic} has no partition {partition}")
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([tp])  # a commit needs an assignment; with members in the group it is refused
        committed = await consumer.committed(tp)
        first = (await consumer.beginning_offsets([tp]))[tp]
        if committed is not None and offset > committed:
            raise RewindRefused(f"{offset} is after the committed offset {committed}: moving forward skips records")
        if offset < first:
            raise RewindRefused(f"{topic}[{partition}] starts at {first} (older records were deleted)")
        try:
            await consumer.commit({tp: OffsetAndMetadata(offset, "")})
        except KafkaError as exc:
            raise RewindRefused(f"the group {group} refused the commit ({type(exc).__name__}): "
                                "stop every worker of the group first") from exc
        return committed
    finally:
        await consumer.stop()
