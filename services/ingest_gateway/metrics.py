"""Prometheus metrics of the ingest gateway."""

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "circadia_ingest_requests_total", "Upload requests by HTTP status.", ["status"]
)
REQUEST_DURATION = Histogram(
    "circadia_ingest_request_duration_seconds", "Upload request duration, start to response."
)
SAMPLES_ACCEPTED = Counter(
    "circadia_ingest_samples_accepted_total", "Samples in uploads the broker acknowledged."
)
SAMPLES_REJECTED = Counter(
    "circadia_ingest_samples_rejected_total", "Samples in uploads refused after parsing, by reason.",
    ["reason"],
)
REJECTIONS = Counter(
    "circadia_ingest_rejections_total", "Refused uploads by reason.", ["reason"]
)
PRODUCE_DURATION = Histogram(
    "circadia_ingest_produce_duration_seconds", "Time from send to broker acknowledgement."
)
IDEMPOTENCY = Counter(
    "circadia_ingest_idempotency_total",
    "Idempotency ledger outcomes: new, duplicate, conflict, in_flight, unchecked (Redis down), "
    "unmarked (published but the ledger could not record it).",
    ["outcome"],
)
PRODUCE_ERRORS = Counter(
    "circadia_ingest_produce_errors_total",
    "Sends Kafka did not acknowledge, by error and by whether a retry can succeed (retriable or final).",
    ["error", "kind"],
)
PRODUCER_RENEWALS = Counter(
    "circadia_ingest_producer_renewals_total",
    "Producers replaced after a failed batch (which leaves the idempotent sequence out of step).",
)
TOPIC_LIMIT = Gauge(
    "circadia_ingest_topic_max_message_bytes", "max.message.bytes of health.samples.v1 as last read."
)
UPLOAD_BOUND = Gauge(
    "circadia_ingest_upload_record_bound_bytes",
    "The largest record an upload within the configured limits can become (before compression).",
)
PARSE_OFFLOADED = Counter(
    "circadia_ingest_parse_offloaded_total", "Upload bodies parsed and encoded in the parser processes."
)
ERASURES = Counter("circadia_ingest_erasures_total",
                   "Users erased through DELETE /v1/users/me, by whether a key was destroyed (destroyed, no_key).",
                   ["outcome"])
EXPORTS = Counter("circadia_ingest_exports_total", "Exports answered through GET /v1/users/me/export.")
