"""Prometheus (Debian's package) scraping the local stack, with circadia's alert rules."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from circadia_dev.devstack.processes import LaunchError, ManagedProcess, http_answers, system_command
from circadia_dev.paths import PROJECT_ROOT

RULES = PROJECT_ROOT / "deploy" / "prometheus" / "alerts.yml"


class PrometheusLaunchError(LaunchError):
    pass


def prometheus_binary(command: str = "prometheus") -> str:
    other = "promtool" if command == "prometheus" else "prometheus"  # one package holds both
    return system_command(command, other, error=PrometheusLaunchError)


@dataclass(frozen=True)
class LocalPrometheus:
    home: Path
    port: int = 9090
    scrape_interval: str = "5s"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def process(self) -> ManagedProcess:
        return ManagedProcess("prometheus", self.home / "prometheus.pid", self.home / "prometheus.log")

    def write_config(self, targets: Mapping[str, Sequence[str]]) -> Path:
        config = {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": list(hosts)}]}
                               for job, hosts in targets.items()],
        }
        path = self.home / "prometheus.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def start(self, targets: Mapping[str, Sequence[str]], timeout: float = 30.0) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        config = self.write_config(targets)
        if self.process.pid() is None:
            self.process.start([
                prometheus_binary(), f"--config.file={config}", f"--storage.tsdb.path={self.home / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=2d",
                "--web.enable-lifecycle",
            ], env={"PATH": "/usr/bin:/bin"})
        else:  # running already: pick up the targets of this stack
            httpx.post(f"{self.url}/-/reload", timeout=5)
        self.process.wait_until(lambda: http_answers(f"{self.url}/-/ready"), timeout, "Prometheus")

    def stop(self) -> bool:
        return self.process.stop(timeout=15.0)
