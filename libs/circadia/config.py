"""Settings shared by every service; each service extends :class:`ServiceSettings`.

Values come from the environment (``CIRCADIA_*``; Kafka's bootstrap list also from the
conventional ``KAFKA_BOOTSTRAP_SERVERS``); secrets never do by default — they come from
``circadia.secrets`` (environment, ``/run/secrets`` files, Vault). Every field has a
production default, and ``problems()`` lists every unsafe setting at once: a service in
production refuses to start while the list is not empty (``load()``), and
``circadia config check`` prints it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from circadia.secrets import Secret, SecretResolver, VaultKV, VaultSettings, describe

GOOGLE_SECURETOKEN_CERTS_URL = (
    "https://www.googleapis.com/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com"
)
# values that are someone's default, or an example, somewhere
KNOWN_DEFAULT_SECRETS = frozenset({
    "changeme", "change-me", "password", "passw0rd", "secret", "admin", "root", "circadia", "redis", "kafka",
    "test", "example", "default", "12345678", "123456789012", "letmein", "devroot",
})
MIN_SECRET_LENGTH = 12


def weak_secret(value: str) -> str | None:
    """Why ``value`` is not acceptable as a production secret, or None."""
    if not value:
        return "empty"
    if value.lower() in KNOWN_DEFAULT_SECRETS:
        return "a well-known default"
    if len(value) < MIN_SECRET_LENGTH:
        return f"shorter than {MIN_SECRET_LENGTH} characters"
    if len(set(value)) <= 2:
        return "a repeated character"
    return None


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CIRCADIA_", extra="ignore", frozen=True)

    # names of the secrets this service reads through circadia.secrets
    SECRETS: ClassVar[tuple[str, ...]] = ("kafka_sasl_password", "sentry_dsn", "user_keys_token")

    env: Literal["development", "production"] = "production"
    debug: bool = Field(default=False, description="Verbose diagnostics; refused in production.")
    log_level: str = "INFO"
    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "CIRCADIA_KAFKA_BOOTSTRAP_SERVERS"),
        description="Comma-separated host:port list of Kafka brokers.",
    )
    kafka_replication_factor: int = Field(default=1, ge=1)
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"] = Field(
        default="SASL_SSL", description="Production requires TLS (SASL_SSL or SSL)."
    )
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256"] = "SCRAM-SHA-512"
    kafka_sasl_username: str = Field(default="",
                                     description="SCRAM user; its password is the kafka_sasl_password secret.")
    kafka_ssl_cafile: Path | None = Field(default=None, description="CA bundle for the brokers; system store if unset.")
    secrets_dir: Path = Field(default=Path("/run/secrets"), description="Mounted secret files, one per secret name.")
    secret_refresh_seconds: float = Field(default=30.0, gt=0, description="How often secrets are re-read for rotation.")
    vault_addr: str | None = Field(default=None, description="Vault/OpenBao URL; unset: no Vault source.")
    vault_mount: str = "secret"
    vault_path: str | None = Field(default=None, description="KV v2 path; default circadia/<service>.")
    vault_role_id: str | None = Field(default=None,
                                      description="AppRole role id (its secret id is the vault_secret_id secret).")
    user_keys_addr: str | None = Field(
        default=None, description="OpenBao/Vault URL of the transit engine holding each user's key "
        "(crypto-shredding; the user_keys_token secret authenticates). Required in production; unset in "
        "development: records are written in plaintext.")
    user_keys_mount: str = "transit"
    user_keys_cache_seconds: float = Field(default=3600.0, gt=0,
                                           description="How long data keys stay cached and in use.")
    user_keys_timeout_seconds: float = Field(default=2.0, gt=0, description="Per request to the key service.")

    def problems(self, secrets: Mapping[str, Secret | None]) -> list[str]:
        """Every unsafe or inconsistent setting; in production each one stops the service."""
        found = []
        sasl = self.kafka_security_protocol.startswith("SASL")
        if sasl and not self.kafka_sasl_username:
            found.append(f"CIRCADIA_KAFKA_SASL_USERNAME is empty but the protocol is {self.kafka_security_protocol}")
        if sasl and secrets.get("kafka_sasl_password") is None:
            found.append("the kafka_sasl_password secret is missing (CIRCADIA_KAFKA_SASL_PASSWORD, "
                         f"{self.secrets_dir}/kafka_sasl_password or Vault)")
        if self.user_keys_addr and secrets.get("user_keys_token") is None:
            found.append("CIRCADIA_USER_KEYS_ADDR is set but the user_keys_token secret is missing "
                         f"(CIRCADIA_USER_KEYS_TOKEN, {self.secrets_dir}/user_keys_token or Vault)")
        if self.env != "production":
            return found
        if self.debug:
            found.append("CIRCADIA_DEBUG=true is refused in production")
        if self.kafka_security_protocol in ("PLAINTEXT", "SASL_PLAINTEXT"):
            found.append(f"CIRCADIA_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} sends data in plaintext; "
                         "production requires SASL_SSL or SSL")
        if not self.user_keys_addr:
            found.append("CIRCADIA_USER_KEYS_ADDR is unset: production seals each user's data with the user's "
                         "own key (erasure by crypto-shredding) and needs the key service")
        elif not self.user_keys_addr.startswith("https://"):
            found.append("CIRCADIA_USER_KEYS_ADDR is not https://: data keys would cross the network in plaintext")
        for name, secret in secrets.items():
            if secret is None:
                continue
            reason = weak_secret(secret.value)
            if reason is not None:
                found.append(f"the {name} secret ({secret.source}) is {reason}")
        return found

    def start_error_reporting(self, service: str, secrets: Mapping[str, Secret | None]) -> bool:
        from circadia.errors import configure_error_reporting

        dsn = secrets.get("sentry_dsn")
        return configure_error_reporting(service, dsn.value if dsn else None, self.env)

    def vault(self, service: str) -> VaultKV | None:
        if not self.vault_addr:
            return None
        bootstrap = SecretResolver(secrets_dir=self.secrets_dir).resolve(["vault_token", "vault_secret_id"])
        token, secret_id = bootstrap["vault_token"], bootstrap["vault_secret_id"]
        return VaultKV(VaultSettings(
            addr=self.vault_addr, mount=self.vault_mount, path=self.vault_path or f"circadia/{service}",
            token=token.value if token else None, role_id=self.vault_role_id,
            secret_id=secret_id.value if secret_id else None,
        ))

    def effective(self, secrets: Mapping[str, Secret | None]) -> dict[str, Any]:
        """The configuration as it applies, secrets shown only by source and version."""
        shown: dict[str, Any] = {name: str(value) if isinstance(value, Path) else value
                                 for name, value in self.model_dump().items()}
        shown.update({name: describe(secret) for name, secret in secrets.items()})
        return shown


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

    def problems(self, secrets: Mapping[str, Secret | None]) -> list[str]:
        found = super().problems(secrets)
        if self.firebase_certs_url != GOOGLE_SECURETOKEN_CERTS_URL and not self.auth_dev_issuer:
            found.append("CIRCADIA_FIREBASE_CERTS_URL is not Google's securetoken endpoint: that is a "
                         "development issuer and needs CIRCADIA_AUTH_DEV_ISSUER=true")
        if self.env == "production" and self.auth_dev_issuer:
            found.append("CIRCADIA_AUTH_DEV_ISSUER=true (a development token issuer) is refused in production")
        return found


class RedisSettings(ServiceSettings):
    """Settings of the services that use Redis (rate limits, idempotency, history)."""

    SECRETS: ClassVar[tuple[str, ...]] = (*ServiceSettings.SECRETS, "redis_password")

    redis_url: str = Field(default="rediss://redis:6379/0", description="redis:// or rediss:// URL, no password in it.")
    redis_max_connections: int = Field(default=100, ge=1)
    redis_socket_timeout_seconds: float = Field(default=0.5, gt=0)

    def problems(self, secrets: Mapping[str, Secret | None]) -> list[str]:
        found = super().problems(secrets)
        if "@" in self.redis_url.split("//", 1)[-1].split("/", 1)[0]:
            found.append("CIRCADIA_REDIS_URL carries credentials; use the redis_password secret instead")
        if self.env == "production":
            if secrets.get("redis_password") is None:
                found.append("the redis_password secret is missing in production")
            if self.redis_url.startswith("redis://"):
                found.append("CIRCADIA_REDIS_URL uses redis:// (plaintext); production requires rediss://")
        return found


S = TypeVar("S", bound=ServiceSettings)


@dataclass(frozen=True)
class ServiceConfig:
    """A service's settings, where its secrets come from, and their current values."""

    service: str
    settings: Any
    resolver: SecretResolver
    secrets: dict[str, Secret | None]

    def secret(self, name: str) -> str | None:
        secret = self.secrets.get(name)
        return secret.value if secret is not None else None


class UnsafeConfiguration(SystemExit):
    pass


def resolve(service: str, settings: S) -> ServiceConfig:
    resolver = SecretResolver(secrets_dir=settings.secrets_dir, vault=settings.vault(service))
    return ServiceConfig(service, settings, resolver, resolver.resolve(type(settings).SECRETS))


def load(service: str, settings_class: type[S]) -> ServiceConfig:
    """Settings and secrets for a service's ``__main__``; exits with every problem listed."""
    try:
        settings = settings_class()
    except ValidationError as exc:
        lines = [f"  - {'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()]
        raise UnsafeConfiguration(f"{service}: invalid configuration:\n" + "\n".join(lines)) from None
    config = resolve(service, settings)
    problems = settings.problems(config.secrets)
    if problems:
        listing = "\n".join(f"  - {problem}" for problem in problems)
        raise UnsafeConfiguration(f"{service} refuses to start ({settings.env}):\n{listing}")
    return config
