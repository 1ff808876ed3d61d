"""The whole loop on the real broker: device → ingest → Kafka → worker → Kafka → fan-out → socket.

The three services run as real processes (``python -m ...``), started by the same
LocalStack code as ``circadia up``, against the suite's Kafka broker.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from circadia.avro import SchemaSet, header
from circadia.topics import CONFIG_AUDIT, HEALTH_SAMPLES, HEALTH_SAMPLES_DLQ
from circadia_dev.devstack.stack import SERVICES, LocalStack
from tests.e2e.conftest import (
    AUTH_TIMEOUT,
    YESTERDAY,
    next_prediction,
    open_socket,
    post,
    upload_body,
)
from tests.integration.test_ingest_limits import steps_and_heart_rate

RUN = uuid.uuid4().hex[:6]  # users are new to this run: their windows start empty
ADA, GRACE, ALAN = f"ada-{RUN}", f"grace-{RUN}", f"alan-{RUN}"


async def test_upload_reaches_its_users_socket_and_no_one_elses(stack: LocalStack) -> None:
    ada = await open_socket(stack, ADA)
    grace = await open_socket(stack, GRACE)
    try:
        body = upload_body([30, 45, 25])  # 23:50-23:53 UTC yesterday
        response = await post(stack, ADA, body)
        assert response.status_code == 202, response.text
        assert response.json() == {"upload_id": body["upload_id"], "accepted": 3,
                                   "trace_id": response.json()["trace_id"]}

        message = await next_prediction(ada, timeout=20)
        prediction = message["prediction"]
        assert prediction["user_id"] == ADA
        assert prediction["source_upload_ids"] == [body["upload_id"]]
        assert prediction["daily_activity"] == [{
            "date": YESTERDAY.isoformat(), "steps": 100.0, "activity_counts": None, "minutes_covered": 3,
            "coverage": 3 / 1440, "heart_rate_mean": None, "heart_rate_minutes": 0,
            # three minutes of steps make no valid day: reported, left out of the rhythm analysis
            "movement_input": "step_count", "wear_minutes": 0,
            "wear_rule": "valid-day/hr-600min-or-steps-10h@1: none", "refused": None,
        }]
        assert prediction["methods"]["daily_activity"] == "daily-totals/merged-minutes@2"
        assert prediction["window_end"].startswith(f"{YESTERDAY.isoformat()}T23:53:00")
        assert prediction["window_minutes_covered"] == 3
        assert prediction["pat"] is None and prediction["clinical_scores"] == []  # no weights configured
        assert set(message["cursor"]) == {"partition", "offset"}

        # grace's socket stays silent while ada's result is delivered ...
        with pytest.raises(TimeoutError):
            await next_prediction(grace, timeout=3)
        # ... and it is a working socket: grace's own upload reaches it, not ada's
        own = upload_body([7])
        assert (await post(stack, GRACE, own)).status_code == 202
        assert (await next_prediction(grace, 20))["prediction"]["source_upload_ids"] == [own["upload_id"]]
        with pytest.raises(TimeoutError):
            await next_prediction(ada, timeout=1)
    finally:
        await ada.close()
        await grace.close()


async def test_every_socket_of_a_user_receives_the_result(stack: LocalStack) -> None:
    phone, tablet = await open_socket(stack, ALAN), await open_socket(stack, ALAN)
    try:
        body = upload_body([5, 5])
        assert (await post(stack, ALAN, body)).status_code == 202
        for ws in (phone, tablet):
            assert (await next_prediction(ws, 20))["prediction"]["source_upload_ids"] == [body["upload_id"]]
    finally:
        await phone.close()
        await tablet.close()


async def test_an_upload_at_the_documented_maximum_reaches_its_users_socket(stack: LocalStack) -> None:
    """50,000 samples (25,000 minutes of steps and heart rate, about 17 days, inside the 30-day
    horizon): stored, processed, and the week it leaves in the window delivered."""
    user = f"max-{RUN}"
    ws = await open_socket(stack, user)
    try:
        body = {"upload_id": str(uuid.uuid4()), "device": {"id": "watch-max", "model": "Watch7,1", "os": "watchOS 11"},
                "samples": steps_and_heart_rate(25_000)}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.ports.ingest}", timeout=60) as client:
            response = await client.post("/v1/uploads", json=body,
                                         headers={"Authorization": f"Bearer {stack.issuer.mint(user)}"})
        assert response.status_code == 202, response.text
        assert response.json()["accepted"] == 50_000
        prediction = (await next_prediction(ws, timeout=60))["prediction"]
        assert prediction["user_id"] == user and prediction["source_upload_ids"] == [body["upload_id"]]
        days = prediction["daily_activity"]
        assert len(days) >= 7 and all(day["heart_rate_minutes"] > 0 for day in days)
        assert prediction["window_minutes_covered"] >= 7 * 1440 - 2
    finally:
        await ws.close()


async def test_socket_without_valid_auth_is_closed_with_4401(stack: LocalStack) -> None:
    url = f"ws://127.0.0.1:{stack.ports.fanout}/v1/stream"
    async with connect(url) as ws:
        await ws.send(json.dumps({"type": "auth", "token": stack.issuer.mint("ada", ttl=-300)}))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd.code == 4401
    async with connect(url) as ws:
        await ws.send(json.dumps({"type": "subscribe", "user_id": "ada"}))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd.code == 4401
    async with connect(url) as ws:  # says nothing: closed at the auth deadline
        started = time.monotonic()
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), AUTH_TIMEOUT + 5)
        assert closed.value.rcvd.code == 4401
        assert time.monotonic() - started >= AUTH_TIMEOUT * 0.9


async def test_undecodable_record_goes_to_the_dead_letter_topic(stack: LocalStack) -> None:
    marker = uuid.uuid4().hex.encode()
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap_servers, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(HEALTH_SAMPLES, b"\x00not avro" + marker, key=b"mallory",
                                     headers=SchemaSet.load()["io.circadia.health.HealthUpload"].headers())
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(HEALTH_SAMPLES_DLQ, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                for message in messages:
                    if message.value.endswith(marker):
                        assert header(message.headers, "error.class")
                        assert header(message.headers, "source.topic") == HEALTH_SAMPLES.encode()
                        return
    finally:
        await consumer.stop()
    raise AssertionError("bad record never reached the dead-letter topic")


def test_services_expose_health_and_metrics(stack: LocalStack) -> None:
    p = stack.ports
    for url in (f"http://127.0.0.1:{p.ingest}/healthz", f"http://127.0.0.1:{p.fanout}/healthz"):
        assert httpx.get(url).json() == {"status": "ok"}
    assert "circadia_ingest_requests_total" in httpx.get(f"http://127.0.0.1:{p.ingest}/metrics").text
    fanout_metrics = httpx.get(f"http://127.0.0.1:{p.fanout}/metrics", headers={"X-Request-Id": "ops-check-123"})
    assert "circadia_fanout_connections" in fanout_metrics.text
    assert fanout_metrics.headers["x-request-id"] == "ops-check-123"
    assert fanout_metrics.headers["x-content-type-options"] == "nosniff"
    worker = httpx.get(f"http://127.0.0.1:{p.worker_metrics}/metrics").text
    assert "circadia_worker_predictions_total" in worker


async def test_every_service_audited_its_configuration_at_start(stack: LocalStack) -> None:
    schemas = SchemaSet.load()
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    found: dict[str, dict] = {}
    try:
        tp = TopicPartition(CONFIG_AUDIT, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        deadline = time.monotonic() + 30
        while len(found) < 3 and time.monotonic() < deadline:
            for messages in (await consumer.getmany(tp, timeout_ms=500)).values():
                for message in messages:
                    if header(message.headers, "avro.schema.name") != b"io.circadia.audit.ConfigChange":
                        continue  # the topic also holds erasures' audit records
                    event = schemas.decode(message.value, list(message.headers),
                                           schemas["io.circadia.audit.ConfigChange"])
                    if event["settings"].get("secrets_dir") == str(stack.root / "secrets"):  # this stack's
                        found[event["service"]] = event
    finally:
        await consumer.stop()
    assert set(found) == {"ingest-gateway", "prediction-worker", "fanout-gateway"}
    assert all(event["env"] == "development" for event in found.values())


def test_down_stops_every_process_it_started(stack: LocalStack) -> None:
    pids = {name: pid for name, pid in stack.status()}
    assert all(pids.values()) and set(pids) == {"openbao", *(s.name for s in SERVICES)}
    stopped = stack.down()
    assert set(stopped) == set(pids)
    for pid in pids.values():
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid), f"process {pid} still running"
    assert all(pid is None for _, pid in stack.status())


def _zombie(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
