"""The worker's consumer: records of inactive partitions are given back, skipped offsets reported."""

from __future__ import annotations

import contextlib
import logging
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from faust.types import TP
from faust.types.tuples import Message

from circadia.topics import HEALTH_SAMPLES
from prediction_worker import metrics
from prediction_worker.consumer import GiveBackConsumerThread, SafeConsumer
from tests.unit.conftest import APP_ID, CHANGELOG_TOPIC

P1, P3 = TP(HEALTH_SAMPLES, 1), TP(HEALTH_SAMPLES, 3)
CHANGELOG = TP(CHANGELOG_TOPIC, 3)



class FakeAiokafka:
    """What faust's fetch reads from aiokafka; like aiokafka, an empty set means every partition."""

    def __init__(self, buffered: dict[TP, list[int]]) -> None:
        self._buffered = buffered
        self._closed = False
        self._fetcher = self
        self._subscriptions = SimpleNamespace(fetch_context=contextlib.nullcontext)
        self.positions = {tp: offsets[0] for tp, offsets in buffered.items()}
        self.paused_while_waiting: set[TP] = set()

    async def fetched_records(self, partitions: set[TP], timeout: float = 0, max_records: int | None = None
                              ) -> dict[TP, list[Any]]:
        if self.paused_while_waiting:
            partitions.difference_update(self.paused_while_waiting)  # faust's set is live
        returned = {tp: offsets for tp, offsets in self._buffered.items() if not partitions or tp in partitions}
        for tp, offsets in returned.items():
            self.positions[tp] = offsets[-1] + 1  # returning records moves the position past them
        return {tp: [SimpleNamespace(offset=offset) for offset in offsets] for tp, offsets in returned.items()}

    def seek(self, tp: TP, offset: int) -> None:
        self.positions[tp] = offset


def skipped_so_far() -> float:
    return metrics.OFFSET_GAPS.labels(HEALTH_SAMPLES)._value.get()


def message(tp: TP, offset: int) -> Message:
    return Message(tp.topic, tp.partition, offset, 0.0, 0, None, b"user", b"record", None, tp=tp)


async def test_the_worker_consumes_with_the_safe_consumer_and_its_thread(app: faust.App) -> None:
    assert isinstance(app.consumer, SafeConsumer)
    assert isinstance(app.consumer._new_consumer_thread(), GiveBackConsumerThread)


@pytest.mark.parametrize("active", [set(), {CHANGELOG}], ids=["nothing active", "changelog only"])
async def test_records_of_partitions_not_active_are_given_back(app: faust.App, active: set[TP]) -> None:
    thread = app.consumer._new_consumer_thread()
    aiokafka = FakeAiokafka({P1: [14], P3: [26, 27, 28, 29], CHANGELOG: [7, 8]})

    records = await thread._fetch_records(aiokafka, active, timeout=1.0)

    assert {tp: [r.offset for r in rs] for tp, rs in records.items()} == (
        {CHANGELOG: [7, 8]} if active else {})
    # the stream partitions will be fetched again from the first record they returned
    assert aiokafka.positions[P1] == 14 and aiokafka.positions[P3] == 26
    assert aiokafka.positions[CHANGELOG] == (9 if active else 7)


async def test_a_set_that_empties_while_the_fetch_waits_delivers_nothing(app: faust.App) -> None:
    """As in the rebalance that lost uploads: the fetch was asked for the changelog, and recovery
    paused it while the fetch waited; aiokafka then returned every partition's records."""
    thread = app.consumer._new_consumer_thread()
    aiokafka = FakeAiokafka({P3: [26, 27, 28, 29], CHANGELOG: [7]})
    aiokafka.paused_while_waiting = {CHANGELOG}

    assert await thread._fetch_records(aiokafka, {CHANGELOG}, timeout=1.0) == {}
    assert aiokafka.positions == {P3: 26, CHANGELOG: 7}


async def test_records_of_active_partitions_are_delivered(app: faust.App) -> None:
    thread = app.consumer._new_consumer_thread()
    aiokafka = FakeAiokafka({P1: [14, 15], P3: [26]})
    records = await thread._fetch_records(aiokafka, {P1, P3}, timeout=1.0)
    assert {tp: [r.offset for r in rs] for tp, rs in records.items()} == {P1: [14, 15], P3: [26]}
    assert aiokafka.positions == {P1: 16, P3: 27}


async def test_after_a_seek_every_delivered_offset_must_follow_the_last(
        app: faust.App, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    consumer = app.consumer

    async def seek_to_committed() -> dict[TP, int | None]:
        return {P1: 13, P3: 12, TP(HEALTH_SAMPLES, 5): None}

    monkeypatch.setattr(consumer, "seek_to_committed", seek_to_committed)
    await consumer.perform_seek()
    before = skipped_so_far()

    with caplog.at_level(logging.ERROR, logger="prediction_worker.consumer"):
        for tp, offset in [(P1, 13), (P1, 14), (P3, 14), (P3, 15), (P1, 14), (P1, 15), (CHANGELOG, 40),
                           (TP(HEALTH_SAMPLES, 5), 90), (TP(f"{APP_ID}-__assignor-__leader", 0), 9)]:
            consumer._check_contiguous(message(tp, offset))

    # P3 was sought to 12, and 14 came first: 12 and 13 were skipped. Reading again (P1 14) is
    # not a skip; other topics (a compacted changelog, faust's own) and a partition without a
    # committed offset are not judged
    assert skipped_so_far() - before == 2
    [record] = caplog.records
    assert (record.topic, record.partition, record.first, record.last) == (HEALTH_SAMPLES, 3, 12, 13)


async def test_a_revoked_partition_is_judged_afresh(app: faust.App, monkeypatch: pytest.MonkeyPatch) -> None:
    consumer = app.consumer

    async def app_revoked(revoked: set[TP]) -> None:
        pass

    monkeypatch.setattr(consumer, "_on_partitions_revoked", app_revoked)  # the app's part is not tested here
    consumer._check_contiguous(message(P1, 20))
    await consumer.on_partitions_revoked({P1})
    before = skipped_so_far()
    consumer._check_contiguous(message(P1, 35))  # another worker had it meanwhile
    assert skipped_so_far() == before


def test_a_drained_buffer_does_not_resume_a_paused_partition(app: faust.App) -> None:
    consumer = app.consumer
    consumer._set_active_tps({P1, P3})
    consumer.on_buffer_full(P1)
    consumer.on_buffer_full(P3)
    consumer.pause_partitions({P3})  # a rebalance began meanwhile

    consumer.on_buffer_drop(P1)
    consumer.on_buffer_drop(P3)

    assert consumer._get_active_partitions() == {P1}
    assert not consumer._buffered_partitions
