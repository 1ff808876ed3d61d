"""Idempotent uploads: each (user, upload_id) is published at most once while Redis remembers it.

The ledger entry for an upload goes through two states:

  pending   ``SET NX`` with a short TTL (longer than a produce can take) before publishing
  published set after the broker acknowledged, kept for the retention TTL (default 7 days)

A repeat finds ``published`` and is answered as a duplicate without publishing; a
concurrent repeat finds ``pending`` and waits for the first request's outcome. A failed
publish deletes the claim so a retry can publish. If the process dies between the
broker's acknowledgement and the marking, the pending entry expires and a retry publishes
again: a rare duplicate on the topic, which consumers drop by ``upload_id``. An upload is
never lost for the ledger's sake, because nothing is marked published before the broker
acknowledged it. The same ``upload_id`` with different content is a conflict.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

_MARK = """
local current = redis.call('GET', KEYS[1])
if current == false or current == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class LedgerUnavailable(Exception):
    """Redis could not be asked; the caller decides how to degrade."""


@dataclass(frozen=True)
class Claim:
    key: str
    pending: str


@dataclass(frozen=True)
class Published:
    accepted: int
    partition: int
    offset: int


@dataclass(frozen=True)
class Conflict:
    """The upload_id was used before for different content."""


@dataclass(frozen=True)
class InFlight:
    """Another request holds the claim and did not finish within the wait."""


Outcome = Claim | Published | Conflict | InFlight


class UploadLedger:
    def __init__(self, client: aioredis.Redis, *, ttl_seconds: int, pending_seconds: float,
                 wait_seconds: float, poll_seconds: float = 0.05) -> None:
        self._redis = client
        self._ttl_ms = int(ttl_seconds * 1000)
        self._pending_ms = int(pending_seconds * 1000)
        self._wait = wait_seconds
        self._poll = poll_seconds
        self._mark = client.register_script(_MARK)
        self._release = client.register_script(_RELEASE)

    @staticmethod
    def key(user_id: str, upload_id: str) -> str:
        return f"circadia:upload:{user_id}:{upload_id}"

    async def claim(self, user_id: str, upload_id: str, digest: str) -> Outcome:
        key = self.key(user_id, upload_id)
        pending = json.dumps({"state": "pending", "owner": secrets.token_hex(8), "digest": digest})
        deadline = time.monotonic() + self._wait
        try:
            while True:
                if await self._redis.set(key, pending, nx=True, px=self._pending_ms):
                    return Claim(key, pending)
                raw = await self._redis.get(key)
                if raw is not None:
                    entry = json.loads(raw)
                    if entry["digest"] != digest:
                        return Conflict()
                    if entry["state"] == "published":
                        return Published(entry["accepted"], entry["partition"], entry["offset"])
                if time.monotonic() >= deadline:
                    return InFlight()
                await asyncio.sleep(self._poll)
        except (RedisError, OSError) as exc:
            raise LedgerUnavailable(repr(exc)) from exc

    async def mark_published(self, claim: Claim, digest: str, published: Published) -> None:
        entry = json.dumps({"state": "published", "digest": digest, "accepted": published.accepted,
                            "partition": published.partition, "offset": published.offset})
        try:
            await self._mark(keys=[claim.key], args=[claim.pending, entry, self._ttl_ms])
        except (RedisError, OSError) as exc:
            raise LedgerUnavailable(repr(exc)) from exc

    async def forget_user(self, user_id: str) -> int:
        """Delete every entry of the user (an erasure: a re-sent upload is then stored anew, not
        answered as a duplicate of erased data); the number deleted. An incremental SCAN: erasures
        are rare, and it never blocks Redis."""
        pattern = self.key(_glob_escape(user_id), "*")
        deleted = 0
        try:
            batch: list[bytes] = []
            async for key in self._redis.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    deleted += await self._redis.delete(*batch)
                    batch = []
            if batch:
                deleted += await self._redis.delete(*batch)
        except (RedisError, OSError) as exc:
            raise LedgerUnavailable(repr(exc)) from exc
        return deleted

    async def release(self, claim: Claim) -> None:
        try:
            await self._release(keys=[claim.key], args=[claim.pending])
        except (RedisError, OSError) as exc:
            raise LedgerUnavailable(repr(exc)) from exc


def _glob_escape(text: str) -> str:
    """``text`` matched literally by Redis' glob patterns (SCAN MATCH)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
