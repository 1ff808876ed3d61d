"""The project's own Kafka launcher: format once, start, answer, stop, restart with the data."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from circadia.kafka import ensure_topics, topic_partitions
from circadia.topics import HEALTH_SAMPLES, PREDICTIONS, TOPICS
from circadia_dev.devstack.kafka import LocalKafka, broker_answers
from tests.conftest import free_ports


async def _produce(bootstrap: str) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        metadata = await producer.send_and_wait(PREDICTIONS, b"kept across restarts", key=b"u", partition=0)
    finally:
        await producer.stop()
    return metadata.offset


async def _read(bootstrap: str, offset: int) -> bytes:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(PREDICTIONS, 0)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        message = await asyncio.wait_for(consumer.getone(), 20)
    finally:
        await consumer.stop()
    return message.value


def test_launcher_formats_once_and_a_restart_keeps_topics_and_records(tmp_path: Path) -> None:
    port, controller = free_ports(2)
    kafka = LocalKafka(tmp_path / "kafka", port=port, controller_port=controller)
    kafka.start()
    try:
        meta = (kafka.data_dir / "meta.properties").read_text()
        created = asyncio.run(ensure_topics(kafka.bootstrap_servers))
        assert set(created) == {spec.name for spec in TOPICS}
        for spec in TOPICS:
            assert asyncio.run(topic_partitions(kafka.bootstrap_servers, spec.name)) == list(
                range(spec.partitions))
        offset = asyncio.run(_produce(kafka.bootstrap_servers))
        pid = kafka.process.pid()
        assert kafka.stop() is True
        assert kafka.process.pid() is None and not asyncio.run(broker_answers(kafka.bootstrap_servers, 2))

        kafka.start()
        assert kafka.process.pid() not in (None, pid)
        assert (kafka.data_dir / "meta.properties").read_text() == meta  # not formatted again
        assert asyncio.run(ensure_topics(kafka.bootstrap_servers)) == []  # topics survived
        assert asyncio.run(_read(kafka.bootstrap_servers, offset)) == b"kept across restarts"
        assert asyncio.run(topic_partitions(kafka.bootstrap_servers, HEALTH_SAMPLES)) == list(range(6))
    finally:
        kafka.stop()
    assert kafka.process.pid() is None
