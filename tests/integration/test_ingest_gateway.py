"""The ingest gateway against real Kafka and Redis: each status path, and what a 202 means."""

from __future__ import annotations

import asyncio
import gzip
import io
import logging
import socket
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import fastavro
import httpx
import pytest
import redis
from aiokafka import AIOKafkaConsumer, TopicPartition

from circadia.avro import HEADER_FINGERPRINT, SchemaSet, header
from circadia.topics import HEALTH_SAMPLES
from circadia_dev.devkeys import DevIssuer
from circadia_dev.devstack.redis import LocalRedis
from ingest_gateway.body import AVRO
from tests.conftest import free_port
from tests.integration.conftest import Launcher

SCHEMAS = SchemaSet.load()
UPLOAD = SCHEMAS["io.circadia.health.HealthUpload"]
REQUEST = SCHEMAS["io.circadia.health.UploadRequest"]
@pytest.fixture(scope="module")
def client(launch: Launcher) -> Iterator[httpx.Client]:
    with launch(ingest_max_body_bytes=64 * 1024, ingest_max_decompressed_bytes=256 * 1024,
                ingest_max_samples=100) as client:
        yield client


def minute(i: int) -> datetime:
    base = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
    return base + timedelta(minutes=i)


def upload_body(n: int = 3, **extra: object) -> dict:
    return {
        "upload_id": str(uuid.uuid4()),
        "device": {"id": "phone-1", "model": "Pixel 9", "os": "Android 16"},
        "samples": [{"type": "step_count", "start": minute(m).isoformat(), "end": minute(m + 1).isoformat(),
                     "value": 10 + m, "unit": "count"} for m in range(n)],
        **extra,
    }


def auth(issuer: DevIssuer, user: str = "user-ingest") -> dict[str, str]:
    return {"Authorization": f"Bearer {issuer.mint(user)}"}


