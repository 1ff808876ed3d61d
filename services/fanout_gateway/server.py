"""The WebSocket endpoint: authenticate first, then push the user's own results only.

See ``protocol.py`` for the messages and close codes. Each connection has a bounded send
queue drained by its own writer task, so a slow client only delays itself (and is closed
with 4408 when its queue overflows). Every prediction carries its Kafka cursor and the
user's history epoch; a connection never receives an offset twice, and a resuming
connection gets the missed entries in order before anything live.

Results arrive on the user's live channel (``live.py``), whichever replica recorded them.
A new connection subscribes first and reads the history after Redis confirmed the
subscription, holding live results back meanwhile: everything recorded after the history
read arrives live, everything before it is in the read. A live connection that misses a
publication (a gap between the publication's ``previous`` and what the connection has, or
a resubscription after Redis came back) reads the history after its last offset again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus

import prometheus_client
import redis.asyncio as aioredis
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from circadia.auth import FirebaseTokenVerifier, InvalidTokenError, VerifiedToken
from circadia.erasure import Erasure
from circadia.http import add_to, request_id_from
from circadia.tracing import context_from_headers, context_from_traceparent
from circadia.userkeys import KeysUnavailable
from fanout_gateway import metrics
from fanout_gateway.feed import FeedMessage
from fanout_gateway.history import Entry, HistoryUnavailable, Publication, UserHistory, prediction_message
from fanout_gateway.live import LiveChannels, LiveUnavailable
from fanout_gateway.page import PREFIX, ResultsPage
from fanout_gateway.protocol import (
    CLOSE_AUTH,
    CLOSE_ERASED,
    CLOSE_FORBIDDEN,
    CLOSE_REPLACED,
    CLOSE_SLOW,
    GOING_AWAY,
    TRY_AGAIN_LATER,
)
from fanout_gateway.records import ColdKey, ErasedRecord, Renderer, UnreadableRecord
from fanout_gateway.registry import ConnectionRegistry

log = logging.getLogger(__name__)
tracer = trace.get_tracer("fanout_gateway")

STREAM_PATH = "/v1/stream"
_RENDERED, _UNDECODABLE = metrics.RENDERED.labels("rendered"), metrics.RENDERED.labels("undecodable")
_ERASED, _COLD = metrics.RENDERED.labels("erased"), metrics.RENDERED.labels("cold_key")
_SEND_ATTRIBUTES = {"network.protocol.name": "websocket", "circadia.fanout.path": STREAM_PATH}


@dataclass(frozen=True)
class Limits:
    auth_timeout: float = 5.0
    queue_size: int = 64
    per_user: int = 10
    per_process: int = 20_000
    refresh_lead: float = 60.0
    drain_seconds: float = 5.0
    reconnect_spread_ms: int = 5000
    subscribe_timeout: float = 2.0


@dataclass(frozen=True)
class Push:
    """One prediction as pushed: its position, so a connection can drop repeats, and the
    trace it belongs to, so the send to each socket is a span of the upload's trace."""

    partition: int
    offset: int
    text: str | bytes  # bytes: UTF-8 JSON as received from Redis, sent as a text frame without decoding
    context: Context | None = None
    previous: int | None = None  # the offset of the user's result before this one, when known


