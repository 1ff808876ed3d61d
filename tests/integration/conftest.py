"""Fixtures of the integration suites: services in-process on real sockets, real servers behind."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import httpx
import pytest

from circadia.config import resolve
from circadia_dev.devkeys import DevIssuer
from circadia_dev.devstack.openbao import LocalOpenBao
from ingest_gateway.app import Gateway, create_app
from ingest_gateway.settings import IngestSettings
from tests.conftest import free_port
from tests.servers import serving

GENEROUS = "10000/minute"

Launcher = Callable[..., AbstractContextManager[httpx.Client]]


@pytest.fixture(scope="module")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalOpenBao]:
    """A real OpenBao dev server (KV v2 and transit) on a free port, for the module."""
    server = LocalOpenBao(tmp_path_factory.mktemp("openbao"), port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def launch(kafka_bootstrap: str, redis_url: str, dev_issuer: DevIssuer,
           tmp_path_factory: pytest.TempPathFactory) -> Launcher:
    secrets_dir = tmp_path_factory.mktemp("no-secrets")

    @contextmanager
    def launch(*, ready: bool = True, **overrides: object) -> Iterator[httpx.Client]:
        options: dict[str, object] = {
            "firebase_project_id": dev_issuer.project_id, "firebase_certs_url": dev_issuer.certs_url,
            "auth_dev_issuer": True, "env": "development", "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "redis_url": redis_url, "ingest_produce_timeout_seconds": 3.0,
            "kafka_security_protocol": "PLAINTEXT", "secrets_dir": secrets_dir,
            "ingest_rate_limit_per_user": GENEROUS, "ingest_rate_limit_per_ip": GENEROUS,
        }
        options.update(overrides)
        gateway = Gateway.from_config(resolve("ingest-gateway", IngestSettings(**options)))
        with serving(create_app(gateway)) as url, httpx.Client(base_url=url, timeout=30) as client:
            if ready:
                deadline = time.monotonic() + 30
                while client.get("/readyz").status_code != 200:
                    assert time.monotonic() < deadline, "gateway never became ready"
                    time.sleep(0.2)
            yield client

    return launch
