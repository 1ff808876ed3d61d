from __future__ import annotations

from pydantic import Field

from circadia.config import AuthSettings


class IngestSettings(AuthSettings):
    ingest_host: str = "127.0.0.1"
    ingest_port: int = Field(default=8080, ge=1, le=65535)
    ingest_max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    ingest_max_samples: int = Field(default=50_000, ge=1)
    ingest_produce_timeout_seconds: float = Field(default=10.0, gt=0)
