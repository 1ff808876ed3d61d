"""Routes of the ingest gateway and the composition of its resources."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import prometheus_client
import redis.asyncio as aioredis
from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.semconv.attributes.http_attributes import HTTP_ROUTE
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Match, Route

from circadia.audit import ConfigAudit
from circadia.auth import CertificateSource, FirebaseTokenVerifier
from circadia.avro import AvroSchema, SchemaSet
from circadia.config import ServiceConfig
from circadia.erasure import Erasure, ErasureFeed
from circadia.errors import dsn_rotation
from circadia.http import HardenedResponses
from circadia.idempotency import (
    Claim,
    Conflict,
    InFlight,
    LedgerUnavailable,
    Published,
    UploadLedger,
)
from circadia.kafka import client_security
from circadia.ratelimit import RateLimit
from circadia.redis_client import connection_pool, password_rotation, redis_answers
from circadia.sealing import RecordSeal
from circadia.secrets import SecretWatcher
from circadia.topics import HEALTH_SAMPLES
from circadia.tracing import current_trace_id
from circadia.userkeys import KeysUnavailable, UserKeys, token_rotation
from circadia.userkeys import from_config as user_keys_from_config
from ingest_gateway import metrics
from ingest_gateway.access import authenticated, rate_limited
from ingest_gateway.body import BodyLimits, check_declared_length, media_type, read_limited
from ingest_gateway.errors import Rejection
from ingest_gateway.export import Exports
from ingest_gateway.limits import max_samples_within, upload_record_bound
from ingest_gateway.models import ValidationRules
from ingest_gateway.prepare import BodyToPrepare, ParsersBusy, PreparedUpload, Schemas, UploadParsers
from ingest_gateway.privacy import ErasureHandler, ExportHandler
from ingest_gateway.publisher import BrokerUnavailable, LimitMismatch, RecordRefused, UploadPublisher
from ingest_gateway.settings import IngestSettings

log = logging.getLogger(__name__)

OPENAPI_PATH = Path(__file__).with_name("openapi.json")
# what stays readable of a sealed upload (circadia.sealing): the idempotency key, the user, the time
UPLOAD_ROUTING = ("upload_id", "user_id", "received_at")


@dataclass(frozen=True)
class Gateway:
    """Everything a request needs, built once in ``__main__`` (or a test)."""

    settings: IngestSettings
    verifier: FirebaseTokenVerifier
    publisher: UploadPublisher
    parsers: UploadParsers
    upload_schema: AvroSchema
    keys: UserKeys | None  # None: no key service (development only), uploads stored in plaintext
    seal: RecordSeal
    redis: aioredis.Redis
    ledger: UploadLedger
    user_limit: RateLimit
    ip_limit: RateLimit
    secrets: SecretWatcher
    audit: ConfigAudit
    schemas: SchemaSet
    erasures: ErasureFeed  # other replicas' erasures: the users' cached keys are dropped here too
    exports: Exports

    @classmethod
    def from_config(cls, config: ServiceConfig, schemas: SchemaSet | None = None,
                    on_fatal: Callable[[LimitMismatch], None] | None = None) -> Gateway:
        """``on_fatal``: called when Kafka, reached after start-up, turns out unable to hold the
        uploads the gateway's limits allow (the service's ``__main__`` stops the process)."""
        settings: IngestSettings = config.settings
        schemas = schemas or SchemaSet.load()
        prepared = Schemas.of(schemas)
        keys = user_keys_from_config(config)
        pool = connection_pool(settings, password=config.secret("redis_password"))
        redis = aioredis.Redis(connection_pool=pool)
        produce_timeout = settings.ingest_produce_timeout_seconds
        metrics.UPLOAD_BOUND.set(upload_record_bound(settings.ingest_max_samples))
        publisher = UploadPublisher(settings.kafka_bootstrap_servers, topic=HEALTH_SAMPLES,
                                    max_samples=settings.ingest_max_samples, produce_timeout=produce_timeout,
                                    security=client_security(config), on_fatal=on_fatal)
        # rotated secrets are applied where they are used, without a restart
        watcher = SecretWatcher(config.resolver, config.secrets, settings.secret_refresh_seconds)
        watcher.on_change("redis_password", password_rotation(pool))
        watcher.on_change("kafka_sasl_password", lambda secret: publisher.reconnect(
            client_security(replace(config, secrets={**config.secrets, "kafka_sasl_password": secret}))))
        watcher.on_change("sentry_dsn", dsn_rotation("ingest-gateway", settings.env))
        watcher.on_change("user_keys_token", token_rotation(keys))
        return cls(
            settings=settings,
            verifier=FirebaseTokenVerifier(
                settings.firebase_project_id, CertificateSource(settings.firebase_certs_url),
                clock_skew=settings.auth_clock_skew_seconds,
            ),
            publisher=publisher,
            parsers=UploadParsers(prepared, workers=settings.ingest_parse_workers,
                                  offload_bytes=settings.ingest_parse_offload_bytes,
                                  queue_limit=settings.ingest_parse_queue,
                                  wait_seconds=settings.ingest_parse_wait_seconds),
            upload_schema=prepared.upload,
            keys=keys,
            seal=RecordSeal(schemas, prepared.upload, HEALTH_SAMPLES, UPLOAD_ROUTING),
            redis=redis,
            # a pending claim outlives the longest produce, so a live request is never overtaken
            ledger=UploadLedger(redis, ttl_seconds=settings.ingest_idempotency_ttl_seconds,
                                pending_seconds=2 * produce_timeout + 5, wait_seconds=produce_timeout + 1),
            user_limit=RateLimit("ingest-user", settings.ingest_rate_limit_per_user, redis),
            ip_limit=RateLimit("ingest-ip", settings.ingest_rate_limit_per_ip, redis),
            secrets=watcher,
            audit=ConfigAudit(config),
            schemas=schemas,
            erasures=ErasureFeed(settings.kafka_bootstrap_servers, schemas, _forget_keys(keys),
                                 security=client_security(config)),
            exports=Exports(publisher, schemas, keys, settings.kafka_bootstrap_servers,
                            timeout=settings.ingest_export_timeout_seconds, security=client_security(config)),
        )


def _forget_keys(keys: UserKeys | None) -> Callable[[Erasure], Awaitable[None]]:
    async def forget(erasure: Erasure) -> None:
        if keys is not None:
            keys.forget(erasure.user_id)
    return forget


class UploadHandler:
    def __init__(self, gateway: Gateway) -> None:
        self._g = gateway
        s = gateway.settings
        self._limits = BodyLimits(s.ingest_max_body_bytes, s.ingest_max_decompressed_bytes)

    def _rules(self) -> ValidationRules:
        s = self._g.settings
        return ValidationRules(now=datetime.now(UTC), clock_skew=timedelta(seconds=s.auth_clock_skew_seconds),
                               history=timedelta(days=s.ingest_history_days), max_samples=s.ingest_max_samples)

    async def handle(self, request: Request) -> Response:
        """The HTTP server span is the Starlette instrumentation's; its trace id goes back to
        the client (``X-Trace-Id``, and ``trace_id`` in a 202) so operators can find the upload."""
        started = time.perf_counter()
        try:
            response = await self._handle(request)
        except Rejection as rejection:
            metrics.REJECTIONS.labels(rejection.reason).inc()
            if rejection.samples:
                metrics.SAMPLES_REJECTED.labels(rejection.reason).inc(rejection.samples)
            response = rejection.response()
        if request.headers.get("expect", "").lower() == "100-continue" and not getattr(
                request.state, "body_requested", False):
            # Refused before asking for the body, so no "100 Continue" was sent and the client still
            # holds it. Kept open, the connection would read the client's next request as that body
            # (RFC 9110 §10.1.1): close it instead.
            response.headers["Connection"] = "close"
        trace_id = current_trace_id()
        if trace_id is not None:
            response.headers["X-Trace-Id"] = trace_id
        metrics.REQUESTS.labels(str(response.status_code)).inc()
        metrics.REQUEST_DURATION.observe(time.perf_counter() - started)
        return response

    async def _handle(self, request: Request) -> Response:
        client = request.client.host if request.client else "unknown"
        await rate_limited(self._g.ip_limit, client, "client")
        user_id = await authenticated(self._g.verifier, request)
        quota = await rate_limited(self._g.user_limit, user_id, "user")
        media_type(request.headers.get("content-type"))  # 415 before reading the body
        check_declared_length(request.headers.get("content-length"), self._limits.max_bytes)
        request.state.body_requested = True  # uvicorn answers "100 Continue" on the first read
        raw = await read_limited(request.stream(), request.headers.get("content-length"),
                                 self._limits.max_bytes)
        upload = await self._prepare(BodyToPrepare(
            raw, content_type=request.headers.get("content-type"),
            content_encoding=request.headers.get("content-encoding"), limits=self._limits, rules=self._rules(),
            user_id=user_id, received_at=datetime.now(UTC)))
        if upload.body_user_id is not None and upload.body_user_id != user_id:
            raise Rejection(403, "forbidden",
                            errors=[{"loc": ["user_id"], "msg": "the upload names a user other than the token's"}])
        response = await self._publish_once(user_id, upload)
        response.headers.update(quota.headers())
        return response

    async def _prepare(self, body: BodyToPrepare) -> PreparedUpload:
        try:
            return await self._g.parsers.prepare(body)
        except ParsersBusy as exc:
            raise Rejection(503, "parsers_busy", headers={"Retry-After": "2"}, errors=[{
                "loc": ["body"], "msg": f"{exc}; retry"}]) from None
        except BrokenProcessPool:
            # not answered "retry": the same body may kill a parser again
            raise Rejection(500, "parser_failed", errors=[{
                "loc": ["body"], "msg": "the body's parser stopped; the upload was not stored"}]) from None


    async def _publish_once(self, user_id: str, upload: PreparedUpload) -> JSONResponse:
        upload_id, digest, accepted = upload.upload_id, upload.digest, upload.samples
        try:
            outcome = await self._g.ledger.claim(user_id, upload_id, digest)
        except LedgerUnavailable as exc:
            # Degrade to at-least-once: publish, and let consumers drop repeats by upload_id.
            metrics.IDEMPOTENCY.labels("unchecked").inc()
            log.warning("idempotency ledger unavailable: publishing unchecked",
                        extra={"upload_id": upload_id, "error": str(exc)})
            await self._publish(user_id, upload, idempotency=b"unchecked")
            return self._accepted(upload_id, accepted)
        if isinstance(outcome, Published):
            metrics.IDEMPOTENCY.labels("duplicate").inc()
            return JSONResponse({"upload_id": upload_id, "accepted": outcome.accepted, "duplicate": True},
                                status_code=200)
        if isinstance(outcome, Conflict):
            metrics.IDEMPOTENCY.labels("conflict").inc()
            raise Rejection(409, "upload_id_conflict", errors=[{
                "loc": ["upload_id"], "msg": "this upload_id was already used for different content"}])
        if isinstance(outcome, InFlight):
            metrics.IDEMPOTENCY.labels("in_flight").inc()
            raise Rejection(503, "upload_in_progress", headers={"Retry-After": "1"}, errors=[{
                "loc": ["upload_id"], "msg": "the same upload is still being stored; retry"}])
        if not isinstance(outcome, Claim):  # the ledger has no other outcome
            raise TypeError(f"unexpected idempotency outcome {outcome!r}")
        try:
            partition, offset = await self._publish(user_id, upload, idempotency=b"ledger")
        except Rejection:
            with contextlib.suppress(LedgerUnavailable):  # the pending claim expires by itself
                await self._g.ledger.release(outcome)
            raise
        metrics.IDEMPOTENCY.labels("new").inc()
        try:
            await self._g.ledger.mark_published(outcome, digest, Published(accepted, partition, offset))
        except LedgerUnavailable as exc:
            metrics.IDEMPOTENCY.labels("unmarked").inc()
            log.error("upload stored but not recorded in the ledger; a retry may publish it again",
                      extra={"upload_id": upload_id, "error": str(exc)})
        return self._accepted(upload_id, accepted)

    def _accepted(self, upload_id: str, accepted: int) -> JSONResponse:
        metrics.SAMPLES_ACCEPTED.inc(accepted)
        log.info("upload accepted", extra={"upload_id": upload_id, "samples": accepted})
        return JSONResponse({"upload_id": upload_id, "accepted": accepted, "trace_id": current_trace_id()},
                            status_code=202)

    async def _sealed(self, user_id: str, upload: PreparedUpload) -> bytes:
        """The record to publish: sealed with the user's data key, or plaintext without a key service.
        Nothing is stored unsealed because the key service is down: the client is asked to retry."""
        if self._g.keys is None:
            return upload.value
        try:
            return await self._g.seal.seal(self._g.keys, user_id, upload.value, {
                "upload_id": upload.upload_id, "user_id": user_id, "received_at": upload.received_at})
        except KeysUnavailable as exc:
            log.error("upload not stored: the key service is unavailable: %s", exc,
                      extra={"upload_id": upload.upload_id})
            raise Rejection(503, "keys_unavailable", headers={"Retry-After": "5"}, errors=[{
                "loc": [], "msg": "the upload was not stored (its encryption key could not be reached); "
                                  "retry later"}]) from None

    async def _publish(self, user_id: str, upload: PreparedUpload, *, idempotency: bytes) -> tuple[int, int]:
        upload_id = upload.upload_id
        value = await self._sealed(user_id, upload)
        # the aiokafka instrumentation adds the PRODUCER span and the traceparent header
        headers = self._g.upload_schema.headers() + [
            ("upload_id", upload_id.encode()), ("circadia.idempotency", idempotency)]
        started = time.perf_counter()
        try:
            partition, offset = await self._g.publisher.publish(
                HEALTH_SAMPLES, key=user_id.encode(), value=value, headers=headers)
        except BrokerUnavailable:
            log.error("upload not stored: Kafka unavailable", exc_info=True, extra={"upload_id": upload_id})
            raise Rejection(503, "broker_unavailable", headers={"Retry-After": "5"}, errors=[{
                "loc": [], "msg": "the upload was not stored; retry later"}]) from None
        except RecordRefused as exc:
            log.error("upload not stored: refused for good: %s", exc, extra={"upload_id": upload_id})
            if exc.too_large:
                limit = exc.limit or self._g.publisher.max_message_bytes or 0
                raise Rejection(413, "upload_too_large", errors=[{"loc": ["samples"], "msg": (
                    f"{exc}: the upload was not stored; send it in parts of at most "
                    f"{max_samples_within(limit):,} samples")}]) from None
            raise Rejection(500, "upload_refused", errors=[{
                "loc": [], "msg": "Kafka refused the record; the upload was not stored, and sending it "
                                  "again will not succeed until the service is fixed"}]) from None
        metrics.PRODUCE_DURATION.observe(time.perf_counter() - started)
        trace.get_current_span().set_attributes({"circadia.upload.partition": partition,
                                                 "circadia.upload.offset": offset})
        return partition, offset


def create_app(gateway: Gateway) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.parsers.start()
        try:
            # refuses to start (LimitMismatch) when Kafka answers and its topic cannot hold the uploads
            await gateway.publisher.start(wait=gateway.settings.ingest_startup_wait_seconds)
        except LimitMismatch:
            await gateway.publisher.stop()
            await gateway.parsers.stop()
            raise
        await gateway.verifier.certificates.warm()
        await gateway.secrets.start()
        await gateway.audit.start()
        await gateway.erasures.start()
        await gateway.exports.feed.start()
        try:
            yield
        finally:
            await gateway.exports.feed.stop()
            await gateway.erasures.stop()
            await gateway.audit.stop()
            await gateway.secrets.stop()
            await gateway.publisher.stop()
            await gateway.parsers.stop()
            await gateway.redis.aclose()

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        kafka = await gateway.publisher.ready()
        redis = await redis_answers(gateway.redis)
        certificates = gateway.verifier.certificates.loaded or await gateway.verifier.certificates.warm()
        ready = kafka and certificates
        # Without Redis the gateway still stores uploads (rate limits fail open, idempotency
        # degrades to at-least-once), so Kafka and the token certificates decide readiness.
        return JSONResponse({"ready": ready, "degraded": not redis,
                             "checks": {"kafka": kafka, "redis": redis, "certificates": certificates}},
                            status_code=200 if ready else 503)

    async def metrics_endpoint(request: Request) -> Response:
        return PlainTextResponse(prometheus_client.generate_latest(),
                                 media_type=prometheus_client.CONTENT_TYPE_LATEST)

    document = json.loads(OPENAPI_PATH.read_text())

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    app = Starlette(
        routes=[
            Route("/v1/uploads", UploadHandler(gateway).handle, methods=["POST"]),
            Route("/v1/users/me", ErasureHandler(gateway).handle, methods=["DELETE"]),
            Route("/v1/users/me/export", ExportHandler(gateway).handle, methods=["GET"]),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics_endpoint),
            Route("/openapi.json", openapi),
        ],
        lifespan=lifespan,
        middleware=[
            Middleware(HardenedResponses),
            # devices need no CORS; browsers only from the listed origins, never credentials
            Middleware(CORSMiddleware, allow_origins=gateway.settings.ingest_cors_origins,
                       allow_methods=["GET", "POST", "DELETE"],
                       allow_headers=["authorization", "content-type", "content-encoding", "x-request-id"],
                       expose_headers=["x-trace-id", "x-request-id", "retry-after", "ratelimit-limit",
                                       "ratelimit-remaining", "ratelimit-reset"], max_age=600),
        ],
    )
    instrument(app)
    return app


UNTRACED = "healthz,readyz,metrics,openapi.json"  # probes and scrapes are not worth a trace each


def instrument(app: Starlette, tracer_provider: TracerProvider | None = None) -> None:
    """One SERVER span per request, named ``<method> <route>`` (OpenTelemetry's ASGI middleware).
    The middleware's INTERNAL spans for every ASGI message sent and received are left out:
    they add four or more spans to each upload's trace and tell an operator nothing.
    ``OTEL_PYTHON_STARLETTE_EXCLUDED_URLS`` replaces the list of untraced paths."""
    excluded = os.environ.get("OTEL_PYTHON_STARLETTE_EXCLUDED_URLS", UNTRACED)
    app.add_middleware(OpenTelemetryMiddleware, excluded_urls=excluded, default_span_details=_span_details,
                       exclude_spans=["receive", "send"], tracer_provider=tracer_provider)


def _span_details(scope: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    method = scope.get("method", "")
    for route in getattr(scope.get("app"), "routes", ()):
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return f"{method} {route.path}", {HTTP_ROUTE: route.path}
    return method, {}  # unknown paths: no route, and no raw path in the span name
