"""Debian's Chromium for the results page's browser tests (Playwright drives it; no browser download)."""

from __future__ import annotations

from circadia_dev.devstack.processes import system_command

# what a headless Chromium needs on a machine without a display, as root, behind a closed network
FLAGS = ("--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage")


def chromium_binary() -> str:
    """The path of Chromium, installed through the project's installer script when missing."""
    return system_command("chromium")
