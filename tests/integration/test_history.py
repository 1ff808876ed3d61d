"""The fan-out history on a real Redis: kept per Kafka cluster, unreadable before the feed
has reached one."""

from __future__ import annotations

import uuid

import pytest
import redis.asyncio as aioredis

from fanout_gateway.history import Appended, HistoryUnavailable, UserHistory


async def test_offsets_of_one_cluster_never_steer_another(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
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
    finally:
        await client.aclose()