class Connection:
    """One authenticated socket and its bounded send queue."""

    def __init__(self, websocket: ServerConnection, user_id: str, queue_size: int,
                 on_gap: Callable[[Connection], None] = lambda connection: None) -> None:
        self.websocket = websocket
        self.user_id = user_id
        self._queue: asyncio.Queue[tuple[str | bytes, Context | None]] = asyncio.Queue(maxsize=queue_size)
        self._closing = False
        self._sent: tuple[int, int] | None = None  # (partition, offset) of the newest prediction queued
        self._held: list[Push] | None = []  # live pushes held back while catching up; None once live
        self._on_gap = on_gap
        self.resync_when_live = False  # a resubscription was confirmed while this one was catching up

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def live(self) -> bool:
        return self._held is None

    @property
    def sent_offset(self) -> int | None:
        return self._sent[1] if self._sent is not None else None

    def catch_up(self) -> bool:
        """Hold live pushes back again (a resync); False when already catching up."""
        if self._held is not None:
            return False
        self._held = []
        return True

    def send(self, text: str | bytes, context: Context | None = None) -> bool:
        """Queue a message; on overflow the connection is closed with 4408."""
        if self._closing:
            return False
        try:
            self._queue.put_nowait((text, context))
        except asyncio.QueueFull:
            metrics.DROPPED.labels("slow_client").inc()
            self.close(CLOSE_SLOW, "send queue overflow: client too slow")
            return False
        return True

    def push(self, item: Push) -> bool:
        """Queue a prediction unless this connection already has it (or something newer)."""
        if self._held is not None:
            if len(self._held) >= self._queue.maxsize:
                metrics.DROPPED.labels("slow_client").inc()
                self.close(CLOSE_SLOW, "send queue overflow while catching up")
                return False
            self._held.append(item)
            return True
        sent = self._sent
        if item.previous is not None and sent is not None and item.partition == sent[0] and item.previous > sent[1]:
            metrics.GAPS.inc()  # a publication between what this connection has and this one never came
            self._held = [item]
            self._on_gap(self)
            return True
        return self._enqueue(item)

    def _enqueue(self, item: Push) -> bool:
        if self._sent is not None and item.partition == self._sent[0] and item.offset <= self._sent[1]:
            return False  # already sent: a replayed entry that also arrived live
        if self.send(item.text, item.context):
            self._sent = (item.partition, item.offset)
            metrics.DELIVERIES.inc()
            return True
        return False

    def go_live(self, replayed: list[Push], after: tuple[int, int] | None = None) -> None:
        """Queue the catch-up entries, then what arrived meanwhile, then deliver live. ``after``
        is the resume cursor: nothing at or before it is sent (a restarted replica re-reads
        records its clients already have)."""
        if after is not None:
            self._sent = after
        held, self._held = self._held or [], None
        for item in replayed + sorted(held, key=lambda p: (p.partition, p.offset)):
            self._enqueue(item)
        if self.resync_when_live:
            self.resync_when_live = False
            self.catch_up()
            self._on_gap(self)

    def close(self, code: int, reason: str) -> None:
        if not self._closing:
            self._closing = True
            metrics.CLOSES.labels(str(code)).inc()
            asyncio.create_task(self.websocket.close(code, reason))

    async def write(self) -> None:
        while True:
            text, context = await self._queue.get()
            if context is None:
                await self.websocket.send(text, text=True)
            else:
                # a span per socket send, started and ended directly: nothing runs inside it that
                # would need it as the current span, and the context manager cost as much again
                span = tracer.start_span("websocket send", context=context, kind=SpanKind.PRODUCER,
                                         attributes=_SEND_ATTRIBUTES)
                try:
                    await self.websocket.send(text, text=True)
                except BaseException as exc:
                    span.record_exception(exc)
                    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                    raise
                finally:
                    span.end()
            self._queue.task_done()

    async def drained(self) -> None:
        await self._queue.join()


