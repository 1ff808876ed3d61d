"""Kafka clients and topics: one producer factory, one way to declare topics.

Every producer is idempotent with ``acks=all``: a send completes only after the broker
has durably acknowledged the record, which is what lets the ingest gateway answer 202.
Producers compress their batches with zstd (measured against lz4 in docs/benchmarks.md).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError, for_code
from aiokafka.helpers import create_ssl_context

from circadia.config import ServiceConfig
from circadia.topics import TOPICS, TopicSpec

log = logging.getLogger(__name__)

COMPRESSION = "zstd"
# the client-side bound of one request; the topics' max.message.bytes are the real limits
PRODUCER_MAX_REQUEST_BYTES = 8 * 1024 * 1024


class TopicLayoutError(RuntimeError):
    """An existing topic does not have the partition count circadia declares."""


def security_options(protocol: str = "PLAINTEXT", *, mechanism: str = "SCRAM-SHA-512", username: str = "",
                     password: str | None = None, cafile: str | None = None) -> dict[str, object]:
    """aiokafka connection options for a security protocol (SASL/SCRAM and/or TLS)."""
    options: dict[str, object] = {"security_protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = create_ssl_context(cafile=cafile)
    if protocol.startswith("SASL"):
        options.update(sasl_mechanism=mechanism, sasl_plain_username=username, sasl_plain_password=password)
    return options


def client_security(config: ServiceConfig) -> dict[str, object]:
    """The security options of a service's Kafka clients, with the current password."""
    settings = config.settings
    return security_options(settings.kafka_security_protocol, mechanism=settings.kafka_sasl_mechanism,
                            username=settings.kafka_sasl_username, password=config.secret("kafka_sasl_password"),
                            cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None)


def create_producer(bootstrap_servers: str, *, client_id: str, **overrides: object) -> AIOKafkaProducer:
    options: dict[str, object] = {
        "bootstrap_servers": bootstrap_servers,
        "client_id": client_id,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "compression_type": COMPRESSION,
        "max_request_size": PRODUCER_MAX_REQUEST_BYTES,
        "request_timeout_ms": 10_000,
        "retry_backoff_ms": 200,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


async def topic_partitions(bootstrap_servers: str, topic: str, **security: object) -> list[int]:
    """The partition ids of ``topic``; empty when the topic does not exist."""
    return (await topic_layout(bootstrap_servers, topic, **security))[1]


async def topic_layout(bootstrap_servers: str, topic: str, **security: object) -> tuple[str, list[int]]:
    """The cluster's id and the partition ids of ``topic`` (empty when it does not exist).
    Offsets only mean something within one cluster: whoever stores them keys them by its id."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="circadia-metadata", **security)
    await admin.start()
    try:
        (description,) = await admin.describe_topics([topic])
        cluster = await admin.describe_cluster()
    finally:
        await admin.close()
    cluster_id = cluster.get("cluster_id")
    if not cluster_id:
        raise RuntimeError(f"the Kafka cluster at {bootstrap_servers} reported no cluster id")
    if description["error_code"] != 0:
        return str(cluster_id), []
    return str(cluster_id), sorted(p["partition"] for p in description["partitions"])


async def topic_max_message_bytes(bootstrap_servers: str, topic: str, **security: object) -> int:
    """The largest record batch ``topic`` accepts: its ``max.message.bytes``, as the broker
    reports it (the topic's own setting, else the broker's ``message.max.bytes``)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="circadia-limits", **security)
    await admin.start()
    try:
        (response,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": None})])
    finally:
        await admin.close()
    for error_code, message, _type, _name, entries in response.resources:
        if error_code != 0:
            raise for_code(error_code)(f"describing topic {topic}: {message}")
        for name, value, *_ in entries:
            if name == "max.message.bytes":
                return int(value)
    raise RuntimeError(f"the broker reported no max.message.bytes for topic {topic}")


async def ensure_topics(
    bootstrap_servers: str,
    specs: Iterable[TopicSpec] = TOPICS,
    *,
    replication_factor: int = 1,
    **security: object,
) -> list[str]:
    """Create the missing topics with their declared partition counts; return those created.

    Existing topics are checked, not altered: a partition count that differs from the
    declaration is an error, because keys would map to other partitions.
    """
    specs = list(specs)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="circadia-topics", **security)
    await admin.start()
    try:
        existing = {t["topic"]: t for t in await admin.describe_topics([s.name for s in specs])}
        missing = []
        for spec in specs:
            topic = existing.get(spec.name)
            if topic is not None and topic["error_code"] == 0:
                if len(topic["partitions"]) != spec.partitions:
                    raise TopicLayoutError(
                        f"topic {spec.name} has {len(topic['partitions'])} partitions, "
                        f"declared {spec.partitions}"
                    )
            else:
                missing.append(spec)
        if not missing:
            return []
        response = await admin.create_topics(
            [
                NewTopic(s.name, s.partitions, replication_factor, topic_configs=dict(s.config))
                for s in missing
            ]
        )
        created = []
        for name, code, message in (e[:3] for e in response.topic_errors):
            if code == 0:
                created.append(name)
            elif for_code(code) is not TopicAlreadyExistsError:
                raise for_code(code)(f"creating topic {name}: {message}")
        log.info("topics created", extra={"topics": created})
        return created
    finally:
        await admin.close()
