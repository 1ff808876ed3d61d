"""One Redis connection pool per process, shared by every mechanism that needs Redis."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from redis.credentials import CredentialProvider
from redis.exceptions import RedisError

from circadia.config import RedisSettings
from circadia.secrets import Secret

log = logging.getLogger(__name__)


class RotatingPassword(CredentialProvider):
    """The pool's credentials, read at every (re)connect, so a rotation needs no new pool."""

    def __init__(self, password: str | None) -> None:
        self.password = password

    def get_credentials(self) -> tuple[str] | tuple[str, str]:
        return (self.password,) if self.password else ()  # type: ignore[return-value]

    async def get_credentials_async(self) -> tuple[str] | tuple[str, str]:
        return self.get_credentials()


def connection_pool(settings: RedisSettings, password: str | None = None) -> aioredis.ConnectionPool:
    """Short timeouts: a slow or absent Redis must degrade a request, not stall it. A busy pool
    makes a request wait (up to the socket timeout) for a free connection instead of failing at
    once, which would look like Redis being down and weaken idempotency and rate limits."""
    return aioredis.BlockingConnectionPool.from_url(
        settings.redis_url,
        credential_provider=RotatingPassword(password),
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_socket_timeout_seconds * 4,
        socket_timeout=settings.redis_socket_timeout_seconds,
        socket_connect_timeout=settings.redis_socket_timeout_seconds,
        health_check_interval=30,
        retry_on_timeout=False,
    )


def password_rotation(pool: aioredis.ConnectionPool) -> Callable[[Secret | None], Awaitable[None]]:
    """Apply a rotated Redis password: new connections use it, open ones are closed."""

    provider = pool.connection_kwargs["credential_provider"]

    async def rotate(secret: Secret | None) -> None:
        provider.password = secret.value if secret is not None else None
        await pool.disconnect(inuse_connections=True)

    return rotate


async def redis_answers(client: aioredis.Redis, timeout: float = 1.0) -> bool:
    try:
        return bool(await asyncio.wait_for(client.ping(), timeout))
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning("Redis health probe failed", extra={"error": repr(exc)})
        return False
