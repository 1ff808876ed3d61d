"""Secrets from a real OpenBao server, and their rotation while a service runs."""

from __future__ import annotations

import secrets
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import hvac
import pytest
import redis

from circadia.secrets import SecretResolver, VaultKV, VaultSettings
from circadia_dev.devkeys import DevIssuer
from circadia_dev.devstack.openbao import LocalOpenBao
from circadia_dev.devstack.redis import LocalRedis
from tests.conftest import free_port
from tests.integration.conftest import Launcher

SERVICE_PATH = "circadia/ingest-gateway"


@pytest.fixture(scope="module")
def approle(openbao: LocalOpenBao) -> tuple[str, str]:
    """An AppRole that may read only circadia's secrets (role id, secret id)."""
    admin = hvac.Client(url=openbao.url, token=openbao.root_token)
    admin.sys.enable_auth_method("approle")
    admin.sys.create_or_update_policy("circadia-ingest", 'path "secret/data/circadia/ingest-gateway" '
                                                         '{ capabilities = ["read"] }')
    admin.auth.approle.create_or_update_approle("ingest-gateway", token_policies=["circadia-ingest"],
                                                token_ttl="10m")
    role_id = admin.auth.approle.read_role_id("ingest-gateway")["data"]["role_id"]
    secret_id = admin.auth.approle.generate_secret_id("ingest-gateway")["data"]["secret_id"]
    return role_id, secret_id


def write(openbao: LocalOpenBao, **values: str) -> None:
    hvac.Client(url=openbao.url, token=openbao.root_token).secrets.kv.v2.create_or_update_secret(
        path=SERVICE_PATH, secret=values, mount_point="secret")


def test_vault_is_the_last_source_and_reports_where_secrets_came_from(openbao: LocalOpenBao, approle: tuple,
                                                                      tmp_path: Path) -> None:
    in_vault = secrets.token_urlsafe(12)  # generated for the run
    write(openbao, redis_password=in_vault, sentry_dsn="http://k@127.0.0.1:1/1")
    (tmp_path / "sentry_dsn").write_text("http://file@127.0.0.1:1/2")
    vault = VaultKV(VaultSettings(addr=openbao.url, path=SERVICE_PATH, role_id=approle[0], secret_id=approle[1]))
    found = SecretResolver(secrets_dir=tmp_path, vault=vault, environ={}).resolve(
        ["redis_password", "sentry_dsn", "kafka_sasl_password"])
    assert found["redis_password"].value == in_vault
    assert found["redis_password"].source == "vault:secret/circadia/ingest-gateway#redis_password"
    assert found["sentry_dsn"].source.startswith("file:")  # a mounted file wins over Vault
    assert found["kafka_sasl_password"] is None


def test_a_wrong_approle_fails_clearly(openbao: LocalOpenBao, approle: tuple) -> None:
    from circadia.secrets import SecretUnavailable

    vault = VaultKV(VaultSettings(addr=openbao.url, path=SERVICE_PATH, role_id=approle[0], secret_id="wrong"))
    with pytest.raises(SecretUnavailable, match="vault:secret/circadia/ingest-gateway"):
        SecretResolver(secrets_dir=None, vault=vault, environ={}).resolve(["redis_password"])


def upload(n: int = 1) -> dict:
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    return {"upload_id": str(uuid.uuid4()), "device": {"id": "d", "model": "m", "os": "o"},
            "samples": [{"type": "step_count", "start": (start + timedelta(minutes=i)).isoformat(),
                         "end": (start + timedelta(minutes=i + 1)).isoformat(), "value": 5, "unit": "count"}
                        for i in range(n)]}


def test_a_rotated_redis_password_is_used_without_a_restart(openbao: LocalOpenBao, approle: tuple,
                                                           launch: Launcher, dev_issuer: DevIssuer,
                                                           tmp_path: Path) -> None:
    first, second = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    server = LocalRedis(tmp_path / "redis", port=free_port())
    server.start()
    admin = redis.Redis.from_url(server.url)
    admin.config_set("requirepass", first)
    admin = redis.Redis.from_url(server.url, password=first)
    write(openbao, redis_password=first)
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "vault_secret_id").write_text(approle[1])
    headers = {"Authorization": f"Bearer {dev_issuer.mint('rotating-user')}"}
    try:
        with launch(redis_url=server.url, vault_addr=openbao.url, vault_role_id=approle[0],
                    secrets_dir=tmp_path / "secrets", secret_refresh_seconds=0.3) as client:
            assert client.get("/readyz").json()["checks"]["redis"] is True
            body = upload()
            assert [client.post("/v1/uploads", json=body, headers=headers).status_code for _ in range(2)] == [202, 200]

            admin.config_set("requirepass", second)  # Redis now wants the new password ...
            admin = redis.Redis.from_url(server.url, password=second)
            admin.client_kill_filter(_type="normal", skipme=True)  # ... from every connection
            assert client.get("/readyz").json()["checks"]["redis"] is False  # the gateway has the old one

            write(openbao, redis_password=second)  # the rotation reaches the secret store
            deadline = time.monotonic() + 10
            while client.get("/readyz").json()["checks"]["redis"] is not True:
                assert time.monotonic() < deadline, "the rotated password was never applied"
                time.sleep(0.2)
            body = upload()
            assert [client.post("/v1/uploads", json=body, headers=headers).status_code for _ in range(2)] == [202, 200]
            metrics = client.get("/metrics").text
            assert 'circadia_secret_rotations_total{name="redis_password"} 1.0' in metrics
    finally:
        server.stop()
