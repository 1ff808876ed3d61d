"""The fan-out tier scaled out: replicas share predictions.v1 in a consumer group and each
receives only its own users' results from Redis — real processes, real Kafka and Redis.

The promises checked: every result is read and recorded by one replica only; a replica
receives on its live channels, and decodes, only the results of users connected to it; and while replicas
join, leave and crash (rebalances included), every app — resuming on whichever replica is
up — receives each of its user's results exactly once, in order, and nobody else's."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer

from circadia.topics import PREDICTIONS
from circadia_dev.devstack.processes import ManagedProcess
from circadia_dev.devstack.redis import LocalRedis
from circadia_dev.devstack.stack import LocalStack
from tests.apps import ResumingApp
from tests.conftest import free_port
from tests.e2e.conftest import metric, start_fanout
from tests.e2e.test_fanout import SCHEMA, prediction, publish, user

PARTITIONS = 6


@dataclass
class Replica:
    name: str
    port: int
    process: ManagedProcess

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/stream"

    @property
    def metrics(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def value(self, name: str) -> float:
        return metric(self.metrics, name)

    def alive(self) -> bool:
        return self.process.pid() is not None


class Tier:
    """Fan-out replicas of one deployment of their own (consumer group, Redis database),
    beside the stack's."""

    def __init__(self, stack: LocalStack, redis_url: str) -> None:
        self._stack = stack
        self._settings = {"CIRCADIA_FANOUT_GROUP_ID": f"tier-{uuid.uuid4().hex[:8]}", "CIRCADIA_REDIS_URL": redis_url}
        self.replicas: dict[str, Replica] = {}

    def start(self, name: str, port: int | None = None) -> Replica:
        port = port or free_port()
        process = start_fanout(self._stack, name, port, {**self._settings, "CIRCADIA_FANOUT_DRAIN_SECONDS": "1",
                                                         "CIRCADIA_FANOUT_RECONNECT_SPREAD_MS": "300"})
        replica = self.replicas[name] = Replica(name, port, process)
        return replica

    def live(self) -> list[Replica]:
        return [r for r in self.replicas.values() if r.alive()]

    async def settled(self, count: int, timeout: float = 30) -> None:
        """Until ``count`` replicas own all partitions between them, each at least one."""
        deadline = time.monotonic() + timeout
        while True:
            owned = [r.value("circadia_fanout_owned_partitions") for r in self.live()]
            if len(owned) == count and sum(owned) == PARTITIONS and min(owned) > 0:
                return
            assert time.monotonic() < deadline, f"partitions never settled over {count} replicas: {owned}"
            await asyncio.sleep(0.3)

    def stop_all(self) -> None:
        for replica in self.replicas.values():
            replica.process.stop()


@contextmanager
def tier(stack: LocalStack, database: int | None = None, redis_url: str | None = None) -> Iterator[Tier]:
    """A deployment of its own, on a database of the suite's Redis or on another Redis."""
    replicas = Tier(stack, redis_url or stack.redis_url.rsplit("/", 1)[0] + f"/{database}")
    try:
        yield replicas
    finally:
        replicas.stop_all()


class App(ResumingApp):
    """One user's app: it resumes from its cursor on any live replica whenever it drops."""

    def __init__(self, stack: LocalStack, user_id: str, tier: Tier, home: str) -> None:
        self._tier = tier
        self._next: Replica | None = tier.replicas[home]
        super().__init__(user_id, stack.issuer.mint, self._url, retry_interval=0.2)
        self.received: list[str] = []
        self.misrouted = 0
        self.resets = 0

    def _url(self) -> str:
        """The home replica first; after a drop, any live one."""
        if self._next is not None:
            home, self._next = self._next, None
            return home.url
        return random.choice(self._tier.live()).url  # noqa: S311  # test traffic, not a secret

    def receive(self, message: dict) -> None:
        if message["type"] == "reset":
            self.resets += 1
        if message["type"] != "prediction":
            return
        if message["prediction"]["user_id"] != self.user_id:
            self.misrouted += 1
            return
        super().receive(message)
        self.received.append(message["prediction"]["prediction_id"])


