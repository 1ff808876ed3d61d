"""Toxiproxy (network faults between the services and their servers) as a local process.

Built once from the Go module proxy into the gitignored cache. ``LocalToxiproxy.proxy()``
creates a TCP proxy and returns a handle to add latency, time-outs and cut connections.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from circadia_dev.devstack.processes import LaunchError, ManagedProcess, http_answers
from circadia_dev.paths import cache_dir

MODULE = "github.com/Shopify/toxiproxy/v2/cmd/server"
VERSION = "v2.12.0"


class ToxiproxyError(LaunchError):
    pass


def toxiproxy_binary() -> Path:
    target = cache_dir() / "toxiproxy" / VERSION / "toxiproxy-server"
    if target.exists():
        return target
    go = shutil.which("go")
    if go is None:
        raise ToxiproxyError("Go is needed once to build Toxiproxy from the module proxy")
    print(f"building Toxiproxy {VERSION} from the Go module proxy ...", file=sys.stderr)
    gobin = target.parent / "bin"
    result = subprocess.run([go, "install", f"{MODULE}@{VERSION}"], env={**os.environ, "GOBIN": str(gobin)},
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise ToxiproxyError(f"go install failed:\n{result.stdout}{result.stderr}")
    (gobin / "server").rename(target)
    shutil.rmtree(gobin, ignore_errors=True)
    return target


@dataclass(frozen=True)
class Proxy:
    api: str
    name: str
    listen: str

    def _post(self, path: str, body: dict[str, Any]) -> None:
        response = httpx.post(f"{self.api}/proxies/{self.name}{path}", json=body, timeout=5)
        if response.status_code >= 300:
            raise ToxiproxyError(f"{path or 'proxy'}: {response.status_code} {response.text}")

    def add(self, toxic: str, kind: str, stream: str = "downstream", **attributes: int) -> None:
        """Add a toxic, e.g. ``add("slow", "latency", latency=500)`` or ``add("stall", "timeout", timeout=0)``."""
        self._post("/toxics", {"name": toxic, "type": kind, "stream": stream, "toxicity": 1.0,
                               "attributes": attributes})

    def remove(self, toxic: str) -> None:
        httpx.delete(f"{self.api}/proxies/{self.name}/toxics/{toxic}", timeout=5).raise_for_status()

    def enable(self, enabled: bool) -> None:
        """Disabled: every connection through the proxy is cut and new ones are refused."""
        self._post("", {"enabled": enabled})


@dataclass(frozen=True)
class LocalToxiproxy:
    home: Path
    port: int = 8474

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def process(self) -> ManagedProcess:
        return ManagedProcess("toxiproxy", self.home / "toxiproxy.pid", self.home / "toxiproxy.log")

    def start(self, timeout: float = 20.0) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.process.start([str(toxiproxy_binary()), "-host", "127.0.0.1", "-port", str(self.port)],
                           env={"PATH": "/usr/bin:/bin"})
        self.process.wait_until(lambda: http_answers(f"{self.api}/version"), timeout, "Toxiproxy", interval=0.1)

    def proxy(self, name: str, listen_port: int, upstream: str) -> Proxy:
        listen = f"127.0.0.1:{listen_port}"
        response = httpx.post(f"{self.api}/proxies", json={"name": name, "listen": listen, "upstream": upstream,
                                                           "enabled": True}, timeout=5)
        if response.status_code >= 300:
            raise ToxiproxyError(f"creating proxy {name}: {response.status_code} {response.text}")
        return Proxy(self.api, name, listen)

    def stop(self) -> bool:
        return self.process.stop(timeout=10.0)
