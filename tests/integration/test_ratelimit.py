"""The moving-window rate limit on a real Redis: one script call per check."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from circadia.ratelimit import UNAVAILABLE, RateLimit
from tests.conftest import free_port


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


def name() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


async def test_a_window_admits_its_amount_then_refuses_with_the_wait(redis: aioredis.Redis) -> None:
    limit = RateLimit(name(), "3/minute", redis)
    decisions = [await limit.hit("device-a") for _ in range(4)]

    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert all(d.limit == 3 and d.checked for d in decisions)
    assert 58 <= decisions[-1].reset_after <= 60
    assert decisions[-1].headers()["Retry-After"] == str(decisions[-1].reset_after)
    # the refused request took no slot: the list still holds the three admitted ones
    assert await redis.llen(limit.key("device-a")) == 3
    assert 0 < await redis.ttl(limit.key("device-a")) <= 60

    other = await limit.hit("device-b")  # identities are counted apart
    assert other.allowed and other.remaining == 2


async def test_the_window_moves_slot_by_slot(redis: aioredis.Redis) -> None:
    limit = RateLimit(name(), "2/second", redis)
    assert (await limit.hit("user")).allowed
    await asyncio.sleep(0.5)
    assert (await limit.hit("user")).allowed
    refused = await limit.hit("user")
    assert not refused.allowed and refused.reset_after == 1
    await asyncio.sleep(0.6)  # the first hit left the window, the second has not
    again = await limit.hit("user")
    assert again.allowed and again.remaining == 0
    assert not (await limit.hit("user")).allowed


async def test_an_unreachable_store_lets_requests_through_and_counts_them() -> None:
    unreachable = aioredis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1)
    limit = RateLimit(name(), "1/minute", unreachable)
    before = UNAVAILABLE.labels(limit.name)._value.get()
    decisions = [await limit.hit("user") for _ in range(2)]
    assert all(d.allowed and not d.checked for d in decisions)
    assert decisions[0].headers() == {}
    assert UNAVAILABLE.labels(limit.name)._value.get() - before == 2
    await unreachable.aclose()
