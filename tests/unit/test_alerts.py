"""The alert rules, checked and unit-tested by Prometheus's own promtool."""

from __future__ import annotations

import subprocess

from circadia_dev.devstack.prometheus import prometheus_binary
from circadia_dev.paths import PROJECT_ROOT

RULES = PROJECT_ROOT / "deploy" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([prometheus_binary("promtool"), *args], cwd=RULES, capture_output=True, text=True)


def test_rules_are_valid() -> None:
    result = promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 10 rules found" in result.stdout


def test_rules_fire_when_and_only_when_they_should() -> None:
    result = promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_unit_tests_can_fail(tmp_path) -> None:
    broken = (RULES / "alerts_test.yml").read_text().replace("summary: prediction-worker is down",
                                                             "summary: ingest-gateway is down")
    (tmp_path / "alerts_test.yml").write_text(broken)
    (tmp_path / "alerts.yml").write_text((RULES / "alerts.yml").read_text())
    result = subprocess.run([prometheus_binary("promtool"), "test", "rules", "alerts_test.yml"], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode != 0
