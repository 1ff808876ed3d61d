"""Where the project's data files live.

In a source checkout (editable install) they sit beside ``libs/``; a deployed image
points ``CIRCADIA_SCHEMAS_DIR`` at its copy of ``schemas/``.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def schemas_dir() -> Path:
    return Path(os.environ.get("CIRCADIA_SCHEMAS_DIR", PROJECT_ROOT / "schemas"))


def local_dir() -> Path:
    """Runtime state of the local stack (Kafka data, dev keys, logs, pid files); gitignored."""
    return Path(os.environ.get("CIRCADIA_LOCAL_DIR", PROJECT_ROOT / ".local"))


def cache_dir() -> Path:
    """Downloaded artifacts such as the Kafka jars; gitignored."""
    return Path(os.environ.get("CIRCADIA_CACHE_DIR", PROJECT_ROOT / ".cache"))
