"""The stream topology: health.samples.v1 → per-user windows → predictions.v1, failures to the DLQ.

``build_app`` wires the faust app: one agent hands each upload to the processor
(``processor.py``), which applies it to its user's window (a changelog-backed table,
``store.py``, so a restarted worker restores the windows instead of recomputing them) and
publishes a result, or leaves it pending; a timer publishes what is pending. A record that
cannot be decoded or applied goes to ``health.samples.dlq.v1`` (``deadletter.py``). Agents of
their own take erasures and export requests; a timer measures the consumer lag.
"""

from __future__ import annotations

from typing import Any

import faust

from circadia.avro import SchemaSet
from circadia.kafka import COMPRESSION, PRODUCER_MAX_REQUEST_BYTES
from circadia.topics import (
    EXPORT_REPLIES,
    EXPORT_REQUESTS,
    HEALTH_SAMPLES,
    HEALTH_SAMPLES_DLQ,
    PREDICTIONS,
    TOPICS,
    USER_ERASURES,
)
from circadia.userkeys import UserKeys
from prediction_worker import metrics
from prediction_worker.consumer import SafeConsumer
from prediction_worker.deadletter import DeadLetters
from prediction_worker.processor import ModelStage, NoModel, UploadProcessor
from prediction_worker.recovery import SeekFirstTableManager
from prediction_worker.settings import WorkerSettings
from prediction_worker.store import WindowStore, windows_table

_PARTITIONS = {spec.name: spec.partitions for spec in TOPICS}


def broker_urls(bootstrap_servers: str) -> list[str]:
    return [f"kafka://{server.strip()}" for server in bootstrap_servers.split(",") if server.strip()]


def build_app(settings: WorkerSettings, schemas: SchemaSet, model: ModelStage | None = None,
              credentials: faust.types.auth.CredentialsT | None = None, *, keys: UserKeys | None = None) -> faust.App:
    app = faust.App(
        settings.worker_app_id,
        broker=broker_urls(settings.kafka_bootstrap_servers),
        # faust's RocksDB store would skip the changelog replay at a restart, but it writes only
        # inside a stream event, and the flush timer and model runs write windows outside one
        # (docs/architecture.md, "The worker's state store")
        store="memory://",
        datadir=str(settings.worker_data_dir),
        web_enabled=False,
        topic_partitions=_PARTITIONS[HEALTH_SAMPLES],
        topic_replication_factor=settings.kafka_replication_factor,
        producer_acks=-1,
        # a dead letter carries an upload at the gateway's limits (about 2.2 MB of Avro), and a
        # window changelog record grows with the user's devices: both need more than faust's 1 MB
        producer_max_request_size=PRODUCER_MAX_REQUEST_BYTES,
        producer_compression_type=COMPRESSION,
        consumer_auto_offset_reset="earliest",
        broker_credentials=credentials,
        broker_session_timeout=settings.worker_session_timeout_seconds,
        consumer_group_instance_id=settings.worker_instance_id,
        broker_heartbeat_interval=min(3.0, settings.worker_session_timeout_seconds / 3),
        TableManager=SeekFirstTableManager,  # see prediction_worker.recovery
    )

    app.transport.Consumer = SafeConsumer  # type: ignore[misc]  # see prediction_worker.consumer

    def raw_topic(name: str) -> faust.TopicT:
        return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw",
                         value_serializer="raw", partitions=_PARTITIONS[name])

    uploads = raw_topic(HEALTH_SAMPLES)
    table = windows_table(app, _PARTITIONS[HEALTH_SAMPLES])
    processor = UploadProcessor(
        settings, schemas, WindowStore(table, keys), raw_topic(PREDICTIONS),
        DeadLetters(raw_topic(HEALTH_SAMPLES_DLQ), backoff=settings.worker_retry_backoff_seconds),
        model or NoModel(), keys,
    )

    @app.agent(uploads)
    async def process(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await processor.handle(event)

    @app.agent(raw_topic(USER_ERASURES))
    async def erasures(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await processor.erase(event)

    export_replies = raw_topic(EXPORT_REPLIES)

    @app.agent(raw_topic(EXPORT_REQUESTS))
    async def exports(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await processor.export(event, export_replies)

    @app.timer(max(0.5, settings.worker_debounce_seconds / 2))
    async def flush_pending() -> None:
        await processor.flush()

    @app.timer(5.0)
    async def measure_lag() -> None:
        """Uploads not yet fetched, per assigned partition of health.samples.v1."""
        assigned = [tp for tp in app.consumer.assignment() if tp.topic == HEALTH_SAMPLES]
        if not assigned:
            return
        highwaters = await app.consumer.highwaters(*assigned)
        for tp in assigned:
            position = await app.consumer.position(tp)
            if position is not None and highwaters.get(tp) is not None:
                metrics.CONSUMER_LAG.labels(str(tp.partition)).set(max(0, highwaters[tp] - position))

    # mode's SignalHandlerT (sender, *args, signal: BaseSignalT, **kwargs) matches no plain coroutine
    # function under mypy; faust calls these as on_partitions_assigned.send(assigned) and .send()
    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(sender: Any, assigned: set[Any], **kwargs: Any) -> None:
        metrics.ASSIGNED_PARTITIONS.set(sum(1 for tp in assigned if tp.topic == HEALTH_SAMPLES))

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # see on_assigned
    async def on_revoked(sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        processor.cancel_model_runs()

    @app.on_rebalance_complete.connect  # type: ignore[arg-type]  # see on_assigned
    async def on_restored(sender: Any, **kwargs: Any) -> None:
        processor.rebalanced()

    return app
