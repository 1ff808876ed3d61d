"""The local stack for end-to-end tests: the three services as processes on free ports,
against the suite's Kafka and Redis, plus client helpers."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from datetime import time as dtime

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from circadia.avro import SchemaSet
from circadia.sealing import RecordSeal
from circadia.topics import PREDICTIONS
from circadia.userkeys import UserKeys
from circadia_dev.devstack.processes import ManagedProcess
from circadia_dev.devstack.stack import LocalStack, Ports
from tests.conftest import free_port

AUTH_TIMEOUT = 1.5
YESTERDAY = (datetime.now(UTC) - timedelta(days=1)).date()
LATE_EVENING = datetime.combine(YESTERDAY, dtime(23, 50), tzinfo=UTC)


def new_stack(root, kafka_bootstrap: str, redis_url: str) -> LocalStack:
    ports = Ports(kafka=0, kafka_controller=0, redis=0, openbao=free_port(), openbao_cluster=free_port(),
                  ingest=free_port(), fanout=free_port(), worker_metrics=free_port())
    return LocalStack(root, ports, external_kafka=kafka_bootstrap, external_redis=redis_url, observability=False,
                      overrides=(("CIRCADIA_FANOUT_AUTH_TIMEOUT_SECONDS", str(AUTH_TIMEOUT)),
                                 ("CIRCADIA_WORKER_APP_ID", f"circadia-e2e-{uuid.uuid4().hex[:8]}"),
                                 ("CIRCADIA_FANOUT_GROUP_ID", f"circadia-fanout-e2e-{uuid.uuid4().hex[:8]}")))


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = new_stack(tmp_path_factory.mktemp("stack"), kafka_bootstrap, redis_url)
    try:
        stack.up(report=lambda line: None)  # a failed start-up still stops what it started
        yield stack
    finally:
        stack.down()


def start_fanout(stack: LocalStack, name: str, port: int, settings: dict[str, str],
                 timeout: float = 60) -> ManagedProcess:
    """Another fan-out gateway process beside the stack's, with the stack's settings plus
    ``settings``; returns once it answers /readyz."""
    process = ManagedProcess(name, stack.root / "run" / f"{name}.pid", stack.root / "logs" / f"{name}.log")
    env = {**stack.service_environment("fanout-gateway"), "CIRCADIA_FANOUT_PORT": str(port), **settings}
    process.start([sys.executable, "-m", "fanout_gateway"], env)
    deadline = time.monotonic() + timeout
    while True:
        assert not process.exited_early(), process.log_tail()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, process.log_tail()
        time.sleep(0.2)


def upload_body(steps: list[int], start: datetime = LATE_EVENING) -> dict:
    """Minute samples of step counts from ``start`` on (default 23:50 UTC yesterday)."""
    return {
        "upload_id": str(uuid.uuid4()),
        "device": {"id": "watch-1", "model": "Watch7,1", "os": "watchOS 11.2"},
        "samples": [{"type": "step_count", "start": (start + timedelta(minutes=i)).isoformat(),
                     "end": (start + timedelta(minutes=i + 1)).isoformat(), "value": v, "unit": "count"}
                    for i, v in enumerate(steps)],
    }


async def open_socket(stack: LocalStack, user: str) -> ClientConnection:
    ws = await connect(f"ws://127.0.0.1:{stack.ports.fanout}/v1/stream")
    await ws.send(json.dumps({"type": "auth", "token": stack.issuer.mint(user)}))
    ready = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert (ready["type"], ready["user_id"]) == ("ready", user)
    return ws


async def next_prediction(ws: ClientConnection, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic())))
        if message["type"] == "prediction":
            return message


async def post(stack: LocalStack, user: str, body: dict) -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.ports.ingest}") as client:
        return await client.post("/v1/uploads", json=body,
                                 headers={"Authorization": f"Bearer {stack.issuer.mint(user)}"})


def operator_keys(stack: LocalStack) -> UserKeys:
    """The key layer with the stack's root token: what an operator's tool (or a test) opens with."""
    return UserKeys(stack.openbao.admin())


async def opened_prediction(stack: LocalStack, record: dict) -> dict:
    """A result read from predictions.v1, opened (the worker seals every result)."""
    seal = RecordSeal(SchemaSet.load(), SchemaSet.load()["io.circadia.prediction.Prediction"], PREDICTIONS,
                      ("prediction_id", "user_id", "source_upload_ids", "computed_at", "code_version"))
    return await seal.open(operator_keys(stack), record)


def metric(url: str, name: str) -> float:
    """The value of one sample line of a Prometheus exposition (0 when absent)."""
    for line in httpx.get(url).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0
