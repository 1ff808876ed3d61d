"""What an operator sees: one trace per upload in Jaeger across every hop, every dashboard
panel answering from the live Prometheus, and logs that carry trace ids and never a token
or a health value. The stack runs Jaeger v2 and Prometheus from the project's launchers."""

from __future__ import annotations

import asyncio
import json
import lzma
import math
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from circadia.avro import SchemaSet
from circadia.topics import HEALTH_SAMPLES
from circadia_dev.devstack.stack import LocalStack, Ports
from circadia_dev.paths import PROJECT_ROOT
from tests.conftest import free_port
from tests.e2e.conftest import next_prediction, open_socket, post
from tests.unit.test_pat import FIXTURE

RUN = uuid.uuid4().hex[:6]
MARKER_VALUE = 123.456789  # a heart rate that must never appear in a log line
WEEK_START = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=7)


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    root = tmp_path_factory.mktemp("observed")
    weights = root / "pat_s.h5"
    weights.write_bytes(lzma.decompress((FIXTURE / "pat_s.h5.xz").read_bytes()))
    ports = Ports(kafka=0, kafka_controller=0, redis=0, openbao=free_port(), openbao_cluster=free_port(),
                  ingest=free_port(), fanout=free_port(), worker_metrics=free_port(), jaeger_otlp_grpc=free_port(),
                  jaeger_otlp_http=free_port(),
                  jaeger_query=free_port(), jaeger_query_grpc=free_port(), jaeger_health=free_port(),
                  prometheus=free_port())
    stack = LocalStack(root, ports, external_kafka=kafka_bootstrap, external_redis=redis_url, scrape_interval="1s",
                       overrides=(("CIRCADIA_WORKER_APP_ID", f"circadia-observed-{RUN}"),
                                  ("CIRCADIA_WORKER_PAT_WEIGHTS_PATH", str(weights)),
                                  # every result runs every stage (the model too), so each
                                  # latency panel has data while the test polls
                                  ("CIRCADIA_WORKER_WEEK_METRICS_INTERVAL_SECONDS", "0"),
                                  ("OTEL_BSP_SCHEDULE_DELAY", "200")))
    try:
        stack.up(report=lambda line: None)
        yield stack
    finally:
        stack.down()


def week_of_counts() -> dict:
    return {"upload_id": str(uuid.uuid4()), "device": {"id": "gt3x", "model": "GT3X+", "os": "fw 4"},
            "samples": [{"type": "activity_count", "start": (WEEK_START + timedelta(minutes=m)).isoformat(),
                         "end": (WEEK_START + timedelta(minutes=m + 1)).isoformat(),
                         "value": (m * 37) % 900, "unit": "count"} for m in range(10_080)]
            + [{"type": "heart_rate", "start": (WEEK_START + timedelta(days=6)).isoformat(),
                "end": (WEEK_START + timedelta(days=6)).isoformat(), "value": MARKER_VALUE, "unit": "count/min"}]}


def _parents_arrived(found: dict) -> bool:
    """Every span's parent is in the trace: processes export their spans in batches, so a
    child (a socket send on the user's replica) can reach Jaeger before its parent (the
    owner's deliver span, which ends when its Redis round trip returns)."""
    ids = {s["spanID"] for s in found["spans"]}
    return all(r["spanID"] in ids for s in found["spans"] for r in s["references"] if r["refType"] == "CHILD_OF")


