"""Kafka with SASL/SCRAM: the services connect with credentials from the secret source,
fail clearly with wrong ones, and pick up a rotated password without a restart."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from circadia.devkeys import DevIssuer
from circadia.devstack.kafka import LocalKafka
from circadia.devstack.stack import LocalStack, Ports
from circadia.kafka import ensure_topics
from tests.conftest import free_port
from tests.integration.conftest import Launcher

USER = "circadia-services"


@pytest.fixture(scope="module")
def scram_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalKafka, str]]:
    password = secrets.token_urlsafe(18)  # generated for this run, never stored in the tree
    kafka = LocalKafka(tmp_path_factory.mktemp("scram-kafka"), port=free_port(), controller_port=free_port(),
                       sasl_port=free_port(), scram_users=((USER, password),))
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


async def test_the_whole_loop_runs_over_sasl_with_file_secrets(scram_kafka: tuple[LocalKafka, str], redis_url: str,
                                                               tmp_path: Path) -> None:
    kafka, password = scram_kafka
    ports = Ports(kafka=0, kafka_controller=0, redis=0, ingest=free_port(), fanout=free_port(),
                  worker_metrics=free_port())
    stack = LocalStack(tmp_path / "stack", ports, external_kafka=kafka.sasl_bootstrap_servers,
                       admin_kafka=kafka.bootstrap_servers, external_redis=redis_url, observability=False,
                       overrides=(("CIRCADIA_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT"),
                                  ("CIRCADIA_KAFKA_SASL_USERNAME", USER),
                                  ("CIRCADIA_WORKER_APP_ID", f"circadia-sasl-{uuid.uuid4().hex[:6]}")))
    (stack.root / "secrets").mkdir(parents=True)
    (stack.root / "secrets" / "kafka_sasl_password").write_text(password)
    try:
        await asyncio.to_thread(stack.up, lambda line: None)
        user = f"sasl-{uuid.uuid4().hex[:6]}"
        async with connect(f"ws://127.0.0.1:{ports.fanout}/v1/stream") as ws:
            await ws.send(json.dumps({"type": "auth", "token": stack.issuer.mint(user)}))
            assert json.loads(await ws.recv())["type"] == "ready"
            import httpx

            async with httpx.AsyncClient() as http:
                response = await http.post(f"http://127.0.0.1:{ports.ingest}/v1/uploads", json=upload(),
                                           headers={"Authorization": f"Bearer {stack.issuer.mint(user)}"})
            assert response.status_code == 202
            message = json.loads(await asyncio.wait_for(ws.recv(), 60))
            assert message["type"] == "prediction" and message["prediction"]["user_id"] == user
    finally:
        await asyncio.to_thread(stack.down)
