"""The configuration audit: every start of a service is an event on ``config.audit.v1``.

The event carries the service's non-secret settings, the version (a short hash and the
source) of each secret — never its value — the code version, and what differs from the
previous event of the same service. It is logged as well. Publishing runs in the
background and retries until the broker accepts it, so a service starts even while Kafka
is down, and the audit catches up.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from circadia import __version__
from circadia.avro import HEADER_SCHEMA_NAME, SchemaSet, header
from circadia.config import ServiceConfig
from circadia.kafka import client_security, create_producer
from circadia.topics import CONFIG_AUDIT

log = logging.getLogger(__name__)

SCHEMA = "io.circadia.audit.ConfigChange"


def audit_event(config: ServiceConfig, previous: dict[str, Any] | None, at: datetime) -> dict[str, Any]:
    settings = {key: str(value) for key, value in config.settings.effective({}).items()}
    secret_versions = {name: f"{secret.version} from {secret.source}"
                       for name, secret in config.secrets.items() if secret is not None}
    before = dict(previous["settings"]) if previous else {}
    before.update({f"secret:{k}": v for k, v in (previous or {}).get("secret_versions", {}).items()})
    after = {**settings, **{f"secret:{k}": v for k, v in secret_versions.items()}}
    changes = [] if previous is None else [
        {"key": key, "before": before.get(key), "after": after.get(key)}
        for key in sorted(set(before) | set(after)) if before.get(key) != after.get(key)
    ]
    return {
        "service": config.service,
        "instance": f"{socket.gethostname()}:{os.getpid()}",
        "at": at,
        "env": config.settings.env,
        "code_version": __version__,
        "settings": settings,
        "secret_versions": secret_versions,
        "changes": changes,
        "previous_at": previous["at"] if previous else None,
    }


async def previous_event(config: ServiceConfig, schemas: SchemaSet) -> dict[str, Any] | None:
    """The latest audit event of this service (the topic has one partition, in start order)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=config.settings.kafka_bootstrap_servers, enable_auto_commit=False,
                                client_id=f"{config.service}-audit", **client_security(config))
    await consumer.start()
    latest = None
    try:
        tp = TopicPartition(CONFIG_AUDIT, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        while await consumer.position(tp) < end:
            for messages in (await consumer.getmany(tp, timeout_ms=1000)).values():
                for message in messages:  # the topic also holds erasures' audit records (circadia.erasure)
                    if message.key == config.service.encode() and \
                            header(message.headers, HEADER_SCHEMA_NAME) == SCHEMA.encode():
                        latest = message
    finally:
        await consumer.stop()
    if latest is None:
        return None
    return schemas.decode(latest.value, list(latest.headers), schemas[SCHEMA])


async def publish_audit(config: ServiceConfig, schemas: SchemaSet | None = None,
                        at: datetime | None = None) -> dict[str, Any]:
    schemas = schemas or SchemaSet.load()
    event = audit_event(config, await previous_event(config, schemas), at or datetime.now(UTC))
    schema = schemas[SCHEMA]
    producer = create_producer(config.settings.kafka_bootstrap_servers, client_id=f"{config.service}-audit",
                               **client_security(config))
    await producer.start()
    try:
        await producer.send_and_wait(CONFIG_AUDIT, schema.encode(event), key=config.service.encode(),
                                     headers=schema.headers())
    finally:
        await producer.stop()
    log.info("configuration audited", extra={"service": config.service, "changes": event["changes"],
                                              "secret_versions": event["secret_versions"]})
    return event


class ConfigAudit:
    """Publishes the start event in the background, retrying while Kafka is unavailable."""

    def __init__(self, config: ServiceConfig, retry_seconds: float = 5.0) -> None:
        self._config = config
        self._retry = retry_seconds
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="config-audit")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        at = datetime.now(UTC)
        while True:
            try:
                await publish_audit(self._config, at=at)
                return
            except (KafkaError, OSError, TimeoutError) as exc:
                log.warning("configuration audit not published yet, retrying", extra={"error": repr(exc)})
                await asyncio.sleep(self._retry)
