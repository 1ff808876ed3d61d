"""docker-compose.yml cannot run here (no Docker engine); keep it parsed and consistent."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from circadia_dev.devstack.stack import SERVICES, LocalStack, Ports
from circadia_dev.paths import PROJECT_ROOT

CIRCADIA = {spec.name: spec for spec in SERVICES}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())


def test_compose_names_every_part_of_the_stack(compose: dict) -> None:
    assert set(compose["services"]) >= {"kafka", "redis", "jaeger", "prometheus", "grafana",
                                        *CIRCADIA}


def test_services_run_their_module_with_the_launchers_variables(compose: dict, tmp_path: Path) -> None:
    launcher = set(LocalStack(tmp_path).environment())
    for name, spec in CIRCADIA.items():
        service = compose["services"][name]
        assert service["command"] == ["python", "-m", spec.module]
        variables = set(service["environment"])
        assert variables >= launcher, f"{name} lacks {launcher - variables}"
        assert {v for v in variables - launcher if not v.startswith("OTEL_")} == set()


def test_published_ports_match_the_local_launcher(compose: dict) -> None:
    ports = Ports()
    expected = {"ingest-gateway": ports.ingest, "fanout-gateway": ports.fanout,
                "prediction-worker": ports.worker_metrics}
    environment = compose["services"]["ingest-gateway"]["environment"]
    for name, port in expected.items():
        published = f"{port}-{port + 9}" if name == "fanout-gateway" else str(port)  # replicas: one each
        assert compose["services"][name]["ports"] == [f"127.0.0.1:{published}:{port}"]
    assert environment["CIRCADIA_INGEST_PORT"] == str(ports.ingest)
    assert environment["CIRCADIA_FANOUT_PORT"] == str(ports.fanout)
    assert environment["CIRCADIA_WORKER_METRICS_PORT"] == str(ports.worker_metrics)
    assert environment["KAFKA_BOOTSTRAP_SERVERS"] == f"kafka:{ports.kafka}"


def test_every_published_port_binds_loopback_only(compose: dict) -> None:
    for name, service in compose["services"].items():
        for mapping in service.get("ports", []):
            assert mapping.startswith("127.0.0.1:"), f"{name} publishes {mapping} on all interfaces"


def test_files_the_compose_file_refers_to_exist(compose: dict) -> None:
    build = compose["services"]["ingest-gateway"]["build"]
    assert (PROJECT_ROOT / build["context"] / build["dockerfile"]).is_file()
    scrape = yaml.safe_load((PROJECT_ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = {t for job in scrape["scrape_configs"] for c in job.get("static_configs", []) for t in c["targets"]}
    targets |= {f"{name}:{c['port']}" for job in scrape["scrape_configs"] for c in job.get("dns_sd_configs", [])
                for name in c["names"]}
    ports = Ports()
    assert targets == {f"ingest-gateway:{ports.ingest}", f"fanout-gateway:{ports.fanout}",
                       f"prediction-worker:{ports.worker_metrics}"}
