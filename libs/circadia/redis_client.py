"""One Redis connection pool per process, shared by every mechanism that needs Redis."""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from circadia.config import RedisSettings

log = logging.getLogger(__name__)


def connection_pool(settings: RedisSettings) -> aioredis.ConnectionPool:
    """Short timeouts: a slow or absent Redis must degrade a request, not stall it."""
    return aioredis.ConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        socket_timeout=settings.redis_socket_timeout_seconds,
        socket_connect_timeout=settings.redis_socket_timeout_seconds,
        health_check_interval=30,
        retry_on_timeout=False,
    )


async def redis_answers(client: aioredis.Redis, timeout: float = 1.0) -> bool:
    try:
        return bool(await asyncio.wait_for(client.ping(), timeout))
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning("Redis health probe failed", extra={"error": repr(exc)})
        return False
