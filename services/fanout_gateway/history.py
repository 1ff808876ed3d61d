"""Each user's results in Redis: a bounded history for resume, and the live channel.

One Redis stream per user (``circadia:history:{<cluster>:<user>}``), capped at ``size`` entries
and expiring ``ttl`` after the last write, plus an epoch (``...:epoch``) created with the
stream. Entry ids are the Kafka offset + 1 (all of a user's results share one partition,
keyed by user id), so a record written twice (a partition's new owner re-reads what the old
one recorded) gets the same id and the second write is refused by Redis.

Entries and publications carry the result as its Avro bytes and schema fingerprint; the
replica that pushes it to sockets renders the JSON (``records.py``).

Recording and publishing are one step (``record_many``, a Lua script per result): the
script writes the entry and, in the same atomic step, publishes it on the user's sharded
Pub/Sub channel (``circadia:live:<deployment>:{<cluster>:<user>}``) to the replicas that have a
connection of that user. There is no moment at which a result is in the history but was
never published, and every publication is in the history. Each publication carries the
offset of the user's previous entry, so a subscriber that missed one (its Redis connection
dropped) sees the gap at the next one and reads the history to bridge it. The history keys
and the channel share a hash tag, so in a Redis Cluster they live on one shard.

A result whose source uploads were all carried by an earlier result of the user (a worker
that crashed between publishing and saving its state publishes it again) is a repeat:
it is neither recorded nor published, so clients never receive the same result twice. Each
upload id maps to the offset of the first result that carried it (``...:sources``, a sorted
set holding the newest 10 × ``size`` upload ids, so it stays bounded however long a user
stays active), which tells a replica seeing the same record again from a later one. A write older than the
stream's newest entry that is not in it (a partition's former owner still writing after a
rebalance) is stale: not recorded, not published.

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

import json
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

log = logging.getLogger(__name__)

# KEYS: stream, epoch, sources. ARGV: size, entry id, the record (Avro), a new epoch, partition,
# ttl, offset, channel, the writer schema's fingerprint, the publication's timestamp and trace
# context, the number of source uploads, then the upload ids.
_RECORD = """
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[4]
  redis.call('SET', KEYS[2], epoch)
end
local offset = tonumber(ARGV[7])
local count = tonumber(ARGV[11])
local repeat_of_earlier = count > 0
for i = 1, count do
  local first = redis.call('ZSCORE', KEYS[3], ARGV[11 + i])
  if not first then
    redis.call('ZADD', KEYS[3], offset, ARGV[11 + i])
    repeat_of_earlier = false
  elseif tonumber(first) >= offset then
    repeat_of_earlier = false
  end
end
local remembered = 10 * tonumber(ARGV[1])
if redis.call('ZCARD', KEYS[3]) > remembered then
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(remembered + 1))
end
for i = 1, 3 do
  redis.call('EXPIRE', KEYS[i], ARGV[6])
end
if repeat_of_earlier then
  return {epoch, 1, 0}
end
local written = pcall(redis.call, 'XADD', KEYS[1], 'MAXLEN', ARGV[1], ARGV[2], 'partition', ARGV[5],
                      'schema', ARGV[9], 'record', ARGV[3])
local outcome = 0
if not written then
  if #redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2]) == 0 then
    return {epoch, 2, 0}
  end
  outcome = 3
end
local before = redis.call('XREVRANGE', KEYS[1], '(' .. ARGV[2], '-', 'COUNT', 1)
local previous = -1
if before[1] then
  previous = tonumber(string.match(before[1][1], '^(%d+)')) - 1
end
local head = ARGV[5] .. ' ' .. ARGV[7] .. ' ' .. previous .. ' ' .. ARGV[10] .. ' ' .. ARGV[9] .. ' ' .. epoch
return {epoch, outcome, redis.call('SPUBLISH', ARGV[8], head .. '\\n' .. ARGV[3])}
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
    """A prediction to record: whose, where in Kafka, its Avro bytes and writer schema, the
    uploads it reflects, and the trace context its publication carries (a ``traceparent``, or
    empty)."""

    user_id: str
    partition: int
    offset: int
    record: bytes
    fingerprint: str
    sources: Sequence[str] = ()
    timestamp_ms: int = 0  # the Kafka record's timestamp, for the delivery latency
    traceparent: str = ""


