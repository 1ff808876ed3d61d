"""The WebSocket endpoint: authenticate first, then push the user's own results only.

Protocol on ``/v1/stream`` (no tokens in URLs):
  client → ``{"type": "auth", "token": "<Firebase ID token>"}`` within the auth deadline
  server → ``{"type": "ready", "user_id": "..."}``
  server → ``{"type": "prediction", "cursor": {"partition": p, "offset": o}, "prediction": {...}}``
  client → ``{"type": "ping"}`` → server ``{"type": "pong"}``
Close codes: 4401 authentication failed, missing or expired; 4408 the client reads too
slowly and its send queue overflowed; 1001 the server is shutting down.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from http import HTTPStatus

import prometheus_client
from circadia.auth import FirebaseTokenVerifier, InvalidTokenError
from circadia.jsonable import jsonable
from circadia.topics import PREDICTIONS
from circadia.tracing import context_from_headers
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from fanout_gateway import metrics
from fanout_gateway.feed import FeedMessage
from fanout_gateway.registry import ConnectionRegistry

log = logging.getLogger(__name__)
tracer = trace.get_tracer("fanout_gateway")

STREAM_PATH = "/v1/stream"
CLOSE_AUTH = 4401
CLOSE_SLOW = 4408


class Connection:
    """One authenticated socket with a bounded queue drained by its own writer task,
    so a slow client only ever delays itself."""

    def __init__(self, websocket: ServerConnection, user_id: str, queue_size: int) -> None:
        self.websocket = websocket
        self.user_id = user_id
        self._queue: asyncio.Queue[str] = asyncio.Queue(maxsize=queue_size)
        self._closing = False

    def offer(self, text: str) -> bool:
        """Queue a message; on overflow the connection is closed with 4408."""
        if self._closing:
            return False
        try:
            self._queue.put_nowait(text)
        except asyncio.QueueFull:
            self.close(CLOSE_SLOW, "send queue overflow: client too slow")
            return False
        return True

    def close(self, code: int, reason: str) -> None:
        if not self._closing:
            self._closing = True
            metrics.CLOSES.labels(str(code)).inc()
            asyncio.create_task(self.websocket.close(code, reason))

    async def write(self) -> None:
        while True:
            text = await self._queue.get()
            await self.websocket.send(text)


class FanoutServer:
    def __init__(self, verifier: FirebaseTokenVerifier, feed_ready: asyncio.Event, *,
                 auth_timeout: float, queue_size: int) -> None:
        self._verifier = verifier
        self._feed_ready = feed_ready
        self._auth_timeout = auth_timeout
        self._queue_size = queue_size
        self.registry: ConnectionRegistry[Connection] = ConnectionRegistry()

    async def deliver(self, message: FeedMessage) -> None:
        connections = self.registry.lookup(message.user_id)
        if not connections:
            return
        with tracer.start_as_current_span(
            f"{PREDICTIONS} deliver",
            context=context_from_headers(message.headers),
            kind=SpanKind.CONSUMER,
            attributes={"messaging.system": "kafka", "messaging.destination.name": PREDICTIONS,
                        "messaging.operation.type": "process",
                        "messaging.destination.partition.id": str(message.partition),
                        "messaging.kafka.offset": message.offset,
                        "circadia.fanout.connections": len(connections)},
        ):
            text = json.dumps({
                "type": "prediction",
                "cursor": {"partition": message.partition, "offset": message.offset},
                "prediction": jsonable(message.record),
            })
            for connection in tuple(connections):
                if connection.offer(text):
                    metrics.DELIVERIES.inc()
                else:
                    metrics.DROPPED.labels("slow_client").inc()
            metrics.DELIVERY_LATENCY.observe(max(0.0, time.time() - message.timestamp_ms / 1000))

    async def handler(self, websocket: ServerConnection) -> None:
        verified = await self._authenticate(websocket)
        if verified is None:
            return
        user_id, expires_at = verified
        connection = Connection(websocket, user_id, self._queue_size)
        self.registry.register(user_id, connection)
        self._update_gauges()
        loop = asyncio.get_running_loop()
        expiry = loop.call_later(max(0.0, expires_at - time.time()),
                                 connection.close, CLOSE_AUTH, "token expired")
        writer = asyncio.create_task(connection.write())
        try:
            await websocket.send(json.dumps({"type": "ready", "user_id": user_id}))
            async for raw in websocket:
                await self._on_client_message(websocket, raw)
        except ConnectionClosed:
            pass  # the client left; cleanup below is the whole story
        finally:
            expiry.cancel()
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            self.registry.unregister(user_id, connection)
            self._update_gauges()

    async def _authenticate(self, websocket: ServerConnection) -> tuple[str, float] | None:
        try:
            raw = await asyncio.wait_for(websocket.recv(), self._auth_timeout)
            message = json.loads(raw)
            if not isinstance(message, dict) or message.get("type") != "auth":
                raise InvalidTokenError("first message must be {\"type\": \"auth\", \"token\": ...}")
            token = message.get("token")
            if not isinstance(token, str) or not token:
                raise InvalidTokenError("auth message has no token")
            verified = await self._verifier.verify(token)
        except TimeoutError:
            reason = "authentication timeout"
        except (ValueError, InvalidTokenError) as exc:
            reason = exc.reason if isinstance(exc, InvalidTokenError) else "malformed auth message"
        except ConnectionClosed:
            return None
        else:
            return verified.user_id, verified.expires_at
        metrics.AUTH_FAILURES.labels(reason).inc()
        metrics.CLOSES.labels(str(CLOSE_AUTH)).inc()
        log.info("websocket authentication failed", extra={"reason": reason})
        await websocket.close(CLOSE_AUTH, reason)
        return None

    async def _on_client_message(self, websocket: ServerConnection, raw: str | bytes) -> None:
        try:
            message = json.loads(raw)
            kind = message.get("type") if isinstance(message, dict) else None
        except ValueError:
            kind = None
        if kind == "ping":
            await websocket.send(json.dumps({"type": "pong"}))
        else:
            await websocket.send(json.dumps({"type": "error", "reason": "unsupported message"}))

    def _update_gauges(self) -> None:
        metrics.CONNECTIONS.set(len(self.registry))
        metrics.USERS.set(self.registry.user_count)

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Plain HTTP endpoints beside the WebSocket one."""
        if request.path == STREAM_PATH:
            return None
        if request.path == "/healthz":
            return _response(HTTPStatus.OK, b'{"status": "ok"}', "application/json")
        if request.path == "/readyz":
            ready = self._feed_ready.is_set()
            return _response(HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE,
                             json.dumps({"ready": ready, "checks": {"kafka": ready}}).encode(),
                             "application/json")
        if request.path == "/metrics":
            return _response(HTTPStatus.OK, prometheus_client.generate_latest(),
                             prometheus_client.CONTENT_TYPE_LATEST)
        return _response(HTTPStatus.NOT_FOUND, b'{"error": "not_found"}', "application/json")


def _response(status: HTTPStatus, body: bytes, content_type: str) -> Response:
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))),
                       ("Connection", "close")])
    return Response(status.value, status.phrase, headers, body)
