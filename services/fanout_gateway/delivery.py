"""Results to the connections of their users on this replica: live, bridged, or straight from the feed.

Results arrive on the user's live channel (``live.py``), whichever replica recorded them, and
are rendered once for all of the user's connections here. A live connection that misses a
publication (a gap between the publication's ``previous`` and what the connection has, or a
resubscription after Redis came back) reads the history after its last offset again, then goes
live. A result sealed with a data key not cached here holds the user's connections back while
the key is fetched. While Redis is down, the results of this replica's own partitions go
straight from the feed to its connections. An erasure closes the user's connections and deletes
their history.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Sequence

from opentelemetry.context import Context

from circadia.erasure import Erasure
from circadia.tracing import context_from_headers, context_from_traceparent
from circadia.userkeys import KeysUnavailable
from fanout_gateway import metrics
from fanout_gateway.feed import FeedMessage
from fanout_gateway.history import Entry, HistoryUnavailable, Publication, UserHistory, prediction_message
from fanout_gateway.protocol import CLOSE_ERASED, TRY_AGAIN_LATER
from fanout_gateway.records import ColdKey, ErasedRecord, Renderer, UnreadableRecord
from fanout_gateway.registry import ConnectionRegistry
from fanout_gateway.sendqueue import Connection, Push

log = logging.getLogger(__name__)

_RENDERED, _UNDECODABLE = metrics.RENDERED.labels("rendered"), metrics.RENDERED.labels("undecodable")
_ERASED, _COLD = metrics.RENDERED.labels("erased"), metrics.RENDERED.labels("cold_key")


class Delivery:
    """The results of this replica's users to their connections, in order and each offset once."""

    def __init__(self, history: UserHistory, renderer: Renderer, registry: ConnectionRegistry[Connection]) -> None:
        self._history = history
        self._renderer = renderer
        self._registry = registry
        self._resyncs: set[asyncio.Task[None]] = set()

    def on_live(self, user_id: str, payload: bytes) -> None:
        """A result on the user's channel: queue it on each of the user's connections here."""
        connections = self._registry.lookup(user_id)
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
            connections = self._registry.lookup(message.user_id)
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

    async def pushes(self, entries: Sequence[Entry], epoch: str | None,
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
        for connection in tuple(self._registry.lookup(user_id)):
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
    def keys_unavailable(connection: Connection) -> None:
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
        for connection in tuple(self._registry.lookup(user_id)):
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
        for connection in tuple(self._registry.lookup(user_id)):
            if connection.live:
                connection.catch_up()
                self.resync(connection)
            else:
                connection.resync_when_live = True

    def resync(self, connection: Connection) -> None:
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
                connection.go_live(await self.pushes(replay.entries, replay.epoch, traced))
                return
            metrics.RESYNCS.labels("reset").inc()
            connection.send(json.dumps({"type": "reset", "reason": "history does not reach the last delivery"}))
            latest = await self._latest(connection.user_id)
        except KeysUnavailable:
            self.keys_unavailable(connection)
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
        return await self.pushes([entry], epoch)