class FanoutServer:
    def __init__(self, verifier: FirebaseTokenVerifier, feed_ready: asyncio.Event, history: UserHistory,
                 pool: aioredis.ConnectionPool, renderer: Renderer, limits: Limits = Limits(),
                 clock: Callable[[], float] = time.time) -> None:
        self._verifier = verifier
        self._renderer = renderer
        self._feed_ready = feed_ready
        self._history = history
        self._limits = limits
        self._clock = clock
        self._open = 0  # sockets past the handshake, authenticated or not
        self._shutting_down = False
        self._resyncs: set[asyncio.Task[None]] = set()
        self.registry: ConnectionRegistry[Connection] = ConnectionRegistry()
        self.live = LiveChannels(pool, history.channel, on_message=self.on_live,
                                 on_resubscribed=self.on_resubscribed)
        self._page = ResultsPage()

    # --- from the live channels and the feed to sockets -------------------------------------

    def on_live(self, user_id: str, payload: bytes) -> None:
        """A result on the user's channel: queue it on each of the user's connections here."""
        connections = self.registry.lookup(user_id)
        if not connections:
            return  # the last connection left before the unsubscribe took effect
        publication = Publication.parse(payload)
        try:
            text = self._render(publication.partition, publication.offset, publication.epoch,
                                publication.fingerprint, publication.record)
        except ColdKey:
            self._warm(user_id, publication)
            return
        if text is None:
            return
        context = context_from_traceparent(publication.traceparent) if publication.traceparent else None
        item = Push(publication.partition, publication.offset, text, context, publication.previous)
        for connection in tuple(connections):
            connection.push(item)
        metrics.DELIVERY_LATENCY.observe(max(0.0, time.time() - publication.timestamp_ms / 1000))

    def deliver_local(self, messages: Sequence[FeedMessage]) -> None:
        """Redis is down: the results of this replica's own partitions go straight to its own
        connections of their users (no epoch, no repeat detection); the feed records and
        publishes them once Redis is back, and connections drop what they already have."""
        for message in messages:
            connections = self.registry.lookup(message.user_id)
            if not connections:
                continue
            try:
                text = self._render(message.partition, message.offset, None, message.head.fingerprint,
                                    message.value)
            except ColdKey:
                # not fetched while Redis is down: the result reaches the user's connections when
                # the feed records and publishes it once Redis is back
                _COLD.inc()
                continue
            if text is None:
                continue
            metrics.DELIVERED_LOCALLY.inc()
            item = Push(message.partition, message.offset, text, context_from_headers(message.headers))
            for connection in tuple(connections):
                connection.push(item)

    def _render(self, partition: int, offset: int, epoch: str | None, fingerprint: str, record: bytes) -> str | None:
        """The prediction message of a result, decoded once for all of the user's connections here;
        None when it cannot be delivered (undecodable, erased); ``ColdKey`` when its data key must
        be fetched first (``_render_async``)."""
        try:
            text = prediction_message(partition, offset, epoch, self._renderer.render(fingerprint, record))
        except (UnreadableRecord, ErasedRecord) as exc:
            self._not_rendered(partition, offset, exc)
            return None
        _RENDERED.inc()
        return text

    async def _render_async(self, partition: int, offset: int, epoch: str | None, fingerprint: str,
                            record: bytes) -> str | None:
        """``_render``, fetching a data key not cached here (``KeysUnavailable`` when it cannot be)."""
        try:
            text = prediction_message(partition, offset, epoch, await self._renderer.render_async(fingerprint, record))
        except (UnreadableRecord, ErasedRecord) as exc:
            self._not_rendered(partition, offset, exc)
            return None
        _RENDERED.inc()
        return text

    @staticmethod
    def _not_rendered(partition: int, offset: int, exc: Exception) -> None:
        if isinstance(exc, ErasedRecord):
            _ERASED.inc()  # the user's data is gone: nothing to deliver, nothing failed
            log.info("result of an erased user not delivered", extra={"partition": partition, "offset": offset})
            return
        _UNDECODABLE.inc()
        log.error("undecodable result not delivered", exc_info=exc, extra={"partition": partition, "offset": offset})

    async def _pushes(self, entries: Sequence[Entry], epoch: str | None,
                      traced: dict[int, Context] | None = None) -> list[Push]:
        """The entries as pushes; ``traced`` gives the trace of the entries that came live first."""
        pushes = []
        for entry in entries:
            text = await self._render_async(entry.partition, entry.offset, epoch, entry.fingerprint, entry.record)
            if text is not None:
                context = traced.get(entry.offset) if traced else None
                pushes.append(Push(entry.partition, entry.offset, text, context))
        return pushes

    def _warm(self, user_id: str, publication: Publication) -> None:
        """A live result sealed with a data key not cached here: the user's connections hold live
        results back while the key is fetched, then each reads the history after what it has (which
        holds this result), so order and exactly-once stay as they are."""
        _COLD.inc()
        held = []
        for connection in tuple(self.registry.lookup(user_id)):
            if connection.catch_up():
                held.append(connection)
            else:  # catching up already: read the history again once live
                connection.resync_when_live = True

        traced = {publication.offset: context_from_traceparent(publication.traceparent)} \
            if publication.traceparent else None

        async def fetch_then_bridge() -> None:
            with contextlib.suppress(UnreadableRecord, ErasedRecord, KeysUnavailable):  # the bridge meets them
                await self._renderer.render_async(publication.fingerprint, publication.record)
            for connection in held:
                if not connection.closing:
                    await self._bridge(connection, traced)

        task = asyncio.create_task(fetch_then_bridge())
        self._resyncs.add(task)
        task.add_done_callback(self._resyncs.discard)

    @staticmethod
    def _keys_unavailable(connection: Connection) -> None:
        """A result the connection must get next cannot be opened (the key service is down): closed
        with 1013, so the client resumes from its cursor later instead of skipping the result."""
        metrics.HISTORY_ERRORS.inc()
        log.warning("key service unavailable: connection closed to resume later", extra={"user": connection.user_id})
        connection.close(TRY_AGAIN_LATER, "key service unavailable; resume later")

    async def erase(self, erasure: Erasure) -> None:
        """An erasure event: the user's cached keys, sockets (closed with 4410) and history go. Every
        replica applies it; the history's deletion is idempotent."""
        user_id = erasure.user_id
        self._renderer.forget(user_id)
        closed = 0
        for connection in tuple(self.registry.lookup(user_id)):
            connection.close(CLOSE_ERASED, "the user's data was erased")
            closed += 1
        try:
            await self._history.forget(user_id)
        except HistoryUnavailable:
            # the entries are sealed with the destroyed key (unreadable) and expire with their TTL
            metrics.HISTORY_ERRORS.inc()
            log.warning("erasure: the history could not be deleted (Redis unavailable); it expires",
                        extra={"erasure_id": erasure.erasure_id})
        log.info("user erased", extra={"erasure_id": erasure.erasure_id, "connections_closed": closed})

    def on_resubscribed(self, user_id: str) -> None:
        """The user's channel is subscribed again after a reconnect: what was published while
        it was not reached nobody here, so each live connection reads the history since."""
        for connection in tuple(self.registry.lookup(user_id)):
            if connection.live:
                connection.catch_up()
                self._resync(connection)
            else:
                connection.resync_when_live = True

    def _resync(self, connection: Connection) -> None:
        task = asyncio.create_task(self._bridge(connection))
        self._resyncs.add(task)
        task.add_done_callback(self._resyncs.discard)

    async def _bridge(self, connection: Connection, traced: dict[int, Context] | None = None) -> None:
        """Deliver what the history holds after the connection's last offset, then go live."""
        try:
            replay = await self._history.since(connection.user_id, connection.sent_offset)
        except HistoryUnavailable:
            metrics.HISTORY_ERRORS.inc()
            metrics.RESYNCS.labels("unavailable").inc()
            log.warning("history unavailable: a missed publication cannot be bridged", exc_info=True,
                        extra={"user": connection.user_id})
            connection.go_live([])
            return
        try:
            if replay.complete:
                metrics.RESYNCS.labels("bridged").inc()
                connection.go_live(await self._pushes(replay.entries, replay.epoch, traced))
                return
            metrics.RESYNCS.labels("reset").inc()
            connection.send(json.dumps({"type": "reset", "reason": "history does not reach the last delivery"}))
            latest = await self._latest(connection.user_id)
        except KeysUnavailable:
            self._keys_unavailable(connection)
            return
        connection.go_live(latest)

    async def _latest(self, user_id: str) -> list[Push]:
        try:
            found = await self._history.latest(user_id)
        except HistoryUnavailable:
            metrics.HISTORY_ERRORS.inc()
            return []
        if found is None:
            return []
        entry, epoch = found
        return await self._pushes([entry], epoch)

    # --- one socket ---------------------------------------------------------------------------

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
        connection = Connection(websocket, user_id, self._limits.queue_size, on_gap=self._resync)
        while self.registry.count(user_id) >= self._limits.per_user:
            oldest = self.registry.oldest(user_id)
            if oldest is None:  # count() >= per_user > 0 means the user has connections
                raise RuntimeError(f"registry counts connections of {user_id} but has none")
            self.registry.unregister(user_id, oldest)
            oldest.close(CLOSE_REPLACED, "replaced by a newer connection of the same user")
        self.registry.register(user_id, connection)  # live pushes are held from here on
        self._update_gauges()
        expiry = _ExpiryTimers(connection, self._limits.refresh_lead, self._clock)
        expiry.arm(verified.expires_at)
        writer = asyncio.create_task(connection.write())
        try:
            await websocket.send(json.dumps({"type": "ready", "user_id": user_id,
                                             "expires_at": int(verified.expires_at)}))
            try:  # the history is read after the subscription is confirmed: no gap between them
                await self.live.subscribe(user_id, self._limits.subscribe_timeout)
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
            self.registry.unregister(user_id, connection)
            self._update_gauges()
            if not self.registry.count(user_id):
                await self.live.unsubscribe(user_id)

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
                        return await self._pushes(replay.entries, epoch), True
                metrics.RESUMES.labels("reset").inc()
                connection.send(json.dumps({"type": "reset", "reason": "history does not reach the cursor"}))
            found = await self._history.latest(user_id)
            if found is None:
                return [], False
            entry, epoch = found
            return await self._pushes([entry], epoch), False
        except KeysUnavailable:
            self._keys_unavailable(connection)
            return [], False
        except HistoryUnavailable:
            metrics.HISTORY_ERRORS.inc()
            log.warning("history unavailable: no catch-up for this connection", exc_info=True)
            if resume is not None:
                connection.send(json.dumps({"type": "reset", "reason": "history unavailable"}))
            return [], False

    async def _on_client_message(self, connection: Connection, expiry: _ExpiryTimers, raw: str | bytes) -> None:
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

    async def _refresh(self, connection: Connection, expiry: _ExpiryTimers, token: object) -> None:
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
        metrics.CONNECTIONS.set(len(self.registry))
        metrics.USERS.set(self.registry.user_count)

    # --- shutdown --------------------------------------------------------------------------

    async def drain(self) -> None:
        """Tell every client to reconnect (spread out), let queues flush, then close with 1001."""
        self._shutting_down = True
        connections = list(self.registry.connections())
        for connection in connections:
            spread = random.randint(0, self._limits.reconnect_spread_ms)  # noqa: S311  # nosec B311  # jitter, not a secret
            connection.send(json.dumps({"type": "reconnect", "after_ms": spread}))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(c.drained() for c in connections)),
                                   self._limits.drain_seconds)
        for connection in connections:
            connection.close(GOING_AWAY, "server shutting down")

    # --- plain HTTP beside the WebSocket ----------------------------------------------------

    def process_response(self, connection: ServerConnection, request: Request, response: Response) -> Response:
        """Security headers and the request id on every HTTP answer, the handshake included."""
        add_to(response.headers, request_id_from(request.headers.get("X-Request-Id")))
        return response

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path == STREAM_PATH:
            if self._shutting_down or self._open >= self._limits.per_process:
                return _response(HTTPStatus.SERVICE_UNAVAILABLE, b'{"error": "at_capacity"}',
                                 "application/json", retry_after="5")
            return None
        if request.path == "/healthz":
            return _response(HTTPStatus.OK, b'{"status": "ok"}', "application/json")
        if request.path == "/readyz":
            ready = self._feed_ready.is_set() and not self._shutting_down
            return _response(HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE,
                             json.dumps({"ready": ready, "checks": {"kafka": self._feed_ready.is_set(),
                                                               "redis_live": self.live.connected.is_set()}}).encode(),
                             "application/json")
        if request.path == "/metrics":
            return _response(HTTPStatus.OK, prometheus_client.generate_latest(),
                             prometheus_client.CONTENT_TYPE_LATEST)
        if request.path in ("/", "/app"):
            response = _response(HTTPStatus.FOUND, b"", "text/plain")
            response.headers["Location"] = PREFIX
            return response
        if request.path.startswith(PREFIX):
            status, body, content_type, headers = self._page.answer(request.path.split("?", 1)[0])
            response = _response(status, body, content_type)
            for name, value in headers.items():
                response.headers[name] = value
            return response
        return _response(HTTPStatus.NOT_FOUND, b'{"error": "not_found"}', "application/json")


