from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from circadia.config import ServiceSettings


class WorkerSettings(ServiceSettings):
    worker_app_id: str = "circadia-prediction-worker"
    worker_metrics_host: str = "127.0.0.1"
    worker_metrics_port: int = Field(default=9100, ge=1, le=65535)
    worker_data_dir: Path = Path("/var/lib/circadia/worker")
    worker_debounce_seconds: float = Field(
        default=0.0, ge=0,
        description="At most one result per user per this many seconds; uploads in between are "
        "reflected together. 0 publishes after every upload.",
    )
    worker_instance_id: str | None = Field(
        default=None,
        description="Static group membership (Kafka's group.instance.id): a worker restarted with the same id "
                    "takes its partitions back without waiting out the session timeout. Unique per worker, "
                    "stable across its restarts (a StatefulSet pod's name); unset: dynamic membership.")
    worker_session_timeout_seconds: float = Field(
        default=30.0, ge=6,
        description="How long the group waits for a silent worker before reassigning its partitions.",
    )
    worker_week_metrics_interval_seconds: float = Field(
        default=600.0, ge=0,
        description="The blocks over the whole week (circadian, cosinor, scored sleep, sleep nights, PAT) are "
                    "recomputed at most once per user per this many seconds, or when the window gains a day of "
                    "data; results say in as_of when each block was computed. 0 recomputes them for every result.")
    worker_week_metrics_cache_users: int = Field(
        default=20_000, ge=1,
        description="Users whose week blocks are kept in memory (least recently used leave first; a user "
                    "not kept costs one recomputation).")
    worker_nonwear_method: Literal["choi-2011", "troiano-2008"] = Field(
        default="choi-2011",
        description="How non-wear minutes of activity counts are found: Choi et al. 2011 (90 zero minutes, "
                    "2-minute allowance with 30 zero minutes both sides) or Troiano et al. 2008 (NHANES, 60 "
                    "minutes). Non-wear minutes are missing data for every metric.")
    worker_publish_attempts: int = Field(default=5, ge=1)
    worker_max_pending: int = Field(
        default=1000, ge=1,
        description="Upload ids a user's next result lists at most; while publishing fails, older ones are "
                    "dropped from the list (their samples stay in the window and in the result).")
    worker_retry_backoff_seconds: float = Field(default=0.2, gt=0)
    worker_pat_weights_path: Path | None = Field(
        default=None, description="PAT encoder .h5; without it results carry no PAT block."
    )
    worker_pat_model_id: str | None = Field(default=None, description="PAT-S, PAT-M or PAT-L (inferred if unset).")
    worker_pat_normalisation: Literal["per-sequence-zscore", "none"] = "per-sequence-zscore"
    worker_pat_min_coverage: float = Field(default=0.8, ge=0, le=1)
    worker_pat_timeout_seconds: float = Field(default=5.0, gt=0)
    worker_pat_breaker_threshold: int = Field(default=5, ge=1)
    worker_pat_breaker_reset_seconds: float = Field(default=30.0, gt=0)
    worker_pat_head_path: Path | None = Field(
        default=None, description="A trained head (.npz with a JSON metadata sidecar); no clinical score without one."
    )
