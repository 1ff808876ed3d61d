from __future__ import annotations

from pydantic import Field

from circadia.config import AuthSettings, RedisSettings


class FanoutSettings(AuthSettings, RedisSettings):
    fanout_group_id: str = Field(
        default="circadia-fanout-gateway",
        description="Consumer group of the deployment's replicas; also names its live channels in Redis.",
    )
    fanout_fetch_wait_ms: int = Field(
        default=50, ge=0, le=500,
        description="How long the broker may hold a fetch of predictions.v1 to gather more records "
                    "(0: answer as soon as there is one). Fewer, larger batches cost less CPU per result.",
    )
    fanout_host: str = "127.0.0.1"
    fanout_port: int = Field(default=8081, ge=1, le=65535)
    fanout_auth_timeout_seconds: float = Field(default=5.0, gt=0)
    fanout_send_queue_size: int = Field(default=64, ge=1)
    fanout_ping_interval_seconds: float = Field(default=20.0, gt=0)
    fanout_max_connections_per_user: int = Field(default=10, ge=1)
    fanout_max_connections: int = Field(default=20_000, ge=1)
    fanout_history_size: int = Field(default=100, ge=1, description="Results kept per user for resume.")
    fanout_history_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=60)
    fanout_refresh_lead_seconds: float = Field(
        default=60.0, gt=0, description="Ask for a fresh token this long before the current one expires."
    )
    fanout_drain_seconds: float = Field(default=5.0, ge=0, description="Shutdown: time to flush send queues.")
    fanout_reconnect_spread_ms: int = Field(default=5000, ge=0, description="Shutdown: spread of reconnect hints.")
    fanout_subscribe_timeout_seconds: float = Field(
        default=2.0, gt=0, description="How long a new connection waits for its live channel before catching up.")