def jaeger_trace(stack: LocalStack, trace_id: str, services: set[str], timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(f"{stack.jaeger.query_url}/api/traces/{trace_id}", timeout=5)
        if response.status_code == 200 and response.json().get("data"):
            (found,) = response.json()["data"]
            names = {p["serviceName"] for p in found["processes"].values()}
            operations = {s["operationName"] for s in found["spans"]}
            if services <= names and "websocket send" in operations and _parents_arrived(found):
                return found
        assert time.monotonic() < deadline, f"trace {trace_id} incomplete in Jaeger: {response.text[:500]}"
        time.sleep(0.5)


async def test_one_upload_is_one_trace_from_http_to_the_socket(stack: LocalStack) -> None:
    user = f"curie-{RUN}"
    ws = await open_socket(stack, user)
    try:
        response = await post(stack, user, week_of_counts())
        assert response.status_code == 202
        trace_id = response.json()["trace_id"]
        assert response.headers["X-Trace-Id"] == trace_id and len(trace_id) == 32
        assert (await next_prediction(ws, 60))["prediction"]["pat"] is not None
    finally:
        await ws.close()
    found = await asyncio.to_thread(jaeger_trace, stack, trace_id,
                                    {"ingest-gateway", "prediction-worker", "fanout-gateway"})
    spans = {s["spanID"]: s for s in found["spans"]}
    service = {sid: found["processes"][s["processID"]]["serviceName"] for sid, s in spans.items()}

    def parent(sid: str) -> str | None:
        refs = [r["spanID"] for r in spans[sid]["references"] if r["refType"] == "CHILD_OF"]
        return refs[0] if refs else None

    def chain(sid: str) -> list[str]:
        path = [sid]
        while (up := parent(path[-1])) is not None:
            assert up in spans, "a span's parent is missing from the trace"
            path.append(up)
        return path[::-1]

    (socket_send,) = [sid for sid, s in spans.items() if s["operationName"] == "websocket send"]
    path = chain(socket_send)
    names = [(service[sid], spans[sid]["operationName"]) for sid in path]
    # the request is the root, and each hop is caused by the one before it
    assert names[0][0] == "ingest-gateway" and spans[path[0]]["operationName"].startswith("POST")
    hops = [name for name, _ in names]
    first = {svc: hops.index(svc) for svc in ("ingest-gateway", "prediction-worker", "fanout-gateway")}
    assert first["ingest-gateway"] < first["prediction-worker"] < first["fanout-gateway"]
    operations = [op for _, op in names]
    for expected in ("health.samples.v1 send", "health.samples.v1 process", "predictions.v1 send",
                     "predictions.v1 deliver", "websocket send"):
        assert expected in operations, f"{expected} not on the causal path: {names}"
    starts = [spans[sid]["startTime"] for sid in path]
    assert starts == sorted(starts), f"spans out of causal order: {names}"
    model = [s for s in spans.values() if s["operationName"] == "model forward"]
    assert model and service[model[0]["spanID"]] == "prediction-worker"
    server = spans[path[0]]
    tags = {t["key"]: t["value"] for t in server["tags"]}
    assert tags.get("http.route") == "/v1/uploads" and int(tags.get("http.status_code",
                                                                     tags.get("http.response.status_code"))) == 202


async def _traffic(stack: LocalStack) -> None:
    """One of everything the dashboards watch."""
    user = f"traffic-{RUN}"
    body = week_of_counts()
    ws = await open_socket(stack, user)
    try:
        assert (await post(stack, user, body)).status_code == 202
        assert (await post(stack, user, body)).status_code == 200  # duplicate
        assert (await post(stack, user, {"upload_id": "nope"})).status_code == 422
        first = await next_prediction(ws, 60)
    finally:
        await ws.close()
    url = f"ws://127.0.0.1:{stack.ports.fanout}/v1/stream"
    async with connect(url) as again:  # a resume
        await again.send(json.dumps({"type": "resume", "token": stack.issuer.mint(user),
                                     "cursor": first["cursor"], "epoch": first["epoch"]}))
        await asyncio.wait_for(again.recv(), 5)
    async with connect(url) as bad:  # an authentication failure
        await bad.send(json.dumps({"type": "auth", "token": "not-a-token"}))
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(bad.recv(), 5)
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap_servers)
    await producer.start()
    try:  # a poison record for the dead-letter panel
        await producer.send_and_wait(HEALTH_SAMPLES, b"\x00poison", key=user.encode(),
                                     headers=SchemaSet.load()["io.circadia.health.HealthUpload"].headers())
    finally:
        await producer.stop()


def panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads((PROJECT_ROOT / "deploy/grafana/dashboards/circadia.json").read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] if panel["type"] != "row"
            for target in panel["targets"]]


async def _steady_traffic(stack: LocalStack) -> None:
    """A small upload for the traffic user (whose window holds a week of counts, so the model
    runs: this stack recomputes the week's blocks for every result): keeps the [1m] rates of
    the latency panels above zero while the test polls."""
    user = f"traffic-{RUN}"
    start = WEEK_START + timedelta(days=6, hours=12)
    body = {"upload_id": str(uuid.uuid4()), "device": {"id": "gt3x", "model": "GT3X+", "os": "fw 4"},
            "samples": [{"type": "activity_count", "start": start.isoformat(),
                         "end": (start + timedelta(minutes=1)).isoformat(), "value": 5, "unit": "count"}]}
    ws = await open_socket(stack, user)
    try:
        await next_prediction(ws, 10)  # the latest, on connect
        assert (await post(stack, user, body)).status_code == 202
        await next_prediction(ws, 30)
    finally:
        await ws.close()


async def test_every_dashboard_panel_answers_from_the_live_prometheus(stack: LocalStack) -> None:
    await _traffic(stack)
    queries = panel_queries()
    assert len(queries) >= 20
    deadline = time.monotonic() + 90
    while True:
        await _steady_traffic(stack)
        failing = []
        for title, expr in queries:
            response = await asyncio.to_thread(httpx.get, f"{stack.prometheus.url}/api/v1/query",
                                               params={"query": expr}, timeout=10)
            body = response.json()
            if body.get("status") != "success":
                failing.append((title, expr, body.get("error")))
                continue
            values = [float(series["value"][1]) for series in body["data"]["result"]]
            if not values or not any(math.isfinite(v) for v in values):
                failing.append((title, expr, "no data"))
        if not failing:
            return
        errors = [f for f in failing if f[2] != "no data"]
        assert not errors, f"panel queries that Prometheus refuses: {errors}"
        assert time.monotonic() < deadline, f"panels without data: {failing}"
        await asyncio.sleep(2)


def test_logs_are_json_with_trace_ids_and_never_carry_tokens_or_health_values(stack: LocalStack) -> None:
    lines = []
    for log in sorted((stack.root / "logs").glob("*.log")):
        lines += [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    entries = []
    for line in lines:
        if line.startswith("{"):
            entries.append(json.loads(line))
    assert len(entries) > 20
    traced = [e for e in entries if e.get("msg") in ("upload accepted", "upload applied", "prediction published")]
    assert traced and all(len(e.get("trace_id", "")) == 32 and len(e.get("span_id", "")) == 16 for e in traced)
    text = "\n".join(lines)
    assert str(MARKER_VALUE) not in text
    assert "eyJ" not in text  # no JWT (token) in any log line
    assert "Bearer " not in text
