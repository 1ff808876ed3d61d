"""The Kafka topics of circadia: names, keys and partition counts in one table."""

from __future__ import annotations

from dataclasses import dataclass, field

HEALTH_SAMPLES = "health.samples.v1"
PREDICTIONS = "predictions.v1"
HEALTH_SAMPLES_DLQ = "health.samples.dlq.v1"
CONFIG_AUDIT = "config.audit.v1"
USER_ERASURES = "user.erasures.v1"
EXPORT_REQUESTS = "user.export.requests.v1"
EXPORT_REPLIES = "user.export.replies.v1"

DAY_MS = 24 * 60 * 60 * 1000
MIB = 1024 * 1024

# The largest record batch each topic accepts (``max.message.bytes``; the broker's default is
# about 1 MiB). An upload at the gateway's documented limits (50,000 samples) is about 2.2 MB
# of Avro before compression, so health.samples.v1 accepts 4 MiB and the ingest gateway
# checks at start-up that its limits fit (ingest_gateway.limits). The dead-letter topic holds
# the same records plus error headers.
SAMPLES_MAX_MESSAGE_BYTES = 4 * MIB


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    doc: str
    config: dict[str, str] = field(default_factory=dict)


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(
        HEALTH_SAMPLES,
        partitions=6,
        doc="Accepted uploads (io.circadia.health.HealthUpload), key = user id.",
        config={"retention.ms": str(14 * DAY_MS), "min.insync.replicas": "1",
                "max.message.bytes": str(SAMPLES_MAX_MESSAGE_BYTES)},
    ),
    TopicSpec(
        PREDICTIONS,
        partitions=6,
        doc="Worker results (io.circadia.prediction.Prediction), key = user id.",
        config={"retention.ms": str(7 * DAY_MS), "min.insync.replicas": "1",
                "max.message.bytes": str(1 * MIB)},
    ),
    TopicSpec(
        HEALTH_SAMPLES_DLQ,
        partitions=1,
        doc="health.samples.v1 records the worker could not process, original bytes plus error headers.",
        config={"retention.ms": str(30 * DAY_MS),
                "max.message.bytes": str(SAMPLES_MAX_MESSAGE_BYTES + 64 * 1024)},
    ),
    TopicSpec(
        CONFIG_AUDIT,
        partitions=1,
        doc="Each service start's configuration and its changes (io.circadia.audit.ConfigChange), key = service.",
        config={"retention.ms": str(400 * DAY_MS), "max.message.bytes": str(1 * MIB)},
    ),
    TopicSpec(
        USER_ERASURES,
        partitions=6,  # as health.samples.v1: the worker owning a user's window gets the user's erasure
        doc="Users whose data was erased (io.circadia.privacy.Erasure), key = user id.",
        config={"retention.ms": str(30 * DAY_MS), "max.message.bytes": str(1 * MIB)},
    ),
    TopicSpec(
        EXPORT_REQUESTS,
        partitions=6,  # as health.samples.v1: the worker holding the user's window answers
        doc="Users asking for a copy of their data (io.circadia.privacy.ExportRequest), key = user id.",
        config={"retention.ms": str(DAY_MS), "max.message.bytes": str(1 * MIB)},
    ),
    TopicSpec(
        EXPORT_REPLIES,
        partitions=6,
        doc="The worker's answers (io.circadia.privacy.ExportReply, sealed), key = user id.",
        config={"retention.ms": str(DAY_MS), "max.message.bytes": str(SAMPLES_MAX_MESSAGE_BYTES)},
    ),
)
