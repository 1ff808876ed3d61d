"""Debian's Chromium for the results page's browser tests (Playwright drives it; no browser download)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from circadia.devstack.processes import LaunchError
from circadia.devstack.redis import INSTALLER

# what a headless Chromium needs on a machine without a display, as root, behind a closed network
FLAGS = ("--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage")


def chromium_binary() -> str:
    """The path of Chromium, installed through the project's installer script when missing."""
    found = shutil.which("chromium")
    if found is None:
        result = subprocess.run(["bash", str(INSTALLER), "chromium"],  # noqa: S607  # nosec B607
                                capture_output=True, text=True)
        found = shutil.which("chromium")
        if result.returncode != 0 or found is None:
            raise LaunchError(f"cannot install chromium:\n{result.stdout}{result.stderr}")
    return str(Path(found).resolve())
