"""A bounded history of each user's results in Redis, for resuming after a reconnect.

One Redis stream per user (``circadia:history:{cluster}:{user}``), capped at ``size`` entries and
expiring ``ttl`` after the last write, plus an epoch (``...:epoch``) created with the
stream. Entry ids are the Kafka offset + 1 (all of a user's results share one partition,
keyed by user id), so every replica writes the same id for the same record and the
second write is refused by Redis: replicas never duplicate history.

A result whose source uploads were all carried by an earlier result of the user (a worker
that crashed between publishing and saving its state publishes it again) is a repeat:
it is neither recorded nor pushed, so clients never receive the same result twice. Each
upload id maps to the offset of the first result that carried it (``...:sources``), which
tells a replica seeing the same record again from a later one.

A cursor can be resumed exactly when its epoch is the stream's current one and the
stream still reaches back to the cursor's own entry (its oldest entry is not newer):
trimming removes the oldest entries first, so then nothing after the cursor is missing.
Otherwise the client is told to reset. If Redis loses the stream (restart,
expiry), the next write creates a new epoch, so old cursors are recognised as stale.

Offsets only mean something within one Kafka cluster, so every key names the cluster's id
(``use_cluster``, set by the feed once it has asked the broker). A rebuilt cluster, or
another one sharing the Redis, starts a history of its own: new epochs, so cursors from the
old one get a reset, and no stale position makes the feed skip records. Until the feed has
reached Kafka there is no history to read (``HistoryUnavailable``: clients get a reset).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

_APPEND = """
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[4]
  redis.call('SET', KEYS[2], epoch)
end
local offset = tonumber(ARGV[7])
local count = tonumber(ARGV[8])
local repeat_of_earlier = count > 0
for i = 1, count do
  local first = redis.call('HGET', KEYS[3], ARGV[8 + i])
  if not first then
    redis.call('HSET', KEYS[3], ARGV[8 + i], offset)
    repeat_of_earlier = false
  elseif tonumber(first) >= offset then
    repeat_of_earlier = false
  end
end
if not repeat_of_earlier then
  pcall(redis.call, 'XADD', KEYS[1], 'MAXLEN', ARGV[1], ARGV[2], 'partition', ARGV[5], 'message', ARGV[3])
end
for i = 1, 3 do
  redis.call('EXPIRE', KEYS[i], ARGV[6])
end
return {epoch, repeat_of_earlier and 1 or 0}
"""


_ADVANCE = """
for i = 1, #ARGV, 2 do
  local current = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '-1')
  if tonumber(ARGV[i + 1]) > current then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return 1
