"""A real Redis server (Debian's ``redis-server``) as a local process on loopback.

The binary is installed through ``deploy/local/install-system-packages.sh`` when missing;
the server keeps nothing on disk (no RDB, no AOF): it holds rate-limit windows,
idempotency keys and the fan-out's history, which are safe to lose with the process. Tests
of a Redis restart that keeps its data ask for an append-only file (``persistent``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import redis

from circadia_dev.devstack.processes import LaunchError, ManagedProcess, system_command


class RedisLaunchError(LaunchError):
    pass


def redis_server() -> str:
    return system_command("redis-server", error=RedisLaunchError)


@dataclass(frozen=True)
class LocalRedis:
    home: Path
    port: int = 6379
    persistent: bool = False  # an append-only file in ``home``: a restart keeps the data

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def process(self) -> ManagedProcess:
        return ManagedProcess("redis", self.home / "redis.pid", self.home / "redis.log")

    def start(self, timeout: float = 20.0) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        if self.process.pid() is None:
            self.process.start(
                [redis_server(), "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.home),
                 "--save", "", "--appendonly", "yes" if self.persistent else "no", "--protected-mode", "yes",
                 "--daemonize", "no"],
                env={"PATH": "/usr/bin:/bin"},
            )
        self.process.wait_until(self.answers, timeout, f"Redis on {self.url}", interval=0.1)

    def answers(self) -> bool:
        client = redis.Redis.from_url(self.url, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()

    def stop(self) -> bool:
        return self.process.stop(timeout=10.0)
