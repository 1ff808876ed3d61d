"""The fan-out gateway as an app team relies on it: isolation, caps, slow clients, resume,
latest-on-connect, token refresh, shutdown and two replicas — real processes, real Kafka
and Redis. Predictions are produced straight to predictions.v1, as the worker would."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaProducer
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from circadia.avro import SchemaSet
from circadia.topics import PREDICTIONS
from circadia_dev.devstack.processes import ManagedProcess
from circadia_dev.devstack.stack import LocalStack
from tests.conftest import free_port
from tests.e2e.conftest import metric, start_fanout

SCHEMA = SchemaSet.load()["io.circadia.prediction.Prediction"]
RUN = uuid.uuid4().hex[:6]


def user(name: str) -> str:
    return f"{name}-{RUN}-{uuid.uuid4().hex[:4]}"


def prediction(user_id: str, padding: int = 0, sources: list[str] | None = None) -> dict:
    now = datetime.now(UTC)
    return {"prediction_id": str(uuid.uuid4()), "user_id": user_id,
            "source_upload_ids": sources or [str(uuid.uuid4())],
            "computed_at": now, "window_start": now, "window_end": now,
            "code_version": secrets.token_hex(padding // 2),  # random: WebSocket compression cannot shrink it
            "daily_activity": [], "methods": {}, "window_minutes_covered": 0, "window_coverage": 0.0,
            "circadian": None, "cosinor": None, "sleep_nights": [], "naps": [], "scored_sleep": None, "pat": None,
            "pat_unavailable": None, "clinical_scores": [], "as_of": {}}


async def publish(bootstrap: str, user_id: str, count: int = 1, padding: int = 0,
                  sources: list[str] | None = None) -> list[str]:
    """Publish ``count`` predictions for the user; returns their prediction ids in order."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    await producer.start()
    ids = []
    try:
        sends = []
        for _ in range(count):
            record = prediction(user_id, padding, sources)
            ids.append(record["prediction_id"])
            sends.append(await producer.send(PREDICTIONS, SCHEMA.encode(record), key=user_id.encode(),
                                             headers=SCHEMA.headers()))
        await asyncio.gather(*sends)
    finally:
        await producer.stop()
    return ids


@contextmanager
def replica(stack: LocalStack, name: str, **overrides: str) -> Iterator[str]:
    """Another fan-out gateway process beside the stack's; yields its ws URL."""
    port = free_port()
    process = start_fanout(stack, name, port, overrides, timeout=30)
    try:
        yield f"ws://127.0.0.1:{port}/v1/stream"
    finally:
        process.stop()


@asynccontextmanager
async def client(stack: LocalStack, url: str, user_id: str, *, resume: dict | None = None,
                 ttl: int = 3600) -> AsyncIterator[ClientConnection]:
    async with connect(url) as ws:
        token = stack.issuer.mint(user_id, ttl=ttl)
        await ws.send(json.dumps({"type": "resume", "token": token, **resume} if resume
                                 else {"type": "auth", "token": token}))
        ready = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert (ready["type"], ready["user_id"]) == ("ready", user_id)
        yield ws


async def receive(ws: ClientConnection, count: int, timeout: float = 20) -> list[dict]:
    messages = []
    deadline = time.monotonic() + timeout
    while len(messages) < count:
        messages.append(json.loads(await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic()))))
    return messages


async def silent(ws: ClientConnection, seconds: float) -> bool:
    try:
        await asyncio.wait_for(ws.recv(), seconds)
    except TimeoutError:
        return True
    return False


def stack_url(stack: LocalStack) -> str:
    return f"ws://127.0.0.1:{stack.ports.fanout}/v1/stream"


async def test_latest_on_connect_then_live_and_no_one_elses(stack: LocalStack) -> None:
    ada, eve = user("ada"), user("eve")
    (old,) = await publish(stack.bootstrap_servers, ada)
    await asyncio.sleep(1)  # recorded in the history by the gateway's feed
    async with client(stack, stack_url(stack), ada) as mine, client(stack, stack_url(stack), eve) as theirs:
        (latest,) = await receive(mine, 1)
        assert latest["type"] == "prediction" and latest["prediction"]["prediction_id"] == old
        assert set(latest["cursor"]) == {"partition", "offset"} and latest["epoch"]
        (new,) = await publish(stack.bootstrap_servers, ada)
        (live,) = await receive(mine, 1)
        assert live["prediction"]["prediction_id"] == new and live["cursor"]["offset"] > latest["cursor"]["offset"]
        assert await silent(theirs, 2)