async def _publish_steadily(stack: LocalStack, users: list[str], published: dict[str, list[str]],
                            stop: asyncio.Event, rate: float) -> None:
    """One result at a time to a random user, each acknowledged before it counts as published."""
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap_servers, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        while not stop.is_set():
            target = random.choice(users)  # noqa: S311  # test traffic
            record = prediction(target)
            await producer.send_and_wait(PREDICTIONS, SCHEMA.encode(record), key=target.encode(),
                                         headers=SCHEMA.headers())
            published[target].append(record["prediction_id"])
            await asyncio.sleep(1 / rate)
    finally:
        await producer.stop()


def _counts(replicas: list[Replica]) -> dict[str, dict[str, float]]:
    names = {"read": 'circadia_fanout_records_total{outcome="read"}',
             "published": 'circadia_fanout_records_total{outcome="published"}',
             "live": "circadia_fanout_live_messages_total",
             "rendered": 'circadia_fanout_rendered_total{outcome="rendered"}'}
    return {r.name: {k: r.value(v) for k, v in names.items()} for r in replicas}


async def test_each_result_is_recorded_once_and_reaches_only_its_users_replicas(stack: LocalStack) -> None:
    with tier(stack, database=2) as replicas:
        for name in ("tier-a", "tier-b", "tier-c"):
            replicas.start(name)
        await replicas.settled(3)
        live = replicas.live()
        # users on replica a and b only; c holds no connection at all
        users = {r.name: [user(f"on-{r.name}") for _ in range(4)] for r in live[:2]}
        stop = asyncio.Event()
        apps = [App(stack, u, replicas, home) for home, names in users.items() for u in names]
        tasks = [asyncio.create_task(app.run(stop)) for app in apps]
        await asyncio.sleep(1.5)  # connected and subscribed
        before = _counts(live)
        published: dict[str, list[str]] = {app.user_id: [] for app in apps}
        for app in apps:
            published[app.user_id] += await publish(stack.bootstrap_servers, app.user_id, 5)
        total = sum(len(ids) for ids in published.values())
        deadline = time.monotonic() + 20
        while any(app.received != published[app.user_id] for app in apps) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        stop.set()
        await asyncio.gather(*tasks)
        for app in apps:
            assert app.received == published[app.user_id], app.user_id
            assert app.misrouted == 0
        after = _counts(live)
        delta = {name: {k: after[name][k] - before[name][k] for k in after[name]} for name in after}
        # read and recorded once in the tier, each by the owner of the user's partition
        assert sum(d["read"] for d in delta.values()) == total, delta
        assert sum(d["published"] for d in delta.values()) == total, delta
        assert all(d["read"] < total for d in delta.values()), delta
        # each replica received and decoded exactly its own users' results (once per result,
        # whatever the connections), and c none
        for replica in live:
            expected = sum(len(published[u]) for u in users.get(replica.name, []))
            assert delta[replica.name]["live"] == expected, (replica.name, delta)
            assert delta[replica.name]["rendered"] == expected, (replica.name, delta)


async def test_exactly_once_while_replicas_join_leave_and_crash(stack: LocalStack) -> None:
    with tier(stack, database=3) as replicas:
        for name in ("churn-a", "churn-b", "churn-c"):
            replicas.start(name)
        await replicas.settled(3)
        homes = list(replicas.replicas)
        users = [user("churn") for _ in range(24)]
        stop_apps, stop_publishing = asyncio.Event(), asyncio.Event()
        apps = [App(stack, u, replicas, homes[i % len(homes)]) for i, u in enumerate(users)]
        app_tasks = [asyncio.create_task(app.run(stop_apps)) for app in apps]
        await asyncio.sleep(1.5)
        published: dict[str, list[str]] = {u: [] for u in users}
        publisher = asyncio.create_task(_publish_steadily(stack, users, published, stop_publishing, rate=40))
        await asyncio.sleep(3)
        await asyncio.to_thread(replicas.start, "churn-d")  # joins: a rebalance
        await asyncio.sleep(3)
        crashed = replicas.replicas["churn-c"]
        crashed.process.kill()  # its partitions move after the session timeout; its apps resume elsewhere
        await asyncio.sleep(4)
        await asyncio.to_thread(replicas.replicas["churn-b"].process.stop)  # leaves: reconnect hints, 1001
        await asyncio.sleep(3)
        await asyncio.to_thread(replicas.start, "churn-c", crashed.port)  # back on its port
        await asyncio.sleep(3)
        stop_publishing.set()
        await publisher
        deadline = time.monotonic() + 45  # a crashed owner's partitions wait for the session timeout
        while any(app.received != published[app.user_id] for app in apps) and time.monotonic() < deadline:
            await asyncio.sleep(0.3)
        stop_apps.set()
        await asyncio.gather(*app_tasks)
        total = sum(len(ids) for ids in published.values())
        lost = sum(len(set(published[a.user_id]) - set(a.received)) for a in apps)
        duplicated = sum(sum(n - 1 for n in Counter(a.received).values()) for a in apps)
        print(f"\n[tier] results={total} lost={lost} duplicated={duplicated} "
              f"misrouted={sum(a.misrouted for a in apps)} resets={sum(a.resets for a in apps)} "
              f"reconnects={sum(a.reconnects for a in apps)}")
        assert total > 300
        assert sum(a.reconnects for a in apps) >= 8  # the killed and the stopped replica's apps moved
        for app in apps:
            assert app.received == published[app.user_id], app.user_id  # all, once each, in order
            assert app.misrouted == 0 and app.resets == 0


