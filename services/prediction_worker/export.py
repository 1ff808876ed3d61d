"""A user's copy of their data (GDPR Art. 20): the window the worker holds and a result computed on it.

The ingest gateway asks on ``user.export.requests.v1`` (co-partitioned with the uploads, so the worker
holding the user's window gets the request) and waits on ``user.export.replies.v1``. The reply's
content is the export document, zstd-compressed JSON, sealed with the user's key:

- ``window``: null when the worker holds nothing of the user (never uploaded, or erased); else the
  week's minutes (``start``, ``minutes``, the latest ``utc_offset_minutes``), per device its activity
  count class and its minute series (``step_count``, ``activity_count``, ``heart_rate`` as the mean
  of the minute's readings; null where the minute has no data), the device-reported sleep stages, and
  the uploads applied (id → when the worker applied it, ms);
- ``result``: a ``Prediction`` computed on that window now, as the fan-out renders results (RFC 3339
  times), or null without a window.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

from prediction_worker.results import ModelOutcome, build_prediction, week_blocks
from prediction_worker.window import HR_SUM, HR_WEIGHT, MOVEMENT, WINDOW_MINUTES, UserWindow

FORMAT = "circadia-export@1"


def _series(values: np.ndarray) -> list[float | None]:
    return [None if np.isnan(v) else float(v) for v in values.tolist()]


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def window_document(window: UserWindow) -> dict[str, Any]:
    devices: dict[str, Any] = {}
    for device, measures in window.tracks.items():
        series: dict[str, list[float | None]] = {name: _series(measures[name]) for name in MOVEMENT if name in measures}
        if HR_SUM in measures and HR_WEIGHT in measures:
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = np.where(measures[HR_WEIGHT] > 0, measures[HR_SUM] / measures[HR_WEIGHT], np.nan)
            series["heart_rate"] = _series(mean)
        devices[device] = {"activity_counts": window.count_classes.get(device, "unknown"), "minutes": series}
    return {
        "start": _iso(window.start_minute * 60_000), "minutes": WINDOW_MINUTES,
        "utc_offset_minutes": window.utc_offset_minutes, "devices": devices,
        "sleep": [{"start": _iso(iv.start_ms), "end": _iso(iv.end_ms), "stage": iv.stage,
                   "utc_offset_minutes": iv.utc_offset_minutes, "device": iv.device} for iv in window.sleep],
        "uploads_applied": dict(window.applied),
    }


def export_document(user_id: str, window: UserWindow | None, now: datetime) -> bytes:
    """The export document as UTF-8 JSON (module docstring)."""
    if window is None or not window.tracks and not window.sleep:
        return orjson.dumps({"format": FORMAT, "user_id": user_id, "exported_at": now, "window": None,
                             "result": None})
    result = build_prediction(window, user_id, [], now, ModelOutcome(), week_blocks(window, now))
    result.pop("sealed", None)
    return orjson.dumps({"format": FORMAT, "user_id": user_id, "exported_at": now,
                         "window": window_document(window), "result": result})
