"""A user's erasure on the real stack (OpenBao, Kafka, Redis, the three services as processes).

Ada and Grace each upload; Ada asks for erasure. Her socket is closed with 4410, every service
drops what it held of her (the worker's window, the fan-out history, the cached keys), each of her
records on every topic opens as erased, and a record of hers sealed before the erasure but
arriving after it (an upload in flight, or a dead letter replayed) is skipped as erased. Grace's
data and socket are untouched, and Ada's next upload starts afresh with a new key. Tampered
records and records under another user's key are dead-lettered with the reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition
from websockets.exceptions import ConnectionClosed

from circadia.avro import SchemaSet, header
from circadia.deadletters import list_dead_letters
from circadia.sealing import RecordSeal
from circadia.topics import CONFIG_AUDIT, HEALTH_SAMPLES, PREDICTIONS
from circadia.userkeys import Erased
from circadia_dev.devstack.stack import LocalStack
from tests.e2e.conftest import metric, next_prediction, open_socket, operator_keys, post, upload_body
from tests.e2e.test_worker_state import produce, raw_record

SCHEMAS = SchemaSet.load()
UPLOAD = SCHEMAS["io.circadia.health.HealthUpload"]
PREDICTION = SCHEMAS["io.circadia.prediction.Prediction"]
UPLOADS_SEAL = RecordSeal(SCHEMAS, UPLOAD, HEALTH_SAMPLES, ("upload_id", "user_id", "received_at"))
RESULTS_SEAL = RecordSeal(SCHEMAS, PREDICTION, PREDICTIONS,
                          ("prediction_id", "user_id", "source_upload_ids", "computed_at", "code_version"))
RUN = uuid.uuid4().hex[:6]
MORNING = datetime.now(UTC).replace(hour=7, minute=0, second=0, microsecond=0) - timedelta(days=1)


async def delete_me(stack: LocalStack, user: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.ports.ingest}") as client:
        return await client.delete("/v1/users/me", headers={"Authorization": f"Bearer {stack.issuer.mint(user)}"})


def worker_metrics(stack: LocalStack) -> str:
    return f"http://127.0.0.1:{stack.ports.worker_metrics}/metrics"


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"{what} did not hold within {timeout:g} s"
        await asyncio.sleep(0.3)


def counter_above(url: str, name: str, before: float) -> Callable[[], Awaitable[bool]]:
    async def above() -> bool:
        return await asyncio.to_thread(metric, url, name) > before
    return above


async def records_of(bootstrap: str, topic: str, key: bytes) -> list:
    """Every record of ``topic`` with ``key``, read to each partition's end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    found = []
    try:
        partitions = [TopicPartition(topic, p) for p in range(6 if topic != CONFIG_AUDIT else 1)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        pending = {tp for tp in partitions if ends[tp] > 0}
        while pending:
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                found += [m for m in messages if m.key == key]
            pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
    finally:
        await consumer.stop()
    return found


def day_steps(prediction: dict) -> float:
    return sum(day["steps"] or 0 for day in prediction["daily_activity"])


async def test_an_erased_user_is_gone_everywhere_and_starts_afresh(stack: LocalStack) -> None:
    ada, grace = f"ada-{RUN}", f"grace-{RUN}"
    ada_ws, grace_ws = await open_socket(stack, ada), await open_socket(stack, grace)
    first = upload_body([40] * 10, start=MORNING)
    assert (await post(stack, ada, first)).status_code == 202
    assert day_steps((await next_prediction(ada_ws, 30))["prediction"]) == 400
    theirs = upload_body([7] * 10, start=MORNING)
    assert (await post(stack, grace, theirs)).status_code == 202
    assert day_steps((await next_prediction(grace_ws, 30))["prediction"]) == 70
    in_flight = await raw_record(stack.bootstrap_servers, first["upload_id"])  # sealed before the erasure
    applied_before = metric(worker_metrics(stack), 'circadia_worker_erasures_total{outcome="window_removed"}')

    response = await delete_me(stack, ada)
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["key_destroyed"] is True and answer["idempotency_entries_deleted"] == 1
    uuid.UUID(answer["erasure_id"])

    # the fan-out closes her socket with 4410, and only hers
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ada_ws.recv(), 15)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4410
    # the worker removed her window: a tombstone on the changelog
    await eventually(counter_above(worker_metrics(stack), 'circadia_worker_erasures_total{outcome="window_removed"}',
                                   applied_before), what="the worker removing the window")
    changelog = f"{dict(stack.overrides)['CIRCADIA_WORKER_APP_ID']}-user-windows-changelog"  # this stack's worker
    assert changelog in await _topics(stack)
    assert (await records_of(stack.bootstrap_servers, changelog, ada.encode()))[-1].value is None
    # the fan-out's history is gone
    client = aioredis.Redis.from_url(stack.redis_url)
    try:
        assert [key async for key in client.scan_iter(match=f"circadia:history:*{ada}*")] == []
    finally:
        await client.aclose()

    # every record of hers on the topics now opens as erased; Grace's still opens
    keys = operator_keys(stack)
    for topic, seal, schema in ((HEALTH_SAMPLES, UPLOADS_SEAL, UPLOAD), (PREDICTIONS, RESULTS_SEAL, PREDICTION)):
        mine = await records_of(stack.bootstrap_servers, topic, ada.encode())
        assert mine
        for message in mine:
            with pytest.raises(Erased):
                await seal.open(keys, SCHEMAS.decode(message.value, list(message.headers), schema))
        other = (await records_of(stack.bootstrap_servers, topic, grace.encode()))[-1]
        opened = await seal.open(keys, SCHEMAS.decode(other.value, list(other.headers), schema))
        assert opened["user_id"] == grace
    # audited, by digest only
    audits = [m for m in await records_of(stack.bootstrap_servers, CONFIG_AUDIT, b"user-erasure")
              if header(m.headers, "avro.schema.name") == b"io.circadia.audit.UserErasure"]
    mine_audited = [SCHEMAS.decode(m.value, list(m.headers), SCHEMAS["io.circadia.audit.UserErasure"])
                    for m in audits]
    entry = next(a for a in mine_audited if str(a["erasure_id"]) == answer["erasure_id"])
    assert entry["user_digest"] == hashlib.sha256(ada.encode()).hexdigest() and entry["key_destroyed"]
    assert all(ada.encode() not in m.value for m in audits)

    # erasing twice is no error and destroys nothing more
    again = await delete_me(stack, ada)
    assert again.status_code == 202 and again.json()["key_destroyed"] is False

    # an upload sealed before the erasure that arrives after it (in flight, or a replayed dead
    # letter) is skipped as erased: no result, no window
    erased_before = metric(worker_metrics(stack), 'circadia_worker_records_total{outcome="erased"}')
    await produce(stack.bootstrap_servers, *in_flight)
    await eventually(counter_above(worker_metrics(stack), 'circadia_worker_records_total{outcome="erased"}',
                                   erased_before), what="the worker skipping the erased upload")

    # Grace never noticed; Ada starts afresh with a new key: her result holds only the new upload
    ada_ws = await open_socket(stack, ada)
    fresh = upload_body([3] * 10, start=MORNING + timedelta(hours=2))
    assert (await post(stack, ada, fresh)).status_code == 202
    result = (await next_prediction(ada_ws, 30))["prediction"]
    assert result["source_upload_ids"] == [fresh["upload_id"]] and day_steps(result) == 30
    later = upload_body([8] * 10, start=MORNING + timedelta(hours=2))
    assert (await post(stack, grace, later)).status_code == 202
    assert day_steps((await next_prediction(grace_ws, 30))["prediction"]) == 150
    await ada_ws.close()
    await grace_ws.close()