"""


class HistoryUnavailable(Exception):
    """Redis could not be asked; resume degrades to reset."""


@dataclass(frozen=True)
class Appended:
    """A prediction to record: whose, where in Kafka, its JSON, and the uploads it reflects."""

    user_id: str
    partition: int
    offset: int
    message: str
    sources: Sequence[str] = ()


@dataclass(frozen=True)
class Recorded:
    epoch: str
    repeat: bool  # every source upload was carried by an earlier result: do not deliver


@dataclass(frozen=True)
class Entry:
    partition: int
    offset: int
    message: str  # the JSON of the prediction as pushed


@dataclass(frozen=True)
class Replay:
    entries: Sequence[Entry]
    complete: bool  # False: history does not reach back to the cursor (or epoch differs): reset


class UserHistory:
    def __init__(self, client: aioredis.Redis, *, size: int, ttl_seconds: int) -> None:
        self._redis = client
        self._cluster: str | None = None
        self._size = size
        self._ttl = ttl_seconds
        self._append = client.register_script(_APPEND)
        self._advance = client.register_script(_ADVANCE)

    def use_cluster(self, cluster_id: str) -> None:
        """The Kafka cluster whose offsets this history records (see the module's notes)."""
        if cluster_id != self._cluster:
            log.info("history bound to a Kafka cluster", extra={"cluster_id": cluster_id,
                                                                "previous": self._cluster})
            self._cluster = cluster_id

    def _namespace(self) -> str:
        if self._cluster is None:
            raise HistoryUnavailable("the Kafka cluster is not known yet")
        return self._cluster

    def _positions_key(self) -> str:
        return f"circadia:fanout:positions:{self._namespace()}"

    async def positions(self) -> dict[int, int]:
        """Per partition of predictions.v1, the next offset the history has not seen yet
        (shared by every replica: as long as one runs, the history has no gap)."""
        try:
            stored = await self._redis.hgetall(self._positions_key())
        except (RedisError, OSError) as exc:
            raise HistoryUnavailable(repr(exc)) from exc
        return {int(partition): int(offset) for partition, offset in stored.items()}

    async def advance(self, next_offsets: dict[int, int]) -> None:
        if not next_offsets:
            return
        try:
            await self._advance(keys=[self._positions_key()],
                                args=[v for p, o in next_offsets.items() for v in (p, o)])
        except (RedisError, OSError) as exc:
            raise HistoryUnavailable(repr(exc)) from exc

    def _keys(self, user_id: str) -> tuple[str, str, str]:
        base = f"circadia:history:{self._namespace()}:{user_id}"
        return base, base + ":epoch", base + ":sources"

    def _args(self, entry: Appended) -> list[str | int]:
        return [self._size, f"{entry.offset + 1}-0", entry.message, secrets.token_hex(8), entry.partition,
                self._ttl, entry.offset, len(entry.sources), *entry.sources]

    async def append(self, entry: Appended) -> Recorded:
        """Store the entry (idempotently across replicas); its epoch, and whether it is a repeat."""
        (recorded,) = await self.append_many([entry])
        return recorded

    async def append_many(self, entries: Sequence[Appended]) -> list[Recorded]:
        """``append`` for a batch, in one round trip."""
        if not entries:
            return []
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for entry in entries:
                    await self._append(keys=list(self._keys(entry.user_id)), args=self._args(entry), client=pipe)
                results = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise HistoryUnavailable(repr(exc)) from exc
        return [Recorded(epoch.decode() if isinstance(epoch, bytes) else str(epoch), bool(repeat))
                for epoch, repeat in results]

    async def epoch(self, user_id: str) -> str | None:
        try:
            value = await self._redis.get(self._keys(user_id)[1])
        except (RedisError, OSError) as exc:
            raise HistoryUnavailable(repr(exc)) from exc
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else value

    async def latest(self, user_id: str) -> Entry | None:
        try:
            rows = await self._redis.xrevrange(self._keys(user_id)[0], count=1)
        except (RedisError, OSError) as exc:
            raise HistoryUnavailable(repr(exc)) from exc
        return _entry(rows[0]) if rows else None

    async def after(self, user_id: str, epoch: str, offset: int) -> Replay:
        """Entries after Kafka ``offset`` in order, if the history provably holds all of them."""
        key = self._keys(user_id)[0]
        try:
            current = await self.epoch(user_id)
            if current is None or current != epoch:
                return Replay((), complete=False)
            oldest = await self._redis.xrange(key, count=1)
            if not oldest or _id_number(oldest[0][0]) > offset + 1:  # the cursor's entry was trimmed away
                return Replay((), complete=False)
            rows = await self._redis.xrange(key, min=f"({offset + 1}-0", max="+")
        except (RedisError, OSError) as exc:
            raise HistoryUnavailable(repr(exc)) from exc
        return Replay([_entry(row) for row in rows or ()], complete=True)


def _id_number(entry_id: bytes | str | None) -> int:
    if entry_id is None:  # redis-py's types allow it; Redis never returns an entry without an id
        raise ValueError("stream entry without an id")
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.split("-")[0])


def _entry(row: tuple) -> Entry:
    entry_id, fields = row
    return Entry(partition=int(fields[b"partition"]), offset=_id_number(entry_id) - 1,
                 message=fields[b"message"].decode())