async def test_resume_delivers_what_was_missed_in_order_without_duplicates(stack: LocalStack) -> None:
    ada = user("ada")
    async with client(stack, stack_url(stack), ada) as ws:
        await publish(stack.bootstrap_servers, ada, 3)
        seen = await receive(ws, 3)
    last = seen[-1]
    missed = await publish(stack.bootstrap_servers, ada, 4)  # while disconnected
    await asyncio.sleep(1)
    resume = {"cursor": last["cursor"], "epoch": last["epoch"]}
    async with client(stack, stack_url(stack), ada, resume=resume) as ws:
        replayed = await receive(ws, 4)
        assert [m["prediction"]["prediction_id"] for m in replayed] == missed
        offsets = [m["cursor"]["offset"] for m in replayed]
        assert offsets == sorted(offsets) and offsets[0] > last["cursor"]["offset"]
        (live,) = await publish(stack.bootstrap_servers, ada)
        assert [m["prediction"]["prediction_id"] for m in await receive(ws, 1)] == [live]
        assert await silent(ws, 1.5)  # nothing twice


async def test_beyond_the_history_or_with_another_epoch_the_client_resets(stack: LocalStack) -> None:
    ada = user("ada")
    # a deployment of its own (Redis database, consumer group): every replica sharing a history
    # must share its size
    redis_db1 = stack.redis_url.rsplit("/", 1)[0] + "/1"
    with replica(stack, "fanout-small-history", CIRCADIA_FANOUT_HISTORY_SIZE="3", CIRCADIA_REDIS_URL=redis_db1,
                 CIRCADIA_FANOUT_GROUP_ID=f"fanout-small-history-{RUN}") as url:
        async with client(stack, url, ada) as ws:
            await publish(stack.bootstrap_servers, ada)
            (first,) = await receive(ws, 1)
        ids = await publish(stack.bootstrap_servers, ada, 5)  # more than the history holds
        await asyncio.sleep(1)
        async with client(stack, url, ada, resume={"cursor": first["cursor"], "epoch": first["epoch"]}) as ws:
            reset, latest = await receive(ws, 2)
            assert reset["type"] == "reset"
            assert latest["prediction"]["prediction_id"] == ids[-1]
        stale = {"cursor": latest["cursor"], "epoch": "not-the-epoch"}
        async with client(stack, url, ada, resume=stale) as ws:
            assert [m["type"] for m in await receive(ws, 2)] == ["reset", "prediction"]


async def test_the_oldest_connection_goes_when_a_user_exceeds_the_cap(stack: LocalStack) -> None:
    ada = user("ada")
    with replica(stack, "fanout-cap", CIRCADIA_FANOUT_MAX_CONNECTIONS_PER_USER="3") as url:
        async with client(stack, url, ada) as first, client(stack, url, ada) as second, \
                client(stack, url, ada) as third:
            async with client(stack, url, ada) as fourth:
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(first.recv(), 5)
                assert closed.value.rcvd.code == 4429
                (pid,) = await publish(stack.bootstrap_servers, ada)
                for ws in (second, third, fourth):
                    assert (await receive(ws, 1))[0]["prediction"]["prediction_id"] == pid


async def test_the_process_cap_refuses_new_sockets_with_503(stack: LocalStack) -> None:
    with replica(stack, "fanout-full", CIRCADIA_FANOUT_MAX_CONNECTIONS="2") as url:
        async with client(stack, url, user("a")), client(stack, url, user("b")):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(url):
                    pass
            assert refused.value.response.status_code == 503


async def test_a_slow_client_is_closed_and_does_not_delay_others(stack: LocalStack) -> None:
    slow, brisk = user("slow"), user("brisk")
    with replica(stack, "fanout-slow", CIRCADIA_FANOUT_SEND_QUEUE_SIZE="4") as url:
        metrics_url = url.replace("ws://", "http://").replace("/v1/stream", "/metrics")
        async with client(stack, url, slow) as stuck, client(stack, url, brisk) as ok:
            # the stuck client never reads: socket buffers fill, then its queue overflows
            await publish(stack.bootstrap_servers, slow, 3000, padding=6000)
            deadline = time.monotonic() + 60
            while metric(metrics_url, 'circadia_fanout_closes_total{code="4408"}') < 1:
                assert time.monotonic() < deadline, "the slow client was never closed"
                await asyncio.sleep(0.5)
            started = time.monotonic()
            (pid,) = await publish(stack.bootstrap_servers, brisk)
            assert (await receive(ok, 1, timeout=10))[0]["prediction"]["prediction_id"] == pid
            assert time.monotonic() - started < 5
            del stuck


