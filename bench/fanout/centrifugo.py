"""Centrifugo v6 as the fan-out peer: built from the Go module proxy, configured at run time.

The binary is ``go install``-ed once into ``.cache/centrifugo/bin`` (gitignored; the first
build takes minutes on 2 cores) and reused while it reports the pinned version. Each run
gets a fresh config in a temporary folder: loopback only, a HMAC token secret and an API
key generated for that run (never written anywhere else), every connected user subscribed
server-side to its personal channel ``personal:#<user>``, memory engine, no history.
Messages are published through the server HTTP API (``/api/publish``, ``/api/batch``).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt

from circadia.jsonable import jsonable
from circadia_dev.devstack.processes import ManagedProcess
from circadia_dev.paths import PROJECT_ROOT

MODULE = "github.com/centrifugal/centrifugo/v6"
VERSION = "v6.9.1"
BIN_DIR = PROJECT_ROOT / ".cache" / "centrifugo" / "bin"
NAMESPACE = "personal"
JSON = {"Content-Type": "application/json"}


class CentrifugoError(RuntimeError):
    pass


def go_binary() -> str:
    found = shutil.which("go") or next((p for p in ("/usr/local/go/bin/go",) if Path(p).exists()), None)
    if found is None:
        raise CentrifugoError("Go (go) is needed once to build Centrifugo from the module proxy")
    return found


def installed_version(binary: Path) -> str | None:
    if not binary.exists():
        return None
    # argv lists, no shell: the binary this module built and the Go toolchain
    result = subprocess.run([binary, "version"], capture_output=True, text=True, check=False)  # noqa: S603
    match = re.search(r"Centrifugo v?(\S+)", result.stdout)
    return "v" + match.group(1) if match else None


def ensure_binary(report: Callable[[str], None] = print) -> Path:
    """The cached binary, built with ``go install`` when missing or of another version."""
    binary = BIN_DIR / "centrifugo"
    if installed_version(binary) == VERSION:
        return binary
    report(f"building Centrifugo {VERSION} with go install (first time: several minutes) ...")
    BIN_DIR.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOBIN": str(BIN_DIR), "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
    started = time.monotonic()
    result = subprocess.run(  # noqa: S603
        [go_binary(), "install",
         f"-ldflags=-X {MODULE}/internal/build.Version={VERSION.lstrip('v')}",
         f"{MODULE}@{VERSION}"],
        env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0 or installed_version(binary) != VERSION:
        raise CentrifugoError(f"go install failed ({result.returncode}):\n{result.stderr[-4000:]}")
    report(f"built {binary} in {time.monotonic() - started:.0f}s")
    return binary


def go_version() -> str:
    try:
        return subprocess.run([go_binary(), "version"], capture_output=True, text=True,  # noqa: S603
                              check=False).stdout.strip()
    except CentrifugoError:
        return "go: not found"


@dataclass
class Centrifugo:
    """One Centrifugo node on loopback; ``start``/``stop`` give each run a fresh process."""

    home: Path
    port: int
    binary: Path
    gomaxprocs: int | None = None
    name: str = "centrifugo"
    protocol: str = "centrifugo"
    _secret: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    _api_key: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)
    _http: httpx.AsyncClient | None = None

    @property
    def process(self) -> ManagedProcess:
        return ManagedProcess("centrifugo", self.home / "centrifugo.pid", self.home / "centrifugo.log")

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/connection/websocket"

    @property
    def version(self) -> str:
        return installed_version(self.binary) or "unknown"

    def pid(self) -> int:
        pid = self.process.pid()
        if pid is None:
            raise CentrifugoError(f"centrifugo is not running:\n{self.process.log_tail()}")
        return pid

    def config(self) -> dict[str, Any]:
        return {
            "http_server": {"address": "127.0.0.1", "port": self.port},
            "log": {"level": "warn"},
            "client": {
                "token": {"hmac_secret_key": self._secret},
                "subscribe_to_user_personal_channel": {"enabled": True, "personal_channel_namespace": NAMESPACE},
            },
            "channel": {"namespaces": [{"name": NAMESPACE}]},
            "http_api": {"key": self._api_key},
            "health": {"enabled": True},
            "usage_stats": {"disabled": True},
        }

    def channel(self, user_id: str) -> str:
        return f"{NAMESPACE}:#{user_id}"

    def tokens(self, user_ids: Sequence[str]) -> list[str]:
        exp = int(time.time()) + 3600
        return [jwt.encode({"sub": user, "exp": exp}, self._secret, algorithm="HS256") for user in user_ids]

    async def setup(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)

    async def start(self, connections: int) -> None:
        config = self.home / "config.json"
        config.touch(mode=0o600)
        config.write_text(json.dumps(self.config(), indent=2))
        env = {key: os.environ[key] for key in ("PATH", "HOME", "TMPDIR") if key in os.environ}
        if self.gomaxprocs:
            env["GOMAXPROCS"] = str(self.gomaxprocs)
        self.process.start([str(self.binary), "--config", str(config)], env, cwd=self.home)
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient() as probe:
            while True:
                if self.process.exited_early():
                    raise CentrifugoError(f"centrifugo exited during start-up:\n{self.process.log_tail()}")
                try:
                    if (await probe.get(f"http://127.0.0.1:{self.port}/health", timeout=2)).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise CentrifugoError(f"centrifugo not ready after 30s:\n{self.process.log_tail()}")
                await asyncio.sleep(0.2)
        self._http = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.port}/api", headers={"X-API-Key": self._api_key},
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=32), timeout=30)

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        self.process.stop()

    async def teardown(self) -> None:
        await self.stop()

    def prepare(self, user_id: str, record: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The same JSON the circadia gateway pushes, as the publication's data."""
        return user_id, {"type": "prediction", "prediction": jsonable(record)}

    async def publish(self, user_id: str, record: dict[str, Any]) -> float:
        """Publish one message; returns the moment of publishing (wall clock, seconds).
        The request runs to completion here; callers run it as a task to keep the rate."""
        assert self._http is not None
        _, payload = self.prepare(user_id, record)
        content = json.dumps({"channel": self.channel(user_id), "data": payload}).encode()
        published = time.time()
        _check(await self._http.post("/publish", content=content, headers=JSON))
        return published

    async def publish_batch(self, prepared: Sequence[tuple[str, dict[str, Any]]],
                            per_request: int = 100) -> list[float]:
        """Many publications, ``per_request`` per ``/api/batch`` call (the burst phase)."""
        assert self._http is not None
        stamps: list[float] = []
        for start in range(0, len(prepared), per_request):
            chunk = prepared[start:start + per_request]
            content = json.dumps({"commands": [{"publish": {"channel": self.channel(user), "data": data}}
                                               for user, data in chunk]}).encode()
            published = time.time()
            _check(await self._http.post("/batch", content=content, headers=JSON))
            stamps.extend([published] * len(chunk))
        return stamps

    async def flush(self) -> None:
        """Nothing is buffered on this side: every publish call returned after the API's reply."""


def _check(response: httpx.Response) -> None:
    if response.status_code != 200:
        raise CentrifugoError(f"publish failed: {response.status_code} {response.text[:300]}")
    body = response.json()
    replies = body.get("replies", [body])
    errors = [r["error"] for r in replies if r.get("error")]
    if errors:
        raise CentrifugoError(f"publish refused: {errors[:3]}")


if __name__ == "__main__":  # python -m bench.fanout.centrifugo: build (or find) the binary only
    print(ensure_binary(lambda line: print(line, file=sys.stderr)))
