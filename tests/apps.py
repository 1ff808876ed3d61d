"""A user's app as the tests drive it: one WebSocket at a time that resumes from its last
cursor and epoch whenever it drops, on whichever gateway URL it is given next."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake


class ResumingApp:
    def __init__(self, user_id: str, mint: Callable[[str], str], url: Callable[[], str],
                 retry_interval: float = 0.5) -> None:
        self.user_id = user_id
        self._mint = mint
        self._url = url  # asked again after every drop
        self._retry_interval = retry_interval
        self.cursor: dict | None = None
        self.epoch: str | None = None
        self.reconnects = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async with connect(self._url(), open_timeout=5) as ws:
                    token = self._mint(self.user_id)
                    first = {"type": "auth", "token": token} if self.cursor is None else \
                        {"type": "resume", "token": token, "cursor": self.cursor, "epoch": self.epoch}
                    await ws.send(json.dumps(first))
                    while not stop.is_set():
                        try:
                            raw = await asyncio.wait_for(ws.recv(), 0.5)
                        except TimeoutError:
                            continue
                        self.receive(json.loads(raw))
            except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError):
                self.reconnects += 1
                await asyncio.sleep(self._retry_interval)

    def receive(self, message: dict) -> None:
        """One server message; a prediction moves the cursor (subclasses record more)."""
        if message["type"] == "prediction":
            self.cursor, self.epoch = message["cursor"], message["epoch"]
