"""A user's rights over their data: erasure (``DELETE /v1/users/me``) and a copy of it
(``GET /v1/users/me/export``), each for the bearer token's own user, under the uploads' rate limits."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from circadia.erasure import erase
from circadia.idempotency import LedgerUnavailable
from circadia.userkeys import KeysUnavailable, Tampered
from ingest_gateway import metrics
from ingest_gateway.access import authenticated, rate_limited
from ingest_gateway.errors import Rejection
from ingest_gateway.export import ExportUnavailable
from ingest_gateway.publisher import BrokerUnavailable

if TYPE_CHECKING:
    from ingest_gateway.app import Gateway

log = logging.getLogger(__name__)


class UserDataHandler:
    """A request about the token's own user's data, under the uploads' rate limits."""

    def __init__(self, gateway: Gateway) -> None:
        self._g = gateway

    async def handle(self, request: Request) -> Response:
        try:
            client = request.client.host if request.client else "unknown"
            await rate_limited(self._g.ip_limit, client, "client")
            user_id = await authenticated(self._g.verifier, request)
            quota = await rate_limited(self._g.user_limit, user_id, "user")
            response = await self.serve(user_id)
            response.headers.update(quota.headers())
        except Rejection as rejection:
            metrics.REJECTIONS.labels(rejection.reason).inc()
            response = rejection.response()
        metrics.REQUESTS.labels(str(response.status_code)).inc()
        return response

    async def serve(self, user_id: str) -> Response:
        raise NotImplementedError


class ErasureHandler(UserDataHandler):
    """``DELETE /v1/users/me``: the token's own user is erased (``circadia.erasure``)."""

    async def serve(self, user_id: str) -> Response:
        keys = self._g.keys
        if keys is None:
            raise Rejection(501, "erasure_unavailable", errors=[{"loc": [], "msg": (
                "this deployment has no key service (CIRCADIA_USER_KEYS_ADDR): its records are not sealed, "
                "so they cannot be erased by destroying a key")}])
        try:
            erasure, destroyed = await erase(keys, self._send, self._g.schemas, user_id, requested_by="user",
                                             service="ingest-gateway")
        except KeysUnavailable as exc:
            log.error("erasure not done: the key service is unavailable: %s", exc)
            raise Rejection(503, "keys_unavailable", headers={"Retry-After": "5"}, errors=[{
                "loc": [], "msg": "nothing was erased yet (the key service could not be reached); retry"}]) from None
        try:
            forgotten = await self._g.ledger.forget_user(user_id)
        except LedgerUnavailable as exc:
            forgotten = 0  # the entries expire with their TTL; a re-sent upload is then a duplicate until then
            log.warning("erasure: the idempotency entries were not deleted", extra={"error": str(exc),
                                                                                   "erasure_id": erasure.erasure_id})
        metrics.ERASURES.labels("destroyed" if destroyed else "no_key").inc()
        return JSONResponse({"erasure_id": erasure.erasure_id, "key_destroyed": destroyed,
                             "idempotency_entries_deleted": forgotten}, status_code=202)

    async def _send(self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        try:
            await self._g.publisher.publish(topic, key=key, value=value, headers=headers)
        except BrokerUnavailable:
            # the key is destroyed already: the data is erased; the event tells the services to
            # drop their copies, and a repeated DELETE publishes it again
            log.error("erasure event not published: Kafka unavailable", exc_info=True)
            raise Rejection(503, "broker_unavailable", headers={"Retry-After": "5"}, errors=[{
                "loc": [], "msg": "the user's key was destroyed, but the services were not told yet; retry"}]) \
                from None


class ExportHandler(UserDataHandler):
    """``GET /v1/users/me/export``: the token's own user's data as JSON (``ingest_gateway.export``)."""

    async def serve(self, user_id: str) -> Response:
        try:
            document = await self._g.exports.export(user_id)
        except (ExportUnavailable, BrokerUnavailable, KeysUnavailable) as exc:
            log.warning("export not answered: %s", exc)
            raise Rejection(503, "export_unavailable", headers={"Retry-After": "5"}, errors=[{
                "loc": [], "msg": f"the export could not be made now ({type(exc).__name__}); retry"}]) from None
        except Tampered as exc:
            log.error("export reply refused: %s", exc)
            raise Rejection(500, "export_refused", errors=[{
                "loc": [], "msg": "the export reply did not authenticate; retrying will not help"}]) from None
        metrics.EXPORTS.inc()
        day = datetime.now(UTC).date().isoformat()
        return Response(document, media_type="application/json", headers={
            "Content-Disposition": f'attachment; filename="circadia-export-{day}.json"', "Cache-Control": "no-store"})
