"""Rate limits on Redis (moving window), failing open when Redis fails.

Each identity's limit is a Redis list of the times of its last ``limit`` requests, newest
first (the moving-window log of the ``limits`` library, whose parser reads the specs such
as ``"120/minute"``). One script takes a slot if the window has one and reports the window
(requests in it, the oldest of them), so a check is one round trip.

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
from prometheus_client import Counter
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

REJECTED = Counter("circadia_ratelimit_rejected_total", "Requests refused by a rate limit.", ["limit"])
UNAVAILABLE = Counter(
    "circadia_ratelimit_unavailable_total",
    "Requests let through unchecked because the rate-limit store was unavailable.",
    ["limit"],
)
KEY_PREFIX = "circadia:ratelimit"

# KEYS[1]: the hit times, newest first. ARGV: now (s), limit, window (s).
# Returns {1 if the hit was taken else 0, hits within the window, the oldest of them or ''}.
_HIT = """
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local since = now - window
local taken = 0
local last = redis.call('LINDEX', KEYS[1], limit - 1)
if not last or tonumber(last) < since then
  redis.call('LPUSH', KEYS[1], ARGV[1])
  redis.call('LTRIM', KEYS[1], 0, limit - 1)
  redis.call('EXPIRE', KEYS[1], math.ceil(window))
  taken = 1
end
local low, high, oldest = 0, redis.call('LLEN', KEYS[1]) - 1, -1
while low <= high do
  local middle = math.floor((low + high) / 2)
  if tonumber(redis.call('LINDEX', KEYS[1], middle)) >= since then
    oldest = middle
    low = middle + 1
  else
    high = middle - 1
  end
end
if oldest < 0 then
  return {taken, 0, ''}
end
return {taken, oldest + 1, redis.call('LINDEX', KEYS[1], oldest)}
"""


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


class RateLimit:
    """One named limit such as ``"120/minute"``, applied per identity (user id, client IP)."""

    def __init__(self, name: str, spec: str, redis: aioredis.Redis) -> None:
        self.name = name
        self.item = parse(spec)
        self._window = self.item.get_expiry()
        self._script = redis.register_script(_HIT)
        self._suffix = f"{self.item.amount}/{self._window}s"
        self._warned_at = float("-inf")

    def key(self, identity: str) -> str:
        return f"{KEY_PREFIX}:{self.name}:{self._suffix}:{identity}"

    async def hit(self, identity: str) -> RateDecision:
        now = time.time()
        try:
            taken, count, oldest = await self._script(keys=[self.key(identity)],
                                                      args=[repr(now), self.item.amount, self._window])
        except (RedisError, OSError, TimeoutError) as exc:
            UNAVAILABLE.labels(self.name).inc()
            if time.monotonic() - self._warned_at > 10:
                self._warned_at = time.monotonic()
                log.warning("rate limit store unavailable: failing open",
                            extra={"limit": self.name, "error": repr(exc)})
            return RateDecision(True, self.item.amount, self.item.amount, 0, checked=False)
        allowed = bool(taken)
        if not allowed:
            REJECTED.labels(self.name).inc()
        reset_at = float(oldest) + self._window if oldest else now
        return RateDecision(allowed, self.item.amount, max(0, self.item.amount - int(count)),
                            max(0, math.ceil(reset_at - now)))
