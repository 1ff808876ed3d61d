"""What the chaos tests share: a stack of its own, devices uploading, apps listening, and the
ledger that says whether anything acknowledged was lost or delivered twice."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from circadia_dev.devstack.stack import LocalStack, Ports
from tests.apps import ResumingApp
from tests.conftest import free_ports

START = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=6)


def chaos_stack(root: Path, *, kafka_port: int | None = None, kafka_advertised_port: int | None = None,
                **overrides: str) -> LocalStack:
    """A stack with its own Kafka and Redis (the tests stop and restart them)."""
    fixed = [port for port in (kafka_port, kafka_advertised_port) if port is not None]
    kafka, controller, redis, openbao, cluster, ingest, fanout, worker = free_ports(8, besides=fixed)
    ports = Ports(kafka=kafka_port or kafka, kafka_controller=controller, redis=redis, openbao=openbao,
                  openbao_cluster=cluster, ingest=ingest, fanout=fanout, worker_metrics=worker)
    settings = {"CIRCADIA_WORKER_APP_ID": f"circadia-chaos-{uuid.uuid4().hex[:6]}",
                "CIRCADIA_WORKER_SESSION_TIMEOUT_SECONDS": "6", "CIRCADIA_INGEST_PRODUCE_TIMEOUT_SECONDS": "3",
                "CIRCADIA_SECRET_REFRESH_SECONDS": "3600", **overrides}
    return LocalStack(root, ports, observability=False, overrides=tuple(settings.items()),
                      kafka_advertised_port=kafka_advertised_port)


@dataclass
class Ledger:
    """Every upload a device sent, what the gateway answered, and what the apps received."""

    sent: list[str] = field(default_factory=list)
    acknowledged: set[str] = field(default_factory=set)
    refused: Counter[str] = field(default_factory=Counter)
    reflected: Counter[str] = field(default_factory=Counter)  # upload id -> results carrying it, per app
    results: int = 0
    duplicated: int = 0  # results an app had already received (all its uploads seen before)
    gaps: int = 0  # cursor offsets that went backwards (out of order) for an app

    @property
    def lost(self) -> set[str]:
        return self.acknowledged - set(self.reflected)

    def counts(self) -> dict[str, int]:
        return {"sent": len(self.sent), "acknowledged": len(self.acknowledged),
                "refused": sum(self.refused.values()), "delivered": len(set(self.reflected) & self.acknowledged),
                "results": self.results, "lost": len(self.lost), "duplicated": self.duplicated,
                "out_of_order": self.gaps}

    def report(self, scenario: str) -> dict[str, int]:
        counts = self.counts()
        print(f"\n[chaos] {scenario}: " + " ".join(f"{k}={v}" for k, v in counts.items())
              + (f" refused_by={dict(self.refused)}" if self.refused else ""))
        return counts


class Devices:
    """Devices of several users uploading one minute of steps each, on a steady beat."""

    def __init__(self, stack: LocalStack, users: list[str], ledger: Ledger, interval: float = 0.25) -> None:
        self._stack, self._users, self._ledger, self._interval = stack, users, ledger, interval
        self._minute = 0

    async def run(self, stop: asyncio.Event) -> None:
        tokens = {user: self._stack.issuer.mint(user) for user in self._users}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self._stack.ports.ingest}", timeout=10) as client:
            while not stop.is_set():
                for user in self._users:
                    await self._upload(client, user, tokens[user])
                await asyncio.sleep(self._interval)

    async def _upload(self, client: httpx.AsyncClient, user: str, token: str) -> None:
        start = START + timedelta(minutes=self._minute)
        self._minute += 1
        body = {"upload_id": str(uuid.uuid4()), "device": {"id": f"{user}-watch", "model": "W", "os": "1"},
                "samples": [{"type": "step_count", "start": start.isoformat(),
                             "end": (start + timedelta(minutes=1)).isoformat(), "value": 7, "unit": "count"}]}
        self._ledger.sent.append(body["upload_id"])
        try:
            response = await client.post("/v1/uploads", json=body, headers={"Authorization": f"Bearer {token}"})
        except httpx.HTTPError as exc:
            self._ledger.refused[type(exc).__name__] += 1
            return
        if response.status_code in (200, 202):
            self._ledger.acknowledged.add(body["upload_id"])
        else:
            self._ledger.refused[str(response.status_code)] += 1


class App(ResumingApp):
    """One user's app, counting what it receives in the ledger."""

    def __init__(self, stack: LocalStack, user: str, ledger: Ledger) -> None:
        super().__init__(user, stack.issuer.mint, lambda: f"ws://127.0.0.1:{stack.ports.fanout}/v1/stream")
        self._ledger = ledger
        self.seen: set[str] = set()

    def receive(self, message: dict) -> None:
        if message["type"] != "prediction":
            return
        cursor = message["cursor"]
        if self.cursor is not None and cursor["partition"] == self.cursor["partition"] \
                and cursor["offset"] <= self.cursor["offset"]:
            self._ledger.gaps += 1
        super().receive(message)
        sources = set(message["prediction"]["source_upload_ids"])
        self._ledger.results += 1
        if sources and sources <= self.seen:
            self._ledger.duplicated += 1
        self.seen |= sources
        for upload_id in sources:
            self._ledger.reflected[upload_id] += 1


async def settle(ledger: Ledger, timeout: float = 90.0) -> None:
    """Wait until every acknowledged upload reached an app, or the timeout."""
    deadline = time.monotonic() + timeout
    while ledger.lost and time.monotonic() < deadline:
        await asyncio.sleep(0.5)


@contextlib.asynccontextmanager
async def traffic(stack: LocalStack, users: list[str], ledger: Ledger, interval: float = 0.25):
    """Apps connected first, then devices uploading until the block ends; apps keep listening
    until every acknowledged upload has arrived (or the settle timeout)."""
    stop_devices, stop_apps = asyncio.Event(), asyncio.Event()
    apps = [App(stack, user, ledger) for user in users]
    app_tasks = [asyncio.create_task(app.run(stop_apps)) for app in apps]
    await asyncio.sleep(1.0)
    device_task = asyncio.create_task(Devices(stack, users, ledger, interval).run(stop_devices))
    try:
        yield apps
    finally:
        stop_devices.set()
        await device_task
        await settle(ledger)
        stop_apps.set()
        await asyncio.gather(*app_tasks)