class Outcome(IntEnum):
    PUBLISHED = 0  # written to the history and published
    REPEAT = 1  # every source upload was carried by an earlier result: not delivered
    STALE = 2  # older than the user's newest entry and not in the history: not delivered
    REPUBLISHED = 3  # already in the history (read again by a partition's new owner): published again
    FAILED = 4  # Redis refused this entry's script (an error no retry cures): not delivered, logged


@dataclass(frozen=True)
class Recorded:
    epoch: str
    outcome: Outcome
    receivers: int = 0  # replicas subscribed to the user's channel when it was published

    @property
    def repeat(self) -> bool:
        return self.outcome is Outcome.REPEAT


@dataclass(frozen=True)
class Entry:
    partition: int
    offset: int
    fingerprint: str  # of the schema the record was written with
    record: bytes  # Avro


@dataclass(frozen=True)
class Replay:
    entries: Sequence[Entry]
    complete: bool  # False: history does not reach back to the cursor (or epoch differs): reset
    epoch: str | None = None  # the stream's current epoch (None: no stream)


@dataclass(frozen=True)
class Publication:
    """One result as a replica receives it on a user's channel."""

    partition: int
    offset: int
    previous: int | None  # offset of the user's entry before this one; None: the first one kept
    timestamp_ms: int
    traceparent: str | None
    fingerprint: str
    epoch: str
    record: bytes  # Avro

    @classmethod
    def parse(cls, payload: bytes) -> Publication:
        head, _, record = payload.partition(b"\n")
        partition, offset, previous, timestamp_ms, traceparent, fingerprint, epoch = head.split(b" ")
        before = int(previous)
        return cls(int(partition), int(offset), before if before >= 0 else None, int(timestamp_ms),
                   traceparent.decode() if traceparent != b"-" else None, fingerprint.decode(), epoch.decode(),
                   record)


def prediction_message(partition: int, offset: int, epoch: str | None, record_json: str) -> str:
    """The prediction message around an already serialised record (no second serialisation)."""
    return (f'{{"type": "prediction", "cursor": {{"partition": {partition}, "offset": {offset}}}, '
            f'"epoch": {json.dumps(epoch)}, "prediction": {record_json}}}')


