"""Kafka with SASL/SCRAM: the services connect with credentials from the secret source,
fail clearly with wrong ones, and pick up a rotated password without a restart."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from circadia.kafka import ensure_topics
from circadia_dev.devkeys import DevIssuer
from circadia_dev.devstack.kafka import LocalKafka
from circadia_dev.devstack.stack import LocalStack, Ports
from tests.conftest import free_port, free_ports
from tests.integration.conftest import Launcher

USER = "circadia-services"


@pytest.fixture(scope="module")
def scram_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalKafka, str]]:
    password = secrets.token_urlsafe(18)  # generated for this run, never stored in the tree
    port, controller, sasl_port = free_ports(3)
    kafka = LocalKafka(tmp_path_factory.mktemp("scram-kafka"), port=port, controller_port=controller,
                       sasl_port=sasl_port, scram_users=((USER, password),))
    kafka.start()
    try:
        asyncio.run(ensure_topics(kafka.bootstrap_servers))
        yield kafka, password
    finally:
        kafka.stop()


def sasl(kafka: LocalKafka, secrets_dir: Path, password: str) -> dict[str, object]:
    secrets_dir.mkdir(exist_ok=True)
    (secrets_dir / "kafka_sasl_password").write_text(password)
    return {"KAFKA_BOOTSTRAP_SERVERS": kafka.sasl_bootstrap_servers, "kafka_security_protocol": "SASL_PLAINTEXT",
            "kafka_sasl_username": USER, "secrets_dir": secrets_dir}


def upload() -> dict:
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    return {"upload_id": str(uuid.uuid4()), "device": {"id": "d", "model": "m", "os": "o"},
            "samples": [{"type": "step_count", "start": start.isoformat(),
                         "end": (start + timedelta(minutes=1)).isoformat(), "value": 5, "unit": "count"}]}


def test_the_ingest_gateway_authenticates_and_a_wrong_password_fails_clearly(
    scram_kafka: tuple[LocalKafka, str], launch: Launcher, dev_issuer: DevIssuer, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    kafka, password = scram_kafka
    headers = {"Authorization": f"Bearer {dev_issuer.mint('sasl-user')}"}
    with launch(**sasl(kafka, tmp_path / "good", password)) as client:
        assert client.post("/v1/uploads", json=upload(), headers=headers).status_code == 202
    with (caplog.at_level(logging.WARNING),
          launch(ready=False, **sasl(kafka, tmp_path / "bad", "wrong-password")) as client):
        time.sleep(2)
        readiness = client.get("/readyz")
        assert readiness.status_code == 503 and readiness.json()["checks"]["kafka"] is False
        assert client.post("/v1/uploads", json=upload(), headers=headers).status_code == 503
    assert "SaslAuthenticationFailed" in caplog.text or "Authentication failed" in caplog.text


def test_a_rotated_kafka_password_is_used_without_a_restart(scram_kafka: tuple[LocalKafka, str], launch: Launcher,
                                                           dev_issuer: DevIssuer, tmp_path: Path) -> None:
    kafka, password = scram_kafka
    headers = {"Authorization": f"Bearer {dev_issuer.mint('sasl-rotating')}"}
    options = sasl(kafka, tmp_path / "secrets", password)
    with launch(secret_refresh_seconds=0.3, **options) as client:
        assert client.post("/v1/uploads", json=upload(), headers=headers).status_code == 202
        rotated = secrets.token_urlsafe(18)
        kafka.set_scram_password(USER, rotated)  # the old password no longer authenticates
        (tmp_path / "secrets" / "kafka_sasl_password").write_text(rotated)
        deadline = time.monotonic() + 20
        while 'circadia_secret_rotations_total{name="kafka_sasl_password"} 1.0' not in client.get("/metrics").text:
            assert time.monotonic() < deadline, "the rotated password was never applied"
            time.sleep(0.2)
        deadline = time.monotonic() + 20
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the gateway did not reconnect with the new password"
            time.sleep(0.2)
        assert client.post("/v1/uploads", json=upload(), headers=headers).status_code == 202
    kafka.set_scram_password(USER, password)  # back, for the other tests of this module


async def test_the_whole_loop_runs_over_sasl_and_survives_a_rotation(scram_kafka: tuple[LocalKafka, str],
                                                                      redis_url: str, tmp_path: Path) -> None:
    """All three services authenticate with the file secret; after the password is rotated (and
    the old one refused by the broker) they pick up the new one without a restart. The broker is
    then restarted, so every client has to authenticate again: a service still holding the old
    password would fail here, even though its old connections outlived the rotation."""
    kafka, password = scram_kafka
    ports = Ports(kafka=0, kafka_controller=0, redis=0, openbao=free_port(), openbao_cluster=free_port(),
                  ingest=free_port(), fanout=free_port(), worker_metrics=free_port())
    stack = LocalStack(tmp_path / "stack", ports, external_kafka=kafka.sasl_bootstrap_servers,
                       admin_kafka=kafka.bootstrap_servers, external_redis=redis_url, observability=False,
                       overrides=(("CIRCADIA_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT"),
                                  ("CIRCADIA_KAFKA_SASL_USERNAME", USER),
                                  ("CIRCADIA_SECRET_REFRESH_SECONDS", "0.5"),
                                  ("CIRCADIA_WORKER_APP_ID", f"circadia-sasl-{uuid.uuid4().hex[:6]}")))
    secret_file = stack.root / "secrets" / "kafka_sasl_password"
    secret_file.parent.mkdir(parents=True)
    secret_file.write_text(password)
    user = f"sasl-{uuid.uuid4().hex[:6]}"
    metrics = {"ingest-gateway": f"http://127.0.0.1:{ports.ingest}/metrics",
               "fanout-gateway": f"http://127.0.0.1:{ports.fanout}/metrics",
               "prediction-worker": f"http://127.0.0.1:{ports.worker_metrics}/metrics"}
    try:
        await asyncio.to_thread(stack.up, lambda line: None)
        async with httpx.AsyncClient() as http:
            await round_trip(stack, ports, http, user)

            rotated = secrets.token_urlsafe(18)
            await asyncio.to_thread(kafka.set_scram_password, USER, rotated)
            secret_file.write_text(rotated)
            rotated_line = 'circadia_secret_rotations_total{name="kafka_sasl_password"} 1.0'
            deadline = time.monotonic() + 60
            pending = dict(metrics)
            while pending:
                assert time.monotonic() < deadline, f"never applied the rotated password: {sorted(pending)}"
                for service, url in list(pending.items()):
                    with contextlib.suppress(httpx.HTTPError):
                        if rotated_line in (await http.get(url)).text:
                            del pending[service]
                await asyncio.sleep(0.3)

            await asyncio.to_thread(kafka.stop)  # every connection of every client is gone
            await asyncio.to_thread(kafka.start)
            await round_trip(stack, ports, http, user, timeout=120)
    finally:
        await asyncio.to_thread(stack.down)
        await asyncio.to_thread(kafka.set_scram_password, USER, password)  # for the other tests of this module


async def round_trip(stack: LocalStack, ports: Ports, http: httpx.AsyncClient, user: str,
                     timeout: float = 60) -> None:
    """One upload from the device to the user's socket; retried while the services reconnect."""
    deadline = time.monotonic() + timeout
    async with connect(f"ws://127.0.0.1:{ports.fanout}/v1/stream") as ws:
        await ws.send(json.dumps({"type": "auth", "token": stack.issuer.mint(user)}))
        while (message := json.loads(await asyncio.wait_for(ws.recv(), timeout)))["type"] != "ready":
            pass  # the latest prediction or a reset may come first
        body = upload()
        while (response := await http.post(f"http://127.0.0.1:{ports.ingest}/v1/uploads", json=body,
                                           headers={"Authorization": f"Bearer {stack.issuer.mint(user)}"},
                                           timeout=30)).status_code == 503:
            assert time.monotonic() < deadline, f"the ingest gateway never recovered: {response.text}"
            await asyncio.sleep(0.5)
        assert response.status_code == 202, response.text
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), max(1.0, deadline - time.monotonic())))
            if message["type"] == "prediction" and body["upload_id"] in message["prediction"]["source_upload_ids"]:
                assert message["prediction"]["user_id"] == user
                return


