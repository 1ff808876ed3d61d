"""The results page (``/app/``): static files the fan-out gateway serves beside its stream.

A user signs in with a token (kept in the page's memory, never in a URL), the page follows the
stream with the project's JavaScript client (``clients/stream``) and draws the latest result with
uPlot. The files are read once at start-up from ``web/``; ``make web`` vendors uPlot and the
client into ``web/vendor/``. Every answer carries a Content-Security-Policy that allows only this
origin's scripts, styles and stream (no inline script or style).
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from pathlib import Path

log = logging.getLogger(__name__)

WEB = Path(__file__).with_name("web")
PREFIX = "/app/"
FILES = {"": "index.html", "index.html": "index.html", "app.js": "app.js", "app.css": "app.css",
         "vendor/stream.js": "vendor/stream.js", "vendor/uPlot.iife.min.js": "vendor/uPlot.iife.min.js",
         "vendor/uPlot.min.css": "vendor/uPlot.min.css"}
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8"}
POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
          "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class ResultsPage:
    def __init__(self, folder: Path = WEB) -> None:
        self._files: dict[str, tuple[bytes, str]] = {}
        self.missing = sorted(name for name in set(FILES.values()) if not (folder / name).is_file())
        if self.missing:
            log.warning("results page incomplete (run make web): %s missing", ", ".join(self.missing))
            return
        for path, name in FILES.items():
            self._files[path] = ((folder / name).read_bytes(), TYPES[Path(name).suffix])

    def answer(self, path: str) -> tuple[HTTPStatus, bytes, str, dict[str, str]]:
        """(status, body, content type, extra headers) for a request path under ``/app/``."""
        headers = {"Content-Security-Policy": POLICY}
        if self.missing:
            return (HTTPStatus.SERVICE_UNAVAILABLE, b"the results page was not built: run make web",
                    "text/plain; charset=utf-8", headers)
        found = self._files.get(path.removeprefix(PREFIX))
        if found is None:
            return HTTPStatus.NOT_FOUND, b"not found", "text/plain; charset=utf-8", headers
        body, content_type = found
        # the page's files are small and change with a deployment: revalidate, never keep a stale one
        return HTTPStatus.OK, body, content_type, {**headers, "Cache-Control": "no-cache"}
