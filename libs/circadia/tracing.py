"""OpenTelemetry set-up and W3C trace-context propagation through Kafka headers.

The official aiokafka instrumentation wraps every producer and consumer in the process
(the services' own and faust's): each send gets a PRODUCER span and carries
``traceparent`` in its headers, each fetched record a CONSUMER span. The services add
explicit spans where no instrumentation exists (faust processing, the model, WebSocket
sends) and continue the trace from the record headers, so one trace id runs from the
HTTP request to the socket. Spans are exported over OTLP (HTTP/protobuf) when
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or the traces-specific variable) is set; sampling
follows the standard ``OTEL_TRACES_SAMPLER`` variables (parent-based by default).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from circadia import __version__


def configure_tracing(service_name: str, *, instrument_kafka: bool = True) -> TracerProvider:
    """The process's tracer provider (OTLP export when an endpoint is set) and, unless
    ``instrument_kafka`` is False, aiokafka's instrumentation: a span per produced record
    (the trace context in its headers) and per consumed one. A service that makes its own
    span per consumed record and produces nothing worth a trace passes False."""
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name, "service.version": __version__})
    )
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter,
        )

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    if not instrument_kafka:
        return provider
    from opentelemetry.instrumentation.aiokafka import AIOKafkaInstrumentor

    instrumentor = AIOKafkaInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=provider)
    return provider


class _KafkaHeaderGetter(Getter[Sequence[tuple[str, bytes]]]):
    def get(self, carrier: Sequence[tuple[str, bytes]], key: str) -> list[str] | None:
        values = [v.decode("latin-1") for k, v in carrier if k == key]
        return values or None

    def keys(self, carrier: Sequence[tuple[str, bytes]]) -> list[str]:
        return [k for k, _ in carrier]


def context_from_headers(headers: Sequence[tuple[str, bytes]] | None) -> Context:
    return propagate.extract(list(headers or ()), getter=_KafkaHeaderGetter())


_W3C = TraceContextTextMapPropagator()


def context_from_traceparent(traceparent: str) -> Context:
    """The context of a W3C ``traceparent`` value alone (what a hop that carries only it, such as
    the fan-out's live channels, continues); an invalid value gives an empty context. Cheaper per
    message than ``context_from_headers``: no composite propagator, no baggage."""
    return _W3C.extract({"traceparent": traceparent})


def traceparent_of(span: Span) -> str:
    """The W3C ``traceparent`` value naming ``span`` as the parent (what ``propagate.inject``
    writes for a sampled or unsampled span), built directly; "" for an invalid span context."""
    context = span.get_span_context()
    if not context.is_valid:
        return ""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def current_trace_id() -> str | None:
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None
