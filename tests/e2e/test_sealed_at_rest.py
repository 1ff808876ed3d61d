"""A user's health data is sealed wherever the platform keeps it: every Kafka topic (read record by
record, so compressed batches are searched decompressed, and the broker's segment files byte by
byte), every Redis key and every service log.

A week of a device with a unique id and model, with a distinctive sample value, goes through the
real stack (OpenBao, Kafka, Redis, the three services); the user's socket gets the result, opened
and rendered; then nothing at rest holds the device id, the model or the value's bytes.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from circadia.avro import SchemaSet
from circadia.topics import EXPORT_REPLIES, HEALTH_SAMPLES, PREDICTIONS
from circadia_dev.devstack.stack import LocalStack
from tests.chaos.harness import chaos_stack
from tests.e2e.conftest import next_prediction, open_socket, post

SCHEMAS = SchemaSet.load()
DISTINCT = 6173.0  # steps in one minute of the week: its 8 bytes as Avro writes a double


def week_of(device: str, model: str, days: int = 7) -> dict:
    start = (datetime.now(UTC) - timedelta(days=days)).replace(second=0, microsecond=0)
    samples = [{"type": "step_count", "start": (start + timedelta(minutes=m)).isoformat(),
                "end": (start + timedelta(minutes=m + 1)).isoformat(), "unit": "count",
                "value": DISTINCT if m == 600 else float(m % 90)} for m in range(0, days * 1440, 7)]
    return {"upload_id": str(uuid.uuid4()), "device": {"id": device, "model": model, "os": "ZenOS 3"},
            "samples": samples}


async def every_record(bootstrap: str) -> list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]]:
    """(topic, key, value, headers) of every record of every topic, read to each partition's end."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(await admin.list_topics())
    finally:
        await admin.close()
    partitions = [TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]]
    assert len(partitions) > 20, "the broker's topics were not all listed"
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    found = []
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        pending = {tp for tp in partitions if ends[tp] > 0}
        while pending:
            for tp, messages in (await consumer.getmany(timeout_ms=500, max_records=5000)).items():
                found += [(tp.topic, m.key or b"", m.value or b"", list(m.headers)) for m in messages]
            pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
    finally:
        await consumer.stop()
    return found


async def every_redis_value(url: str) -> list[bytes]:
    client = aioredis.Redis.from_url(url)
    values: list[bytes] = []
    try:
        async for key in client.scan_iter(count=1000):
            kind = (await client.type(key)).decode()
            if kind == "string":
                values.append(await client.get(key) or b"")
            elif kind == "hash":
                values += [v for pair in (await client.hgetall(key)).items() for v in pair]
            elif kind == "stream":
                values += [v for _, fields in await client.xrange(key) for pair in fields.items() for v in pair]
            elif kind == "list":
                values += await client.lrange(key, 0, -1)
            elif kind == "set":
                values += list(await client.smembers(key))
            elif kind == "zset":
                values += [member for member, _ in await client.zrange(key, 0, -1, withscores=True)]
            values.append(key)
    finally:
        await client.aclose()
    return values


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A stack with a Kafka and a Redis of its own, so its segment files are this test's to read."""
    stack = chaos_stack(tmp_path_factory.mktemp("at-rest"))
    try:
        stack.up(report=lambda line: None)
        yield stack
    finally:
        stack.down()


async def test_nothing_at_rest_holds_a_users_device_or_values(own_stack: LocalStack) -> None:
    stack = own_stack
    kafka_bootstrap, redis_url = stack.bootstrap_servers, stack.redis_url
    user = f"sealed-{uuid.uuid4().hex[:6]}"
    device, model = f"dev-{uuid.uuid4().hex}", f"Model-{uuid.uuid4().hex[:12]}"
    secrets = [device.encode(), model.encode(), struct.pack("<d", DISTINCT)]
    ws = await open_socket(stack, user)
    try:
        response = await post(stack, user, week_of(device, model))
        assert response.status_code == 202, response.text
        prediction = (await next_prediction(ws, timeout=60))["prediction"]
    finally:
        await ws.close()
    # the socket got the opened result: the week's steps, the distinctive minute among them
    assert sum(day["steps"] or 0 for day in prediction["daily_activity"]) >= DISTINCT
    assert prediction["user_id"] == user
    # and the user's export (answered through user.export.*, which the scan below covers too)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.ports.ingest}", timeout=30) as client:
        token = stack.issuer.mint(user)
        exported = await client.get("/v1/users/me/export", headers={"Authorization": f"Bearer {token}"})
    assert exported.status_code == 200 and device in exported.json()["window"]["devices"]

    records = await every_record(kafka_bootstrap)
    mine = [r for r in records if r[1] == user.encode()]
    topics = {topic for topic, *_ in mine}
    assert {HEALTH_SAMPLES, PREDICTIONS, EXPORT_REPLIES} <= topics and any("changelog" in t for t in topics), topics
    for topic, key, value, headers in records:
        for secret in secrets:
            assert secret not in value and secret not in key, f"{topic} holds {secret!r} in plaintext"
            assert all(secret not in v for _, v in headers), f"a header on {topic} holds {secret!r}"
    sealed = [SCHEMAS.decode(value, headers, SCHEMAS["io.circadia.health.HealthUpload"])
              for topic, key, value, headers in mine if topic == HEALTH_SAMPLES]
    assert sealed and all(r["sealed"] is not None and r["samples"] == [] for r in sealed)

    segments = [path for path in stack.kafka.data_dir.rglob("*") if path.is_file()]
    assert any(path.suffix == ".log" for path in segments)
    for path in segments:
        data = path.read_bytes()
        assert all(secret not in data for secret in secrets), f"{path} holds the user's data in plaintext"

    for value in await every_redis_value(redis_url):
        assert all(secret not in value for secret in secrets), "Redis holds the user's data in plaintext"

    logs = list((stack.root / "logs").glob("*.log"))
    assert logs
    for path in logs:
        text = path.read_bytes()
        assert device.encode() not in text and model.encode() not in text, f"{path.name} holds the device"
        assert b"6173.0" not in text, f"{path.name} holds the distinctive value"
