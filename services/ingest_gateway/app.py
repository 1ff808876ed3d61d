"""Routes of the ingest gateway and the composition of its resources."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import prometheus_client
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from circadia.auth import FirebaseTokenVerifier, InvalidTokenError
from circadia.avro import AvroSchema, AvroValidationError
from circadia.topics import HEALTH_SAMPLES
from circadia.tracing import context_headers, current_trace_id
from ingest_gateway import metrics
from ingest_gateway.models import UploadRequest
from ingest_gateway.publisher import BrokerUnavailable, UploadPublisher
from ingest_gateway.settings import IngestSettings

log = logging.getLogger(__name__)
tracer = trace.get_tracer("ingest_gateway")

JSON_TYPES = ("application/json",)


class Rejection(Exception):
    """An upload the gateway refuses; becomes a JSON error response."""

    def __init__(self, status: int, reason: str, *, errors: list[dict] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.errors = errors
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body: dict[str, object] = {"error": self.reason}
        if self.errors is not None:
            body["errors"] = self.errors
        return JSONResponse(body, status_code=self.status, headers=self.headers)


class UploadHandler:
    def __init__(self, settings: IngestSettings, verifier: FirebaseTokenVerifier,
                 publisher: UploadPublisher, schema: AvroSchema) -> None:
        self._settings = settings
        self._verifier = verifier
        self._publisher = publisher
        self._schema = schema

    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        with tracer.start_as_current_span(
            "POST /v1/uploads",
            context=propagate.extract(request.headers),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": "POST", "http.route": "/v1/uploads"},
        ) as span:
            try:
                response = await self._handle(request)
            except Rejection as rejection:
                metrics.REJECTIONS.labels(rejection.reason).inc()
                response = rejection.response()
            span.set_attribute("http.response.status_code", response.status_code)
        metrics.REQUESTS.labels(str(response.status_code)).inc()
        metrics.REQUEST_DURATION.observe(time.perf_counter() - started)
        return response

    async def _handle(self, request: Request) -> Response:
        user_id = await self._authenticate(request)
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in JSON_TYPES:
            raise Rejection(415, "unsupported_media_type")
        body = await self._read_body(request)
        upload = self._parse(body)
        record = upload.to_record(user_id, datetime.now(UTC))
        try:
            value = self._schema.encode(record)
        except AvroValidationError as exc:
            raise Rejection(422, "schema_violation",
                            errors=[{"loc": [], "msg": p} for p in exc.problems]) from None
        with tracer.start_as_current_span(
            f"{HEALTH_SAMPLES} publish",
            kind=SpanKind.PRODUCER,
            attributes={"messaging.system": "kafka", "messaging.destination.name": HEALTH_SAMPLES,
                        "messaging.operation.type": "publish"},
        ) as span:
            headers = self._schema.headers() + context_headers() + [
                ("upload_id", record["upload_id"].encode())
            ]
            produce_started = time.perf_counter()
            try:
                partition, offset = await self._publisher.publish(
                    HEALTH_SAMPLES, key=user_id.encode(), value=value, headers=headers
                )
            except BrokerUnavailable:
                log.error("upload not stored: Kafka unavailable", exc_info=True,
                          extra={"upload_id": record["upload_id"]})
                raise Rejection(503, "broker_unavailable", headers={"Retry-After": "5"}) from None
            metrics.PRODUCE_DURATION.observe(time.perf_counter() - produce_started)
            span.set_attribute("messaging.destination.partition.id", str(partition))
            span.set_attribute("messaging.kafka.offset", offset)
        metrics.SAMPLES_ACCEPTED.inc(len(upload.samples))
        log.info("upload accepted", extra={"upload_id": record["upload_id"],
                                           "samples": len(upload.samples),
                                           "partition": partition, "offset": offset})
        return JSONResponse(
            {"upload_id": record["upload_id"], "accepted": len(upload.samples),
             "trace_id": current_trace_id()},
            status_code=202,
        )

    async def _authenticate(self, request: Request) -> str:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        challenge = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
        if scheme.lower() != "bearer" or not token.strip():
            raise Rejection(401, "missing_bearer_token", headers={"WWW-Authenticate": "Bearer"})
        try:
            verified = await self._verifier.verify(token.strip())
        except InvalidTokenError as exc:
            raise Rejection(401, "invalid_token", errors=[{"loc": ["authorization"], "msg": exc.reason}],
                            headers=challenge) from None
        return verified.user_id

    async def _read_body(self, request: Request) -> bytes:
        limit = self._settings.ingest_max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise Rejection(413, "body_too_large")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise Rejection(413, "body_too_large")
            chunks.append(chunk)
        return b"".join(chunks)

    def _parse(self, body: bytes) -> UploadRequest:
        try:
            upload = UploadRequest.model_validate_json(body)
        except ValidationError as exc:
            raise Rejection(422, "invalid_upload", errors=[
                {"loc": list(error["loc"]), "msg": error["msg"]}
                for error in exc.errors(include_url=False)
            ]) from None
        if len(upload.samples) > self._settings.ingest_max_samples:
            raise Rejection(422, "too_many_samples", errors=[{
                "loc": ["samples"],
                "msg": f"at most {self._settings.ingest_max_samples} samples per upload",
            }])
        return upload


def create_app(settings: IngestSettings, verifier: FirebaseTokenVerifier,
               publisher: UploadPublisher, schema: AvroSchema) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await publisher.start()
        try:
            yield
        finally:
            await publisher.stop()

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        broker = await publisher.ready()
        return JSONResponse({"ready": broker, "checks": {"kafka": broker}},
                            status_code=200 if broker else 503)

    async def metrics_endpoint(request: Request) -> Response:
        return PlainTextResponse(prometheus_client.generate_latest(),
                                 media_type=prometheus_client.CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/v1/uploads", UploadHandler(settings, verifier, publisher, schema).handle,
                  methods=["POST"]),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics_endpoint),
        ],
        lifespan=lifespan,
    )
