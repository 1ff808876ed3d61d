from __future__ import annotations

from collections.abc import Mapping

from pydantic import Field

from circadia.config import AuthSettings, RedisSettings
from circadia.secrets import Secret


class IngestSettings(AuthSettings, RedisSettings):
    ingest_host: str = "127.0.0.1"
    ingest_port: int = Field(default=8080, ge=1, le=65535)
    ingest_trusted_proxies: str = Field(
        default="",
        description="Comma-separated proxy addresses whose X-Forwarded-For is believed; "
        "empty: the client address is the socket peer.",
    )
    ingest_max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    ingest_max_decompressed_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    ingest_max_samples: int = Field(default=50_000, ge=1)
    ingest_history_days: int = Field(default=30, ge=1, description="Oldest accepted sample age.")
    ingest_produce_timeout_seconds: float = Field(default=10.0, gt=0)
    ingest_export_timeout_seconds: float = Field(default=10.0, gt=0,
                                                 description="How long GET /v1/users/me/export waits for the worker.")
    ingest_parse_workers: int = Field(
        default=2, ge=0, description="Parser processes for large bodies; 0: every body is parsed on the event loop.")
    ingest_parse_offload_bytes: int = Field(
        default=32 * 1024, ge=0,
        description="Bodies of at least this many bytes (as received) are parsed in the parser processes.")
    ingest_parse_queue: int = Field(
        default=16, ge=1, description="Large bodies handed to the parser processes at once; more wait.")
    ingest_parse_wait_seconds: float = Field(
        default=10.0, ge=0, description="How long a large body waits for the parsers before a 503.")
    ingest_startup_wait_seconds: float = Field(
        default=5.0, ge=0,
        description="How long start-up waits for Kafka to check the topic's limits before starting not ready.")
    ingest_idempotency_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=60)
    ingest_rate_limit_per_user: str = Field(default="120/minute")
    ingest_rate_limit_per_ip: str = Field(default="600/minute")
    ingest_cors_origins: list[str] = Field(
        default_factory=list,
        description="Browser origins allowed to call the API (JSON list); devices need none. "
                    "'*' is refused in production.",
    )

    def problems(self, secrets: Mapping[str, Secret | None]) -> list[str]:
        found = super().problems(secrets)
        if self.env == "production" and "*" in self.ingest_cors_origins:
            found.append("CIRCADIA_INGEST_CORS_ORIGINS contains '*' (any website); production needs explicit origins")
        return found
