"""A real error event from a running service reaches a Sentry-protocol receiver, scrubbed."""

from __future__ import annotations

import gzip
import json
import os
import secrets
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from circadia.errors import FILTERED, scrub_event
from circadia_dev.devkeys import DevIssuer
from tests.conftest import free_port

MARKER = 187.654321  # a heart rate that must not leave the process


class SentryReceiver:
    """Accepts Sentry envelopes (POST /api/<project>/envelope/) and keeps their items."""

    def __init__(self) -> None:
        self.raw: list[bytes] = []
        self.items: list[tuple[dict, dict]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver.raw.append(body)
                lines = body.split(b"\n")
                for header, payload in zip(lines[1::2], lines[2::2], strict=False):  # a trailing line may be alone
                    if header.strip():
                        receiver.items.append((json.loads(header), json.loads(payload)))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.dsn = f"http://public0123456789@127.0.0.1:{self.server.server_port}/42"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[dict]:
        return [payload for header, payload in self.items if header.get("type") == "event"]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[SentryReceiver]:
    receiver = SentryReceiver()
    yield receiver
    receiver.close()


def test_an_error_in_the_ingest_gateway_arrives_scrubbed(receiver: SentryReceiver, dev_issuer: DevIssuer,
                                                        redis_url: str, tmp_path) -> None:
    port = free_port()
    env = {**os.environ, "CIRCADIA_ENV": "development", "CIRCADIA_FIREBASE_PROJECT_ID": dev_issuer.project_id,
           "CIRCADIA_FIREBASE_CERTS_URL": dev_issuer.certs_url, "CIRCADIA_AUTH_DEV_ISSUER": "true",
           "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",  # nothing there: every upload fails
           "CIRCADIA_REDIS_URL": redis_url, "CIRCADIA_INGEST_PORT": str(port), "CIRCADIA_SENTRY_DSN": receiver.dsn,
           "CIRCADIA_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT", "CIRCADIA_SECRETS_DIR": str(tmp_path)}
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    log = (tmp_path / "ingest.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "ingest_gateway"], env=env, stdout=log, stderr=log)
    token = dev_issuer.mint(f"user-{uuid.uuid4().hex[:6]}")
    start = datetime.now(UTC) - timedelta(hours=1)
    body = {"upload_id": str(uuid.uuid4()), "device": {"id": "watch", "model": "m", "os": "o"},
            "samples": [{"type": "heart_rate", "start": start.isoformat(), "end": start.isoformat(),
                         "value": MARKER, "unit": "count/min"}]}
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and process.poll() is None, (tmp_path / "ingest.log").read_text()
                time.sleep(0.2)
        response = httpx.post(f"http://127.0.0.1:{port}/v1/uploads", json=body,
                              headers={"Authorization": f"Bearer {token}", "Cookie": "session=s3cr3t-cookie"})
        assert response.status_code == 503
        deadline = time.monotonic() + 20
        while not [e for e in receiver.events() if "upload not stored" in json.dumps(e)]:
            assert time.monotonic() < deadline, f"no event reached the receiver: {receiver.events()}"
            time.sleep(0.2)
    finally:
        process.terminate()
        process.wait(20)
        log.close()
    (event,) = [e for e in receiver.events() if "upload not stored" in json.dumps(e)]  # the error arrived ...
    assert event["environment"] == "development" and event["release"].startswith("circadia@")
    assert event["tags"]["service"] == "ingest-gateway"
    assert "BrokerUnavailable" in json.dumps(event.get("exception", {}))
    assert all(e["logger"] != "aiokafka" for e in receiver.events())  # reconnect noise is not reported
    everything = b"\n".join(receiver.raw).decode()
    assert token not in everything and token.split(".")[1] not in everything  # ... without the token,
    assert str(MARKER) not in everything  # the health values,
    assert "s3cr3t-cookie" not in everything  # cookies,
    assert "vars" not in json.dumps(event.get("exception", {}))  # or local variables


def test_the_scrubber_keeps_only_the_pseudonymous_id() -> None:
    token = ".".join("eyJ" + secrets.token_urlsafe(12) for _ in range(3))  # JWT-shaped, made for the run
    event = {"user": {"id": "u-1", "email": "a@b.c", "ip_address": "10.0.0.1"},
             "request": {"headers": {"Authorization": f"Bearer {token}"}, "data": {"samples": [1]}},
             "extra": {"samples": [{"value": 70}], "note": f"failed with {token}", "upload_id": "x",
                       "first": {"type": "heart_rate", "value": 70, "unit": "count/min"}},
             "exception": {"values": [{"type": "ValueError", "value": "bad input"}]},
             "breadcrumbs": {"values": [{"message": token}]}}
    scrubbed = scrub_event(event)
    assert scrubbed["user"] == {"id": "u-1"}
    assert scrubbed["request"] == {"headers": {"Authorization": FILTERED}}
    assert scrubbed["extra"] == {"samples": FILTERED, "note": f"failed with {FILTERED}", "upload_id": "x",
                                 "first": FILTERED}
    assert scrubbed["exception"] == {"values": [{"type": "ValueError", "value": "bad input"}]}
    assert token not in json.dumps(scrubbed)
