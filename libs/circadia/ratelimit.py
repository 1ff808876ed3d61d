"""Rate limits on Redis (moving window, ``limits`` library), failing open when Redis fails.

When Redis is unreachable a limit lets the request through, counts it in
``circadia_ratelimit_unavailable_total`` and logs a warning (at most every 10 s): an
outage of the limiter must not become an outage of the service.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from limits import parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from prometheus_client import Counter
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

REJECTED = Counter("circadia_ratelimit_rejected_total", "Requests refused by a rate limit.", ["limit"])
UNAVAILABLE = Counter(
    "circadia_ratelimit_unavailable_total",
    "Requests let through unchecked because the rate-limit store was unavailable.",
    ["limit"],
)


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    reset_after: int  # whole seconds until the window frees a slot
    checked: bool = True

    def headers(self) -> dict[str, str]:
        """IETF RateLimit header fields, plus Retry-After on refusal."""
        if not self.checked:
            return {}
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_after),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, self.reset_after))
        return headers


def redis_limiter(redis_url: str, pool: aioredis.ConnectionPool) -> MovingWindowRateLimiter:
    storage = RedisStorage(
        "async+" + redis_url,
        implementation="redispy",
        # limits types **options as float | str | bool, but hands them to redis.asyncio as they are
        connection_pool=pool,  # type: ignore[arg-type]
        wrap_exceptions=True,
        key_prefix="circadia:ratelimit",
    )
    return MovingWindowRateLimiter(storage)


class RateLimit:
    """One named limit such as ``"120/minute"``, applied per identity (user id, client IP)."""

    def __init__(self, name: str, spec: str, limiter: MovingWindowRateLimiter) -> None:
        self.name = name
        self.item = parse(spec)
        self._limiter = limiter
        self._warned_at = float("-inf")

    async def hit(self, identity: str) -> RateDecision:
        try:
            allowed = await self._limiter.hit(self.item, self.name, identity)
            stats = await self._limiter.get_window_stats(self.item, self.name, identity)
        except (StorageError, RedisError, OSError, TimeoutError) as exc:
            UNAVAILABLE.labels(self.name).inc()
            if time.monotonic() - self._warned_at > 10:
                self._warned_at = time.monotonic()
                log.warning("rate limit store unavailable: failing open",
                            extra={"limit": self.name, "error": repr(exc)})
            return RateDecision(True, self.item.amount, self.item.amount, 0, checked=False)
        if not allowed:
            REJECTED.labels(self.name).inc()
        reset_after = max(0, math.ceil(stats.reset_time - time.time()))
        return RateDecision(allowed, self.item.amount, stats.remaining, reset_after)