class _ExpiryTimers:
    """Ask for a fresh token ``lead`` seconds before expiry; close with 4401 at expiry."""

    def __init__(self, connection: Connection, lead: float, clock: Callable[[], float]) -> None:
        self._connection = connection
        self._lead = lead
        self._clock = clock
        self._handles: list[asyncio.TimerHandle] = []

    def arm(self, expires_at: float) -> None:
        self.cancel()
        loop = asyncio.get_running_loop()
        remaining = max(0.0, expires_at - self._clock())
        self._handles = [
            loop.call_later(max(0.0, remaining - self._lead), self._connection.send,
                            json.dumps({"type": "refresh", "expires_at": int(expires_at)})),
            loop.call_later(remaining, self._connection.close, CLOSE_AUTH, "token expired"),
        ]

    def cancel(self) -> None:
        for handle in self._handles:
            handle.cancel()
        self._handles = []


def _cursor_of(resume: dict | None) -> tuple[int, int] | None:
    cursor = resume.get("cursor") if resume else None
    if isinstance(cursor, dict) and isinstance(cursor.get("partition"), int) and isinstance(cursor.get("offset"), int):
        return cursor["partition"], cursor["offset"]
    return None


def _response(status: HTTPStatus, body: bytes, content_type: str, retry_after: str | None = None) -> Response:
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))),
                       ("Connection", "close")])
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    return Response(status.value, status.phrase, headers, body)
