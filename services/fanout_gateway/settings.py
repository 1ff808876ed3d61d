from __future__ import annotations

from circadia.config import AuthSettings
from pydantic import Field


class FanoutSettings(AuthSettings):
    fanout_host: str = "127.0.0.1"
    fanout_port: int = Field(default=8081, ge=1, le=65535)
    fanout_auth_timeout_seconds: float = Field(default=5.0, gt=0)
    fanout_send_queue_size: int = Field(default=64, ge=1)
    fanout_ping_interval_seconds: float = Field(default=20.0, gt=0)
