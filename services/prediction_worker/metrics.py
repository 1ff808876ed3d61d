"""Prometheus metrics of the prediction worker."""

from prometheus_client import Counter, Gauge, Histogram

from circadia.topics import HEALTH_SAMPLES

RECORDS = Counter(
    "circadia_worker_records_total",
    "health.samples.v1 records handled, by outcome (applied, duplicate, erased: the user was erased "
    "after the upload was stored, dead_lettered).",
    ["outcome"],
)
DEAD_LETTERS = Counter(
    "circadia_worker_dead_letters_total", "Records sent to the dead-letter topic, by stage and error.",
    ["stage", "error"],
)
RETRIES = Counter("circadia_worker_retries_total", "Transient failures retried, by stage.", ["stage"])
PROCESSING = Histogram(
    "circadia_worker_processing_duration_seconds", "Decode, apply, compute and publish of one upload."
)
MODEL_DURATION = Histogram(
    "circadia_worker_model_duration_seconds", "PAT encoder forward pass for one user-week.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
PREDICTIONS = Counter("circadia_worker_predictions_total", "Predictions published.")
PENDING_DROPPED = Counter(
    "circadia_worker_pending_dropped_total",
    "Applied uploads dropped from a result's source_upload_ids at the pending bound (publishing was failing).",
)
PUBLISH_FAILURES = Counter(
    "circadia_worker_publish_failures_total", "Results kept pending because publishing failed."
)
METRIC_ERRORS = Counter(
    "circadia_worker_metric_errors_total", "Metric groups that failed and were refused, by group.", ["group"]
)
STATE_RESETS = Counter(
    "circadia_worker_state_resets_total", "User windows that could not be read and were started afresh."
)
PENDING_USERS = Gauge("circadia_worker_pending_users", "Users with uploads not yet reflected in a result.")
BREAKER_STATE = Gauge(
    "circadia_worker_breaker_state", "Circuit breaker state: 0 closed, 1 half-open, 2 open.", ["breaker"]
)
CONSUMER_LAG = Gauge(
    "circadia_worker_consumer_lag", "Records of health.samples.v1 not yet fetched, by partition.", ["partition"]
)
ASSIGNED_PARTITIONS = Gauge(
    "circadia_worker_assigned_partitions", "Partitions of health.samples.v1 assigned to this worker."
)
OFFSET_GAPS = Counter(
    "circadia_worker_offset_gaps_total",
    "Offsets the consumer jumped over without delivering them (records never processed), by topic.",
    ["topic"],
)
WEEK_BLOCKS = Counter(
    "circadia_worker_week_blocks_total",
    "Results' week blocks (circadian, cosinor, sleep), by whether they were computed or reused.", ["outcome"],
)
WEEK_CACHE_USERS = Gauge("circadia_worker_week_cache_users", "Users whose week blocks are kept in memory.")
MODEL_REFRESHES = Counter(
    "circadia_worker_model_refreshes_total",
    "Model (PAT) runs in the background, by outcome (published: the held result went out; failed).",
    ["outcome"],
)

# Known label values start at zero, so dashboards and alerts see a series before the first event.
for _outcome in ("applied", "duplicate", "dead_lettered"):
    RECORDS.labels(_outcome)
for _outcome in ("computed", "reused"):
    WEEK_BLOCKS.labels(_outcome)
for _outcome in ("published", "failed"):
    MODEL_REFRESHES.labels(_outcome)
OFFSET_GAPS.labels(HEALTH_SAMPLES)
ERASURES = Counter("circadia_worker_erasures_total",
                   "Erasure events applied, by outcome (window_removed, no_window, window_kept: the key service "
                   "was unavailable and the window stays sealed with the destroyed key, unkeyed).", ["outcome"])
EXPORTS = Counter("circadia_worker_exports_total",
                  "Export requests, by outcome (answered, empty: no window of the user, failed).", ["outcome"])
