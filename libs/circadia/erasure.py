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
import hashlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter

from circadia.avro import SchemaSet
from circadia.events import EventFeed
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


class ErasureFeed(EventFeed):
    """Erasure events as they are published, to ``on_erasure`` (every replica applies every
    erasure; see :class:`~circadia.events.EventFeed`)."""

    def __init__(self, bootstrap_servers: str, schemas: SchemaSet, on_erasure: Callable[[Erasure], Awaitable[None]],
                 *, security: dict[str, Any] | None = None, retry_seconds: float = 2.0) -> None:
        async def apply(record: dict[str, Any]) -> None:
            erasure = Erasure(str(record["erasure_id"]), record["user_id"], record["requested_at"],
                              record["requested_by"])
            try:
                await on_erasure(erasure)
            except Exception:
                ERASURES_APPLIED.labels("failed").inc()
                raise
            ERASURES_APPLIED.labels("applied").inc()

        super().__init__(bootstrap_servers, USER_ERASURES, schemas, ERASURE_SCHEMA, apply, security=security,
                         retry_seconds=retry_seconds)
