"""The plain HTTP answers beside the WebSocket: admission to the stream, the probes, the metrics and
the results page, each with the security headers and the request id."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from http import HTTPStatus

import prometheus_client
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from circadia.http import add_to, request_id_from
from fanout_gateway.page import PREFIX, ResultsPage
from fanout_gateway.protocol import STREAM_PATH


class PlainHttp:
    """``process_request`` and ``process_response`` of the WebSocket server. A stream handshake
    is refused with 503 while the replica starts (its history does not know the Kafka cluster yet,
    so no user's channel can be named), shuts down or holds ``per_process`` sockets."""

    def __init__(self, feed_ready: asyncio.Event, live_connected: asyncio.Event, page: ResultsPage, *,
                 per_process: int, open_sockets: Callable[[], int], shutting_down: Callable[[], bool],
                 starting: Callable[[], bool] = lambda: False) -> None:
        self._feed_ready = feed_ready
        self._live_connected = live_connected
        self._page = page
        self._per_process = per_process
        self._open_sockets = open_sockets
        self._shutting_down = shutting_down
        self._starting = starting

    def process_response(self, connection: ServerConnection, request: Request, response: Response) -> Response:
        """Security headers and the request id on every HTTP answer, the handshake included."""
        add_to(response.headers, request_id_from(request.headers.get("X-Request-Id")))
        return response

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path == STREAM_PATH:
            if self._starting():  # a client reconnecting to a restarted replica tries again in a moment
                return _response(HTTPStatus.SERVICE_UNAVAILABLE, b'{"error": "starting"}', "application/json",
                                 retry_after="1")
            if self._shutting_down() or self._open_sockets() >= self._per_process:
                return _response(HTTPStatus.SERVICE_UNAVAILABLE, b'{"error": "at_capacity"}',
                                 "application/json", retry_after="5")
            return None
        if request.path == "/healthz":
            return _response(HTTPStatus.OK, b'{"status": "ok"}', "application/json")
        if request.path == "/readyz":
            ready = self._feed_ready.is_set() and not self._shutting_down()
            return _response(HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE,
                             json.dumps({"ready": ready, "checks": {"kafka": self._feed_ready.is_set(),
                                                               "redis_live": self._live_connected.is_set()}}).encode(),
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


def _response(status: HTTPStatus, body: bytes, content_type: str, retry_after: str | None = None) -> Response:
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))),
                       ("Connection", "close")])
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    return Response(status.value, status.phrase, headers, body)
