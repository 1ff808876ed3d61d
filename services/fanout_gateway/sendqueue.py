"""One socket's bounded send queue, and the order and uniqueness of what enters it.

Each connection has a bounded send queue drained by its own writer task, so a slow client only
delays itself (and is closed with 4408 when its queue overflows). Every prediction carries its
Kafka cursor; a connection never queues an offset twice. While it catches up from the history,
live pushes are held back and queued after the catch-up entries, in order; a live publication
whose ``previous`` is beyond what the connection has shows a gap, which the connection reports
(``on_gap``) so the history after its last offset is read again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode
from websockets.asyncio.server import ServerConnection

from fanout_gateway import metrics
from fanout_gateway.protocol import CLOSE_SLOW, STREAM_PATH

tracer = trace.get_tracer("fanout_gateway")

_SEND_ATTRIBUTES = {"network.protocol.name": "websocket", "circadia.fanout.path": STREAM_PATH}


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