async def test_a_repeated_result_is_not_delivered_twice(stack: LocalStack) -> None:
    ada = user("ada")
    upload, later = str(uuid.uuid4()), str(uuid.uuid4())
    async with client(stack, stack_url(stack), ada) as ws:
        (first,) = await publish(stack.bootstrap_servers, ada, sources=[upload])
        assert (await receive(ws, 1))[0]["prediction"]["prediction_id"] == first
        # the same upload again (a worker that crashed after publishing publishes it again)
        await publish(stack.bootstrap_servers, ada, sources=[upload])
        assert await silent(ws, 2)
        # a result that also reflects a new upload is new, and delivered
        (newer,) = await publish(stack.bootstrap_servers, ada, sources=[upload, later])
        assert (await receive(ws, 1))[0]["prediction"]["prediction_id"] == newer
    with replica(stack, "fanout-repeat") as url:  # another replica agrees on what is a repeat
        async with client(stack, url, ada) as ws:
            (latest,) = await receive(ws, 1)
            assert latest["prediction"]["prediction_id"] == newer


async def test_naming_another_user_is_refused(stack: LocalStack) -> None:
    async with client(stack, stack_url(stack), user("ada")) as ws:
        await ws.send(json.dumps({"type": "subscribe", "user_id": "somebody-else"}))
        (answer,) = await receive(ws, 1)
        assert answer == {"type": "error", "reason": "forbidden: a connection serves its own user"}


async def test_an_expiring_token_is_refreshed_or_the_socket_closes(stack: LocalStack) -> None:
    ada = user("ada")
    with replica(stack, "fanout-refresh", CIRCADIA_FANOUT_REFRESH_LEAD_SECONDS="2") as url:
        async with client(stack, url, ada, ttl=3) as renewing, client(stack, url, ada, ttl=3) as lapsing:
            (ask,) = await receive(renewing, 1)
            assert ask["type"] == "refresh"
            await renewing.send(json.dumps({"type": "auth", "token": stack.issuer.mint(ada, ttl=600)}))
            (again,) = await receive(renewing, 1)
            assert again["type"] == "ready" and again["expires_at"] > time.time() + 500
            assert (await receive(lapsing, 1))[0]["type"] == "refresh"
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(lapsing.recv(), 5)
            assert closed.value.rcvd.code == 4401
            assert await silent(renewing, 1.5)  # still open, nothing unexpected
            await renewing.send(json.dumps({"type": "auth", "token": stack.issuer.mint(user("mallory"))}))
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(renewing.recv(), 5)
            assert closed.value.rcvd.code == 4403


async def test_shutdown_hints_reconnect_then_closes_with_1001(stack: LocalStack) -> None:
    with replica(stack, "fanout-shutdown", CIRCADIA_FANOUT_RECONNECT_SPREAD_MS="500") as url:
        async with client(stack, url, user("ada")) as ws:
            process = ManagedProcess("fanout-shutdown", stack.root / "run" / "fanout-shutdown.pid",
                                     stack.root / "logs" / "fanout-shutdown.log")
            stopping = asyncio.create_task(asyncio.to_thread(process.stop))
            (hint,) = await receive(ws, 1)
            assert hint["type"] == "reconnect" and 0 <= hint["after_ms"] <= 500
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            assert closed.value.rcvd.code == 1001
            await stopping


async def test_two_replicas_each_deliver_to_their_own_users(stack: LocalStack) -> None:
    here, there, both = user("here"), user("there"), user("both")
    with replica(stack, "fanout-b") as url_b:
        url_a = stack_url(stack)
        async with client(stack, url_a, here) as a, client(stack, url_b, there) as b, \
                client(stack, url_a, both) as both_a, client(stack, url_b, both) as both_b:
            for user_id, sockets in ((here, [a]), (there, [b]), (both, [both_a, both_b])):
                (pid,) = await publish(stack.bootstrap_servers, user_id)
                for ws in sockets:
                    assert (await receive(ws, 1))[0]["prediction"]["prediction_id"] == pid
            assert await silent(a, 1) and await silent(b, 1)
