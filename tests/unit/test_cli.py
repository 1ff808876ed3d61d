"""The circadia command line, without starting anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from circadia.auth import CertificateSource, FirebaseTokenVerifier
from circadia_dev import cli
from circadia_dev.devstack.stack import LOCAL_PROJECT_ID, LocalStack


async def test_token_is_accepted_by_the_verifier_the_stack_configures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CIRCADIA_LOCAL_DIR", str(tmp_path))
    assert cli.main(["token", "ada", "--ttl", "120"]) == 0
    token = capsys.readouterr().out.strip()
    env = LocalStack(tmp_path).environment()
    verifier = FirebaseTokenVerifier(env["CIRCADIA_FIREBASE_PROJECT_ID"],
                                     CertificateSource(env["CIRCADIA_FIREBASE_CERTS_URL"]))
    verified = await verifier.verify(token)
    assert verified.user_id == "ada" and env["CIRCADIA_FIREBASE_PROJECT_ID"] == LOCAL_PROJECT_ID


def test_dev_keys_are_private_to_the_user(tmp_path: Path) -> None:
    issuer = LocalStack(tmp_path).issuer
    assert (issuer.directory.stat().st_mode & 0o077) == 0
    assert ((issuer.directory / "signing-key.pem").stat().st_mode & 0o077) == 0


def test_status_of_a_stack_that_never_ran(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CIRCADIA_LOCAL_DIR", str(tmp_path))
    assert cli.main(["status"]) == 3
    # openbao, redis, kafka, three services, jaeger, prometheus
    assert capsys.readouterr().out.count("stopped") == 8
    assert cli.main(["down"]) == 0
    assert "nothing was running" in capsys.readouterr().out


def test_demo_refuses_without_a_running_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CIRCADIA_LOCAL_DIR", str(tmp_path))
    assert cli.main(["demo"]) == 1


def test_config_check_prints_redacted_settings_and_fails_on_problems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CIRCADIA_FIREBASE_PROJECT_ID", "p")
    monkeypatch.setenv("CIRCADIA_SECRETS_DIR", str(tmp_path))
    monkeypatch.setenv("CIRCADIA_KAFKA_SASL_USERNAME", "ingest")
    (tmp_path / "kafka_sasl_password").write_text("sasl-password-that-must-not-print")
    (tmp_path / "redis_password").write_text("changeme")
    assert cli.main(["config", "check", "--service", "ingest-gateway"]) == 1
    out = capfd.readouterr().out
    assert "sasl-password-that-must-not-print" not in out and "changeme" not in out
    assert "kafka_sasl_password = <secret " in out
    assert "PROBLEM  the redis_password secret" in out and "refuses to start (production)" in out
    (tmp_path / "redis_password").write_text("a-strong-redis-password-42")
    assert "PROBLEM  CIRCADIA_USER_KEYS_ADDR is unset" in out  # production seals every upload
    monkeypatch.setenv("CIRCADIA_USER_KEYS_ADDR", "https://bao.internal:8200")
    (tmp_path / "user_keys_token").write_text("a-transit-token-for-the-gateway")
    assert cli.main(["config", "check", "--service", "ingest-gateway"]) == 0
    assert "ok (production)" in capfd.readouterr().out


def test_config_check_reports_invalid_values(monkeypatch: pytest.MonkeyPatch,
                                             capfd: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CIRCADIA_WORKER_METRICS_PORT", "99999")
    assert cli.main(["config", "check", "--service", "prediction-worker"]) == 1
    assert "invalid  worker_metrics_port" in capfd.readouterr().out


def test_operator_commands_need_their_servers_named(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from circadia import ops

    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    with pytest.raises(SystemExit, match="KAFKA_BOOTSTRAP_SERVERS"):
        ops.main(["dlq", "list"])
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.delenv("CIRCADIA_USER_KEYS_ADDR", raising=False)
    assert ops.main(["erase", "someone"]) == 2
    assert "CIRCADIA_USER_KEYS_TOKEN" in capsys.readouterr().err
    assert ops.dead_letters("127.0.0.1:1", "list", "2026-11-25T10:00:00") == 2  # a time without a zone