def test_the_operator_commands_connect_as_the_services_do(scram_kafka: tuple[LocalKafka, str],
                                                          tmp_path: Path) -> None:
    """circadia-ops and the worker's rewind read the services' Kafka settings and secret, so they
    reach a listener that requires SCRAM, and a wrong password fails rather than passing silently."""
    kafka, password = scram_kafka
    secret = tmp_path / "kafka_sasl_password"
    secret.write_text(password)
    env = {"PATH": os.environ["PATH"], "KAFKA_BOOTSTRAP_SERVERS": kafka.sasl_bootstrap_servers,
           "CIRCADIA_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "CIRCADIA_KAFKA_SASL_USERNAME": USER,
           "CIRCADIA_SECRETS_DIR": str(tmp_path), "CIRCADIA_ENV": "development"}

    def run(*command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", *command], env=env, capture_output=True, text=True, timeout=120)

    listed = run("circadia.ops", "dlq", "list")
    assert listed.returncode == 0 and "dead letter(s)" in listed.stdout, listed.stdout + listed.stderr
    group = f"rewind-sasl-{uuid.uuid4().hex[:6]}"
    rewound = run("prediction_worker", "rewind", "--partition", "0", "--offset", "0", "--group", group)
    assert rewound.returncode == 0 and f"{group}: health.samples.v1[0] committed offset None -> 0" in rewound.stdout, \
        rewound.stdout + rewound.stderr
    secret.write_text(f"not-{password}")
    refused = run("circadia.ops", "dlq", "list")
    assert refused.returncode != 0 and "dead letter(s)" not in refused.stdout
