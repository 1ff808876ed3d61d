"""The load generator: devices posting uploads to the ingest gateway, and optionally one app
(WebSocket) per user receiving the predictions. One process, one asyncio (uvloop) event loop.

    python -m bench.ingest.load SPEC.json

SPEC (written by bench.ingest.run) names the gateway URL, the users and their tokens, and
the mode:

- ``closed``: ``concurrency`` devices, each posting its next upload as soon as the previous
  one is answered, for ``warmup + duration`` seconds (the summary covers the last
  ``duration``): the gateway's maximum throughput at that concurrency.
- ``open``: uploads at a fixed ``rate`` per second on a schedule, whatever the answers
  (latency is measured from the scheduled moment, so a stalled gateway shows as latency,
  not as a lower rate): the soak.

HTTP: aiohttp with keep-alive, one connection per lane, each lane bound to its own loopback
source address (127.0.1.x, 127.0.2.x, ...), so the per-address rate limit sees many devices as
production would, not one address. Closed loop: ``concurrency`` lanes, user i on lane
i mod concurrency. Open loop: one lane per user (a device has its own connection).

With ``fleet``: one WebSocket per user is opened and authenticated before the first upload;
every prediction's ``source_upload_ids`` are matched to the uploads sent, giving deliveries
and the end-to-end latency upload sent → prediction received. After the load the fleet
waits until every accepted upload has been delivered (or ``settle_quiet`` seconds pass with
nothing new, at most ``settle_max``).

Prints JSON lines on stdout (``fleet-ready``, ``started``, one ``bucket`` per
``bucket_seconds``, ``done``) and writes the full result to SPEC["results"].
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.common import run_loop
from bench.ingest.stats import Recorder, percentiles
from bench.ingest.workload import Uploads

TIMEOUT = aiohttp.ClientTimeout(total=30)


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def lane_address(lane: int) -> str:
    return f"127.0.{1 + lane // 250}.{1 + lane % 250}"


class Fleet:
    """One WebSocket per user; matches predictions to the uploads they reflect."""

    def __init__(self, url: str, users: list[str], tokens: list[str], clock: Any) -> None:
        self.url, self.users, self.tokens, self.clock = url, users, tokens, clock
        self.sent: dict[str, float] = {}  # upload id -> scheduled send time (loop clock)
        self.accepted: set[str] = set()
        self.delivered: set[str] = set()
        self.e2e = Recorder()
        self.t0 = 0.0
        self.predictions = 0
        self.duplicates = 0  # an upload id delivered again
        self.misrouted = 0  # a prediction of another user on this user's socket
        self.foreign = 0  # ids of uploads this run did not send
        self.other: dict[str, int] = {}
        self.closed: dict[str, int] = {}  # close code -> sockets closed by the server once ready
        self.refused: dict[str, int] = {}  # close code -> first authentications refused (the app retried)
        self.failed: list[str] = []
        self.reconnects = 0
        self.ready = 0
        self.last_delivery = 0.0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, within: float = 120.0) -> None:
        ready = [asyncio.Event() for _ in self.users]
        self._tasks = [asyncio.create_task(self._run(i, ready[i])) for i in range(len(self.users))]
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in ready)), within)

    async def _run(self, index: int, ready: asyncio.Event) -> None:
        user, token = self.users[index], self.tokens[index]
        handshakes = 0
        while not self._stop.is_set():
            try:
                async with connect(self.url, open_timeout=30, close_timeout=1, ping_interval=None,
                                   max_size=2**22, max_queue=None) as ws:
                    await self._authenticate(ws, token)
                    handshakes += 1
                    if handshakes == 1:
                        self.ready += 1
                    else:
                        self.reconnects += 1
                    ready.set()
                    await self._receive(ws, user)
                    return
            except ConnectionClosed as exc:
                code = str(exc.rcvd.code) if exc.rcvd else "abnormal"
                counts = self.closed if handshakes else self.refused  # before or after its first "ready"
                counts[code] = counts.get(code, 0) + 1
            except Exception as exc:  # counted; the app reconnects like a real one would
                self.failed.append(f"{type(exc).__name__}: {exc}"[:200])
            if self._stop.is_set():
                break
            await asyncio.sleep(1.0)
        ready.set()

    async def _authenticate(self, ws: ClientConnection, token: str) -> None:
        await ws.send(json.dumps({"type": "auth", "token": token}))
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if message.get("type") == "ready":
                return
            if message.get("type") == "error":
                raise RuntimeError(f"refused: {message}")

    async def _receive(self, ws: ClientConnection, user: str) -> None:
        stop = asyncio.create_task(self._stop.wait())
        try:
            while True:
                receive = asyncio.create_task(ws.recv())
                done, _ = await asyncio.wait({receive, stop}, return_when=asyncio.FIRST_COMPLETED)
                if receive not in done:
                    receive.cancel()
                    return
                self._handle(json.loads(receive.result()), user)
        finally:
            stop.cancel()

    def _handle(self, message: dict[str, Any], user: str) -> None:
        kind = message.get("type")
        if kind != "prediction":
            self.other[str(kind)] = self.other.get(str(kind), 0) + 1
            return
        now = self.clock()
        self.predictions += 1
        prediction = message.get("prediction") or {}
        if prediction.get("user_id") != user:
            self.misrouted += 1
            return
        for upload_id in prediction.get("source_upload_ids") or ():
            sent = self.sent.pop(upload_id, None)
            if upload_id in self.delivered:
                self.duplicates += 1
            elif sent is None:
                self.foreign += 1
            else:
                self.delivered.add(upload_id)
                self.e2e.add(now - self.t0, now - sent, "ack")
                self.last_delivery = now

    def undelivered(self) -> int:
        return len(self.accepted - self.delivered)

    async def settle(self, quiet: float, longest: float) -> float:
        began = self.clock()
        self.last_delivery = max(self.last_delivery, began)
        while self.undelivered() and self.clock() - self.last_delivery < quiet and self.clock() - began < longest:
            await asyncio.sleep(0.2)
        return self.clock() - began

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def result(self, window: tuple[float, float]) -> dict[str, Any]:
        e2e_window = self.e2e.summary(*window)
        return {
            "sockets": len(self.users), "ready": self.ready, "failed": self.failed[:10],
            "failed_count": len(self.failed), "closed": self.closed, "refused": self.refused,
            "reconnects": self.reconnects,
            "predictions": self.predictions, "accepted": len(self.accepted), "delivered": len(self.delivered),
            "undelivered": self.undelivered(), "duplicates": self.duplicates, "misrouted": self.misrouted,
            "foreign": self.foreign, "other_messages": self.other,
            "e2e_ms": percentiles(self.e2e.latency_ms), "e2e_ms_window": e2e_window["latency_ms"],
        }


class Load:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.users: list[str] = spec["users"]
        self.tokens: dict[str, str] = dict(zip(self.users, spec["tokens"], strict=True))
        self.concurrency: int = spec["concurrency"]
        self.url = spec["url"].rstrip("/") + "/v1/uploads"
        self.uploads = Uploads(samples=spec["samples"], seed=spec.get("seed", 1))
        self.recorder = Recorder()
        self.loop = asyncio.get_running_loop()
        self.t0 = 0.0
        self.fleet: Fleet | None = None
        self.in_flight = 0
        self.late = 0  # open mode: uploads that left more than 100 ms after their slot
        self.max_lag = 0.0

    def sessions(self, lanes: int) -> list[aiohttp.ClientSession]:
        """One keep-alive connection per lane, each lane from its own loopback address."""
        return [aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1, local_addr=(lane_address(lane), 0)),
            timeout=TIMEOUT, skip_auto_headers=("User-Agent",))
            for lane in range(lanes)]

    async def post(self, session: aiohttp.ClientSession, user: str, scheduled: float | None = None) -> None:
        upload_id, body = self.uploads.encoded_body(user)
        started = self.loop.time() if scheduled is None else scheduled
        if self.fleet is not None:
            self.fleet.sent[upload_id] = started
        headers = {"Authorization": f"Bearer {self.tokens[user]}", "Content-Type": "application/json"}
        self.in_flight += 1
        try:
            async with session.post(self.url, data=body, headers=headers) as response:
                await response.read()
                outcome = str(response.status)
        except Exception as exc:  # every failure is an outcome of its own
            outcome = type(exc).__name__
        finally:
            self.in_flight -= 1
        now = self.loop.time()
        self.recorder.add(now - self.t0, now - started, outcome)
        if self.fleet is not None and outcome in ("202", "200"):
            self.fleet.accepted.add(upload_id)

    async def closed_loop(self, sessions: list[aiohttp.ClientSession], seconds: float) -> None:
        end = self.t0 + seconds

        async def device(lane: int) -> None:
            mine = self.users[lane::self.concurrency] or [self.users[lane % len(self.users)]]
            k = 0
            while self.loop.time() < end:
                await self.post(sessions[lane], mine[k % len(mine)])
                k += 1

        await asyncio.gather(*(device(lane) for lane in range(self.concurrency)))

    async def open_loop(self, sessions: list[aiohttp.ClientSession], seconds: float, rate: float) -> None:
        cap = self.spec.get("max_in_flight", 1000)
        tasks: set[asyncio.Task[None]] = set()
        k = 0
        while True:
            scheduled = self.t0 + k / rate
            if scheduled >= self.t0 + seconds:
                break
            delay = scheduled - self.loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            while self.in_flight >= cap:  # the gateway stalls: wait, and the latency shows it
                await asyncio.sleep(0.01)
            lag = self.loop.time() - scheduled
            self.max_lag = max(self.max_lag, lag)
            if lag > 0.1:
                self.late += 1
            user = k % len(self.users)  # every user (device) has a connection of its own
            task = asyncio.create_task(self.post(sessions[user % len(sessions)], self.users[user], scheduled))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            k += 1
        if tasks:
            await asyncio.gather(*tasks)

    async def report_buckets(self, every: float) -> None:
        index = 0
        while True:
            index += 1
            await asyncio.sleep(max(0.0, self.t0 + index * every - self.loop.time()))
            start, end = (index - 1) * every, index * every
            bucket = self.recorder.summary(start, end)
            line = {"t": end, "per_s": bucket["per_s"], "p50_ms": bucket["latency_ms"]["p50"],
                    "p99_ms": bucket["latency_ms"]["p99"], "errors": bucket["errors"],
                    "outcomes": bucket["outcomes"], "in_flight": self.in_flight}
            if self.fleet is not None:
                e2e = self.fleet.e2e.summary(start, end)
                line |= {"delivered_per_s": e2e["per_s"], "e2e_p50_ms": e2e["latency_ms"]["p50"],
                         "e2e_p99_ms": e2e["latency_ms"]["p99"], "undelivered": self.fleet.undelivered()}
            self.buckets.append(line)
            emit("bucket", **line)

    async def run(self) -> dict[str, Any]:
        spec = self.spec
        warmup, duration = float(spec["warmup"]), float(spec["duration"])
        if spec.get("fleet"):
            self.fleet = Fleet(spec["ws_url"], self.users, spec["tokens"], self.loop.time)
            began = self.loop.time()
            await self.fleet.start()
            emit("fleet-ready", ready=self.fleet.ready, failed=len(self.fleet.failed),
                 seconds=round(self.loop.time() - began, 2))
        # closed loop: one lane per concurrent device (users spread over them); open loop: one per user
        sessions = self.sessions(self.concurrency if spec["mode"] == "closed" else len(self.users))
        self.buckets: list[dict[str, Any]] = []
        gc.collect()
        gc.freeze()  # tokens, sessions, sockets: nothing for the collector to walk again
        try:
            self.t0 = self.loop.time()
            if self.fleet is not None:
                self.fleet.t0 = self.t0
            emit("started", wall=time.time(), cpu=time.process_time())
            reporter = asyncio.create_task(self.report_buckets(float(spec.get("bucket_seconds", 10))))
            if spec["mode"] == "closed":
                await self.closed_loop(sessions, warmup + duration)
            else:
                await self.open_loop(sessions, warmup + duration, float(spec["rate"]))
            load_end = self.loop.time() - self.t0
            reporter.cancel()
            settle_s = None
            if self.fleet is not None:
                settle_s = await self.fleet.settle(float(spec.get("settle_quiet", 15)),
                                                   float(spec.get("settle_max", 120)))
        finally:
            await asyncio.gather(*(session.close() for session in sessions))
            if self.fleet is not None:
                await self.fleet.stop()
        window = (warmup, warmup + duration)
        result: dict[str, Any] = {
            "mode": spec["mode"], "users": len(self.users), "concurrency": self.concurrency,
            "rate": spec.get("rate"), "warmup_s": warmup, "duration_s": duration, "samples": spec["samples"],
            "load_seconds": round(load_end, 2),
            "window": self.recorder.summary(*window, items_per_success=spec["samples"]),
            "whole": self.recorder.summary(0.0, load_end + 1e-6, items_per_success=spec["samples"]),
            "buckets": self.buckets, "late_launches": self.late, "max_launch_lag_ms": round(self.max_lag * 1000, 1),
            "client_rss_kib": _own_rss_kib(),
        }
        if self.fleet is not None:
            result["fleet"] = self.fleet.result(window) | {"settle_s": round(settle_s or 0.0, 1)}
        return result


def _own_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    result = await Load(spec).run()
    Path(spec["results"]).write_text(json.dumps(result))
    emit("done", results=spec["results"], cpu=time.process_time())


if __name__ == "__main__":
    run_loop(main(sys.argv[1]))
