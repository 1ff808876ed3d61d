"""Reading and replaying the dead-letter topic (``circadia dlq list|replay``).

A dead letter keeps the original key, value and headers, plus ``error.*`` (stage, class,
message, stack) and ``source.*`` (topic, partition, offset) headers. Replay re-publishes
the original record to its source topic once the cause is fixed. It is idempotent twice
over: the replayer commits its position in the consumer group ``circadia-dlq-replay``, so
a second run does not resend what the first sent, and the worker skips uploads its
window already holds.

Two kinds of dead letter carry no record (header ``error.value_omitted``, with the reason):
one the topic refused whole (its ``source.*`` headers say where the record still is, for
``circadia worker rewind``), and one per upload that was applied but whose result could never
be published. Replay passes over both and says so.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from aiokafka import AIOKafkaConsumer, TopicPartition

from circadia.avro import header
from circadia.kafka import create_producer, topic_partitions
from circadia.offsets import commit_offsets, committed_offsets
from circadia.topics import HEALTH_SAMPLES, HEALTH_SAMPLES_DLQ

log = logging.getLogger(__name__)

REPLAY_GROUP = "circadia-dlq-replay"
VALUE_OMITTED = "error.value_omitted"
_DROPPED_PREFIXES = ("error.", "source.", "dead_lettered_at", "circadia.replayed_from")


@dataclass(frozen=True)
class DeadLetter:
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]

    def get(self, name: str) -> str:
        value = header(self.headers, name)
        return value.decode(errors="replace") if value is not None else ""

    @property
    def original_headers(self) -> list[tuple[str, bytes]]:
        return [(k, v) for k, v in self.headers if not k.startswith(_DROPPED_PREFIXES)]


async def _read(bootstrap_servers: str, *, since: datetime | None, group: str | None,
                topic: str, security: dict[str, object]) -> AsyncIterator[DeadLetter]:
    """Every dead letter up to the end offsets at the start (from ``since``, or the group's position)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=None,
                                enable_auto_commit=False, client_id="circadia-dlq", **security)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in await topic_partitions(bootstrap_servers, topic, **security)]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        starts = await _starts(consumer, partitions, since, group, bootstrap_servers, security)
        for tp in partitions:
            consumer.seek(tp, starts[tp])
        remaining = {tp for tp in partitions if starts[tp] < ends[tp]}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, messages in batches.items():
                for message in messages:
                    if message.offset >= ends[tp]:
                        break
                    yield DeadLetter(message.partition, message.offset, message.timestamp,
                                               message.key, message.value, list(message.headers or ()))
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()


async def _starts(consumer: AIOKafkaConsumer, partitions: list[TopicPartition], since: datetime | None,
                  group: str | None, bootstrap_servers: str,
                  security: dict[str, object]) -> dict[TopicPartition, int]:
    beginnings = await consumer.beginning_offsets(partitions)
    if since is not None:
        found = await consumer.offsets_for_times({tp: int(since.timestamp() * 1000) for tp in partitions})
        ends = await consumer.end_offsets(partitions)
        return {tp: found[tp].offset if found[tp] is not None else ends[tp] for tp in partitions}
    if group is None:
        return beginnings
    committed = await committed_offsets(bootstrap_servers, group, partitions, **security)
    return {tp: committed.get(tp, beginnings[tp]) for tp in partitions}


async def list_dead_letters(bootstrap_servers: str, *, since: datetime | None = None,
                            topic: str = HEALTH_SAMPLES_DLQ,
                            security: dict[str, object] | None = None) -> list[DeadLetter]:
    """``security``: aiokafka's connection options (circadia.kafka.client_security)."""
    return [letter async for letter in _read(bootstrap_servers, since=since, group=None, topic=topic,
                                             security=security or {})]


async def replay(bootstrap_servers: str, *, since: datetime | None = None, group: str = REPLAY_GROUP,
                 topic: str = HEALTH_SAMPLES_DLQ, security: dict[str, object] | None = None) -> list[DeadLetter]:
    """Re-publish dead letters not replayed before (or all since ``since``); returns them."""
    security = security or {}
    producer = create_producer(bootstrap_servers, client_id="circadia-dlq-replay", **security)
    await producer.start()
    replayed: list[DeadLetter] = []
    progress: dict[TopicPartition, int] = {}
    try:
        async for letter in _read(bootstrap_servers, since=since, group=None if since else group, topic=topic,
                                  security=security):
            progress[TopicPartition(topic, letter.partition)] = letter.offset + 1
            if header(letter.headers, VALUE_OMITTED) is not None:
                log.warning("dead letter without its record, not replayed: %s", describe(letter))
                continue
            source = letter.get("source.topic") or HEALTH_SAMPLES
            await producer.send_and_wait(source, value=letter.value, key=letter.key, headers=[
                *letter.original_headers,
                ("circadia.replayed_from", f"{topic}/{letter.partition}/{letter.offset}".encode()),
            ])
            replayed.append(letter)
    finally:
        await producer.stop()
        if progress:
            await commit_offsets(bootstrap_servers, group, progress, **security)
    return replayed


def describe(letter: DeadLetter) -> str:
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(letter.timestamp_ms / 1000))
    return (f"{letter.partition}/{letter.offset}  {when}  stage={letter.get('error.stage') or '?'}  "
            f"{letter.get('error.class')}: {letter.get('error.message')[:120]}  "
            f"source={letter.get('source.topic')}/{letter.get('source.partition')}/{letter.get('source.offset')}  "
            f"upload_id={letter.get('upload_id') or '-'}")
