from __future__ import annotations

from pathlib import Path

from circadia.config import ServiceSettings
from pydantic import Field


class WorkerSettings(ServiceSettings):
    worker_app_id: str = "circadia-prediction-worker"
    worker_metrics_host: str = "127.0.0.1"
    worker_metrics_port: int = Field(default=9100, ge=1, le=65535)
    worker_data_dir: Path = Path("/var/lib/circadia/worker")
