"""Test fixtures shared by every suite.

The Kafka broker comes from exactly one fixture, in this order:
1. ``KAFKA_BOOTSTRAP_SERVERS`` when set (a broker you run yourself);
2. a testcontainers Kafka (KRaft) container when a Docker engine answers;
3. the project's own launcher: a real Kafka 4.4 process in a temporary folder on free ports.
Redis the same way (``REDIS_URL``, testcontainers, Debian's redis-server).
A server that cannot be obtained fails the run; it is never a skip.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from circadia.kafka import ensure_topics
from circadia.tracing import configure_tracing
from circadia_dev.devkeys import DevIssuer
from circadia_dev.devstack.kafka import LocalKafka, broker_answers
from circadia_dev.devstack.redis import LocalRedis

log = logging.getLogger(__name__)

TESTCONTAINERS_KAFKA_IMAGE = "confluentinc/cp-kafka:8.1.0"  # Apache Kafka 4.1, KRaft


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(count: int, *, besides: Iterable[int] = ()) -> list[int]:
    """``count`` distinct free loopback ports, none of ``besides``: the sockets are held open
    together while they are chosen, so the OS cannot hand out one port twice (two calls of
    ``free_port`` can return the same port)."""
    taken, ports, held = set(besides), [], []
    try:
        while len(ports) < count:
            sock = socket.socket()
            held.append(sock)
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
            if port not in taken:
                taken.add(port)
                ports.append(port)
    finally:
        for sock in held:
            sock.close()
    return ports


@functools.cache
def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception as exc:  # no engine, no socket, no permission: all mean "not available"
        log.info("no Docker engine for testcontainers (%s); using the local Kafka launcher", exc)
        return False
    return True


@pytest.fixture(scope="session", autouse=True)
def tracing() -> None:
    """A real tracer provider, as each service installs one, so trace context propagates."""
    configure_tracing("circadia-tests")


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        if not asyncio.run(broker_answers(external, timeout=10)):
            pytest.fail(f"KAFKA_BOOTSTRAP_SERVERS={external} is set but no broker answers there")
        asyncio.run(ensure_topics(external))
        yield external
        return
    if _docker_answers():
        from testcontainers.community.kafka import KafkaContainer

        with KafkaContainer(TESTCONTAINERS_KAFKA_IMAGE).with_kraft() as container:
            bootstrap = container.get_bootstrap_server()
            asyncio.run(ensure_topics(bootstrap))
            yield bootstrap
        return
    port, controller = free_ports(2)
    kafka = LocalKafka(tmp_path_factory.mktemp("kafka"), port=port, controller_port=controller)
    kafka.start()
    try:
        asyncio.run(ensure_topics(kafka.bootstrap_servers))
        yield kafka.bootstrap_servers
    finally:
        kafka.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis: ``REDIS_URL``, else testcontainers, else Debian's redis-server (installed if missing)."""
    external = os.environ.get("REDIS_URL")
    if external:
        yield external
        return
    if _docker_answers():
        from testcontainers.redis import RedisContainer

        with RedisContainer("redis:7-alpine") as container:
            yield f"redis://{container.get_container_host_ip()}:{container.get_exposed_port(6379)}/0"
        return
    server = LocalRedis(tmp_path_factory.mktemp("redis"), port=free_port())
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def dev_issuer(tmp_path_factory: pytest.TempPathFactory) -> DevIssuer:
    """A token issuer with a key generated for this run only."""
    return DevIssuer.ensure(tmp_path_factory.mktemp("dev-keys"), "circadia-test")


@pytest.fixture
def schemas_root() -> Path:
    from circadia.paths import schemas_dir

    return schemas_dir()
