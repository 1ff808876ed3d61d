"""The fan-out history on a real Redis: kept per Kafka cluster, unreadable before the feed
has reached one."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from fanout_gateway.history import Appended, HistoryUnavailable, Outcome, UserHistory


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    connection = aioredis.Redis.from_url(redis_url)
    yield connection
    await connection.aclose()


async def test_offsets_of_one_cluster_never_steer_another(client: aioredis.Redis) -> None:
    history = UserHistory(client, size=10, ttl_seconds=60)
    user = f"history-{uuid.uuid4().hex[:8]}"
    with pytest.raises(HistoryUnavailable):
        await history.latest(user)  # the feed has not reached Kafka yet
    with pytest.raises(HistoryUnavailable):
        await history.positions()

    first, second = f"cluster-{uuid.uuid4().hex[:6]}", f"cluster-{uuid.uuid4().hex[:6]}"
    history.use_cluster(first)
    recorded = await history.record(Appended(user, partition=2, offset=500, record=b"r1", fingerprint="fp",
                                             sources=("u1",)))
    await history.advance({2: 501})
    assert await history.positions() == {2: 501}
    assert (latest := await history.latest(user)) is not None and latest[0].offset == 500

    history.use_cluster(second)  # a rebuilt cluster: its offsets start again from 0
    assert await history.positions() == {}
    assert await history.latest(user) is None
    assert await history.epoch(user) is None
    again = await history.record(Appended(user, partition=2, offset=3, record=b"r2", fingerprint="fp",
                                            sources=("u2",)))
    assert again.epoch != recorded.epoch and not again.repeat  # old cursors get a reset
    await history.record(Appended(user, partition=2, offset=4, record=b"r3", fingerprint="fp",
                                  sources=("u3",)))
    replay = await history.after(user, again.epoch, 3)
    assert replay.complete and [entry.offset for entry in replay.entries] == [4]
    assert not (await history.after(user, recorded.epoch, 500)).complete  # a cursor of the old cluster

    history.use_cluster(first)  # the first cluster's history is untouched
    assert await history.positions() == {2: 501}
    assert (latest := await history.latest(user)) is not None and latest[0].offset == 500


async def test_the_uploads_remembered_for_repeats_stay_bounded(client: aioredis.Redis) -> None:
    history = UserHistory(client, size=2, ttl_seconds=60)
    history.use_cluster(f"cluster-{uuid.uuid4().hex[:6]}")
    user = f"bounded-{uuid.uuid4().hex[:8]}"
    for offset in range(50):  # an active user: every write renews the keys' expiry
        recorded = await history.record(Appended(user, partition=0, offset=offset, record=b"r",
                                                 fingerprint="fp", sources=(f"upload-{offset}",)))
        assert not recorded.repeat
    assert await client.zcard(history._keys(user)[2]) == 20  # 10 x the history size
    again = await history.record(Appended(user, partition=0, offset=50, record=b"r", fingerprint="fp",
                                          sources=("upload-49",)))
    assert again.repeat  # a recent upload is still recognised


async def test_an_entry_redis_refuses_fails_alone(client: aioredis.Redis) -> None:
    history = UserHistory(client, size=5, ttl_seconds=60)
    history.use_cluster(f"cluster-{uuid.uuid4().hex[:6]}")
    broken, fine = f"broken-{uuid.uuid4().hex[:8]}", f"fine-{uuid.uuid4().hex[:8]}"
    await client.set(history._keys(broken)[2], "not a sorted set")  # the script fails on this key
    recorded = await history.record_many([
        Appended(broken, partition=1, offset=7, record=b"r", fingerprint="fp", sources=("a",)),
        Appended(fine, partition=1, offset=8, record=b"r", fingerprint="fp", sources=("b",))],
        advance={1: 9})
    assert [r.outcome for r in recorded] == [Outcome.FAILED, Outcome.PUBLISHED]
    assert await history.positions() == {1: 9}  # the batch is past; the failed entry is logged
    assert (latest := await history.latest(fine)) is not None and latest[0].offset == 8
