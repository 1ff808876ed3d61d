"""The WebSocket endpoint, wired from its parts: authenticate first, then push the user's own results only.

- ``session.py``: one socket's protocol (``protocol.py`` lists the messages and close codes);
- ``sendqueue.py``: its bounded send queue, so a slow client only delays itself;
- ``expiry.py``: its token's expiry;
- ``delivery.py``: results from the live channels (``live.py``) and the feed to the sockets;
- ``drain.py``: the shutdown;
- ``http.py``: the plain HTTP beside the stream (probes, metrics, the results page).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import redis.asyncio as aioredis
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from circadia.auth import FirebaseTokenVerifier
from circadia.erasure import Erasure
from fanout_gateway.delivery import Delivery
from fanout_gateway.drain import Drain
from fanout_gateway.feed import FeedMessage
from fanout_gateway.history import UserHistory
from fanout_gateway.http import PlainHttp
from fanout_gateway.limits import Limits
from fanout_gateway.live import LiveChannels
from fanout_gateway.page import ResultsPage
from fanout_gateway.records import Renderer
from fanout_gateway.registry import ConnectionRegistry
from fanout_gateway.sendqueue import Connection
from fanout_gateway.session import Sessions

_DEFAULT_LIMITS = Limits()


class FanoutServer:
    def __init__(self, verifier: FirebaseTokenVerifier, feed_ready: asyncio.Event, history: UserHistory,
                 pool: aioredis.ConnectionPool, renderer: Renderer, limits: Limits = _DEFAULT_LIMITS,
                 clock: Callable[[], float] = time.time) -> None:
        self.registry: ConnectionRegistry[Connection] = ConnectionRegistry()
        self._delivery = Delivery(history, renderer, self.registry)
        self.live = LiveChannels(pool, history.channel, on_message=self._delivery.on_live,
                                 on_resubscribed=self._delivery.on_resubscribed)
        self._sessions = Sessions(verifier, history, self.live, self._delivery, self.registry, limits, clock)
        self._drain = Drain(self.registry, limits)
        self._http = PlainHttp(feed_ready, self.live.connected, ResultsPage(), per_process=limits.per_process,
                               open_sockets=lambda: self._sessions.open,
                               shutting_down=lambda: self._drain.shutting_down, starting=lambda: not history.bound)

    def on_live(self, user_id: str, payload: bytes) -> None:
        """A result on the user's channel: queue it on each of the user's connections here."""
        self._delivery.on_live(user_id, payload)

    def on_resubscribed(self, user_id: str) -> None:
        """The user's channel is subscribed again: its live connections read the history since."""
        self._delivery.on_resubscribed(user_id)

    def deliver_local(self, messages: Sequence[FeedMessage]) -> None:
        """Redis is down: this replica's own results straight to its own connections."""
        self._delivery.deliver_local(messages)

    async def erase(self, erasure: Erasure) -> None:
        """An erasure event: the user's cached keys, sockets (closed with 4410) and history go."""
        await self._delivery.erase(erasure)

    async def handler(self, websocket: ServerConnection) -> None:
        await self._sessions.handler(websocket)

    async def drain(self) -> None:
        """Tell every client to reconnect (spread out), let queues flush, then close with 1001."""
        await self._drain.run()

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        return self._http.process_request(connection, request)

    def process_response(self, connection: ServerConnection, request: Request, response: Response) -> Response:
        """Security headers and the request id on every HTTP answer, the handshake included."""
        return self._http.process_response(connection, request, response)
