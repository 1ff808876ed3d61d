"""The secret scanners of `make lint` catch a leak, and the repository passes them.

Each leak is made here at run time (a freshly generated RSA key, a random GitHub-style token),
so this file holds no secret-shaped literal for the scanners to trip over.
"""

from __future__ import annotations

import json
import secrets
import string
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from circadia_dev.paths import PROJECT_ROOT

BIN = Path(sys.executable).parent
GITLEAKS = BIN / "gitleaks"
CHECK_BASELINE = PROJECT_ROOT / "tools" / "secrets" / "check_baseline.py"
GITLEAKS_CONFIG = PROJECT_ROOT / ".gitleaks.toml"


def fake_private_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def fake_github_token() -> str:
    alphabet = string.ascii_letters + string.digits
    return "ghp" + "_" + "".join(secrets.choice(alphabet) for _ in range(36))


@pytest.fixture
def leak(tmp_path: Path) -> tuple[Path, str]:
    """A directory with one file that leaks a private key and a token; and the token."""
    token = fake_github_token()
    (tmp_path / "leaky").mkdir()
    (tmp_path / "leaky" / "settings_local.py").write_text(
        f'GITHUB_TOKEN = "{token}"\n\nSIGNING_KEY = """\n{fake_private_key()}"""\n')
    return tmp_path / "leaky", token


def run(*args: str | Path, cwd: Path = PROJECT_ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=120)


def gitleaks(mode: str, target: Path, report: Path) -> tuple[subprocess.CompletedProcess[str], list[dict]]:
    result = run(GITLEAKS, mode, "--redact", "--no-banner", "--config", GITLEAKS_CONFIG,
                 "--report-format", "json", "--report-path", report, target)
    return result, json.loads(report.read_text())


def test_detect_secrets_reports_a_leaked_key_and_token_without_printing_them(leak: tuple[Path, str]) -> None:
    directory, token = leak
    result = run(sys.executable, CHECK_BASELINE, directory / "settings_local.py")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Private Key" in result.stdout and "GitHub Token" in result.stdout, result.stdout
    assert token not in result.stdout + result.stderr


def test_gitleaks_reports_a_leaked_key_and_token_in_a_directory(leak: tuple[Path, str], tmp_path: Path) -> None:
    directory, token = leak
    result, findings = gitleaks("dir", directory, tmp_path / "report.json")
    assert result.returncode == 1, result.stderr
    assert {"private-key", "github-pat"} <= {f["RuleID"] for f in findings}, findings
    assert token not in result.stdout + result.stderr + (tmp_path / "report.json").read_text()


def test_gitleaks_finds_a_secret_that_was_committed_then_deleted(leak: tuple[Path, str], tmp_path: Path) -> None:
    repo, token = leak
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid", "-c", "commit.gpgsign=false"]
    for step in (["init", "-q"], ["add", "."], ["commit", "-qm", "add settings"],
                 ["rm", "-q", "settings_local.py"], ["commit", "-qm", "remove them again"]):
        assert run(*git, *step, cwd=repo).returncode == 0
    assert not (repo / "settings_local.py").exists()
    result, findings = gitleaks("git", repo, tmp_path / "report.json")
    assert result.returncode == 1, result.stderr
    assert {"private-key", "github-pat"} <= {f["RuleID"] for f in findings}, findings
    assert token not in (tmp_path / "report.json").read_text()


def test_the_tracked_files_hold_no_secret_beyond_the_audited_baseline() -> None:
    result = run(sys.executable, CHECK_BASELINE)
    assert result.returncode == 0, result.stdout + result.stderr
