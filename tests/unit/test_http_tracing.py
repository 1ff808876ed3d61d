"""The ingest gateway's HTTP spans: one SERVER span per request, named by route; none for probes."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from ingest_gateway.app import instrument


async def upload(request: Request) -> Response:
    body = b"".join([chunk async for chunk in request.stream()])
    return JSONResponse({"bytes": len(body)}, status_code=202)


async def probe(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def test_one_server_span_per_request_and_none_for_probes() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = Starlette(routes=[Route("/v1/uploads", upload, methods=["POST"]), Route("/healthz", probe),
                            Route("/readyz", probe), Route("/metrics", probe)])
    instrument(app, tracer_provider=provider)
    with TestClient(app) as client:
        assert client.post("/v1/uploads", content=b"x" * 200_000).status_code == 202
        for path in ("/healthz", "/readyz", "/metrics"):
            assert client.get(path).status_code == 200
        assert client.get("/v1/unknown/12345").status_code == 404
    spans = exporter.get_finished_spans()
    assert [(s.name, s.kind) for s in spans] == [("POST /v1/uploads", SpanKind.SERVER), ("GET", SpanKind.SERVER)]
    assert spans[0].attributes is not None and spans[0].attributes["http.route"] == "/v1/uploads"
    assert spans[1].attributes is not None and "http.route" not in spans[1].attributes
