"""`circadia worker rewind` (that is, `python -m prediction_worker rewind`) on the real broker:
back only, within the log, never under a live group."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from circadia.offsets import RewindRefused, committed_offsets, rewind
from circadia.topics import HEALTH_SAMPLES

PARTITION = TopicPartition(HEALTH_SAMPLES, 2)


async def committed(bootstrap: str, group: str) -> int | None:
    return (await committed_offsets(bootstrap, group, [PARTITION])).get(PARTITION)


async def end_after_producing(bootstrap: str, count: int) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for _ in range(count):
            metadata = await producer.send_and_wait(HEALTH_SAMPLES, b"not an upload", partition=PARTITION.partition)
        return metadata.offset + 1
    finally:
        await producer.stop()


async def test_rewind_moves_the_committed_offset_back_and_only_back(kafka_bootstrap: str) -> None:
    group = f"rewind-test-{uuid.uuid4().hex[:6]}"
    end = await end_after_producing(kafka_bootstrap, 3)
    assert await rewind(kafka_bootstrap, group, HEALTH_SAMPLES, 2, end) is None  # a group new to the topic
    assert await committed(kafka_bootstrap, group) == end

    assert await rewind(kafka_bootstrap, group, HEALTH_SAMPLES, 2, end - 2) == end
    assert await committed(kafka_bootstrap, group) == end - 2

    with pytest.raises(RewindRefused, match="moving forward skips records"):
        await rewind(kafka_bootstrap, group, HEALTH_SAMPLES, 2, end - 1)
    with pytest.raises(RewindRefused, match="has no partition 99"):
        await rewind(kafka_bootstrap, group, HEALTH_SAMPLES, 99, 0)
    with pytest.raises(RewindRefused, match="starts at"):
        await rewind(kafka_bootstrap, group, HEALTH_SAMPLES, 2, -1)
    assert await committed(kafka_bootstrap, group) == end - 2


async def test_rewind_is_refused_while_the_group_has_a_member(kafka_bootstrap: str) -> None:
    group = f"rewind-test-{uuid.uuid4().hex[:6]}"
    end = await end_after_producing(kafka_bootstrap, 1)
    await rewind(kafka_bootstrap, group, HEALTH_SAMPLES, 2, end)
    member = AIOKafkaConsumer(HEALTH_SAMPLES, bootstrap_servers=kafka_bootstrap, group_id=group,
                              enable_auto_commit=False)
    await member.start()
    try:
        while not member.assignment():  # joined and assigned
            await asyncio.sleep(0.1)
        with pytest.raises(RewindRefused, match="stop every worker"):
            await rewind(kafka_bootstrap, group, HEALTH_SAMPLES, 2, end - 1)
    finally:
        await member.stop()
    assert await committed(kafka_bootstrap, group) == end


def test_the_command_rewinds_and_says_why_when_it_does_not(kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch,
                                                          capfd: pytest.CaptureFixture[str]) -> None:
    from circadia_dev.cli import main  # runs the worker's own `python -m prediction_worker rewind`

    group = f"rewind-test-{uuid.uuid4().hex[:6]}"
    end = asyncio.run(end_after_producing(kafka_bootstrap, 2))
    asyncio.run(rewind(kafka_bootstrap, group, HEALTH_SAMPLES, 2, end))
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)

    assert main(["worker", "rewind", "--partition", "2", "--offset", str(end - 2), "--group", group]) == 0
    assert f"committed offset {end} -> {end - 2}" in capfd.readouterr().out
    assert main(["worker", "rewind", "--partition", "2", "--offset", str(end), "--group", group]) == 1
    assert "not rewound:" in capfd.readouterr().err
    assert asyncio.run(committed(kafka_bootstrap, group)) == end - 2
