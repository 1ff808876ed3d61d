"""One socket's protocol, from its first message to its close (``protocol.py`` lists the messages).

The first message authenticates (``auth``) or also resumes from a cursor (``resume``); a user
over the per-user limit loses their oldest connection. The connection subscribes to the user's
live channel first and reads the history after Redis confirmed the subscription, holding live
results back meanwhile: everything recorded after the history read arrives live, everything
before it is in the read. A resuming connection gets the missed entries in order before anything
live; one whose cursor the history no longer covers gets a ``reset`` and the latest result. Then
the socket answers ``ping``, takes a refreshed token (same user only) and refuses anything else.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from circadia.auth import FirebaseTokenVerifier, InvalidTokenError, VerifiedToken
from circadia.userkeys import KeysUnavailable
from fanout_gateway import metrics
from fanout_gateway.delivery import Delivery
from fanout_gateway.expiry import ExpiryTimers
from fanout_gateway.history import HistoryUnavailable, UserHistory
from fanout_gateway.limits import Limits
from fanout_gateway.live import LiveChannels, LiveUnavailable
from fanout_gateway.protocol import CLOSE_AUTH, CLOSE_FORBIDDEN, CLOSE_REPLACED
from fanout_gateway.registry import ConnectionRegistry
from fanout_gateway.sendqueue import Connection, Push

log = logging.getLogger(__name__)


class Sessions:
    """Serves each socket of the stream (``handler``) with the connections, channels and history given."""

    def __init__(self, verifier: FirebaseTokenVerifier, history: UserHistory, live: LiveChannels,
                 delivery: Delivery, registry: ConnectionRegistry[Connection], limits: Limits,
                 clock: Callable[[], float]) -> None:
        self._verifier = verifier
        self._history = history
        self._live = live
        self._delivery = delivery
        self._registry = registry
        self._limits = limits
        self._clock = clock
        self._open = 0  # sockets past the handshake, authenticated or not

    @property
    def open(self) -> int:
        """Sockets past the handshake, authenticated or not."""
        return self._open

    async def handler(self, websocket: ServerConnection) -> None:
        self._open += 1
        try:
            await self._serve(websocket)
        finally:
            self._open -= 1

    async def _serve(self, websocket: ServerConnection) -> None:
        first = await self._authenticate(websocket)
        if first is None:
            return
        verified, resume = first
        user_id = verified.user_id
        connection = Connection(websocket, user_id, self._limits.queue_size, on_gap=self._delivery.resync)
        while self._registry.count(user_id) >= self._limits.per_user:
            oldest = self._registry.oldest(user_id)
            if oldest is None:  # count() >= per_user > 0 means the user has connections
                raise RuntimeError(f"registry counts connections of {user_id} but has none")
            self._registry.unregister(user_id, oldest)
            oldest.close(CLOSE_REPLACED, "replaced by a newer connection of the same user")
        self._registry.register(user_id, connection)  # live pushes are held from here on
        self._update_gauges()
        expiry = ExpiryTimers(connection, self._limits.refresh_lead, self._clock)
        expiry.arm(verified.expires_at)
        writer = asyncio.create_task(connection.write())
        try:
            await websocket.send(json.dumps({"type": "ready", "user_id": user_id,
                                             "expires_at": int(verified.expires_at)}))
            try:  # the history is read after the subscription is confirmed: no gap between them
                await self._live.subscribe(user_id, self._limits.subscribe_timeout)
            except LiveUnavailable:
                metrics.HISTORY_ERRORS.inc()
                log.warning("live channel not subscribed yet: the history is bridged once it is",
                            extra={"user": user_id})
            replayed, resumed = await self._catch_up(connection, resume)
            # only a cursor the history vouched for (current epoch) bounds what is sent next
            connection.go_live(replayed, after=_cursor_of(resume) if resumed else None)
            async for raw in websocket:
                await self._on_client_message(connection, expiry, raw)
        except ConnectionClosed:
            pass  # the client left; the cleanup below is the whole story
        finally:
            expiry.cancel()
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            self._registry.unregister(user_id, connection)
            self._update_gauges()
            if not self._registry.count(user_id):
                await self._live.unsubscribe(user_id)

    async def _authenticate(self, websocket: ServerConnection) -> tuple[VerifiedToken, dict | None] | None:
        try:
            raw = await asyncio.wait_for(websocket.recv(), self._limits.auth_timeout)
            message = json.loads(raw)
            kind = message.get("type") if isinstance(message, dict) else None
            if kind not in ("auth", "resume"):
                raise InvalidTokenError('first message must be {"type": "auth", "token": ...} or a resume')
            verified = await self._verify(message.get("token"))
        except TimeoutError:
            reason = "authentication timeout"
        except (ValueError, InvalidTokenError) as exc:
            reason = exc.reason if isinstance(exc, InvalidTokenError) else "malformed auth message"
        except ConnectionClosed:
            return None
        else:
            return verified, (message if kind == "resume" else None)
        metrics.AUTH_FAILURES.labels(reason).inc()
        metrics.CLOSES.labels(str(CLOSE_AUTH)).inc()
        log.info("websocket authentication failed", extra={"reason": reason})
        await websocket.close(CLOSE_AUTH, reason)
        return None

    async def _verify(self, token: object) -> VerifiedToken:
        if not isinstance(token, str) or not token:
            raise InvalidTokenError("auth message has no token")
        return await self._verifier.verify(token)

    async def _catch_up(self, connection: Connection, resume: dict | None) -> tuple[list[Push], bool]:
        """What the connection gets before going live, and whether it resumed: the missed
        entries when it resumes from a cursor the history still covers; otherwise (after a
        ``reset`` if it asked) the latest."""
        user_id = connection.user_id
        try:
            if resume is not None:
                cursor, epoch = resume.get("cursor"), resume.get("epoch")
                if isinstance(cursor, dict) and isinstance(cursor.get("offset"), int) and isinstance(epoch, str):
                    replay = await self._history.after(user_id, epoch, cursor["offset"])
                    if replay.complete:
                        metrics.RESUMES.labels("resumed").inc()
                        return await self._delivery.pushes(replay.entries, epoch), True
                metrics.RESUMES.labels("reset").inc()
                connection.send(json.dumps({"type": "reset", "reason": "history does not reach the cursor"}))
            found = await self._history.latest(user_id)
            if found is None:
                return [], False
            entry, epoch = found
            return await self._delivery.pushes([entry], epoch), False
        except KeysUnavailable:
            self._delivery.keys_unavailable(connection)
            return [], False
        except HistoryUnavailable:
            metrics.HISTORY_ERRORS.inc()
            log.warning("history unavailable: no catch-up for this connection", exc_info=True)
            if resume is not None:
                connection.send(json.dumps({"type": "reset", "reason": "history unavailable"}))
            return [], False

    async def _on_client_message(self, connection: Connection, expiry: ExpiryTimers, raw: str | bytes) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            connection.send(json.dumps({"type": "error", "reason": "messages are JSON objects"}))
            return
        named = message.get("user_id")
        if named is not None and named != connection.user_id:
            metrics.FORBIDDEN.inc()
            log.warning("client named another user", extra={"user": connection.user_id, "type": message.get("type")})
            connection.send(json.dumps({"type": "error", "reason": "forbidden: a connection serves its own user"}))
            return
        kind = message.get("type")
        if kind == "ping":
            connection.send(json.dumps({"type": "pong"}))
        elif kind == "auth":
            await self._refresh(connection, expiry, message.get("token"))
        else:
            connection.send(json.dumps({"type": "error", "reason": f"unsupported message type {kind!r}"}))

    async def _refresh(self, connection: Connection, expiry: ExpiryTimers, token: object) -> None:
        try:
            verified = await self._verify(token)
        except InvalidTokenError as exc:
            metrics.AUTH_FAILURES.labels(exc.reason).inc()
            connection.close(CLOSE_AUTH, exc.reason)
            return
        if verified.user_id != connection.user_id:
            metrics.FORBIDDEN.inc()
            log.warning("refresh with another user's token", extra={"user": connection.user_id})
            connection.close(CLOSE_FORBIDDEN, "token names another user")
            return
        expiry.arm(verified.expires_at)
        connection.send(json.dumps({"type": "ready", "user_id": connection.user_id,
                                    "expires_at": int(verified.expires_at)}))

    def _update_gauges(self) -> None:
        metrics.CONNECTIONS.set(len(self._registry))
        metrics.USERS.set(self._registry.user_count)


def _cursor_of(resume: dict | None) -> tuple[int, int] | None:
    cursor = resume.get("cursor") if resume else None
    if isinstance(cursor, dict) and isinstance(cursor.get("partition"), int) and isinstance(cursor.get("offset"), int):
        return cursor["partition"], cursor["offset"]
    return None