async def _messages_for(bootstrap: str, upload_id: str) -> list:
    """Every record of ``upload_id`` on the topic. Everything the gateway acknowledged lies
    below the end offsets read here, so reading up to them finds every copy."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    found = []
    try:
        partitions = [TopicPartition(HEALTH_SAMPLES, p) for p in range(6)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for messages in (await consumer.getmany(timeout_ms=300)).values():
                found += [m for m in messages if header(m.headers, "upload_id") == upload_id.encode()]
            positions = [await consumer.position(tp) for tp in partitions]
            if all(position >= ends[tp] for position, tp in zip(positions, partitions, strict=True)):
                return found
    finally:
        await consumer.stop()
    raise AssertionError("could not read health.samples.v1 to its end")


def on_topic(bootstrap: str, upload_id: str) -> list:
    return asyncio.run(_messages_for(bootstrap, upload_id))


def test_202_means_the_record_is_in_kafka_keyed_by_the_token_user(
    client: httpx.Client, dev_issuer: DevIssuer, kafka_bootstrap: str
) -> None:
    body = upload_body(3)
    response = client.post("/v1/uploads", json=body, headers=auth(dev_issuer, "ada"))
    assert response.status_code == 202, response.text
    assert response.json()["upload_id"] == body["upload_id"] and response.json()["accepted"] == 3
    assert int(response.headers["RateLimit-Remaining"]) < int(response.headers["RateLimit-Limit"])
    (message,) = on_topic(kafka_bootstrap, body["upload_id"])
    assert message.key == b"ada"
    assert header(message.headers, HEADER_FINGERPRINT) == UPLOAD.fingerprint.encode()
    assert header(message.headers, "circadia.idempotency") == b"ledger"
    traceparent = header(message.headers, "traceparent")
    assert traceparent is not None and traceparent.split(b"-")[1].decode() == response.json()["trace_id"]
    record = SCHEMAS.decode(message.value, message.headers, UPLOAD)
    assert record["user_id"] == "ada"
    assert [s["value"] for s in record["samples"]] == [10.0, 11.0, 12.0]


def test_a_repeated_upload_is_200_duplicate_and_on_the_topic_once(
    client: httpx.Client, dev_issuer: DevIssuer, kafka_bootstrap: str
) -> None:
    body = upload_body(2)
    first = client.post("/v1/uploads", json=body, headers=auth(dev_issuer, "ada"))
    again = client.post("/v1/uploads", json=body, headers=auth(dev_issuer, "ada"))
    assert first.status_code == 202
    assert again.status_code == 200
    assert again.json() == {"upload_id": body["upload_id"], "accepted": 2, "duplicate": True}
    assert len(on_topic(kafka_bootstrap, body["upload_id"])) == 1


def test_concurrent_duplicates_publish_once(client: httpx.Client, dev_issuer: DevIssuer,
                                            kafka_bootstrap: str) -> None:
    body = upload_body(5)
    headers = auth(dev_issuer, "grace")

    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=str(client.base_url), timeout=30) as session:
            responses = await asyncio.gather(*(session.post("/v1/uploads", json=body, headers=headers)
                                               for _ in range(12)))
        return sorted(r.status_code for r in responses)

    assert asyncio.run(burst()) == [200] * 11 + [202]
    assert len(on_topic(kafka_bootstrap, body["upload_id"])) == 1


def test_the_same_upload_id_with_other_content_is_409(client: httpx.Client, dev_issuer: DevIssuer,
                                                      kafka_bootstrap: str) -> None:
    body = upload_body(2)
    assert client.post("/v1/uploads", json=body, headers=auth(dev_issuer)).status_code == 202
    body["samples"][0]["value"] = 99
    response = client.post("/v1/uploads", json=body, headers=auth(dev_issuer))
    assert response.status_code == 409 and response.json()["errors"][0]["loc"] == ["upload_id"]
    assert len(on_topic(kafka_bootstrap, body["upload_id"])) == 1


def test_the_same_upload_id_from_another_user_is_another_upload(client: httpx.Client,
                                                               dev_issuer: DevIssuer) -> None:
    body = upload_body(1)
    assert client.post("/v1/uploads", json=body, headers=auth(dev_issuer, "ada")).status_code == 202
    assert client.post("/v1/uploads", json=body, headers=auth(dev_issuer, "alan")).status_code == 202


def test_401_with_a_bearer_challenge_and_the_token_never_logged(
    client: httpx.Client, dev_issuer: DevIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    missing = client.post("/v1/uploads", json=upload_body())
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
    expired = dev_issuer.mint("ada", ttl=-120)
    with caplog.at_level(logging.DEBUG):
        bad = client.post("/v1/uploads", json=upload_body(), headers={"Authorization": f"Bearer {expired}"})
    assert bad.status_code == 401
    assert bad.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert bad.json() == {"error": "invalid_token",
                          "errors": [{"loc": ["header", "authorization"], "msg": "token expired"}]}
    assert expired not in caplog.text and expired.split(".")[2] not in caplog.text


def test_a_body_naming_another_user_is_403(client: httpx.Client, dev_issuer: DevIssuer) -> None:
    response = client.post("/v1/uploads", json=upload_body(user_id="mallory"), headers=auth(dev_issuer, "ada"))
    assert response.status_code == 403 and response.json()["errors"][0]["loc"] == ["user_id"]
    same = client.post("/v1/uploads", json=upload_body(user_id="ada"), headers=auth(dev_issuer, "ada"))
    assert same.status_code == 202


def test_field_errors_are_422_with_their_location(client: httpx.Client, dev_issuer: DevIssuer) -> None:
    body = upload_body(5)
    body["samples"][3]["value"] = -4
    response = client.post("/v1/uploads", json=body, headers=auth(dev_issuer))
    assert response.status_code == 422
    assert response.json() == {"error": "invalid_upload", "errors": [
        {"loc": ["samples", 3, "value"], "msg": "must be a finite, non-negative number"}]}
    too_many = client.post("/v1/uploads", json=upload_body(101), headers=auth(dev_issuer))
    assert too_many.status_code == 422
    assert too_many.json()["errors"] == [{"loc": ["samples"], "msg": "at most 100 samples per upload"}]


def test_bodies_over_the_limit_are_413_while_reading(client: httpx.Client, dev_issuer: DevIssuer) -> None:
    big = b"[" + b" " * (70 * 1024) + b"]"
    headers = {**auth(dev_issuer), "Content-Type": "application/json"}
    assert client.post("/v1/uploads", content=big, headers=headers).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while streaming
        for _ in range(8):
            yield b" " * 16 * 1024

    assert client.post("/v1/uploads", content=chunks(), headers=headers).status_code == 413


def test_gzip_is_accepted_and_a_zip_bomb_is_413(client: httpx.Client, dev_issuer: DevIssuer) -> None:
    headers = {**auth(dev_issuer), "Content-Type": "application/json", "Content-Encoding": "gzip"}
    body = upload_body(4)
    import json

    ok = client.post("/v1/uploads", content=gzip.compress(json.dumps(body).encode()), headers=headers)
    assert ok.status_code == 202 and ok.json()["accepted"] == 4
    bomb = gzip.compress(b" " * (50 * 1024 * 1024))  # 50 MiB of spaces in ~50 KiB
    assert len(bomb) < 64 * 1024
    response = client.post("/v1/uploads", content=bomb, headers=headers)
    assert response.status_code == 413 and response.json()["error"] == "decompressed_body_too_large"


def test_other_content_types_and_encodings_are_415(client: httpx.Client, dev_issuer: DevIssuer) -> None:
    text = client.post("/v1/uploads", content=b"{}", headers={**auth(dev_issuer), "Content-Type": "text/plain"})
    assert text.status_code == 415
    brotli = client.post("/v1/uploads", content=b"{}", headers={
        **auth(dev_issuer), "Content-Type": "application/json", "Content-Encoding": "br"})
    assert brotli.status_code == 415


def test_avro_bodies_take_the_same_path(client: httpx.Client, dev_issuer: DevIssuer,
                                        kafka_bootstrap: str) -> None:
    upload_id = uuid.uuid4()
    start = minute(0).astimezone(UTC)
    request = {"upload_id": str(upload_id), "user_id": None,
               "device": {"id": "band-1", "model": "Band 2", "os": "RTOS 3"},
               "samples": [{"type": "heart_rate", "start": start, "end": start, "utc_offset_minutes": 120,
                            "value": 58.0, "stage": None, "unit": "count/min"},
                           {"type": "sleep_analysis", "start": start, "end": start + timedelta(minutes=30),
                            "utc_offset_minutes": 120, "value": None, "stage": "asleep_rem", "unit": "stage"}]}
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, REQUEST.parsed, request)
    headers = {**auth(dev_issuer, "ada"), "Content-Type": AVRO}
    response = client.post("/v1/uploads", content=buffer.getvalue(), headers=headers)
    assert response.status_code == 202, response.text
    (message,) = on_topic(kafka_bootstrap, str(upload_id))
    record = SCHEMAS.decode(message.value, message.headers, UPLOAD)
    assert [(s["type"], s["value"], s["stage"], s["utc_offset_minutes"]) for s in record["samples"]] == [
        ("heart_rate", 58.0, None, 120), ("sleep_analysis", None, "asleep_rem", 120)]
    request["samples"][0]["value"] = 400.0  # the same domain rules as JSON
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, REQUEST.parsed, {**request, "upload_id": str(uuid.uuid4())})
    invalid = client.post("/v1/uploads", content=buffer.getvalue(), headers=headers)
    assert invalid.status_code == 422 and invalid.json()["errors"][0]["loc"] == ["samples", 0, "value"]
    garbage = client.post("/v1/uploads", content=b"\x02\xff\xff\xff\xff\x0f", headers=headers)
    assert garbage.status_code == 422 and garbage.json()["error"] == "invalid_avro"


def test_rate_limits_are_429_with_retry_after_per_user_and_per_address(
    launch: Launcher, dev_issuer: DevIssuer, redis_url: str
) -> None:
    keys = redis.Redis.from_url(redis_url)
    for key in keys.scan_iter("circadia:ratelimit*"):
        keys.delete(key)
    with launch(ingest_rate_limit_per_user="3/minute", ingest_rate_limit_per_ip="8/minute") as client:
        statuses = [client.post("/v1/uploads", json=upload_body(1), headers=auth(dev_issuer, "eager")).status_code
                    for _ in range(4)]
        assert statuses == [202, 202, 202, 429]
        refused = client.post("/v1/uploads", json=upload_body(1), headers=auth(dev_issuer, "eager"))
        assert refused.status_code == 429 and refused.json()["errors"][0]["loc"] == ["user"]
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert refused.headers["RateLimit-Limit"] == "3" and refused.headers["RateLimit-Remaining"] == "0"
        # another user still has quota; the address limit (8) counts every request before auth
        assert client.post("/v1/uploads", json=upload_body(1), headers=auth(dev_issuer, "calm")).status_code == 202
        statuses = [client.post("/v1/uploads", json=upload_body(1)).status_code for _ in range(3)]
        assert statuses == [401, 401, 429]  # requests 7 and 8 were answered, the 9th refused
        refused = client.post("/v1/uploads", json=upload_body(1))
        assert refused.status_code == 429 and refused.json()["errors"][0]["loc"] == ["client"]
    keys.close()


def test_unreachable_broker_is_503_with_retry_after_and_not_ready(launch: Launcher, dev_issuer: DevIssuer) -> None:
    with launch(ready=False, KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}") as client:
        assert client.get("/healthz").status_code == 200
        readiness = client.get("/readyz")
        assert readiness.status_code == 503 and readiness.json()["checks"]["kafka"] is False
        response = client.post("/v1/uploads", json=upload_body(), headers=auth(dev_issuer))
        assert response.status_code == 503
        assert response.headers["retry-after"].isdigit()
        assert "accepted" not in response.json()


def test_without_redis_uploads_are_stored_unchecked_and_checks_resume_when_it_returns(
    launch: Launcher, dev_issuer: DevIssuer, kafka_bootstrap: str, tmp_path: Path
) -> None:
    server = LocalRedis(tmp_path / "redis", port=free_port())
    server.start()
    try:
        with launch(redis_url=server.url) as client:
            assert client.get("/readyz").json()["degraded"] is False
            server.stop()
            readiness = client.get("/readyz")
            assert readiness.status_code == 200 and readiness.json() == {
                "ready": True, "degraded": True, "checks": {"kafka": True, "redis": False, "certificates": True}}
            body = upload_body(2)
            statuses = [client.post("/v1/uploads", json=body, headers=auth(dev_issuer)).status_code
                        for _ in range(2)]
            assert statuses == [202, 202]  # rate limit failed open; idempotency degraded
            copies = on_topic(kafka_bootstrap, body["upload_id"])
            assert len(copies) == 2
            assert {header(m.headers, "circadia.idempotency") for m in copies} == {b"unchecked"}
            metrics = client.get("/metrics").text
            assert 'circadia_ratelimit_unavailable_total{limit="ingest-user"}' in metrics

            server.start()
            fresh = upload_body(1)
            assert client.post("/v1/uploads", json=fresh, headers=auth(dev_issuer)).status_code == 202
            assert client.post("/v1/uploads", json=fresh, headers=auth(dev_issuer)).status_code == 200
            assert client.get("/readyz").json()["degraded"] is False
    finally:
        server.stop()


def test_the_served_openapi_document_is_the_committed_one(client: httpx.Client) -> None:
    import json

    committed = json.loads(Path("services/ingest_gateway/openapi.json").read_text())
    assert client.get("/openapi.json").json() == committed


def test_every_response_carries_security_headers_and_a_request_id(client: httpx.Client,
                                                                  dev_issuer: DevIssuer) -> None:
    responses = [client.post("/v1/uploads", json=upload_body(1), headers=auth(dev_issuer)),
                 client.post("/v1/uploads", json=upload_body(1)), client.get("/healthz"), client.get("/nowhere")]
    assert [r.status_code for r in responses] == [202, 401, 200, 404]
    for response in responses:
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert "default-src 'none'" in response.headers["content-security-policy"]
        assert len(response.headers["x-request-id"]) >= 8
    ours = client.get("/healthz", headers={"X-Request-Id": "trace-me-12345"})
    assert ours.headers["x-request-id"] == "trace-me-12345"
    hostile = client.get("/healthz", headers={"X-Request-Id": "<script>alert(1)</script>"})
    assert hostile.headers["x-request-id"] != "<script>alert(1)</script>"


def test_cors_answers_only_the_configured_origins(launch: Launcher) -> None:
    with launch(ingest_cors_origins=["https://app.example.org"]) as client:
        def preflight(origin: str) -> httpx.Response:
            return client.options("/v1/uploads", headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                                          "Access-Control-Request-Headers": "authorization"})

        allowed = preflight("https://app.example.org")
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example.org"
        refused = preflight("https://evil.example.com")
        assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers


def _raw_exchange(base_url: str, request: bytes, body: bytes = b"", *, then: bytes = b"") -> tuple[bytes, bytes]:
    """Send ``request`` (headers), then ``body`` and ``then`` on the same connection; return what
    came back before ``then`` was sent and after it (b"" when the server closed the connection)."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(request + body)
        first = _read_response(sock)
        if not then:
            return first, b""
        try:
            sock.sendall(then)
            return first, _read_response(sock)
        except (ConnectionResetError, BrokenPipeError):
            return first, b""


