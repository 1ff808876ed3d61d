"""Graceful shutdown of the sockets: reconnect hints spread out, queues flushed, then a close with 1001."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random

from fanout_gateway.limits import Limits
from fanout_gateway.protocol import GOING_AWAY
from fanout_gateway.registry import ConnectionRegistry
from fanout_gateway.sendqueue import Connection


class Drain:
    """Ends every connection of the registry once the replica stops; ``shutting_down`` from then on."""

    def __init__(self, registry: ConnectionRegistry[Connection], limits: Limits) -> None:
        self._registry = registry
        self._limits = limits
        self.shutting_down = False

    async def run(self) -> None:
        """Tell every client to reconnect (spread out), let queues flush, then close with 1001."""
        self.shutting_down = True
        connections = list(self._registry.connections())
        for connection in connections:
            spread = random.randint(0, self._limits.reconnect_spread_ms)  # noqa: S311  # nosec B311  # jitter, not a secret
            connection.send(json.dumps({"type": "reconnect", "after_ms": spread}))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(c.drained() for c in connections)),
                                   self._limits.drain_seconds)
        for connection in connections:
            connection.close(GOING_AWAY, "server shutting down")
