"""This replica's subscriptions to its users' live channels (Redis sharded Pub/Sub).

A replica subscribes to a user's channel when the user's first connection arrives and
unsubscribes when the last one leaves, so it receives the results of its own users only.
``subscribe`` returns once Redis has confirmed the subscription: from then on every result
recorded for the user reaches this replica, so a connection that reads the history *after*
the confirmation misses nothing between the history and the live stream.

Pub/Sub delivers at most once: what is published while the replica's Redis connection is
down never arrives. After a reconnect every channel is subscribed again, and each
confirmation is reported (``on_resubscribed``) so the server can bridge the gap from the
history. All subscriptions share one dedicated connection (no socket timeout; a PING every
``ping_interval`` seconds, and a connection silent for three intervals is replaced).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError

from fanout_gateway import metrics

log = logging.getLogger(__name__)


class LiveUnavailable(Exception):
    """The subscription could not be confirmed (Redis unreachable)."""


class LiveChannels:
    def __init__(self, pool: aioredis.ConnectionPool, channel: Callable[[str], str], *,
                 on_message: Callable[[str, bytes], None], on_resubscribed: Callable[[str], None],
                 retry_interval: float = 1.0, ping_interval: float = 5.0) -> None:
        self._pool = pool
        self._channel = channel
        self._on_message = on_message
        self._on_resubscribed = on_resubscribed
        self._retry_interval = retry_interval
        self._ping_interval = ping_interval
        self._users: dict[bytes, str] = {}  # channel → user, for what this replica subscribed to
        self._confirmed: dict[str, asyncio.Future[None]] = {}  # user → confirmation of its subscription
        self._resync: set[str] = set()  # users subscribed again after a reconnect, not yet confirmed
        self._connection: AbstractConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="live-channels")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def subscribe(self, user_id: str, timeout: float) -> None:
        """Subscribe to the user's channel (once per user) and wait for Redis to confirm it;
        ``LiveUnavailable`` when it is not confirmed within ``timeout`` (the subscription
        stays asked for, and is reported through ``on_resubscribed`` once confirmed)."""
        confirmed = self._confirmed.get(user_id)
        if confirmed is None:
            channel = self._channel(user_id)
            confirmed = self._confirmed[user_id] = asyncio.get_running_loop().create_future()
            self._users[channel.encode()] = user_id
            if self.connected.is_set():
                await self._send("SSUBSCRIBE", channel)
            else:
                self._resync.add(user_id)  # asked for at the next connect
        try:
            await asyncio.wait_for(asyncio.shield(confirmed), timeout)
        except TimeoutError as exc:
            self._resync.add(user_id)
            raise LiveUnavailable(f"subscription of {user_id!r} not confirmed within {timeout} s") from exc

    async def unsubscribe(self, user_id: str) -> None:
        if self._confirmed.pop(user_id, None) is None:
            return
        self._resync.discard(user_id)
        channel = self._channel(user_id)
        del self._users[channel.encode()]
        if self.connected.is_set():
            await self._send("SUNSUBSCRIBE", channel)

    async def _send(self, *command: str) -> None:
        connection = self._connection
        if connection is None:
            return  # the next connect subscribes to what is wanted then
        try:
            await connection.send_command(*command, check_health=False)
        except (RedisError, OSError) as exc:
            log.warning("live channel command failed; the connection is replaced", extra={"error": repr(exc)})
            await connection.disconnect(nowait=True)  # the reader sees it and reconnects

    async def _run(self) -> None:
        while True:
            connection = self._connect()
            try:
                await connection.connect()
                self._connection = connection
                self.connected.set()  # from here on, subscribe() sends its own SSUBSCRIBE
                await self._subscribe_all(connection)
                metrics.LIVE_CONNECTED.set(1)
                log.info("live channels connected", extra={"channels": len(self._users)})
                await self._read(connection)
            except (RedisError, OSError) as exc:
                log.warning("live channels interrupted, reconnecting", extra={"error": repr(exc)})
            finally:
                self.connected.clear()
                metrics.LIVE_CONNECTED.set(0)
                self._connection = None
                for user_id, confirmed in list(self._confirmed.items()):
                    if confirmed.done():  # confirmed again after the reconnect: then the gap is bridged
                        self._confirmed[user_id] = asyncio.get_running_loop().create_future()
                    self._resync.add(user_id)
                await connection.disconnect(nowait=True)
            metrics.LIVE_RECONNECTS.inc()
            await asyncio.sleep(self._retry_interval)

    def _connect(self) -> AbstractConnection:
        """A connection like the pool's (address, TLS, credentials), for pushes: RESP2 (pushes
        are plain replies to read), no socket timeout, no health checks of its own."""
        options = {key: value for key, value in self._pool.connection_kwargs.items()
                   if not key.startswith("maint_notifications")}  # RESP3-only
        return self._pool.connection_class(**{**options, "protocol": 2, "socket_timeout": None,
                                              "health_check_interval": 0})

    async def _subscribe_all(self, connection: AbstractConnection) -> None:
        channels = list(self._users)
        if channels:
            # one command per channel: in a Redis Cluster each may live on another shard
            await connection.send_packed_command(connection.pack_commands([("SSUBSCRIBE", c) for c in channels]),
                                                 check_health=False)

    async def _read(self, connection: AbstractConnection) -> None:
        pinger = asyncio.create_task(self._ping(connection))
        loop = asyncio.get_running_loop()
        silence, interval = 3 * self._ping_interval, self._ping_interval
        try:
            # One deadline, moved forward by a reply at most once per ping interval (wait_for would
            # wrap every read in a task, and moving it for every reply costs a timer each): the
            # reader gives up after 2 to 3 ping intervals without a reply (PONGs included).
            async with asyncio.timeout(silence) as deadline:
                moved = loop.time()
                while True:
                    reply = await connection.read_response(timeout=math.inf)
                    now = loop.time()
                    if now - moved >= interval:
                        deadline.reschedule(now + silence)
                        moved = now
                    self._dispatch(reply)
        except TimeoutError as exc:
            raise OSError("live channels silent for three ping intervals") from exc
        finally:
            pinger.cancel()

    def _dispatch(self, reply: Any) -> None:
        if reply == b"PONG":  # no channel subscribed: a plain reply
            return
        kind = reply[0]
        if kind == b"smessage":
            user_id = self._users.get(reply[1])
            if user_id is not None:  # else: unsubscribed meanwhile
                metrics.LIVE_MESSAGES.inc()
                self._on_message(user_id, reply[2])
        elif kind == b"ssubscribe":
            self._confirm(reply[1])
        elif kind not in (b"sunsubscribe", b"pong"):
            log.warning("unexpected reply on the live channels", extra={"kind": repr(kind)})

    def _confirm(self, channel: bytes) -> None:
        user_id = self._users.get(channel)
        if user_id is None:
            return  # unsubscribed before the confirmation arrived
        confirmed = self._confirmed[user_id]
        if not confirmed.done():
            confirmed.set_result(None)
        if user_id in self._resync:
            self._resync.discard(user_id)
            self._on_resubscribed(user_id)

    async def _ping(self, connection: AbstractConnection) -> None:
        while True:
            await asyncio.sleep(self._ping_interval)
            await self._send("PING")
