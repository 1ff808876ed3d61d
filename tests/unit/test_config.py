"""Settings that refuse to be unsafe."""

from __future__ import annotations

import pytest
from circadia.config import GOOGLE_SECURETOKEN_CERTS_URL, AuthSettings
from pydantic import ValidationError


def test_google_certificates_need_no_flag() -> None:
    settings = AuthSettings(firebase_project_id="p")
    assert settings.firebase_certs_url == GOOGLE_SECURETOKEN_CERTS_URL
    assert settings.env == "production" and settings.auth_dev_issuer is False


def test_another_certificate_source_is_a_development_issuer_that_must_be_named() -> None:
    with pytest.raises(ValidationError, match="CIRCADIA_AUTH_DEV_ISSUER=true"):
        AuthSettings(firebase_project_id="p", firebase_certs_url="file:///tmp/certs.json", env="development")
    AuthSettings(firebase_project_id="p", firebase_certs_url="file:///tmp/certs.json", env="development",
                 auth_dev_issuer=True)


def test_production_refuses_the_development_issuer() -> None:
    with pytest.raises(ValidationError, match="refused when CIRCADIA_ENV=production"):
        AuthSettings(firebase_project_id="p", firebase_certs_url="file:///tmp/certs.json", auth_dev_issuer=True)


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CIRCADIA_FIREBASE_PROJECT_ID", "from-env")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    settings = AuthSettings()
    assert settings.firebase_project_id == "from-env"
    assert settings.kafka_bootstrap_servers == "k1:9092,k2:9092"


def test_project_id_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CIRCADIA_FIREBASE_PROJECT_ID", raising=False)
    with pytest.raises(ValidationError, match="firebase_project_id"):
        AuthSettings()
