"""A real Apache Kafka broker (KRaft, combined broker + controller) as a local process.

The jars come from Maven Central through ``deploy/local/kafka/pom.xml`` and are copied
into the gitignored cache once; storage is formatted on first start and reused after.

    python -m circadia_dev.devstack.kafka start|stop|status   (what deploy/local/kafka runs)
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import os
import shutil
import string
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from circadia_dev.devstack.processes import LaunchError, ManagedProcess
from circadia_dev.paths import PROJECT_ROOT, cache_dir, local_dir

log = logging.getLogger(__name__)

DEPLOY_DIR = PROJECT_ROOT / "deploy" / "local" / "kafka"
JAVA_OPTS = ("-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-Djava.awt.headless=true")


class KafkaLaunchError(LaunchError):
    pass


def kafka_jars() -> Path:
    """The folder of broker jars, resolved with Maven on first use (and after the pom changes)."""
    pom = DEPLOY_DIR / "pom.xml"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:12]
    target = cache_dir() / "kafka" / digest
    if (target / ".complete").exists():
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaLaunchError("Maven (mvn) is needed once to fetch the Kafka jars; install it")
    staging = target.with_name(digest + f".partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    print(f"fetching Kafka jars from Maven Central into {target} ...", file=sys.stderr)
    result = subprocess.run(
        [
            mvn, "-q", "-B", "-f", str(pom),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={staging}",
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise KafkaLaunchError(f"mvn failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    (staging / ".complete").touch()
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


@dataclass(frozen=True)
class LocalKafka:
    """One broker instance: its own ports and its own folder for config, data, log and pid."""

    home: Path
    port: int = 9092
    controller_port: int = 9093
    sasl_port: int | None = None  # a SASL_PLAINTEXT (SCRAM-SHA-512) listener beside PLAINTEXT
    advertised_port: int | None = None  # clients told to connect here (a fault-injecting proxy) instead
    scram_users: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # created at format time

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def sasl_bootstrap_servers(self) -> str:
        if self.sasl_port is None:
            raise RuntimeError("this broker has no SASL listener")
        return f"127.0.0.1:{self.sasl_port}"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def process(self) -> ManagedProcess:
        return ManagedProcess("kafka", self.home / "kafka.pid", self.home / "kafka.log")

    def _write_config(self) -> Path:
        template = string.Template((DEPLOY_DIR / "server.properties").read_text())
        config = self.home / "server.properties"
        config.write_text(
            template.substitute(
                port=self.port, controller_port=self.controller_port, log_dir=self.data_dir,
                advertised_port=self.advertised_port or self.port,
                sasl_listener=f",SASL_PLAINTEXT://127.0.0.1:{self.sasl_port}" if self.sasl_port else "",
                sasl_advertised=f",SASL_PLAINTEXT://127.0.0.1:{self.sasl_port}" if self.sasl_port else "",
            )
        )
        return config

    def _java(self, *args: str) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise KafkaLaunchError("Java 17 (java) is needed to run the Kafka broker")
        return [
            java,
            *JAVA_OPTS,
            f"-Dlog4j2.configurationFile={DEPLOY_DIR / 'log4j2.properties'}",
            "-cp",
            f"{kafka_jars()}/*",
            *args,
        ]

    def _format(self, config: Path) -> None:
        if (self.data_dir / "meta.properties").exists():
            return  # formatted before: a second start reuses the data
        cluster_id = _kafka_cluster_id()
        scram = [arg for name, password in self.scram_users
                 for arg in ("--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]")]
        result = subprocess.run(
            self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config), *scram),
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise KafkaLaunchError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")

    def start(self, timeout: float = 90.0) -> None:
        """Start the broker unless it runs already, and wait until it answers."""
        self.home.mkdir(parents=True, exist_ok=True)
        if self.process.pid() is None:
            config = self._write_config()
            self._format(config)
            self.process.start(self._java("kafka.Kafka", str(config)), env=os.environ)
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        # the real listener, not a proxy the broker may advertise
        self.process.wait_until(lambda: asyncio.run(broker_answers(self.bootstrap_servers)), timeout,
                                f"Kafka on {self.bootstrap_servers}", interval=0.5)

    def stop(self) -> bool:
        # SIGTERM makes the broker shut down cleanly (flushes, closes the log).
        return self.process.stop(timeout=60.0)

    def set_scram_password(self, user: str, password: str) -> None:
        """Create or replace a SCRAM-SHA-512 credential on the running broker (rotation).
        The password passes through the tool's command line: for this loopback broker only."""
        result = subprocess.run(
            self._java("org.apache.kafka.tools.ConfigCommand", "--bootstrap-server", self.bootstrap_servers,
                       "--alter", "--entity-type", "users", "--entity-name", user,
                       "--add-config", f"SCRAM-SHA-512=[iterations=4096,password={password}]"),
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise KafkaLaunchError(f"setting the SCRAM credential of {user} failed:\n{result.stderr[-2000:]}")


def _kafka_cluster_id() -> str:
    """A random cluster id in Kafka's own form: base64url of 16 bytes, no padding, and (as Kafka's
    own Uuid.randomUuid ensures) not starting with '-', which the storage tool reads as an option."""
    import base64

    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


async def broker_answers(bootstrap_servers: str, timeout: float = 5.0) -> bool:
    """True when a broker at ``bootstrap_servers`` serves cluster metadata with a controller."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers, request_timeout_ms=int(timeout * 1000)
    )
    try:
        await asyncio.wait_for(admin.start(), timeout)
        cluster = await asyncio.wait_for(admin.describe_cluster(), timeout)
        return bool(cluster.get("brokers")) and cluster.get("controller_id", -1) >= 0
    except (TimeoutError, KafkaError, OSError):
        return False
    finally:
        await admin.close()


def default_instance() -> LocalKafka:
    return LocalKafka(local_dir() / "kafka")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deploy/local/kafka", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["start", "stop", "status", "fetch"])
    args = parser.parse_args(argv)
    kafka = default_instance()
    try:
        if args.command == "fetch":
            print(kafka_jars())
        elif args.command == "start":
            kafka.start()
            print(f"kafka: up on {kafka.bootstrap_servers} (data {kafka.data_dir})")
        elif args.command == "stop":
            print("kafka: stopped" if kafka.stop() else "kafka: not running")
        else:
            pid = kafka.process.pid()
            print(f"kafka: running, pid {pid}" if pid else "kafka: not running")
            return 0 if pid else 3
    except KafkaLaunchError as exc:
        print(f"kafka: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
