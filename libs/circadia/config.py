"""Settings shared by every service; each service extends :class:`ServiceSettings`.

Values come from the environment (``CIRCADIA_*``; Kafka's bootstrap list also from the
conventional ``KAFKA_BOOTSTRAP_SERVERS``). Nothing is read at import time: a service
calls its settings class once, in its ``__main__``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field
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


class AuthSettings(ServiceSettings):
    """Settings of the services that verify Firebase ID tokens."""

    firebase_project_id: str = Field(min_length=1, description="Expected aud; iss is derived from it.")
    firebase_certs_url: str = Field(
        default=GOOGLE_SECURETOKEN_CERTS_URL,
        description="x509 certificate map (kid -> PEM); https:// or, for the local stack, file://.",
    )
