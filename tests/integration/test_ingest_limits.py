"""The gateway's documented limits against what the real broker accepts, and one upload's
failure never changing another's outcome (the idempotent producer is replaced after a failed
batch)."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.partitioner import DefaultPartitioner

from circadia.avro import SchemaSet
from circadia.kafka import topic_max_message_bytes
from circadia.topics import HEALTH_SAMPLES, TOPICS
from circadia_dev.devkeys import DevIssuer
from tests.conftest import free_port
from tests.integration.conftest import Launcher
from tests.integration.test_ingest_gateway import auth, on_topic, upload_body

UPLOAD = SchemaSet.load()["io.circadia.health.HealthUpload"]
SAMPLES_SPEC = next(spec for spec in TOPICS if spec.name == HEALTH_SAMPLES)


def steps_and_heart_rate(minutes: int, *, seed: int = 7) -> list[dict]:
    """``minutes`` one-minute steps plus heart rate ending a minute ago (2 × minutes samples),
    values drawn at random so that compression cannot make them small."""
    rng = random.Random(seed)  # noqa: S311 -- test data, not a secret
    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
    samples = []
    for i in range(minutes):
        start = end - timedelta(minutes=minutes - i)
        stop = (start + timedelta(minutes=1)).isoformat()
        samples.append({"type": "step_count", "start": start.isoformat(), "end": stop,
                        "value": rng.randint(0, 150), "unit": "count"})
        samples.append({"type": "heart_rate", "start": start.isoformat(), "end": stop,
                        "value": rng.randint(45, 170), "unit": "count/min"})
    return samples


def big_upload(minutes: int) -> dict:
    return {"upload_id": str(uuid.uuid4()), "device": {"id": "watch-big", "model": "Watch7,1", "os": "watchOS 11"},
            "samples": steps_and_heart_rate(minutes)}


async def _set_topic_limit(bootstrap: str, limit: int) -> None:
    """AlterConfigs replaces the topic's whole dynamic configuration: send all of the declared one."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        configs = {**SAMPLES_SPEC.config, "max.message.bytes": str(limit)}
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, HEALTH_SAMPLES, configs)])
    finally:
        await admin.close()
    for _ in range(50):  # the broker applies it asynchronously
        if await topic_max_message_bytes(bootstrap, HEALTH_SAMPLES) == limit:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{HEALTH_SAMPLES} did not take max.message.bytes={limit}")


@contextmanager
def topic_limit(bootstrap: str, limit: int) -> Iterator[None]:
    """The topic's max.message.bytes lowered while the gateway runs, then put back as declared."""
    asyncio.run(_set_topic_limit(bootstrap, limit))
    try:
        yield
    finally:
        asyncio.run(_set_topic_limit(bootstrap, int(SAMPLES_SPEC.config["max.message.bytes"])))


@pytest.fixture(scope="module")
def client(launch: Launcher) -> Iterator[httpx.Client]:
    with launch() as client:  # the documented limits: 8 MiB bodies, 50,000 samples
        yield client


def test_the_topic_layout_sets_max_message_bytes(kafka_bootstrap: str) -> None:
    declared = int(SAMPLES_SPEC.config["max.message.bytes"])
    assert asyncio.run(topic_max_message_bytes(kafka_bootstrap, HEALTH_SAMPLES)) == declared


def test_an_upload_at_the_documented_maximum_is_stored(client: httpx.Client, dev_issuer: DevIssuer,
                                                        kafka_bootstrap: str) -> None:
    body = big_upload(25_000)  # 50,000 samples: 25,000 minutes of steps and heart rate, in 30 days
    assert len(body["samples"]) == 50_000
    response = client.post("/v1/uploads", json=body, headers=auth(dev_issuer, "max-user"), timeout=60)
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 50_000
    (message,) = on_topic(kafka_bootstrap, body["upload_id"])
    record = SchemaSet.load().decode(message.value, message.headers, UPLOAD)
    assert len(record["samples"]) == 50_000 and message.key == b"max-user"
    assert record["samples"][-1]["value"] == float(body["samples"][-1]["value"])


def test_one_more_sample_than_the_limit_is_422_naming_the_limit(client: httpx.Client,
                                                               dev_issuer: DevIssuer) -> None:
    body = big_upload(25_000)
    body["samples"].append(body["samples"][-1])
    response = client.post("/v1/uploads", json=body, headers=auth(dev_issuer, "max-user"), timeout=60)
    assert response.status_code == 422
    assert response.json()["errors"] == [{"loc": ["samples"], "msg": "at most 50000 samples per upload"}]


def test_after_a_record_the_broker_refuses_every_partition_is_answered_202(
    client: httpx.Client, dev_issuer: DevIssuer, kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    users = [f"user-{i:02d}" for i in range(36)]

    def small_uploads() -> dict[str, int]:
        outcomes = {}
        for user in users:
            response = client.post("/v1/uploads", json=upload_body(2), headers=auth(dev_issuer, user))
            outcomes[user] = response.status_code
        return outcomes

    # every partition already holds records of this producer, so a gap in its sequence would show
    assert set(small_uploads().values()) == {202}
    with topic_limit(kafka_bootstrap, 8 * 1024), caplog.at_level(logging.WARNING):
        # the gateway still believes the declared limit: the broker itself refuses the batch
        refused = client.post("/v1/uploads", json=big_upload(3_000), headers=auth(dev_issuer, "big-user"))
        assert refused.status_code == 413, refused.text
        assert refused.json()["error"] == "upload_too_large" and "Retry-After" not in refused.headers
        after = small_uploads()
        assert after == dict.fromkeys(users, 202)
        assert "replacing the producer" in caplog.text
        # the limit was read again: the next oversized upload is refused before producing
        again = client.post("/v1/uploads", json=big_upload(3_000), headers=auth(dev_issuer, "big-user"))
        assert again.status_code == 413
        (error,) = again.json()["errors"]
        assert "accepts at most 8,192" in error["msg"] and "parts of at most" in error["msg"]
    partitions = list(range(SAMPLES_SPEC.partitions))
    covered = {DefaultPartitioner()(user.encode(), partitions, partitions) for user in users}
    assert covered == set(partitions)  # the users answered 202 are on every partition


def test_the_gateway_refuses_to_start_when_the_topic_cannot_hold_its_uploads(
    kafka_bootstrap: str, redis_url: str, dev_issuer: DevIssuer, tmp_path: Path
) -> None:
    """The service as deployed (``python -m ingest_gateway``): it exits at start-up, saying why."""
    env = {**os.environ, "CIRCADIA_ENV": "development", "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
           "CIRCADIA_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT", "CIRCADIA_REDIS_URL": redis_url,
           "CIRCADIA_FIREBASE_PROJECT_ID": dev_issuer.project_id, "CIRCADIA_FIREBASE_CERTS_URL": dev_issuer.certs_url,
           "CIRCADIA_AUTH_DEV_ISSUER": "true", "CIRCADIA_SECRETS_DIR": str(tmp_path),
           "CIRCADIA_INGEST_PORT": str(free_port()), "CIRCADIA_INGEST_PARSE_WORKERS": "0",
           "CIRCADIA_INGEST_MAX_SAMPLES": "200000"}
    result = subprocess.run([sys.executable, "-m", "ingest_gateway"], env=env, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode != 0
    refusals = [line for line in result.stderr.splitlines() if "refusing to run" in line]
    assert refusals, result.stderr[-2000:]
    assert "max.message.bytes" in refusals[0] and "CIRCADIA_INGEST_MAX_SAMPLES=200,000" in refusals[0]
