"""The circadia command line, without starting anything."""

from __future__ import annotations

from pathlib import Path

import pytest
from circadia import cli
from circadia.auth import CertificateSource, FirebaseTokenVerifier
from circadia.devstack.stack import LOCAL_PROJECT_ID, LocalStack


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
    assert capsys.readouterr().out.count("stopped") == 7  # redis, kafka, three services, jaeger, prometheus
    assert cli.main(["down"]) == 0
    assert "nothing was running" in capsys.readouterr().out


def test_demo_refuses_without_a_running_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CIRCADIA_LOCAL_DIR", str(tmp_path))
    assert cli.main(["demo"]) == 1
