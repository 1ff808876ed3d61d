"""The results page's files as the fan-out serves them: the page's own policy, only known files."""

from __future__ import annotations

from http import HTTPStatus
from pathlib import Path

from fanout_gateway.page import FILES, POLICY, ResultsPage


def built(folder: Path) -> Path:
    for name in set(FILES.values()):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(f"/* {name} */")
    return folder


def test_every_file_is_served_with_its_type_and_a_policy_without_inline_code(tmp_path: Path) -> None:
    page = ResultsPage(built(tmp_path))
    status, body, kind, headers = page.answer("/app/")
    assert (status, body, kind) == (HTTPStatus.OK, b"/* index.html */", "text/html; charset=utf-8")
    assert page.answer("/app/app.js")[2] == "text/javascript; charset=utf-8"
    assert page.answer("/app/vendor/uPlot.min.css")[2] == "text/css; charset=utf-8"
    assert headers["Content-Security-Policy"] == POLICY and "unsafe-inline" not in POLICY
    assert "script-src 'self'" in POLICY and "connect-src 'self'" in POLICY


def test_anything_else_is_404_and_an_unbuilt_page_says_how_to_build_it(tmp_path: Path) -> None:
    page = ResultsPage(built(tmp_path))
    for path in ("/app/../server.py", "/app/vendor/", "/app/package.json", "/app/node_modules/uplot/package.json"):
        assert page.answer(path)[0] == HTTPStatus.NOT_FOUND, path
    (tmp_path / "vendor" / "uPlot.iife.min.js").unlink()
    unbuilt = ResultsPage(tmp_path)
    status, body, _, headers = unbuilt.answer("/app/")
    assert status == HTTPStatus.SERVICE_UNAVAILABLE and b"make web" in body and "Content-Security-Policy" in headers
