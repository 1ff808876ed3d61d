"""The stream topology: health.samples.v1 → results on predictions.v1, failures to the DLQ."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import faust
from circadia import __version__
from circadia.avro import SchemaSet
from circadia.topics import HEALTH_SAMPLES, HEALTH_SAMPLES_DLQ, PREDICTIONS, TOPICS
from circadia.tracing import context_from_headers, context_headers
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from prediction_worker import daily, metrics
from prediction_worker.settings import WorkerSettings

log = logging.getLogger(__name__)
tracer = trace.get_tracer("prediction_worker")

UPLOAD_SCHEMA = "io.circadia.health.HealthUpload"
PREDICTION_SCHEMA = "io.circadia.prediction.Prediction"
_PARTITIONS = {spec.name: spec.partitions for spec in TOPICS}


def broker_urls(bootstrap_servers: str) -> list[str]:
    return [f"kafka://{server.strip()}" for server in bootstrap_servers.split(",") if server.strip()]


def _header_list(headers: Mapping[str, bytes] | Sequence[tuple[str, bytes]] | None) -> list[tuple[str, bytes]]:
    if headers is None:
        return []
    if isinstance(headers, Mapping):
        return list(headers.items())
    return list(headers)


def compute_prediction(upload: Mapping[str, Any], computed_at: datetime) -> dict[str, Any]:
    """The result record for one decoded upload (pure; the caller supplies the clock)."""
    samples = upload["samples"]
    return {
        "prediction_id": str(uuid.uuid4()),
        "user_id": upload["user_id"],
        "source_upload_ids": [str(upload["upload_id"])],
        "computed_at": computed_at,
        "window_start": min(s["start"] for s in samples),
        "window_end": max(s["end"] for s in samples),
        "code_version": __version__,
        "daily_activity": daily.daily_activity(samples),
        "methods": {"daily_activity": daily.METHOD},
    }


def build_app(settings: WorkerSettings, schemas: SchemaSet) -> faust.App:
    app = faust.App(
        settings.worker_app_id,
        broker=broker_urls(settings.kafka_bootstrap_servers),
        store="memory://",
        datadir=str(settings.worker_data_dir),
        web_enabled=False,
        topic_partitions=_PARTITIONS[HEALTH_SAMPLES],
        topic_replication_factor=settings.kafka_replication_factor,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
    )
    upload_schema = schemas[UPLOAD_SCHEMA]
    prediction_schema = schemas[PREDICTION_SCHEMA]

    def raw_topic(name: str) -> faust.TopicT:
        return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw",
                         value_serializer="raw", partitions=_PARTITIONS[name])

    uploads = raw_topic(HEALTH_SAMPLES)
    predictions = raw_topic(PREDICTIONS)
    dead_letters = raw_topic(HEALTH_SAMPLES_DLQ)

    async def dead_letter(event: faust.EventT, headers: list[tuple[str, bytes]], exc: Exception) -> None:
        error = type(exc).__name__
        metrics.DEAD_LETTERS.labels(error).inc()
        metrics.RECORDS.labels("dead_lettered").inc()
        log.error("record sent to dead-letter topic", exc_info=exc, extra={
            "topic": event.message.topic, "partition": event.message.partition,
            "offset": event.message.offset,
        })
        delivered = await dead_letters.send(
            key=event.key, value=event.value, force=True,
            headers=headers + [
                ("error.class", error.encode()),
                ("error.message", str(exc)[:1000].encode()),
                ("source.topic", event.message.topic.encode()),
                ("source.partition", str(event.message.partition).encode()),
                ("source.offset", str(event.message.offset).encode()),
            ],
        )
        await delivered

    @app.agent(uploads)
    async def process(stream: faust.StreamT) -> None:
        async for event in stream.events():
            headers = _header_list(event.headers)
            started = time.perf_counter()
            with tracer.start_as_current_span(
                f"{HEALTH_SAMPLES} process",
                context=context_from_headers(headers),
                kind=SpanKind.CONSUMER,
                attributes={"messaging.system": "kafka", "messaging.destination.name": HEALTH_SAMPLES,
                            "messaging.operation.type": "process",
                            "messaging.destination.partition.id": str(event.message.partition),
                            "messaging.kafka.offset": event.message.offset},
            ):
                try:
                    upload = schemas.decode(event.value, headers, upload_schema)
                    record = compute_prediction(upload, datetime.now(UTC))
                    value = prediction_schema.encode(record)
                except Exception as exc:  # any failure of one record must not stop the stream
                    await dead_letter(event, headers, exc)
                    continue
                delivered = await predictions.send(
                    key=record["user_id"].encode(), value=value, force=True,
                    headers=prediction_schema.headers() + context_headers() + [
                        ("prediction_id", record["prediction_id"].encode()),
                    ],
                )
                await delivered
            metrics.RECORDS.labels("processed").inc()
            metrics.PREDICTIONS.inc()
            metrics.PROCESSING.observe(time.perf_counter() - started)
            log.info("prediction published", extra={
                "upload_id": record["source_upload_ids"][0],
                "prediction_id": record["prediction_id"],
                "days": len(record["daily_activity"]),
            })

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: Any, assigned: set[Any], **kwargs: Any) -> None:
        metrics.ASSIGNED_PARTITIONS.set(sum(1 for tp in assigned if tp.topic == HEALTH_SAMPLES))

    return app
