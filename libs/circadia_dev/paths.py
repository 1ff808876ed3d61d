"""Where the local stack keeps its files in a source checkout."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def local_dir() -> Path:
    """Runtime state of the local stack (Kafka data, dev keys, logs, pid files); gitignored."""
    return Path(os.environ.get("CIRCADIA_LOCAL_DIR", PROJECT_ROOT / ".local"))


def cache_dir() -> Path:
    """Downloaded artifacts such as the Kafka jars, and tools built once; gitignored."""
    return Path(os.environ.get("CIRCADIA_CACHE_DIR", PROJECT_ROOT / ".cache"))
