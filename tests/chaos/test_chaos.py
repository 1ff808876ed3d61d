"""Chaos on the real stack: processes killed, the broker and Redis restarted, the network to
Kafka slowed, stalled and cut — with steady uploads and listening apps throughout. Every
scenario prints its counts and asserts that nothing acknowledged was lost and no app
received a result twice."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from circadia_dev.devstack.stack import LocalStack
from circadia_dev.devstack.toxiproxy import LocalToxiproxy
from tests.chaos.harness import Ledger, chaos_stack, traffic
from tests.conftest import free_ports

WORKER, FANOUT = "prediction-worker", "fanout-gateway"


def users(n: int = 3) -> list[str]:
    run = uuid.uuid4().hex[:6]
    return [f"chaos-{run}-{i}" for i in range(n)]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[LocalStack]:
    stack = chaos_stack(tmp_path / "stack")
    try:
        stack.up(report=lambda line: None)
        yield stack
    finally:
        stack.down()


def assert_nothing_lost(counts: dict[str, int]) -> None:
    assert counts["acknowledged"] > 0
    assert counts["lost"] == 0
    assert counts["duplicated"] == 0
    assert counts["out_of_order"] == 0


async def test_worker_killed_twice_mid_stream(stack: LocalStack) -> None:
    ledger = Ledger()
    async with traffic(stack, users(), ledger):
        for _ in range(2):
            await asyncio.sleep(4)
            stack.process(WORKER).kill()  # SIGKILL: no clean shutdown, no final commit
            await asyncio.sleep(1)
            await asyncio.to_thread(stack.start_service, WORKER)
        await asyncio.sleep(3)
    assert_nothing_lost(ledger.report("worker SIGKILL x2"))


async def test_kafka_restarted_mid_stream(stack: LocalStack) -> None:
    ledger = Ledger()
    async with traffic(stack, users(), ledger):
        await asyncio.sleep(4)
        await asyncio.to_thread(stack.kafka.stop)
        await asyncio.sleep(6)  # down: uploads are refused with 503, not acknowledged
        await asyncio.to_thread(stack.kafka.start)
        await asyncio.sleep(8)
    counts = ledger.report("Kafka broker restart")
    assert ledger.refused.get("503", 0) > 0, "the gateway should have refused uploads while Kafka was down"
    assert_nothing_lost(counts)
    for name in ("ingest-gateway", WORKER, FANOUT):  # recovered without a restart of their own
        assert stack.process(name).pid() is not None


async def test_fanout_killed_while_apps_are_connected(stack: LocalStack) -> None:
    ledger = Ledger()
    async with traffic(stack, users(), ledger) as apps:
        await asyncio.sleep(4)
        stack.process(FANOUT).kill()
        await asyncio.sleep(3)  # uploads go on; results are published while no gateway runs
        await asyncio.to_thread(stack.start_service, FANOUT)
        await asyncio.sleep(4)
    counts = ledger.report("fan-out SIGKILL, apps resume")
    assert all(app.reconnects >= 1 for app in apps)
    assert_nothing_lost(counts)


async def test_redis_stopped_and_back(stack: LocalStack) -> None:
    ledger = Ledger()
    async with traffic(stack, users(), ledger):
        await asyncio.sleep(3)
        await asyncio.to_thread(stack.redis.stop)
        await asyncio.sleep(5)  # rate limits fail open, idempotency is unchecked, history is live-only
        await asyncio.to_thread(stack.redis.start)
        await asyncio.sleep(4)
    counts = ledger.report("Redis stopped, then back")
    assert not ledger.refused, "uploads must keep being accepted without Redis"
    assert_nothing_lost(counts)


async def test_network_to_kafka_slow_stalled_and_cut(tmp_path: Path) -> None:
    toxiproxy_port, proxy_port, kafka_port = free_ports(3)
    toxiproxy = LocalToxiproxy(tmp_path / "toxiproxy", port=toxiproxy_port)
    toxiproxy.start()
    proxy = toxiproxy.proxy("kafka", proxy_port, f"127.0.0.1:{kafka_port}")
    stack = chaos_stack(tmp_path / "stack", kafka_port=kafka_port, kafka_advertised_port=proxy_port)
    ledger = Ledger()
    try:
        await asyncio.to_thread(stack.up, lambda line: None)
        async with traffic(stack, users(), ledger):
            await asyncio.sleep(3)
            proxy.add("slow", "latency", latency=400, jitter=100)  # every hop to Kafka slowed
            await asyncio.sleep(5)
            proxy.remove("slow")
            proxy.add("stall", "timeout", timeout=0)  # data stops flowing, connections hang
            await asyncio.sleep(4)
            proxy.remove("stall")
            proxy.enable(False)  # the connection is cut
            await asyncio.sleep(4)
            proxy.enable(True)
            await asyncio.sleep(8)
    finally:
        await asyncio.to_thread(stack.down)
        toxiproxy.stop()
    assert_nothing_lost(ledger.report("network to Kafka: latency, stall, cut"))
