"""Jaeger v2 (OTLP in, traces in memory, query API and UI out) as a local process.

The binary is built once from the Go module proxy (``github.com/jaegertracing/jaeger``
at the tag below carries the v2 binary) into the gitignored cache; the first build takes
minutes on two cores, later ones reuse Go's own module and build caches.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from circadia_dev.devstack.processes import LaunchError, ManagedProcess, http_answers
from circadia_dev.paths import PROJECT_ROOT, cache_dir

MODULE = "github.com/jaegertracing/jaeger"
VERSION = "v1.76.0"
CONFIG = PROJECT_ROOT / "deploy" / "local" / "jaeger" / "config.yaml"


class JaegerLaunchError(LaunchError):
    pass


def jaeger_binary() -> Path:
    target = cache_dir() / "jaeger" / VERSION / "jaeger"
    if target.exists():
        return target
    go = shutil.which("go")
    if go is None:
        raise JaegerLaunchError("Go is needed once to build Jaeger from the module proxy; install it")
    print(f"building Jaeger {VERSION} from the Go module proxy into {target.parent} "
          "(first time only; several minutes) ...", file=sys.stderr)
    download = subprocess.run([go, "mod", "download", "-json", f"{MODULE}@{VERSION}"],
                              capture_output=True, text=True)
    if download.returncode != 0:
        raise JaegerLaunchError(f"go mod download failed:\n{download.stdout}{download.stderr}")
    source = Path(json.loads(download.stdout)["Dir"])
    # the module declares replace directives, so it must be built as the main module
    work = target.parent / "src"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(source, work)
    for path in work.rglob("*"):
        path.chmod(path.stat().st_mode | 0o200)
    partial = target.with_name("jaeger.partial")
    build = subprocess.run([go, "build", "-trimpath", "-ldflags=-s -w", "-o", str(partial), "./cmd/jaeger"],
                           cwd=work, capture_output=True, text=True)
    shutil.rmtree(work, ignore_errors=True)
    if build.returncode != 0:
        raise JaegerLaunchError(f"go build failed:\n{build.stdout}{build.stderr}")
    partial.rename(target)
    return target


@dataclass(frozen=True)
class LocalJaeger:
    home: Path
    otlp_grpc_port: int = 4317
    otlp_http_port: int = 4318
    query_port: int = 16686
    query_grpc_port: int = 16685
    health_port: int = 13133

    @property
    def otlp_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.otlp_http_port}"

    @property
    def query_url(self) -> str:
        return f"http://127.0.0.1:{self.query_port}"

    @property
    def process(self) -> ManagedProcess:
        return ManagedProcess("jaeger", self.home / "jaeger.pid", self.home / "jaeger.log")

    def start(self, timeout: float = 30.0) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        if self.process.pid() is None:
            env = {**os.environ,
                   "JAEGER_OTLP_GRPC_PORT": str(self.otlp_grpc_port), "JAEGER_OTLP_HTTP_PORT": str(self.otlp_http_port),
                   "JAEGER_QUERY_PORT": str(self.query_port), "JAEGER_QUERY_GRPC_PORT": str(self.query_grpc_port),
                   "JAEGER_HEALTH_PORT": str(self.health_port)}
            self.process.start([str(jaeger_binary()), f"--config=file:{CONFIG}"], env)
        self.process.wait_until(lambda: http_answers(f"http://127.0.0.1:{self.health_port}/status"), timeout,
                                "Jaeger")

    def stop(self) -> bool:
        return self.process.stop(timeout=15.0)
