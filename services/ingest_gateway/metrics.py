"""Prometheus metrics of the ingest gateway."""

from prometheus_client import Counter, Histogram

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