async def test_tampered_records_and_foreign_or_unknown_keys_are_dead_lettered(stack: LocalStack) -> None:
    ada, grace = f"tamper-ada-{RUN}", f"tamper-grace-{RUN}"
    since = datetime.now(UTC) - timedelta(seconds=5)
    bodies = {user: upload_body([5] * 5, start=MORNING) for user in (ada, grace)}
    for user, body in bodies.items():
        assert (await post(stack, user, body)).status_code == 202
    (ada_key, ada_value, headers) = await raw_record(stack.bootstrap_servers, bodies[ada]["upload_id"])
    (_, grace_value, _) = await raw_record(stack.bootstrap_servers, bodies[grace]["upload_id"])
    outer = SCHEMAS.decode(ada_value, headers, UPLOAD, logical=False)
    ciphertext = outer["sealed"]["ciphertext"]
    tampered = {**outer, "sealed": {**outer["sealed"], "ciphertext": ciphertext[:40] + bytes([ciphertext[40] ^ 1])
                                    + ciphertext[41:]}}
    grace_outer = SCHEMAS.decode(grace_value, headers, UPLOAD, logical=False)
    foreign = {**outer, "sealed": grace_outer["sealed"]}  # Grace's content, key and all, under Ada's record
    unknown = {**outer, "sealed": {**outer["sealed"], "key_id": "circadia-user-" + "0" * 64 + "@" + "1" * 24}}
    for record in (tampered, foreign, unknown):
        await produce(stack.bootstrap_servers, ada_key, UPLOAD.write(record), headers)

    async def three_letters() -> bool:
        letters = [x for x in await list_dead_letters(stack.bootstrap_servers, since=since) if x.key == ada_key]
        return len(letters) >= 3

    await eventually(three_letters, what="three dead letters")
    letters = [x for x in await list_dead_letters(stack.bootstrap_servers, since=since) if x.key == ada_key]
    assert {(x.get("error.stage"), x.get("error.class")) for x in letters} == {("open", "Tampered")}
    assert all("plaintext" not in x.get("error.message") for x in letters)


async def _topics(stack: LocalStack) -> set[str]:
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.bootstrap_servers)
    await consumer.start()
    try:
        return set(await consumer.topics())
    finally:
        await consumer.stop()


async def test_an_operator_erases_a_user_with_the_cli(stack: LocalStack) -> None:
    user = f"cli-{RUN}"
    ws = await open_socket(stack, user)
    body = upload_body([2] * 5, start=MORNING)
    assert (await post(stack, user, body)).status_code == 202
    await next_prediction(ws, 30)
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap_servers, "CIRCADIA_LOCAL_DIR": str(stack.root),
           "CIRCADIA_USER_KEYS_ADDR": stack.openbao.url, "CIRCADIA_USER_KEYS_TOKEN": stack.openbao.root_token}
    done = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "circadia_dev.cli", "erase", user],
                                   env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "key destroyed" in done.stdout and stack.openbao.root_token not in done.stdout + done.stderr
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 15)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4410
    (message,) = await records_of(stack.bootstrap_servers, HEALTH_SAMPLES, user.encode())
    with pytest.raises(Erased):
        await UPLOADS_SEAL.open(operator_keys(stack), SCHEMAS.decode(message.value, list(message.headers), UPLOAD))
    audits = await records_of(stack.bootstrap_servers, CONFIG_AUDIT, b"user-erasure")
    digests = [SCHEMAS.decode(m.value, list(m.headers), SCHEMAS["io.circadia.audit.UserErasure"]) for m in audits]
    assert any(d["user_digest"] == hashlib.sha256(user.encode()).hexdigest() and d["service"] == "circadia-cli"
               and d["requested_by"].startswith("operator:") for d in digests)
