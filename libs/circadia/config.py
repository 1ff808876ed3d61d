"""Settings shared by every service; each service extends :class:`ServiceSettings`.

Values come from the environment (``CIRCADIA_*``; Kafka's bootstrap list also from the
conventional ``KAFKA_BOOTSTRAP_SERVERS``). Nothing is read at import time: a service
calls its settings class once, in its ``__main__``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

GOOGLE_SECURETOKEN_CERTS_URL = (
    "https://www.googleapis.com/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com"
)


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CIRCADIA_", extra="ignore", frozen=True)

    env: Literal["development", "production"] = "production"
    log_level: str = "INFO"
    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "CIRCADIA_KAFKA_BOOTSTRAP_SERVERS"),
        description="Comma-separated host:port list of Kafka brokers.",
    )
    kafka_replication_factor: int = Field(default=1, ge=1)
    sentry_dsn: SecretStr | None = Field(default=None, description="Sentry DSN; unset: no error reports.")

    def start_error_reporting(self, service: str) -> bool:
        from circadia.errors import configure_error_reporting

        dsn = self.sentry_dsn.get_secret_value() if self.sentry_dsn else None
        return configure_error_reporting(service, dsn, self.env)


class AuthSettings(ServiceSettings):
    """Settings of the services that verify Firebase ID tokens."""

    firebase_project_id: str = Field(min_length=1, description="Expected aud; iss is derived from it.")
    firebase_certs_url: str = Field(
        default=GOOGLE_SECURETOKEN_CERTS_URL,
        description="x509 certificate map (kid -> PEM); https:// or, for the local stack, file://.",
    )
    auth_dev_issuer: bool = Field(
        default=False,
        description="Trust a certificate map other than Google's (the local stack's own key). "
        "Development only: production refuses to start with it.",
    )
    auth_clock_skew_seconds: float = Field(default=30.0, ge=0, le=300)

    @model_validator(mode="after")
    def _issuer_is_explicit(self) -> AuthSettings:
        problems = []
        if self.firebase_certs_url != GOOGLE_SECURETOKEN_CERTS_URL and not self.auth_dev_issuer:
            problems.append(
                "CIRCADIA_FIREBASE_CERTS_URL is not Google's securetoken endpoint: that is a "
                "development issuer and needs CIRCADIA_AUTH_DEV_ISSUER=true"
            )
        if self.env == "production" and self.auth_dev_issuer:
            problems.append("CIRCADIA_AUTH_DEV_ISSUER=true is refused when CIRCADIA_ENV=production")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class RedisSettings(ServiceSettings):
    """Settings of the services that use Redis (rate limits, idempotency)."""

    redis_url: str = Field(default="redis://127.0.0.1:6379/0", description="redis:// or rediss:// URL.")
    redis_max_connections: int = Field(default=50, ge=1)
    redis_socket_timeout_seconds: float = Field(default=0.5, gt=0)
