"""Firebase ID token verification, with keys generated for the run."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from circadia.auth import (
    CertificateFetchError,
    CertificateSource,
    FirebaseTokenVerifier,
    InvalidTokenError,
)
from circadia_dev.devkeys import CERTS_FILE, DevIssuer

PROJECT = "circadia-test"


@pytest.fixture
def issuer(tmp_path: Path) -> DevIssuer:
    return DevIssuer.ensure(tmp_path / "keys", PROJECT)


@pytest.fixture
def verifier(issuer: DevIssuer) -> FirebaseTokenVerifier:
    return FirebaseTokenVerifier(PROJECT, CertificateSource(issuer.certs_url), clock_skew=5)


def claims(**overrides: object) -> dict:
    now = int(time.time())
    base = {"iss": f"https://securetoken.google.com/{PROJECT}", "aud": PROJECT, "sub": "user-1",
            "iat": now, "auth_time": now, "exp": now + 600}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


async def test_valid_token_yields_its_subject(issuer: DevIssuer, verifier: FirebaseTokenVerifier) -> None:
    verified = await verifier.verify(issuer.mint("user-1"))
    assert verified.user_id == "user-1"
    assert verified.expires_at > time.time()


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"aud": "another-project"}, "wrong audience"),
        ({"iss": "https://securetoken.google.com/another-project"}, "wrong issuer"),
        ({"exp": int(time.time()) - 60}, "token expired"),
        ({"sub": ""}, "sub must be a non-empty string"),
        ({"sub": "x" * 129}, "sub longer than 128 characters"),
        ({"iat": int(time.time()) + 3600}, "iat is in the future"),
        ({"auth_time": int(time.time()) + 3600}, "auth_time is in the future"),
        ({"auth_time": None}, "auth_time missing"),
    ],
)
async def test_claims_are_enforced(issuer: DevIssuer, verifier: FirebaseTokenVerifier,
                                   overrides: dict, reason: str) -> None:
    with pytest.raises(InvalidTokenError) as error:
        await verifier.verify(issuer.sign(claims(**overrides)))
    assert error.value.reason == reason


async def test_missing_subject_is_refused(issuer: DevIssuer, verifier: FirebaseTokenVerifier) -> None:
    with pytest.raises(InvalidTokenError):
        await verifier.verify(issuer.sign(claims(sub=None)))


async def test_unknown_kid_is_refused(issuer: DevIssuer, verifier: FirebaseTokenVerifier) -> None:
    with pytest.raises(InvalidTokenError) as error:
        await verifier.verify(issuer.sign(claims(), kid="not-a-current-kid"))
    assert error.value.reason == "kid does not name a current certificate"


async def test_only_rs256_is_accepted(verifier: FirebaseTokenVerifier) -> None:
    hs = jwt.encode(claims(), "a-shared-secret-of-sufficient-length", algorithm="HS256",
                    headers={"kid": "whatever"})
    with pytest.raises(InvalidTokenError, match="RS256"):
        await verifier.verify(hs)
    unsigned = jwt.encode(claims(), None, algorithm="none")
    with pytest.raises(InvalidTokenError, match="RS256"):
        await verifier.verify(unsigned)


async def test_token_signed_by_another_key_with_a_valid_kid_is_refused(
    issuer: DevIssuer, verifier: FirebaseTokenVerifier
) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    kid = (issuer.directory / "kid").read_text()
    forged = jwt.encode(claims(), pem, algorithm="RS256", headers={"kid": kid})
    with pytest.raises(InvalidTokenError, match="InvalidSignatureError"):
        await verifier.verify(forged)


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "Bearer x.y.z"])
async def test_malformed_tokens_are_refused(verifier: FirebaseTokenVerifier, garbage: str) -> None:
    with pytest.raises(InvalidTokenError):
        await verifier.verify(garbage)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_unknown_kid_refresh_is_rate_limited(issuer: DevIssuer) -> None:
    clock = Clock()
    source = CertificateSource(issuer.certs_url, default_max_age=3600, min_refresh_interval=30,
                               clock=clock)
    kid = (issuer.directory / "kid").read_text()
    assert await source.key(kid) is not None
    certs = issuer.directory / CERTS_FILE
    certs.write_text("{}")  # a refresh now would fail to parse: proves whether one happens
    clock.now += 5
    assert await source.key("unknown-kid") is None  # within the interval: no refetch
    clock.now += 30
    assert await source.key("unknown-kid") is None  # refetch attempted, failed, cache kept
    assert await source.key(kid) is not None


async def test_rotated_certificate_is_picked_up_after_max_age(tmp_path: Path) -> None:
    clock = Clock()
    first = DevIssuer.ensure(tmp_path / "first", PROJECT)
    second = DevIssuer.ensure(tmp_path / "second", PROJECT)
    served = tmp_path / "served.json"
    served.write_text((first.directory / CERTS_FILE).read_text())
    source = CertificateSource(served.as_uri(), default_max_age=60, min_refresh_interval=1,
                               clock=clock)
    verifier = FirebaseTokenVerifier(PROJECT, source)
    assert (await verifier.verify(first.mint("u"))).user_id == "u"
    merged = {**json.loads(served.read_text()), **json.loads((second.directory / CERTS_FILE).read_text())}
    served.write_text(json.dumps(merged))
    clock.now += 2  # the new kid is unknown: one early refresh is allowed
    assert (await verifier.verify(second.mint("v"))).user_id == "v"


async def test_cold_cache_with_unreachable_certificates_fails_clearly(issuer: DevIssuer,
                                                                     tmp_path: Path) -> None:
    missing = (tmp_path / "missing.json").as_uri()
    with pytest.raises(CertificateFetchError):
        await CertificateSource(missing).key("any")
    verifier = FirebaseTokenVerifier(PROJECT, CertificateSource(missing))
    with pytest.raises(InvalidTokenError, match="certificates unavailable"):
        await verifier.verify(issuer.mint("u"))


class CertificateServer:
    """A real HTTP endpoint shaped like Google's: JSON body, Cache-Control max-age."""

    def __init__(self, body: bytes, max_age: int) -> None:
        self.body, self.max_age, self.status, self.requests = body, max_age, 200, 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests += 1
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", f"public, max-age={server.max_age}, must-revalidate")
                self.end_headers()
                self.wfile.write(server.body if server.status == 200 else b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/certs"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


async def test_http_certificates_are_cached_for_max_age_and_kept_on_failure(issuer: DevIssuer) -> None:
    server = CertificateServer((issuer.directory / CERTS_FILE).read_bytes(), max_age=100)
    try:
        clock = Clock()
        source = CertificateSource(server.url, min_refresh_interval=1, clock=clock)
        kid = (issuer.directory / "kid").read_text()
        assert await source.key(kid) is not None
        clock.now += 99
        assert await source.key(kid) is not None
        assert server.requests == 1  # served from cache within max-age
        clock.now += 2
        server.status = 503
        assert await source.key(kid) is not None  # refresh failed, warm cache keeps serving
        assert server.requests == 2
    finally:
        server.close()


async def test_concurrent_first_verifications_share_one_fetch(issuer: DevIssuer) -> None:
    source = CertificateSource(issuer.certs_url)
    verifier = FirebaseTokenVerifier(PROJECT, source)
    tokens = [issuer.mint(f"user-{i}") for i in range(20)]
    import asyncio

    verified = await asyncio.gather(*(verifier.verify(token) for token in tokens))
    assert [v.user_id for v in verified] == [f"user-{i}" for i in range(20)]
