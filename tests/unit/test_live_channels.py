"""The live channels' reader: replies keep the connection alive, two to three silent ping intervals
end it (so the reader reconnects), and each reply reaches its user's handler."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fanout_gateway.live import LiveChannels


class Replies:
    """A connection whose replies come from a queue; ``None`` in it means: never answer again."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()

    async def read_response(self, timeout: float) -> Any:
        reply = await self.queue.get()
        if reply is None:
            await asyncio.Event().wait()
        return reply

    async def send_command(self, *args: Any, check_health: bool = True) -> None:
        return None


def channels(received: list[tuple[str, bytes]], ping: float) -> LiveChannels:
    live = LiveChannels(None, lambda user: f"live:{{{user}}}",  # type: ignore[arg-type]  # no pool: not connected
                        on_message=lambda user, payload: received.append((user, payload)),
                        on_resubscribed=lambda user: None, ping_interval=ping)
    live._users[b"live:{ada}"] = "ada"
    return live


async def test_silent_ping_intervals_end_the_reader() -> None:
    received: list[tuple[str, bytes]] = []
    live, connection = channels(received, ping=0.05), Replies()
    connection.queue.put_nowait(None)
    started = asyncio.get_running_loop().time()
    with pytest.raises(OSError, match="silent for three ping intervals"):
        await live._read(connection)  # type: ignore[arg-type]
    assert 0.14 <= asyncio.get_running_loop().time() - started < 1.0  # never answered: 3 intervals


async def test_silence_after_replies_ends_the_reader_within_three_intervals() -> None:
    received: list[tuple[str, bytes]] = []
    live, connection = channels(received, ping=0.1), Replies()

    async def then_silence() -> None:
        for n in range(5):
            await asyncio.sleep(0.05)
            connection.queue.put_nowait([b"smessage", b"live:{ada}", f"r{n}".encode()])
        connection.queue.put_nowait(None)

    started = asyncio.get_running_loop().time()
    feeder = asyncio.create_task(then_silence())
    with pytest.raises(OSError):
        await live._read(connection)  # type: ignore[arg-type]
    await feeder
    elapsed = asyncio.get_running_loop().time() - started
    # the last reply came at about 0.25 s: the reader gives up 2 to 3 intervals after it (the upper
    # bound has slack for a loaded machine)
    assert len(received) == 5 and 0.25 + 2 * 0.1 - 0.02 <= elapsed < 0.25 + 3 * 0.1 + 1.0


async def test_each_reply_moves_the_deadline_and_reaches_its_user() -> None:
    received: list[tuple[str, bytes]] = []
    live, connection = channels(received, ping=0.05), Replies()

    async def trickle() -> None:
        for n in range(8):  # a reply every 0.1 s: 0.8 s in all, far past one 0.15 s deadline
            await asyncio.sleep(0.1)
            connection.queue.put_nowait([b"smessage", b"live:{ada}", f"r{n}".encode()])
        connection.queue.put_nowait(None)

    feeder = asyncio.create_task(trickle())
    with pytest.raises(OSError):
        await live._read(connection)  # type: ignore[arg-type]
    await feeder
    assert received == [("ada", f"r{n}".encode()) for n in range(8)]
