"""HTTP hardening shared by the services: security headers and request ids on every response.

``HardenedResponses`` is one ASGI middleware: it gives every request an id (the client's
``X-Request-Id`` when it is a safe token, else a new one), makes it available to logs, and
adds the id and the security headers to every response, errors included.
"""

from __future__ import annotations

import contextvars
import re
import uuid
from collections.abc import Iterable, MutableMapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the ASGI types only; the fan-out uses these helpers without Starlette
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "x-request-id"
_SAFE_ID = re.compile(r"[A-Za-z0-9._-]{8,128}")

SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("content-security-policy", "default-src 'none'; frame-ancestors 'none'"),
    ("cross-origin-resource-policy", "same-origin"),
    ("strict-transport-security", "max-age=63072000; includeSubDomains"),
    ("cache-control", "no-store"),
)

current_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def request_id_from(value: str | None) -> str:
    """The client's id when it is a safe token (8-128 of A-Z a-z 0-9 . _ -), else a new one."""
    if value is not None and _SAFE_ID.fullmatch(value):
        return value
    return uuid.uuid4().hex


def hardening_headers(request_id: str) -> list[tuple[str, str]]:
    return [*SECURITY_HEADERS, (REQUEST_ID_HEADER, request_id)]


class HardenedResponses:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope["headers"], REQUEST_ID_HEADER.encode())
        request_id = request_id_from(incoming.decode("latin-1") if incoming is not None else None)
        token = current_request_id.set(request_id)
        added = [(k.encode(), v.encode()) for k, v in hardening_headers(request_id)]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                # a response that sets its own Cache-Control (e.g. none) keeps it
                message["headers"] = [*message.get("headers", []), *(h for h in added if h[0] not in present)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            current_request_id.reset(token)


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def add_to(headers: MutableMapping[str, Any], request_id: str) -> None:
    """The same headers on a response built outside ASGI (the fan-out's plain HTTP answers); a
    header the response set itself (the results page's own policy) is kept."""
    for key, value in hardening_headers(request_id):
        if key not in headers:
            headers[key] = value
