"""Secrets from, in order: the environment, mounted files, Vault KV v2 (OpenBao or Vault).

``CIRCADIA_<NAME>`` in the environment wins; else the file ``<secrets_dir>/<name>``
(``/run/secrets`` by default, where orchestrators mount secrets); else the key ``<name>``
of the Vault KV v2 secret ``<mount>/<path>`` (token or AppRole auth). Each resolved
secret knows where it came from and a version: a short hash of its value, never the
value itself, which is what logs and the configuration audit show.

``SecretWatcher`` re-resolves the secrets every ``interval`` seconds and calls the
callbacks of those whose value changed, so services rotate credentials without a restart.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import Counter

log = logging.getLogger(__name__)

ROTATIONS = Counter("circadia_secret_rotations_total", "Secrets that changed and were applied, by name.", ["name"])
FAILURES = Counter("circadia_secret_refresh_failures_total", "Secret refreshes that failed, by source.", ["source"])


class SecretUnavailable(RuntimeError):
    """A secret source could not be read (Vault unreachable, permission denied, ...)."""


@dataclass(frozen=True)
class Secret:
    name: str
    value: str = field(repr=False)
    source: str

    @property
    def version(self) -> str:
        """A short, non-reversible fingerprint of the value (for logs and audit events)."""
        return hashlib.sha256(self.value.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class VaultSettings:
    addr: str
    mount: str = "secret"
    path: str = "circadia"
    token: str | None = field(default=None, repr=False)
    role_id: str | None = None
    secret_id: str | None = field(default=None, repr=False)
    timeout: float = 5.0


class VaultKV:
    """One KV v2 secret of Vault/OpenBao, read with a token or by AppRole login."""

    def __init__(self, settings: VaultSettings) -> None:
        import hvac

        self._settings = settings
        # types-hvac says int; hvac hands the timeout to requests, which takes seconds as a float
        self._client = hvac.Client(url=settings.addr, token=settings.token,
                                   timeout=settings.timeout)  # type: ignore[arg-type]

    @property
    def location(self) -> str:
        return f"vault:{self._settings.mount}/{self._settings.path}"

    def read(self) -> dict[str, str]:
        import hvac.exceptions
        import requests

        try:
            if self._settings.role_id and not self._client.is_authenticated():
                self._client.auth.approle.login(role_id=self._settings.role_id, secret_id=self._settings.secret_id)
            response = self._client.secrets.kv.v2.read_secret_version(
                path=self._settings.path, mount_point=self._settings.mount, raise_on_deleted_version=True)
        except hvac.exceptions.InvalidPath:
            return {}
        except (hvac.exceptions.VaultError, requests.RequestException) as exc:
            raise SecretUnavailable(f"{self.location}: {type(exc).__name__}: {exc}") from exc
        data = response["data"]["data"]
        return {str(k): str(v) for k, v in data.items()}


class SecretResolver:
    def __init__(self, *, secrets_dir: Path | None, vault: VaultKV | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        self._dir = secrets_dir
        self._vault = vault
        self._environ = environ if environ is not None else os.environ

    def resolve(self, names: Sequence[str]) -> dict[str, Secret | None]:
        """Every named secret from the first source that has it (None when none has)."""
        found: dict[str, Secret | None] = {}
        vault_data: dict[str, str] | None = None
        for name in names:
            variable = f"CIRCADIA_{name.upper()}"
            if self._environ.get(variable):
                found[name] = Secret(name, self._environ[variable], f"env:{variable}")
                continue
            path = self._dir / name if self._dir is not None else None
            if path is not None and path.is_file():
                found[name] = Secret(name, path.read_text().strip(), f"file:{path}")
                continue
            if self._vault is not None:
                if vault_data is None:
                    vault_data = self._vault.read()
                if vault_data.get(name):
                    found[name] = Secret(name, vault_data[name], f"{self._vault.location}#{name}")
                    continue
            found[name] = None
        return found


Callback = Callable[[Secret | None], Awaitable[None]]


class SecretWatcher:
    """Polls the sources and applies changed secrets through the registered callbacks."""

    def __init__(self, resolver: SecretResolver, current: Mapping[str, Secret | None], interval: float) -> None:
        self._resolver = resolver
        self._current = dict(current)
        self._interval = interval
        self._callbacks: dict[str, list[Callback]] = {}
        self._task: asyncio.Task[None] | None = None

    def on_change(self, name: str, callback: Callback) -> None:
        self._callbacks.setdefault(name, []).append(callback)

    def current(self, name: str) -> Secret | None:
        return self._current.get(name)

    async def start(self) -> None:
        if self._callbacks:
            self._task = asyncio.create_task(self._run(), name="secret-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.refresh()
            except Exception:  # the watcher must outlive any one bad refresh
                FAILURES.labels("watcher").inc()
                log.error("secret refresh crashed; trying again next interval", exc_info=True)

    async def refresh(self) -> list[str]:
        """Re-resolve now; returns the names whose new values were applied."""
        try:
            latest = await asyncio.to_thread(self._resolver.resolve, list(self._callbacks))
        except SecretUnavailable as exc:
            FAILURES.labels(str(exc).split(":", 1)[0]).inc()
            log.warning("secret refresh failed; keeping the current values", extra={"error": str(exc)})
            return []
        applied = []
        for name, secret in latest.items():
            before = self._current.get(name)
            if (before.value if before else None) == (secret.value if secret else None):
                continue
            for callback in self._callbacks.get(name, []):
                try:
                    await callback(secret)
                except Exception:  # one failing client must not stop the others from rotating
                    log.error("applying a rotated secret failed", exc_info=True, extra={"secret": name})
                    break
            else:
                self._current[name] = secret
                applied.append(name)
                ROTATIONS.labels(name).inc()
                log.info("secret rotated", extra={"secret": name, "version": secret.version if secret else None,
                                                  "source": secret.source if secret else None})
        return applied


def describe(secret: Secret | None) -> str:
    return "<unset>" if secret is None else f"<secret {secret.version} from {secret.source}>"


def secret_versions(secrets: Mapping[str, Secret | None]) -> dict[str, str]:
    return {name: secret.version for name, secret in secrets.items() if secret is not None}
