"""The JavaScript stream client (clients/stream) against the real gateway: node's test runner runs
clients/stream/test-gateway/ against this module's stack (Kafka, Redis, OpenBao, the three services),
with tokens from the stack's development issuer; the client's own rules run in clients/stream/test/."""

from __future__ import annotations

import asyncio
import json
import os
import select
import shutil
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from circadia_dev.devstack.stack import LocalStack
from circadia_dev.paths import PROJECT_ROOT
from tests.conftest import free_port
from tests.e2e.conftest import next_prediction, open_socket, post, start_fanout, upload_body

CLIENT = PROJECT_ROOT / "clients" / "stream"
NODE_FLAGS = ["--experimental-websocket", "--test", "--test-reporter=spec"]


def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.fail("node is missing (Node.js 20.10 or later runs the stream client's tests)")
    return found


def run_node(folder: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([node(), *NODE_FLAGS, f"{folder}/"], cwd=CLIENT, capture_output=True, text=True,
                          timeout=240, env={**os.environ, **(env or {})})


def test_the_clients_own_rules() -> None:
    done = run_node("test")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_the_client_against_the_real_gateway(stack: LocalStack) -> None:
    run = os.urandom(3).hex()
    mint = stack.issuer.mint
    tokens = {
        "ada": mint(f"js-ada-{run}"), "reset": mint(f"js-reset-{run}"), "crowd": mint(f"js-crowd-{run}"),
        "erased": mint(f"js-erased-{run}"),
        # refreshed about 3 s after connecting (the gateway asks 60 s before expiry)
        "short": mint(f"js-refresh-{run}", ttl=63), "refreshed": mint(f"js-refresh-{run}"),
        "other": mint(f"js-other-{run}"),
    }
    config = {"streamUrl": f"ws://127.0.0.1:{stack.ports.fanout}/v1/stream",
              "ingestUrl": f"http://127.0.0.1:{stack.ports.ingest}", "tokens": tokens,
              "day": (datetime.now(UTC) - timedelta(days=1)).date().isoformat()}
    done = run_node("test-gateway", {"CIRCADIA_STREAM_TEST": json.dumps(config)})
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    assert all(token not in output for token in tokens.values())
    assert "ℹ fail 0" in output and "ℹ pass 6" in output, output[-2000:]  # node's spec reporter


class Observer:
    """The client in a node process (clients/stream/test-gateway/observe.mjs), its events as lines."""

    def __init__(self, config: dict) -> None:
        self.process = subprocess.Popen([node(), "--experimental-websocket", "test-gateway/observe.mjs"], cwd=CLIENT,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, env={**os.environ, "CIRCADIA_STREAM_OBSERVE": json.dumps(config)})
        self.seen: list[dict] = []

    def wait_for(self, match: Callable[[dict], bool], timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            assert time.monotonic() < deadline, f"not seen in {timeout:g} s; events: {self.seen}"
            ready, _, _ = select.select([self.process.stdout], [], [], 0.5)
            if ready:
                line = self.process.stdout.readline()  # type: ignore[union-attr]
                assert line, f"the client exited: {self.process.stderr.read()}"  # type: ignore[union-attr]
                event = json.loads(line)
                self.seen.append(event)
                if match(event):
                    return event

    def stop(self) -> None:
        self.process.stdin.close()  # type: ignore[union-attr]
        self.process.wait(timeout=10)


def state(name: str, **fields: object) -> Callable[[dict], bool]:
    return lambda e: e["event"] == "state" and e["state"] == name and all(e.get(k) == v for k, v in fields.items())


def prediction(e: dict) -> bool:
    return e["event"] == "prediction"


def test_a_gateway_shutdown_is_going_away_and_the_client_resumes_on_its_restart(stack: LocalStack) -> None:
    user = f"js-restart-{os.urandom(3).hex()}"
    assert asyncio.run(post(stack, user, upload_body([4] * 3))).status_code == 202
    observer = Observer({"url": f"ws://127.0.0.1:{stack.ports.fanout}/v1/stream", "token": stack.issuer.mint(user)})
    try:
        first = observer.wait_for(prediction)["cursor"]
        stack.process("fanout-gateway").stop()  # a reconnect hint, then 1001
        gone = observer.wait_for(state("waiting"))
        assert (gone["reason"], gone["code"]) == ("going_away", 1001)
        assert asyncio.run(post(stack, user, upload_body([6] * 3))).status_code == 202
        stack.start_service("fanout-gateway")
        observer.wait_for(state("live"), timeout=90)
        resumed = observer.wait_for(prediction)["cursor"]
        assert resumed == {"partition": first["partition"], "offset": first["offset"] + 1}
        assert [e["cursor"] for e in observer.seen if prediction(e)] == [first, resumed]  # no repeat
    finally:
        observer.stop()


def test_a_client_too_slow_for_its_queue_is_4408_and_reconnects(stack: LocalStack) -> None:
    """A replica with a send queue of one: resuming two results behind overflows it at once."""
    user = f"js-slow-{os.urandom(3).hex()}"
    port = free_port()
    slow = start_fanout(stack, f"fanout-slow-{user}", port, {"CIRCADIA_FANOUT_SEND_QUEUE_SIZE": "1"})
    try:
        watcher = Observer({"url": f"ws://127.0.0.1:{stack.ports.fanout}/v1/stream", "token": stack.issuer.mint(user)})
        try:
            cursors = []
            for steps in (1, 2, 3):
                assert asyncio.run(post(stack, user, upload_body([steps] * 3))).status_code == 202
                cursors.append(watcher.wait_for(prediction)["cursor"])
        finally:
            watcher.stop()
        epoch = asyncio.run(latest_epoch(stack, user))
        observer = Observer({"url": f"ws://127.0.0.1:{port}/v1/stream", "token": stack.issuer.mint(user),
                             "cursor": cursors[0], "epoch": epoch})
        try:
            closed = observer.wait_for(state("waiting"))
            assert (closed["reason"], closed["code"]) == ("slow", 4408)
            observer.wait_for(state("connecting"))  # and it tries again, from its cursor
        finally:
            observer.stop()
    finally:
        slow.stop()


async def latest_epoch(stack: LocalStack, user: str) -> str:
    """The user's history epoch, as a fresh connection's latest prediction carries it."""
    ws = await open_socket(stack, user)
    try:
        return (await next_prediction(ws, 30))["epoch"]
    finally:
        await ws.close()


def test_a_replica_that_cannot_open_the_next_result_is_1013_and_the_client_retries(stack: LocalStack) -> None:
    """A replica whose key service does not answer cannot open the user's latest result: it closes
    with 1013 rather than skip it, and the client waits and tries again."""
    user = f"js-keys-{os.urandom(3).hex()}"
    assert asyncio.run(post(stack, user, upload_body([7] * 3))).status_code == 202
    asyncio.run(latest_epoch(stack, user))  # the result is in the history
    port = free_port()
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    cut_off = start_fanout(stack, f"fanout-no-keys-{user}", port, {"CIRCADIA_USER_KEYS_ADDR": nowhere})
    try:
        observer = Observer({"url": f"ws://127.0.0.1:{port}/v1/stream", "token": stack.issuer.mint(user)})
        try:
            closed = observer.wait_for(state("waiting"))
            assert (closed["reason"], closed["code"]) == ("try_again_later", 1013)
            observer.wait_for(state("connecting"))
            assert not any(prediction(e) for e in observer.seen)  # nothing skipped, nothing half-delivered
        finally:
            observer.stop()
    finally:
        cut_off.stop()
