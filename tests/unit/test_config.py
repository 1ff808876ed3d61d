"""Settings that refuse to be unsafe: every rule, and one message that lists them all."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from circadia.config import (
    GOOGLE_SECURETOKEN_CERTS_URL,
    AuthSettings,
    RedisSettings,
    ServiceSettings,
    UnsafeConfiguration,
    load,
    resolve,
    weak_secret,
)
from circadia.secrets import Secret, SecretResolver
from ingest_gateway.settings import IngestSettings

STRONG = "k3y-" + "x7Qp9ZtL2mWv"


def secret(name: str, value: str = STRONG) -> Secret:
    return Secret(name, value, f"file:/run/secrets/{name}")


def safe_production(**overrides: object) -> IngestSettings:
    options: dict[str, object] = {"firebase_project_id": "p", "kafka_sasl_username": "ingest",
                                  "user_keys_addr": "https://bao.internal:8200"}
    options.update(overrides)
    return IngestSettings(**options)


SAFE_SECRETS = {"kafka_sasl_password": secret("kafka_sasl_password"), "sentry_dsn": None,
                "redis_password": secret("redis_password"), "user_keys_token": secret("user_keys_token")}


def test_the_production_defaults_are_safe_once_secrets_are_provided() -> None:
    settings = safe_production()
    assert settings.env == "production" and settings.kafka_security_protocol == "SASL_SSL"
    assert settings.redis_url.startswith("rediss://") and settings.secrets_dir == Path("/run/secrets")
    assert settings.firebase_certs_url == GOOGLE_SECURETOKEN_CERTS_URL
    assert settings.problems(SAFE_SECRETS) == []


@pytest.mark.parametrize(("overrides", "secrets", "problem"), [
    ({"auth_dev_issuer": True, "firebase_certs_url": "file:///tmp/c.json"}, {}, "development token issuer"),
    ({"debug": True}, {}, "CIRCADIA_DEBUG=true is refused in production"),
    ({"kafka_security_protocol": "PLAINTEXT"}, {}, "PLAINTEXT sends data in plaintext"),
    ({"kafka_security_protocol": "SASL_PLAINTEXT"}, {}, "SASL_PLAINTEXT sends data in plaintext"),
    ({"kafka_sasl_username": ""}, {}, "CIRCADIA_KAFKA_SASL_USERNAME is empty"),
    ({}, {"kafka_sasl_password": None}, "the kafka_sasl_password secret is missing"),
    ({}, {"redis_password": None}, "the redis_password secret is missing in production"),
    ({}, {"redis_password": secret("redis_password", "changeme")}, "is a well-known default"),
    ({}, {"kafka_sasl_password": secret("kafka_sasl_password", "short1")}, "shorter than 12 characters"),
    ({}, {"redis_password": secret("redis_password", "")}, "is empty"),
    ({}, {"redis_password": secret("redis_password", "aaaaaaaaaaaaaaaa")}, "a repeated character"),
    ({"redis_url": "redis://redis:6379/0"}, {}, "redis:// (plaintext)"),
    ({"redis_url": "rediss://user:pw@redis:6379/0"}, {}, "carries credentials"),
    ({"ingest_cors_origins": ["*"]}, {}, "contains '*'"),
    ({"user_keys_addr": None}, {}, "CIRCADIA_USER_KEYS_ADDR is unset"),
    ({"user_keys_addr": "http://bao:8200"}, {}, "not https://"),
    ({}, {"user_keys_token": None}, "the user_keys_token secret is missing"),
    ({}, {"user_keys_token": secret("user_keys_token", "root")}, "is a well-known default"),
])
def test_each_unsafe_setting_is_named(overrides: dict, secrets: dict, problem: str) -> None:
    found = safe_production(**overrides).problems({**SAFE_SECRETS, **secrets})
    assert any(problem in line for line in found), found


def test_development_allows_what_production_refuses_but_not_an_unnamed_issuer() -> None:
    dev = safe_production(env="development", debug=True, kafka_security_protocol="PLAINTEXT",
                          redis_url="redis://127.0.0.1:6379/0", ingest_cors_origins=["*"],
                          firebase_certs_url="file:///tmp/c.json", auth_dev_issuer=True, user_keys_addr=None)
    assert dev.problems({"kafka_sasl_password": None, "sentry_dsn": None, "redis_password": None}) == []
    unnamed = safe_production(env="development", kafka_security_protocol="PLAINTEXT",
                              firebase_certs_url="file:///tmp/c.json")
    assert any("needs CIRCADIA_AUTH_DEV_ISSUER=true" in p for p in unnamed.problems({}))


@pytest.mark.parametrize(("value", "reason"), [("", "empty"), ("Password", "a well-known default"),
                                               ("abc123", "shorter than 12 characters"),
                                               ("abababababab", "a repeated character"), (STRONG, None)])
def test_weak_secrets(value: str, reason: str | None) -> None:
    assert weak_secret(value) == reason


def test_load_lists_every_problem_in_one_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name, value in {"CIRCADIA_FIREBASE_PROJECT_ID": "p", "CIRCADIA_DEBUG": "true",
                        "CIRCADIA_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT", "CIRCADIA_REDIS_URL": "redis://r:6379/0",
                        "CIRCADIA_SECRETS_DIR": str(tmp_path)}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(UnsafeConfiguration) as refused:
        load("ingest-gateway", IngestSettings)
    message = str(refused.value.code)
    assert message.startswith("ingest-gateway refuses to start (production):")
    for expected in ("CIRCADIA_DEBUG", "PLAINTEXT", "redis_password secret is missing", "redis:// (plaintext)"):
        assert expected in message
    assert "CIRCADIA_USER_KEYS_ADDR is unset" in message
    assert message.count("\n  - ") == 5


def test_invalid_values_are_reported_by_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CIRCADIA_FIREBASE_PROJECT_ID", "p")
    monkeypatch.setenv("CIRCADIA_INGEST_PORT", "not-a-port")
    with pytest.raises(UnsafeConfiguration, match="ingest_port"):
        load("ingest-gateway", IngestSettings)


def test_secrets_come_from_env_then_files(tmp_path: Path) -> None:
    (tmp_path / "redis_password").write_text("from-the-file-123\n")
    (tmp_path / "kafka_sasl_password").write_text("file-loses-to-env")
    resolver = SecretResolver(secrets_dir=tmp_path, environ={"CIRCADIA_KAFKA_SASL_PASSWORD": "from-the-env-456"})
    found = resolver.resolve(["redis_password", "kafka_sasl_password", "sentry_dsn"])
    assert found["redis_password"].value == "from-the-file-123"
    assert found["redis_password"].source == f"file:{tmp_path / 'redis_password'}"
    assert found["kafka_sasl_password"].source == "env:CIRCADIA_KAFKA_SASL_PASSWORD"
    assert found["sentry_dsn"] is None
    assert "from-the-file" not in repr(found["redis_password"])  # values never in a repr


def test_effective_configuration_redacts_secrets(tmp_path: Path) -> None:
    (tmp_path / "redis_password").write_text("never-print-me-123")
    config = resolve("ingest-gateway", safe_production(secrets_dir=tmp_path))
    shown = config.settings.effective(config.secrets)
    assert "never-print-me-123" not in str(shown)
    assert shown["redis_password"].startswith("<secret ") and shown["kafka_sasl_password"] == "<unset>"


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


def test_every_service_declares_its_secrets() -> None:
    assert set(ServiceSettings.SECRETS) == {"kafka_sasl_password", "sentry_dsn", "user_keys_token"}
    assert set(RedisSettings.SECRETS) == {"kafka_sasl_password", "sentry_dsn", "user_keys_token", "redis_password"}
