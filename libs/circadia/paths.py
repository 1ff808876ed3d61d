"""Where the library's data files live.

In a source checkout (editable install) ``schemas/`` sits beside ``libs/``; a deployed image
points ``CIRCADIA_SCHEMAS_DIR`` at its copy of ``schemas/``.
"""

from __future__ import annotations

import os
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parents[2]


def schemas_dir() -> Path:
    return Path(os.environ.get("CIRCADIA_SCHEMAS_DIR", _CHECKOUT / "schemas"))
