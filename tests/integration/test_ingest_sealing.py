"""The ingest gateway seals every upload with the user's key (real Kafka, Redis and OpenBao): the
record on the topic keeps only its routing fields readable, and with the key service down nothing
is stored, the client is told to retry, and the retry is stored once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import hvac
import pytest

from circadia.avro import SchemaSet
from circadia.sealing import RecordSeal
from circadia.userkeys import UserKeys
from circadia_dev.devkeys import DevIssuer
from circadia_dev.devstack.openbao import LocalOpenBao
from tests.conftest import free_port
from tests.integration.conftest import Launcher
from tests.integration.test_ingest_gateway import auth, on_topic, upload_body

SCHEMAS = SchemaSet.load()
UPLOAD = SCHEMAS["io.circadia.health.HealthUpload"]


@pytest.fixture(scope="module")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalOpenBao]:
    """A key service that keeps its keys across a restart, as the local stack's does."""
    server = LocalOpenBao(tmp_path_factory.mktemp("bao"), port=free_port(), persistent=True,
                          cluster_port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sealing_gateway(launch: Launcher, bao: LocalOpenBao, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CIRCADIA_USER_KEYS_TOKEN", bao.service_token("ingest-gateway"))
    with launch(user_keys_addr=bao.url, user_keys_timeout_seconds=1.0) as client:
        yield client


def worker_keys(bao: LocalOpenBao) -> UserKeys:
    return UserKeys(hvac.Client(url=bao.url, token=bao.service_token("prediction-worker")))


def test_the_stored_record_is_sealed_and_opens_for_the_worker(sealing_gateway, dev_issuer: DevIssuer,
                                                                   kafka_bootstrap: str, bao: LocalOpenBao) -> None:
    device = f"band-{uuid.uuid4().hex[:10]}"
    body = upload_body(3, device={"id": device, "model": "Band 2", "os": "BandOS 4"})
    response = sealing_gateway.post("/v1/uploads", json=body, headers=auth(dev_issuer, "ada"))
    assert response.status_code == 202, response.text
    (message,) = on_topic(kafka_bootstrap, body["upload_id"])
    assert device.encode() not in message.value and b"Band 2" not in message.value
    outer = SCHEMAS.decode(message.value, message.headers, UPLOAD, logical=False)
    assert (outer["upload_id"], outer["user_id"], outer["samples"]) == (body["upload_id"], "ada", [])
    seal = RecordSeal(SCHEMAS, UPLOAD, "health.samples.v1", ("upload_id", "user_id", "received_at"))
    content = asyncio.run(seal.open(worker_keys(bao), outer, logical=False))
    assert content["device"]["id"] == device and [s["value"] for s in content["samples"]] == [10.0, 11.0, 12.0]


def test_key_service_down_is_503_nothing_stored_and_the_retry_is_stored_once(
        sealing_gateway, dev_issuer: DevIssuer, kafka_bootstrap: str, bao: LocalOpenBao) -> None:
    user = f"cold-{uuid.uuid4().hex[:6]}"  # no data key cached for this user
    body = upload_body(2)
    bao.stop()
    try:
        refused = sealing_gateway.post("/v1/uploads", json=body, headers=auth(dev_issuer, user))
    finally:
        bao.start()
    assert refused.status_code == 503, refused.text
    assert refused.headers["Retry-After"] == "5"
    assert refused.json()["error"] == "keys_unavailable" and "not stored" in refused.json()["errors"][0]["msg"]
    assert on_topic(kafka_bootstrap, body["upload_id"]) == []
    retried = sealing_gateway.post("/v1/uploads", json=body, headers=auth(dev_issuer, user))
    assert retried.status_code == 202, retried.text  # the refused attempt left no claim behind
    assert len(on_topic(kafka_bootstrap, body["upload_id"])) == 1


def test_production_refuses_to_start_without_a_key_service(tmp_path: Path) -> None:
    from circadia.config import ServiceSettings

    settings = ServiceSettings(env="production", kafka_security_protocol="SSL", secrets_dir=tmp_path)
    assert any("CIRCADIA_USER_KEYS_ADDR is unset" in p for p in settings.problems({}))
    plain = ServiceSettings(env="production", kafka_security_protocol="SSL", secrets_dir=tmp_path,
                            user_keys_addr="http://bao:8200")
    assert any("not https://" in p for p in plain.problems({}))
    assert any("user_keys_token secret is missing" in p for p in plain.problems({}))


def test_erasure_without_a_key_service_is_501_and_with_it_down_503(
        launch: Launcher, sealing_gateway, dev_issuer: DevIssuer, bao: LocalOpenBao) -> None:
    with launch() as plaintext:  # a development gateway without a key service
        refused = plaintext.delete("/v1/users/me", headers=auth(dev_issuer, "ada"))
    assert refused.status_code == 501 and refused.json()["error"] == "erasure_unavailable"
    assert "cannot be erased" in refused.json()["errors"][0]["msg"]
    bao.stop()
    try:
        down = sealing_gateway.delete("/v1/users/me", headers=auth(dev_issuer, "ada"))
    finally:
        bao.start()
    assert down.status_code == 503 and down.headers["Retry-After"] == "5"
    assert down.json()["error"] == "keys_unavailable" and "nothing was erased" in down.json()["errors"][0]["msg"]
    assert sealing_gateway.delete("/v1/users/me", headers=auth(dev_issuer, "ada")).status_code == 202
