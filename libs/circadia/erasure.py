"""A user's erasure: destroy the user's key, then tell every service, and audit it.

:func:`erase` is what ``DELETE /v1/users/me`` (the ingest gateway) and ``circadia erase`` (an
operator) do, in this order:

1. **Destroy the user's key** in OpenBao (``UserKeys.erase``). From this moment every copy of the
   user's sealed data, on every topic, changelog, Redis entry and backup, opens as ``Erased``.
2. **Publish an** ``io.circadia.privacy.Erasure`` on ``user.erasures.v1`` (key = user id): the
   services drop what they hold of the user (cached keys, the worker's window, the fan-out's history
   and sockets; see :class:`ErasureFeed` and the worker's agent).
3. **Audit it** with an ``io.circadia.audit.UserErasure`` on ``config.audit.v1`` (key
   ``user-erasure``), naming the user by a digest only.

Every step can be repeated: erasing twice destroys nothing the second time (``key_destroyed``
false) and publishes the event again, so a failed publish is cured by asking again. An upload
sealed before step 1 opens as ``Erased`` wherever it is read, so it is erased too; a later upload
gets a new key. Until a replica of the gateway has the event (milliseconds to seconds), it may
still seal a new upload of the user with the old, destroyed key: that upload is erased too, never
readable, and the next upload after the event gets the new key.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import Counter

from circadia.avro import SchemaSet
from circadia.kafka import topic_layout
from circadia.topics import CONFIG_AUDIT, USER_ERASURES
from circadia.userkeys import UserKeys

log = logging.getLogger(__name__)

ERASURE_SCHEMA = "io.circadia.privacy.Erasure"
AUDIT_SCHEMA = "io.circadia.audit.UserErasure"
AUDIT_KEY = b"user-erasure"

ERASURES_APPLIED = Counter("circadia_erasures_applied_total",
                           "Erasure events this process applied (dropped the user's keys and data), by outcome.",
                           ["outcome"])

# (topic, key, value, headers) → acknowledged
Send = Callable[[str, bytes, bytes, list[tuple[str, bytes]]], Awaitable[Any]]


@dataclass(frozen=True)
class Erasure:
    erasure_id: str
    user_id: str
    requested_at: datetime
    requested_by: str

    def record(self) -> dict[str, Any]:
        return {"erasure_id": self.erasure_id, "user_id": self.user_id, "requested_at": self.requested_at,
                "requested_by": self.requested_by}


def user_digest(user_id: str) -> str:
    return hashlib.sha256(user_id.encode()).hexdigest()


async def erase(keys: UserKeys, send: Send, schemas: SchemaSet, user_id: str, *, requested_by: str,
                service: str) -> tuple[Erasure, bool]:
    """Erase the user (module steps); the erasure and whether a key was destroyed.
    ``KeysUnavailable`` when OpenBao cannot be reached (nothing was done; retry)."""
    erasure = Erasure(str(uuid.uuid4()), user_id, datetime.now(UTC), requested_by)
    destroyed = await asyncio.to_thread(keys.erase, user_id)
    event, audit = schemas[ERASURE_SCHEMA], schemas[AUDIT_SCHEMA]
    await send(USER_ERASURES, user_id.encode(), event.encode(erasure.record()), event.headers())
    await send(CONFIG_AUDIT, AUDIT_KEY, audit.encode({
        "erasure_id": erasure.erasure_id, "user_digest": user_digest(user_id), "requested_at": erasure.requested_at,
        "requested_by": requested_by, "key_destroyed": destroyed, "service": service}), audit.headers())
    log.info("user erased", extra={"erasure_id": erasure.erasure_id, "requested_by": requested_by,
                                   "key_destroyed": destroyed})
    return erasure, destroyed


class ErasureFeed:
    """Erasure events as they are published, to ``on_erasure`` (each process reads every partition
    from the end: every replica applies every erasure). A failing callback is logged and counted,
    never stops the feed; an unreachable broker is retried."""

    def __init__(self, bootstrap_servers: str, schemas: SchemaSet, on_erasure: Callable[[Erasure], Awaitable[None]],
                 *, security: dict[str, Any] | None = None, retry_seconds: float = 2.0) -> None:
        self._bootstrap = bootstrap_servers
        self._schema = schemas[ERASURE_SCHEMA]
        self._schemas = schemas
        self._on_erasure = on_erasure
        self._security = security or {}
        self._retry = retry_seconds
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()  # set once the feed reads from the end of every partition

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="erasure-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, enable_auto_commit=False,
                                        client_id="circadia-erasures", **self._security)
            try:
                _, partitions = await topic_layout(self._bootstrap, USER_ERASURES, **self._security)
                await consumer.start()
                if not partitions:
                    raise KafkaError(f"{USER_ERASURES} has no partitions (topic missing?)")
                assigned = [TopicPartition(USER_ERASURES, p) for p in partitions]
                consumer.assign(assigned)
                await consumer.seek_to_end(*assigned)
                for tp in assigned:  # resolve the end offsets now: an erasure after this is seen
                    await consumer.position(tp)
                self.listening.set()
                while True:
                    for messages in (await consumer.getmany(timeout_ms=1000)).values():
                        for message in messages:
                            await self._apply(message)
            except asyncio.CancelledError:
                raise
            except Exception:  # the feed must outlive a broker outage
                self.listening.clear()
                log.warning("erasure feed interrupted; reconnecting", exc_info=True)
                await asyncio.sleep(self._retry)
            finally:
                await consumer.stop()

    async def _apply(self, message: Any) -> None:
        try:
            record = self._schemas.decode(message.value, list(message.headers), self._schema)
            erasure = Erasure(str(record["erasure_id"]), record["user_id"], record["requested_at"],
                              record["requested_by"])
        except Exception:
            ERASURES_APPLIED.labels("undecodable").inc()
            log.error("undecodable erasure event skipped", exc_info=True,
                      extra={"partition": message.partition, "offset": message.offset})
            return
        try:
            await self._on_erasure(erasure)
        except Exception:
            ERASURES_APPLIED.labels("failed").inc()
            log.error("applying an erasure failed", exc_info=True, extra={"erasure_id": erasure.erasure_id})
            return
        ERASURES_APPLIED.labels("applied").inc()
