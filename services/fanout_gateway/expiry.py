"""A connection's token expiry: a ``refresh`` ahead of it, a close with 4401 at it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from fanout_gateway.protocol import CLOSE_AUTH
from fanout_gateway.sendqueue import Connection


class ExpiryTimers:
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