class UserHistory:
    def __init__(self, client: aioredis.Redis, *, size: int, ttl_seconds: int, deployment: str = "fanout") -> None:
        self._redis = client
        self._cluster: str | None = None
        self._size = size
        self._ttl = ttl_seconds
        self._deployment = deployment
        self._record = client.register_script(_RECORD)
        self._advance = client.register_script(_ADVANCE)

    def use_cluster(self, cluster_id: str) -> None:
        """The Kafka cluster whose offsets this history records (see the module's notes)."""
        if cluster_id != self._cluster:
            log.info("history bound to a Kafka cluster", extra={"cluster_id": cluster_id,
                                                                "previous": self._cluster})
            self._cluster = cluster_id

    @property
    def bound(self) -> bool:
        """Whether the Kafka cluster is known: until then no channel or history key can be named."""
        return self._cluster is not None

    def _namespace(self) -> str:
        if self._cluster is None:
            raise HistoryUnavailable("the Kafka cluster is not known yet")
        return self._cluster

    def channel(self, user_id: str) -> str:
        """The user's live channel (sharded Pub/Sub), in the slot of the user's history."""
        return f"circadia:live:{self._deployment}:{{{self._namespace()}:{user_id}}}"

    def _positions_key(self) -> str:
        return f"circadia:fanout:positions:{self._namespace()}"

    async def positions(self) -> dict[int, int]:
        """Per partition of predictions.v1, the next offset the history has not seen yet
        (shared by the replicas: a partition's next owner starts there)."""
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
        base = f"circadia:history:{{{self._namespace()}:{user_id}}}"
        return base, base + ":epoch", base + ":sources"

    async def forget(self, user_id: str) -> None:
        """Delete the user's history, epoch and sources (an erasure): a reconnect starts afresh."""
        try:
            await self._redis.delete(*self._keys(user_id))
        except (RedisError, OSError) as exc:
            raise HistoryUnavailable(repr(exc)) from exc

    def _args(self, entry: Appended) -> list[str | int | bytes]:
        return [self._size, f"{entry.offset + 1}-0", entry.record, secrets.token_hex(8), entry.partition,
                self._ttl, entry.offset, self.channel(entry.user_id), entry.fingerprint,
                f"{entry.timestamp_ms} {entry.traceparent or '-'}", len(entry.sources), *entry.sources]

    async def record(self, entry: Appended) -> Recorded:
        """Store the entry (idempotently) and publish it to the user's channel."""
        (recorded,) = await self.record_many([entry])
        return recorded

    async def record_many(self, entries: Sequence[Appended], advance: dict[int, int] | None = None) -> list[Recorded]:
        """``record`` for a batch, then (``advance``) the positions past it, in one round trip."""
        if not entries and not advance:
            return []
        try:
            results = await self._record_pipeline(entries, advance)
            if any(isinstance(r, NoScriptError) for r in results):  # Redis restarted or flushed its scripts
                for script in (self._record, self._advance):
                    await self._redis.script_load(script.script)
                results = await self._record_pipeline(entries, advance)
        except (RedisError, OSError) as exc:
            raise HistoryUnavailable(repr(exc)) from exc
        if advance and isinstance(results[-1], Exception):
            log.error("history positions not advanced", extra={"error": repr(results[-1])})
        recorded = []
        for entry, result in zip(entries, results, strict=False):
            if isinstance(result, Exception):  # this entry's script failed; the others stand
                log.error("result not recorded", extra={"user": entry.user_id, "partition": entry.partition,
                                                         "offset": entry.offset, "error": repr(result)})
                recorded.append(Recorded("", Outcome.FAILED))
                continue
            epoch, outcome, receivers = result
            recorded.append(Recorded(str(_text(epoch)), Outcome(int(outcome)), int(receivers)))
        return recorded

    async def _record_pipeline(self, entries: Sequence[Appended], advance: dict[int, int] | None) -> list:
        """EVALSHA straight away: redis-py's script objects in a pipeline first ask SCRIPT
        EXISTS, a second round trip for every batch."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for entry in entries:
                keys = self._keys(entry.user_id)
                pipe.evalsha(self._record.sha, len(keys), *keys, *self._args(entry))
            if advance:
                positions = [v for p, o in advance.items() for v in (p, o)]
                pipe.evalsha(self._advance.sha, 1, self._positions_key(), *positions)
            return await pipe.execute(raise_on_error=False)

    async def epoch(self, user_id: str) -> str | None:
        try:
            value = await self._redis.get(self._keys(user_id)[1])
        except (RedisError, OSError) as exc:
            raise HistoryUnavailable(repr(exc)) from exc
        return _text(value)

    async def latest(self, user_id: str) -> tuple[Entry, str | None] | None:
        """The user's newest entry and the current epoch, or None when there is none."""
        key, epoch_key, _ = self._keys(user_id)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.xrevrange(key, count=1)
                pipe.get(epoch_key)
                rows, epoch = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise HistoryUnavailable(repr(exc)) from exc
        if not rows:
            return None
        return _entry(rows[0]), _text(epoch)

    async def after(self, user_id: str, epoch: str, offset: int) -> Replay:
        """Entries after Kafka ``offset`` in order, if the history provably holds all of them."""
        replay = await self.since(user_id, offset)
        if replay.epoch is None or replay.epoch != epoch:
            return Replay((), complete=False, epoch=replay.epoch)
        return replay

    async def since(self, user_id: str, offset: int | None) -> Replay:
        """Entries after ``offset`` (all of them for None), in order, and whether the history
        still reaches back to ``offset``: what a live connection that may have missed
        publications since ``offset`` is owed, whatever the epoch."""
        key, epoch_key, _ = self._keys(user_id)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.get(epoch_key)
                pipe.xrange(key, count=1)
                pipe.xrange(key, min="-" if offset is None else f"({offset + 1}-0", max="+")
                raw_epoch, oldest, rows = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise HistoryUnavailable(repr(exc)) from exc
        epoch = _text(raw_epoch)
        if offset is not None and (not oldest or _id_number(oldest[0][0]) > offset + 1):
            return Replay((), complete=False, epoch=epoch)  # the cursor's entry was trimmed away (or lost)
        return Replay([_entry(row) for row in rows or ()], complete=True, epoch=epoch)


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _id_number(entry_id: bytes | str | None) -> int:
    if entry_id is None:  # redis-py's types allow it; Redis never returns an entry without an id
        raise ValueError("stream entry without an id")
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.split("-")[0])


def _entry(row: tuple) -> Entry:
    entry_id, fields = row
    return Entry(partition=int(fields[b"partition"]), offset=_id_number(entry_id) - 1,
                 fingerprint=fields[b"schema"].decode(), record=fields[b"record"])
