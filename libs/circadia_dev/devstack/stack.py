"""The local stack: Kafka, Redis, OpenBao plus the three services as background processes.

``circadia up`` starts what is not running yet and waits until each part answers;
``circadia down`` stops everything it started, services first, then the broker.
The test suite builds the same stack in a temporary folder on free ports.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from circadia_dev.devkeys import DevIssuer
from circadia_dev.devstack.jaeger import LocalJaeger
from circadia_dev.devstack.kafka import LocalKafka
from circadia_dev.devstack.openbao import LocalOpenBao
from circadia_dev.devstack.processes import LaunchError, ManagedProcess
from circadia_dev.devstack.prometheus import LocalPrometheus
from circadia_dev.devstack.redis import LocalRedis
from circadia_dev.paths import local_dir

LOCAL_PROJECT_ID = "circadia-local"
FANOUT = "fanout-gateway"


class StackError(LaunchError):
    pass


@dataclass(frozen=True)
class Ports:
    kafka: int = 9092
    kafka_controller: int = 9093
    redis: int = 6379
    openbao: int = 8200
    openbao_cluster: int = 8201
    jaeger_otlp_grpc: int = 4317
    jaeger_otlp_http: int = 4318
    jaeger_query: int = 16686
    jaeger_query_grpc: int = 16685
    jaeger_health: int = 13133
    prometheus: int = 9090
    ingest: int = 8080
    fanout: int = 8081
    worker_metrics: int = 9100


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    module: str
    probe: Callable[[Ports], str]
    accept: Callable[[httpx.Response], bool] = field(default=lambda r: r.status_code == 200)


def _worker_assigned(response: httpx.Response) -> bool:
    """The worker is ready once the consumer group gave it partitions to process."""
    match = re.search(r"^circadia_worker_assigned_partitions (\S+)$", response.text, re.M)
    return response.status_code == 200 and match is not None and float(match.group(1)) > 0


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("prediction-worker", "prediction_worker",
                lambda p: f"http://127.0.0.1:{p.worker_metrics}/metrics", _worker_assigned),
    ServiceSpec("fanout-gateway", "fanout_gateway", lambda p: f"http://127.0.0.1:{p.fanout}/readyz"),
    ServiceSpec("ingest-gateway", "ingest_gateway", lambda p: f"http://127.0.0.1:{p.ingest}/readyz"),
)


@dataclass(frozen=True)
class LocalStack:
    root: Path
    ports: Ports = Ports()
    external_kafka: str | None = None  # bootstrap servers of a broker this stack does not manage
    external_redis: str | None = None  # URL of a Redis this stack does not manage
    admin_kafka: str | None = None  # where topics are created, when the services' listener needs credentials
    kafka_advertised_port: int | None = None  # clients reach the broker through a proxy on this port
    overrides: tuple[tuple[str, str], ...] = ()  # extra service settings, e.g. shorter timeouts
    observability: bool = True  # Jaeger and Prometheus beside the services
    scrape_interval: str = "5s"
    fanout_replicas: int = 1  # fan-out gateways on consecutive ports from ports.fanout, one consumer group
    external_openbao: str | None = None  # URL of a key service this stack provisions but does not run
    # the Python each service runs on, by service name (default: this one); a service's own
    # environment, as its image has, e.g. the virtualenvs of tests/e2e/test_service_images.py
    interpreters: tuple[tuple[str, str], ...] = ()

    @classmethod
    def default(cls) -> LocalStack:
        return cls(local_dir())

    @property
    def kafka(self) -> LocalKafka:
        return LocalKafka(self.root / "kafka", self.ports.kafka, self.ports.kafka_controller,
                          advertised_port=self.kafka_advertised_port)

    @property
    def bootstrap_servers(self) -> str:
        if self.external_kafka:
            return self.external_kafka
        return f"127.0.0.1:{self.kafka_advertised_port or self.ports.kafka}"

    @property
    def jaeger(self) -> LocalJaeger:
        p = self.ports
        return LocalJaeger(self.root / "jaeger", p.jaeger_otlp_grpc, p.jaeger_otlp_http, p.jaeger_query,
                           p.jaeger_query_grpc, p.jaeger_health)

    @property
    def prometheus(self) -> LocalPrometheus:
        return LocalPrometheus(self.root / "prometheus", self.ports.prometheus, self.scrape_interval)

    def scrape_targets(self) -> dict[str, list[str]]:
        p = self.ports
        return {"ingest-gateway": [f"127.0.0.1:{p.ingest}"], "prediction-worker": [f"127.0.0.1:{p.worker_metrics}"],
                "fanout-gateway": [f"127.0.0.1:{port}" for _, port in self.fanout_gateways()]}

    def fanout_gateways(self) -> list[tuple[str, int]]:
        """Process name and port of each fan-out replica: ``fanout-gateway`` on ports.fanout,
        then ``fanout-gateway-2``, ``-3``, ... on the next ports."""
        return [(FANOUT if i == 0 else f"{FANOUT}-{i + 1}", self.ports.fanout + i)
                for i in range(self.fanout_replicas)]

    def _instances(self, spec: ServiceSpec) -> list[tuple[str, dict[str, str], str]]:
        """(process name, settings, readiness URL) of each process of a service."""
        if spec.name != FANOUT:
            return [(spec.name, {}, spec.probe(self.ports))]
        return [(name, {"CIRCADIA_FANOUT_PORT": str(port)}, f"http://127.0.0.1:{port}/readyz")
                for name, port in self.fanout_gateways()]

    @property
    def redis(self) -> LocalRedis:
        return LocalRedis(self.root / "redis", self.ports.redis)

    @property
    def redis_url(self) -> str:
        return self.external_redis or self.redis.url

    @property
    def openbao(self) -> LocalOpenBao:
        """The key service: each user's key-encryption key (crypto-shredding), kept on disk."""
        return LocalOpenBao(self.root / "openbao", self.ports.openbao, persistent=True,
                            cluster_port=self.ports.openbao_cluster, external_url=self.external_openbao)

    def _token_file(self, service: str) -> Path:
        """The service's key-service token: ``user_keys_token`` in a secrets folder of its own (the
        compose file points each service's ``CIRCADIA_SECRETS_DIR`` at it)."""
        return self.root / "openbao" / "tokens" / service / "user_keys_token"

    def start_keys(self) -> None:
        """Start the key service unless it runs, and issue each service a token of its own."""
        self.openbao.start()
        self._issue_tokens()

    def service_environment(self, service: str) -> dict[str, str]:
        """What a process of ``service`` starts with: the stack's settings and the service's own
        key-service token (in the process's environment, the resolver's first source)."""
        token = self._token_file(service)
        if not token.exists() or (self.external_openbao is None and self.openbao.process.pid() is None):
            self.start_keys()
        return {**_inherited_environment(), **self.environment(), "CIRCADIA_USER_KEYS_TOKEN": token.read_text()}

    def _issue_tokens(self) -> None:
        """A token per service under the service's own policy, in files only this user reads."""
        import os

        for spec in SERVICES:
            path = self._token_file(spec.name)
            path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w") as out:
                out.write(self.openbao.service_token(spec.name))

    @property
    def issuer(self) -> DevIssuer:
        return DevIssuer.ensure(self.root / "dev-keys", LOCAL_PROJECT_ID)

    def process(self, name: str) -> ManagedProcess:
        return ManagedProcess(name, self.root / "run" / f"{name}.pid", self.root / "logs" / f"{name}.log")

    def environment(self) -> dict[str, str]:
        """The services' configuration; docker-compose.yml sets the same variables."""
        return {
            "CIRCADIA_ENV": "development",
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "CIRCADIA_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
            "CIRCADIA_SECRETS_DIR": str(self.root / "secrets"),
            "CIRCADIA_FIREBASE_PROJECT_ID": LOCAL_PROJECT_ID,
            "CIRCADIA_FIREBASE_CERTS_URL": self.issuer.certs_url,
            "CIRCADIA_AUTH_DEV_ISSUER": "true",
            "CIRCADIA_REDIS_URL": self.redis_url,
            "CIRCADIA_USER_KEYS_ADDR": self.openbao.url,
            "CIRCADIA_INGEST_HOST": "127.0.0.1",
            "CIRCADIA_INGEST_PORT": str(self.ports.ingest),
            "CIRCADIA_FANOUT_HOST": "127.0.0.1",
            "CIRCADIA_FANOUT_PORT": str(self.ports.fanout),
            "CIRCADIA_WORKER_METRICS_HOST": "127.0.0.1",
            "CIRCADIA_WORKER_METRICS_PORT": str(self.ports.worker_metrics),
            "CIRCADIA_WORKER_DATA_DIR": str(self.root / "worker"),
            **({"OTEL_EXPORTER_OTLP_ENDPOINT": self.jaeger.otlp_endpoint} if self.observability else {}),
            **dict(self.overrides),
        }

    def up(self, report: Callable[[str], None] = print, timeout: float = 120.0) -> None:
        import asyncio

        from circadia.kafka import ensure_topics

        if self.external_redis is None:
            self.redis.start()
            report(f"redis            ready ({self.redis.url})")
        self.start_keys()
        report(f"openbao          ready ({self.openbao.url}, transit; keys in {self.openbao.home / 'data'})")
        if self.external_kafka is None:
            report(f"kafka            starting on {self.kafka.bootstrap_servers} ...")
            self.kafka.start()
        created = asyncio.run(ensure_topics(self.admin_kafka or self.bootstrap_servers))
        report(f"topics           ready{' (created ' + ', '.join(created) + ')' if created else ''}")
        if self.observability:
            self.jaeger.start()
            report(f"jaeger           ready ({self.jaeger.query_url}, OTLP {self.jaeger.otlp_endpoint})")
            self.prometheus.start(self.scrape_targets())
            report(f"prometheus       ready ({self.prometheus.url})")
        for spec in SERVICES:
            for name, settings, _ in self._instances(spec):
                self._start(spec, name, settings)
        for spec in SERVICES:
            for name, _, url in self._instances(spec):
                self._wait(spec, name, url, timeout)
                report(f"{name:<16} ready ({url})")

    def start_service(self, name: str, *, wait: bool = True, timeout: float = 120.0, module: str | None = None,
                      **overrides: str) -> None:
        """Start one service (if it is not running) with the stack's settings plus ``overrides``;
        ``module`` runs another entry point in its place (the tests' fault-injecting worker).
        For the fan-out gateway, every replica is started."""
        spec = next(s for s in SERVICES if s.name == name)
        instances = self._instances(spec)
        for instance, settings, _ in instances:
            self._start(spec, instance, {**settings, **overrides}, module)
        if wait:
            for instance, _, url in instances:
                self._wait(spec, instance, url, timeout)

    def _start(self, spec: ServiceSpec, name: str, settings: dict[str, str], module: str | None = None) -> None:
        env = {**self.service_environment(spec.name), **settings}
        python = dict(self.interpreters).get(spec.name, sys.executable)
        self.process(name).start([python, "-m", module or spec.module], env)

    def _wait(self, spec: ServiceSpec, name: str, url: str, timeout: float) -> None:
        def ready() -> bool:
            try:
                return spec.accept(httpx.get(url, timeout=2.0))
            except httpx.HTTPError:
                return False  # not listening yet

        self.process(name).wait_until(ready, timeout, f"{name} ({url})", interval=0.3)

    def _fanout_processes(self) -> list[str]:
        """Every fan-out replica with a pid file: also those of an ``up`` with more replicas."""
        extra = sorted(path.stem for path in (self.root / "run").glob(f"{FANOUT}-*.pid"))
        return [FANOUT, *(name for name in extra if name != FANOUT)]

    def down(self) -> list[str]:
        stopped = []
        for spec in reversed(SERVICES):
            names = self._fanout_processes() if spec.name == FANOUT else [spec.name]
            stopped += [name for name in names if self.process(name).stop()]
        for name, part in (("prometheus", self.prometheus), ("jaeger", self.jaeger), ("openbao", self.openbao)):
            if part.stop():
                stopped.append(name)
        if self.external_kafka is None and self.kafka.stop():
            stopped.append("kafka")
        if self.external_redis is None and self.redis.stop():
            stopped.append("redis")
        return stopped

    def status(self) -> list[tuple[str, int | None]]:
        rows = [(name, self.process(name).pid()) for spec in SERVICES
                for name in (self._fanout_processes() if spec.name == FANOUT else [spec.name])]
        if self.external_kafka is None:
            rows.insert(0, ("kafka", self.kafka.process.pid()))
        if self.external_redis is None:
            rows.insert(0, ("redis", self.redis.process.pid()))
        if self.external_openbao is None:
            rows.insert(0, ("openbao", self.openbao.process.pid()))
        if self.observability:
            rows += [("jaeger", self.jaeger.process.pid()), ("prometheus", self.prometheus.process.pid())]
        return rows


def _inherited_environment() -> dict[str, str]:
    """What services inherit from the caller: the basics of a process environment only."""
    import os

    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "PYTHONPATH", "VIRTUAL_ENV", "TMPDIR",
            "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_SAMPLER",
            "OTEL_TRACES_SAMPLER_ARG", "CIRCADIA_LOG_LEVEL",
            # a test run measuring coverage measures the services too
            "COVERAGE_PROCESS_CONFIG", "COVERAGE_PROCESS_START")
    return {key: os.environ[key] for key in keep if key in os.environ}