async def test_redis_restarted_under_the_tier_delays_but_never_loses_or_repeats(
        stack: LocalStack, tmp_path_factory) -> None:
    redis = LocalRedis(tmp_path_factory.mktemp("tier-redis"), free_port(), persistent=True)
    redis.start()
    try:
        with tier(stack, redis_url=redis.url) as replicas:
            for name in ("outage-a", "outage-b"):
                replicas.start(name)
            await replicas.settled(2)
            users = [user("outage") for _ in range(12)]
            stop_apps, stop_publishing = asyncio.Event(), asyncio.Event()
            apps = [App(stack, u, replicas, ("outage-a", "outage-b")[i % 2]) for i, u in enumerate(users)]
            app_tasks = [asyncio.create_task(app.run(stop_apps)) for app in apps]
            await asyncio.sleep(1.5)
            published: dict[str, list[str]] = {u: [] for u in users}
            publisher = asyncio.create_task(_publish_steadily(stack, users, published, stop_publishing, rate=30))
            await asyncio.sleep(3)
            await asyncio.to_thread(redis.stop)
            await asyncio.sleep(5)  # owners push their partitions' results to their own sockets only
            during = {app.user_id: len(app.received) for app in apps}
            await asyncio.to_thread(redis.start)
            await asyncio.sleep(4)
            stop_publishing.set()
            await publisher
            deadline = time.monotonic() + 30
            while any(app.received != published[app.user_id] for app in apps) and time.monotonic() < deadline:
                await asyncio.sleep(0.3)
            stop_apps.set()
            await asyncio.gather(*app_tasks)
            local = sum(r.value("circadia_fanout_delivered_locally_total") for r in replicas.live())
            print(f"\n[tier, Redis restarted] results={sum(len(v) for v in published.values())} "
                  f"delivered_locally={local} resets={sum(a.resets for a in apps)} "
                  f"reconnects={sum(a.reconnects for a in apps)} received_before_restart={sum(during.values())}")
            assert local > 0  # live delivery went on for the owners' own users
            for app in apps:
                assert app.received == published[app.user_id], app.user_id  # all, once each, in order
                assert app.misrouted == 0 and app.resets == 0 and app.reconnects == 0
    finally:
        redis.stop()


async def test_a_result_published_while_no_replica_runs_is_recorded_by_the_next_one(stack: LocalStack) -> None:
    with tier(stack, database=4) as replicas:
        first = replicas.start("alone-a")
        await replicas.settled(1)
        await asyncio.to_thread(first.process.stop)  # the deployment's only replica: nobody owns anything
        ada = user("while-down")
        (pid,) = await publish(stack.bootstrap_servers, ada)  # to a partition that never had a record here
        replicas.start("alone-b")
        await replicas.settled(1)
        app = App(stack, ada, replicas, "alone-b")
        stop = asyncio.Event()
        task = asyncio.create_task(app.run(stop))
        deadline = time.monotonic() + 15
        while not app.received and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        stop.set()
        await task
        assert app.received == [pid]  # the latest on connect: recorded by the next owner