def _read_response(sock: socket.socket) -> bytes:
    """One HTTP response (headers and a Content-Length body), or b"" at EOF."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return head + b"\r\n\r\n" + rest


def test_an_over_limit_body_gets_a_readable_413_with_and_without_expect_100_continue(
    client: httpx.Client, dev_issuer: DevIssuer
) -> None:
    token = dev_issuer.mint("ada")
    size = 70 * 1024  # over the module's 64 KiB limit
    head = (f"POST /v1/uploads HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {size}\r\n").encode()
    probe = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n"
    # Expect: the 413 comes before any body byte, without "100 Continue", and the connection
    # closes, so the client's next request cannot be read as the body it never sent
    first, after = _raw_exchange(str(client.base_url), head + b"Expect: 100-continue\r\n\r\n", then=probe)
    assert first.startswith(b"HTTP/1.1 413") and b"100 Continue" not in first
    assert b"connection: close" in first.lower() and b'"body_too_large"' in first
    assert after == b""
    # no Expect, the whole body sent at once: the 413 is readable and the connection still serves
    first, after = _raw_exchange(str(client.base_url), head + b"\r\n", b" " * size, then=probe)
    assert first.startswith(b"HTTP/1.1 413") and b"connection: close" not in first.lower()
    assert after.startswith(b"HTTP/1.1 200")
