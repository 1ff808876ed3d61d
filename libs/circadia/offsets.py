"""A consumer group's committed offsets, read and written without joining the group; and
moving the worker's offset back, so records it skipped are processed.

When the worker reports skipped offsets (``circadia_worker_offset_gaps_total``, the
``CircadiaWorkerSkippedRecords`` alert, an error log naming topic, partition and offsets),
``circadia worker rewind --partition P --offset N`` commits N for the worker's group with
the worker stopped; the worker then reads from N when it starts. It never moves an offset
forward (that would skip records) or before the first record the topic still holds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from circadia.kafka import topic_partitions


@asynccontextmanager
async def group_offsets(bootstrap_servers: str, group: str, partitions: list[TopicPartition],
                        **security: object) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer of ``group`` assigned ``partitions``: it reads and commits the group's offsets
    without joining the group (a commit is refused while the group has members)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=group, enable_auto_commit=False,
                                **security)
    await consumer.start()
    try:
        consumer.assign(partitions)
        yield consumer
    finally:
        await consumer.stop()


async def committed_offsets(bootstrap_servers: str, group: str, partitions: list[TopicPartition],
                            **security: object) -> dict[TopicPartition, int]:
    """The group's committed offsets; partitions without one are left out."""
    async with group_offsets(bootstrap_servers, group, partitions, **security) as consumer:
        committed = {tp: await consumer.committed(tp) for tp in partitions}
    return {tp: offset for tp, offset in committed.items() if offset is not None}


async def commit_offsets(bootstrap_servers: str, group: str, offsets: dict[TopicPartition, int],
                         **security: object) -> None:
    async with group_offsets(bootstrap_servers, group, list(offsets), **security) as consumer:
        await consumer.commit({tp: OffsetAndMetadata(offset, "") for tp, offset in offsets.items()})


class RewindRefused(Exception):
    """The offset cannot be committed; the message says why."""


async def rewind(bootstrap_servers: str, group: str, topic: str, partition: int, offset: int,
                 **security: object) -> int | None:
    """Commit ``offset`` for ``group`` on ``topic[partition]``; returns the offset committed before."""
    tp = TopicPartition(topic, partition)
    if partition not in await topic_partitions(bootstrap_servers, topic, **security):
        raise RewindRefused(f"{topic} has no partition {partition}")
    async with group_offsets(bootstrap_servers, group, [tp], **security) as consumer:
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
