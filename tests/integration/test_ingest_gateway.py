"""The ingest gateway against the real broker: what a 202 means, and every refusal."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
import uuid
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from starlette.testclient import TestClient

from circadia.auth import CertificateSource, FirebaseTokenVerifier
from circadia.avro import HEADER_FINGERPRINT, SchemaSet, header
from circadia.devkeys import DevIssuer
from circadia.topics import HEALTH_SAMPLES
from ingest_gateway.app import create_app
from ingest_gateway.publisher import UploadPublisher
from ingest_gateway.settings import IngestSettings
from tests.conftest import free_port

SCHEMAS = SchemaSet.load()
UPLOAD = SCHEMAS["io.circadia.health.HealthUpload"]


def gateway(issuer: DevIssuer, bootstrap: str, **settings: object) -> TestClient:
    config = IngestSettings(firebase_project_id=issuer.project_id, firebase_certs_url=issuer.certs_url,
                            KAFKA_BOOTSTRAP_SERVERS=bootstrap, **settings)
    app = create_app(
        config,
        verifier=FirebaseTokenVerifier(issuer.project_id, CertificateSource(issuer.certs_url)),
        publisher=UploadPublisher(bootstrap, produce_timeout=3.0, retry_interval=0.5),
        schema=UPLOAD,
    )
    return TestClient(app)


def wait_ready(client: TestClient, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "gateway never became ready"
        time.sleep(0.2)


def upload_body(n: int = 3) -> dict:
    return {
        "upload_id": str(uuid.uuid4()),
        "device": {"id": "phone-1", "model": "Pixel 9", "os": "Android 16"},
        "samples": [{"type": "step_count", "start": f"2026-11-24T10:{m:02d}:00+01:00",
                     "end": f"2026-11-24T10:{m + 1:02d}:00+01:00", "value": 10 + m, "unit": "count"}
                    for m in range(n)],
    }


@pytest.fixture(scope="module")
def client(kafka_bootstrap: str, dev_issuer: DevIssuer) -> Iterator[TestClient]:
    with gateway(dev_issuer, kafka_bootstrap, ingest_max_body_bytes=64 * 1024,
                 ingest_max_samples=100) as client:
        wait_ready(client)
        yield client


def auth(issuer: DevIssuer, user: str = "user-ingest") -> dict[str, str]:
    return {"Authorization": f"Bearer {issuer.mint(user)}"}


async def find_upload(bootstrap: str, upload_id: str, timeout: float = 20.0):
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        partitions = [TopicPartition(HEALTH_SAMPLES, p) for p in consumer.partitions_for_topic(
            HEALTH_SAMPLES) or range(6)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                for message in messages:
                    if header(message.headers, "upload_id") == upload_id.encode():
                        return message
    finally:
        await consumer.stop()
    raise AssertionError(f"upload {upload_id} not found in {HEALTH_SAMPLES}")


def test_accepted_upload_is_in_kafka_keyed_by_the_token_user(
    client: TestClient, dev_issuer: DevIssuer, kafka_bootstrap: str
) -> None:
    body = upload_body(3)
    response = client.post("/v1/uploads", json=body, headers=auth(dev_issuer, "ada"))
    assert response.status_code == 202, response.text
    assert response.json()["upload_id"] == body["upload_id"]
    assert response.json()["accepted"] == 3
    message = asyncio.run(find_upload(kafka_bootstrap, body["upload_id"]))
    assert message.key == b"ada"
    assert header(message.headers, HEADER_FINGERPRINT) == UPLOAD.fingerprint.encode()
    traceparent = header(message.headers, "traceparent")
    assert traceparent is not None and traceparent.split(b"-")[1].decode() == response.json()["trace_id"]
    record = SCHEMAS.decode(message.value, message.headers, UPLOAD)
    assert record["user_id"] == "ada"
    assert [s["value"] for s in record["samples"]] == [10.0, 11.0, 12.0]
    assert record["samples"][0]["utc_offset_minutes"] == 60


def test_missing_or_invalid_token_is_401_with_a_bearer_challenge(
    client: TestClient, dev_issuer: DevIssuer
) -> None:
    missing = client.post("/v1/uploads", json=upload_body())
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
    expired = dev_issuer.mint("ada", ttl=-120)
    bad = client.post("/v1/uploads", json=upload_body(), headers={"Authorization": f"Bearer {expired}"})
    assert bad.status_code == 401
    assert bad.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert bad.json()["error"] == "invalid_token"
    assert expired not in bad.text


def test_field_errors_are_422_with_locations(client: TestClient, dev_issuer: DevIssuer) -> None:
    body = upload_body(5)
    body["samples"][3]["value"] = -4
    response = client.post("/v1/uploads", json=body, headers=auth(dev_issuer))
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["samples", 3]
    assert "non-negative" in response.json()["errors"][0]["msg"]


def test_too_many_samples_is_422(client: TestClient, dev_issuer: DevIssuer) -> None:
    response = client.post("/v1/uploads", json=upload_body(0) | {"samples": upload_body(50)["samples"] * 3},
                           headers=auth(dev_issuer))
    assert response.status_code == 422
    assert response.json()["errors"] == [{"loc": ["samples"], "msg": "at most 100 samples per upload"}]


def test_body_over_the_limit_is_413_even_without_content_length(
    client: TestClient, dev_issuer: DevIssuer
) -> None:
    big = b"[" + b" " * (70 * 1024) + b"]"  # > 64 KiB
    declared = client.post("/v1/uploads", content=big, headers={**auth(dev_issuer),
                                                                "Content-Type": "application/json"})
    assert declared.status_code == 413, declared.text[:300]

    def chunks() -> Iterator[bytes]:
        for _ in range(3):
            yield big

    streamed = client.post("/v1/uploads", content=chunks(), headers={**auth(dev_issuer),
                                                                     "Content-Type": "application/json"})
    assert streamed.status_code == 413


def test_other_content_types_are_415(client: TestClient, dev_issuer: DevIssuer) -> None:
    response = client.post("/v1/uploads", content=gzip.compress(b"{}"),
                           headers={**auth(dev_issuer), "Content-Type": "text/plain"})
    assert response.status_code == 415


def test_unreachable_broker_means_503_with_retry_after_and_not_ready(dev_issuer: DevIssuer) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    with gateway(dev_issuer, nowhere) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 503
        response = client.post("/v1/uploads", json=upload_body(), headers=auth(dev_issuer))
        assert response.status_code == 503
        assert response.headers["retry-after"].isdigit()
        assert "accepted" not in response.json()


def test_metrics_count_accepted_samples(client: TestClient, dev_issuer: DevIssuer) -> None:
    def accepted() -> float:
        for line in client.get("/metrics").text.splitlines():
            if line.startswith("circadia_ingest_samples_accepted_total "):
                return float(line.split()[1])
        return 0.0

    before = accepted()
    assert client.post("/v1/uploads", json=upload_body(4), headers=auth(dev_issuer)).status_code == 202
    assert accepted() == before + 4
