"""The JavaScript stream client (clients/stream) against the real gateway: node's test runner runs
clients/stream/test-gateway/ against this module's stack (Kafka, Redis, OpenBao, the three services),
with tokens from the stack's development issuer; the client's own rules run in clients/stream/test/."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta

import pytest

from circadia.devstack.stack import LocalStack
from circadia.paths import PROJECT_ROOT

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
