"""Prometheus metrics of the fan-out gateway."""

from prometheus_client import Counter, Gauge, Histogram

CONNECTIONS = Gauge("circadia_fanout_connections", "Authenticated WebSocket connections open.")
USERS = Gauge("circadia_fanout_users", "Users with at least one open connection.")
DELIVERIES = Counter("circadia_fanout_deliveries_total", "Predictions queued to a connection.")
DROPPED = Counter("circadia_fanout_dropped_total", "Messages not delivered, by reason.", ["reason"])
CLOSES = Counter("circadia_fanout_closes_total", "Connections closed by the server, by code.", ["code"])
AUTH_FAILURES = Counter("circadia_fanout_auth_failures_total", "Rejected authentications, by reason.",
                        ["reason"])
FORBIDDEN = Counter("circadia_fanout_forbidden_total", "Client messages naming another user.")
RESUMES = Counter("circadia_fanout_resumes_total", "Resume requests, by outcome (resumed, reset).",
                  ["outcome"])
HISTORY_ERRORS = Counter("circadia_fanout_history_errors_total", "Redis history operations that failed.")
DELIVERY_LATENCY = Histogram(
    "circadia_fanout_delivery_latency_seconds",
    "From the prediction's Kafka timestamp to queueing on the sockets.",
)
RECORDS = Counter("circadia_fanout_records_total",
                  "predictions.v1 records of this replica's partitions, by outcome (read, undecodable, "
                  "published, republished, repeat, stale, failed).", ["outcome"])
RENDERED = Counter("circadia_fanout_rendered_total",
                   "Results decoded and rendered as JSON by this replica for its connections, by outcome.",
                   ["outcome"])
OWNED_PARTITIONS = Gauge("circadia_fanout_owned_partitions", "predictions.v1 partitions this replica owns.")
DELIVERED_LOCALLY = Counter("circadia_fanout_delivered_locally_total",
                            "Results pushed to this replica's connections straight from Kafka while Redis was down.")
LIVE_CONNECTED = Gauge("circadia_fanout_live_connected", "1 while the live-channel connection to Redis is up.")
LIVE_RECONNECTS = Counter("circadia_fanout_live_reconnects_total", "Live-channel connections to Redis replaced.")
LIVE_MESSAGES = Counter("circadia_fanout_live_messages_total",
                        "Results received on the live channels of this replica's users.")
GAPS = Counter("circadia_fanout_gaps_total",
               "Publications that showed a connection had missed an earlier one (bridged from the history).")
RESYNCS = Counter("circadia_fanout_resyncs_total",
                  "Live connections caught up from the history after a gap or a resubscription, by outcome.",
                  ["outcome"])

# Known label values start at zero, so dashboards and alerts see a series before the first event.
DROPPED.labels("slow_client")
for _code in ("1001", "4401", "4403", "4408", "4429"):
    CLOSES.labels(_code)
for _outcome in ("resumed", "reset"):
    RESUMES.labels(_outcome)
for _outcome in ("read", "undecodable", "published", "republished", "repeat", "stale", "failed"):
    RECORDS.labels(_outcome)
for _outcome in ("rendered", "undecodable"):
    RENDERED.labels(_outcome)
for _outcome in ("bridged", "reset", "unavailable"):
    RESYNCS.labels(_outcome)
