"""Prometheus metrics of the prediction worker."""

from prometheus_client import Counter, Gauge, Histogram

RECORDS = Counter(
    "circadia_worker_records_total", "health.samples.v1 records handled, by outcome.", ["outcome"]
)
DEAD_LETTERS = Counter(
    "circadia_worker_dead_letters_total", "Records sent to the dead-letter topic, by error.", ["error"]
)
PROCESSING = Histogram(
    "circadia_worker_processing_duration_seconds", "Decode, compute and publish of one upload."
)
PREDICTIONS = Counter("circadia_worker_predictions_total", "Predictions published.")
ASSIGNED_PARTITIONS = Gauge(
    "circadia_worker_assigned_partitions", "Partitions of health.samples.v1 assigned to this worker."
)
