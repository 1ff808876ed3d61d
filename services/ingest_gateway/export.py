"""``GET /v1/users/me/export``: ask the worker holding the user's window for a copy, and wait.

The request goes to ``user.export.requests.v1`` (key = user id, so the worker owning the user's
partition gets it); the answer comes back on ``user.export.replies.v1``, which every gateway
process reads from its end (``circadia.events.EventFeed``) and matches by request id. The reply's
content is sealed with the user's key; the gateway opens it, decompresses it and answers with the
JSON document (``prediction_worker.export``). No answer within the timeout (the worker down or
rebalancing) is a 503 the client may retry.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import cramjam

from circadia.avro import SchemaSet
from circadia.events import EventFeed
from circadia.topics import EXPORT_REPLIES, EXPORT_REQUESTS
from circadia.userkeys import Sealed, Tampered, UserKeys
from ingest_gateway.publisher import UploadPublisher

EXPORT_REQUEST, EXPORT_REPLY = "io.circadia.privacy.ExportRequest", "io.circadia.privacy.ExportReply"


class ExportUnavailable(Exception):
    """No answer in time (the worker down, busy or rebalancing); a retry can succeed."""


class Exports:
    def __init__(self, publisher: UploadPublisher, schemas: SchemaSet, keys: UserKeys | None, bootstrap: str,
                 *, timeout: float, security: dict[str, Any] | None = None) -> None:
        self._publisher = publisher
        self._request = schemas[EXPORT_REQUEST]
        self._keys = keys
        self._timeout = timeout
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.feed = EventFeed(bootstrap, EXPORT_REPLIES, schemas, EXPORT_REPLY, self._on_reply, security=security)

    async def export(self, user_id: str) -> bytes:
        """The user's export document (UTF-8 JSON). ``ExportUnavailable``, ``BrokerUnavailable`` and
        ``KeysUnavailable`` can be retried; ``Tampered`` cannot."""
        try:
            await asyncio.wait_for(self.feed.listening.wait(), self._timeout)
        except TimeoutError:
            raise ExportUnavailable("not reading export replies yet (Kafka unreachable?)") from None
        request_id = str(uuid.uuid4())
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        try:
            value = self._request.encode({"request_id": request_id, "user_id": user_id,
                                          "requested_at": datetime.now(UTC)})
            await self._publisher.publish(EXPORT_REQUESTS, key=user_id.encode(), value=value,
                                          headers=self._request.headers())
            try:
                reply = await asyncio.wait_for(future, self._timeout)
            except TimeoutError:
                raise ExportUnavailable(f"the worker did not answer within {self._timeout:g} s") from None
        finally:
            self._waiting.pop(request_id, None)
        if reply["user_id"] != user_id:
            raise Tampered("an export reply for another user")
        content = reply["content"]
        if reply.get("key_id"):
            if self._keys is None:
                raise Tampered("a sealed export reply reached a gateway without a key service")
            content = await self._keys.open_async(user_id, EXPORT_REPLIES, Sealed(
                reply["key_id"], reply["wrapped_key"], reply["nonce"], content))
        return bytes(cramjam.zstd.decompress(content))

    async def _on_reply(self, record: dict[str, Any]) -> None:
        future = self._waiting.get(str(record["request_id"]))
        if future is not None and not future.done():
            future.set_result(record)
