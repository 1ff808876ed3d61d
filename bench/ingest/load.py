"""The load generator: devices posting uploads from the traffic model to the ingest gateway,
and optionally one app (WebSocket) per user receiving the predictions. One process, one
asyncio (uvloop) event loop.

    python -m bench.ingest.load SPEC.json

SPEC (written by bench.ingest.run) names the gateway URL, the users and their tokens, the
traffic model's parameters and ``now`` (``bench.ingest.workload``), and the mode:

- ``closed``: ``concurrency`` devices, each posting its next upload (``next_upload(user,
  now)`` of its next user) as soon as the previous one is answered, for ``warmup +
  duration`` seconds (the summary covers the last ``duration``): the gateway's capacity on
  the model's mix. A device answered 503 with ``Retry-After`` (16 large bodies with the
  parsers for 10 s, say) waits that long and sends the same upload again, as the API asks (at most
  ``RETRIES`` attempts): refused backlogs would otherwise leave the answered mix lighter than
  the drawn one. Bodies are drawn just before they are posted: a backlog body costs this
  process ~25 ms (model and ``json.dumps``), while the other devices' answers wait, so the
  closed loop's latencies are upper bounds.
- ``open``: uploads at a fixed ``rate`` per second on a schedule, whatever the answers
  (latency is measured from the scheduled moment, so a stalled gateway shows as latency,
  not as a lower rate), upload k from user k mod users. With ``pregenerate`` every body is
  drawn and encoded before the first is sent (the generator then only sends: its own
  stalls do not become latency); with ``backlog`` a second schedule of multi-day backlog
  syncs (drawn from their own model and users, also beforehand) is posted alongside on
  connections of its own. ``id_salt`` re-derives the upload ids, so a phase can replay
  another's schedule without its uploads being answered as duplicates.
- ``max``: one upload of ``max_samples`` (``max_upload``) per listed user, one after the
  other on an otherwise idle gateway, each on a new connection, ``pause_s`` apart.

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
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.common import run_loop
from bench.ingest.stats import Recorder, percentiles
from bench.ingest.workload import SMALL_KINDS, model, parse_now, salted
from bench.traffic import Upload

# a 50,000-sample upload is ~5 MB of JSON: parsed in ~1 s on an idle machine, longer on a busy one
TIMEOUT = aiohttp.ClientTimeout(total=120)
ERROR_BODIES = 5  # per outcome, the first answers of a failed request are kept
RETRIES = 6  # closed loop: attempts of one upload answered 503 with Retry-After


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def lane_address(lane: int) -> str:
    return f"127.0.{1 + lane // 250}.{1 + lane % 250}"


async def report_buckets(recorder: Recorder, loop: asyncio.AbstractEventLoop, t0: float, every: float,
                         out: list[dict[str, Any]],
                         extra: Callable[[float, float], dict[str, Any]] | None = None) -> None:
    """Every ``every`` seconds: the last bucket's throughput, latency, errors and, per kind of
    upload, its count and p99 (a ``bucket`` line on stdout and an entry of ``out``)."""
    index = 0
    while True:
        index += 1
        await asyncio.sleep(max(0.0, t0 + index * every - loop.time()))
        start, end = (index - 1) * every, index * every
        bucket = recorder.summary(start, end)
        line = {"t": end, "per_s": bucket["per_s"], "samples_per_s": bucket["items_per_s"],
                "p50_ms": bucket["latency_ms"]["p50"], "p99_ms": bucket["latency_ms"]["p99"],
                "errors": bucket["errors"], "outcomes": bucket["outcomes"],
                "kinds": {kind: [s["requests"], s["latency_ms"]["p99"]]
                          for kind, s in recorder.by_kind(start, end).items() if s["requests"]}}
        if extra is not None:
            line |= extra(start, end)
        out.append(line)
        emit("bucket", **line)


@dataclass(frozen=True, slots=True)
class Planned:
    """One upload, ready to post."""

    kind: str
    user: str
    samples: int
    upload_id: str
    body: bytes


def planned(upload: Upload, salt: str | None = None) -> Planned:
    upload_id, body = (upload.upload_id, upload.encoded()) if salt is None else salted(upload, salt)
    return Planned(upload.kind, upload.user, upload.samples, upload_id, body)


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
        for extra in ("backlog", "max"):
            if spec.get(extra):
                self.tokens |= dict(zip(spec[extra]["users"], spec[extra]["tokens"], strict=True))
        self.concurrency: int = spec["concurrency"]
        self.url = spec["url"].rstrip("/") + "/v1/uploads"
        self.traffic = model(spec["traffic"])
        self.now = parse_now(spec["now"])
        self.salt: str | None = spec.get("id_salt")
        self.recorder = Recorder()
        self.loop = asyncio.get_running_loop()
        self.t0 = 0.0
        self.fleet: Fleet | None = None
        self.in_flight = 0
        self.late = 0  # open mode: uploads that left more than 100 ms after their slot
        self.max_lag = 0.0
        self.error_bodies: dict[str, list[str]] = {}
        self.buckets: list[dict[str, Any]] = []
        self.generated: dict[str, Any] = {}
        self.retries = 0  # closed loop: uploads sent again after a 503 with Retry-After
        self.lane_counts: list[int] = []  # closed loop: uploads each lane drew (the raw producer replays them)

    def sessions(self, lanes: int, first: int = 0) -> list[aiohttp.ClientSession]:
        """One keep-alive connection per lane, each lane from its own loopback address."""
        return [aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1, local_addr=(lane_address(lane), 0)),
            timeout=TIMEOUT, skip_auto_headers=("User-Agent",))
            for lane in range(first, first + lanes)]

    def draw(self, user: str) -> Planned:
        return planned(self.traffic.next_upload(user, self.now), self.salt)

    async def post(self, session: aiohttp.ClientSession, upload: Planned,
                   scheduled: float | None = None) -> tuple[str, bytes, float | None]:
        """Post one upload; (outcome, the answer's body, its Retry-After in seconds or None)."""
        started = self.loop.time() if scheduled is None else scheduled
        if self.fleet is not None:
            self.fleet.sent[upload.upload_id] = started
        headers = {"Authorization": f"Bearer {self.tokens[upload.user]}", "Content-Type": "application/json"}
        self.in_flight += 1
        answer = b""
        retry_after = None
        try:
            async with session.post(self.url, data=upload.body, headers=headers) as response:
                answer = await response.read()
                outcome = str(response.status)
                if response.headers.get("Retry-After", "").isdigit():
                    retry_after = float(response.headers["Retry-After"])
        except Exception as exc:  # every failure is an outcome of its own
            outcome = type(exc).__name__
            answer = str(exc).encode()
        finally:
            self.in_flight -= 1
        now = self.loop.time()
        self.recorder.add(now - self.t0, now - started, outcome, items=upload.samples, kind=upload.kind)
        if outcome not in ("202", "200"):
            kept = self.error_bodies.setdefault(outcome, [])
            if len(kept) < ERROR_BODIES:
                kept.append(f"{upload.kind} ({upload.samples} samples, {len(upload.body):,} B): "
                            + answer[:400].decode(errors="replace"))
        elif self.fleet is not None:
            self.fleet.accepted.add(upload.upload_id)
        return outcome, answer, retry_after

    # --- closed loop ---------------------------------------------------------------------------

    async def closed_loop(self, sessions: list[aiohttp.ClientSession], seconds: float) -> None:
        end = self.t0 + seconds
        self.lane_counts = [0] * self.concurrency

        async def device(lane: int) -> None:
            mine = self.users[lane::self.concurrency] or [self.users[lane % len(self.users)]]
            k = 0
            while self.loop.time() < end:
                upload = self.draw(mine[k % len(mine)])
                k += 1
                self.lane_counts[lane] = k
                for _ in range(RETRIES):
                    outcome, _, retry_after = await self.post(sessions[lane], upload)
                    if outcome != "503" or retry_after is None or self.loop.time() + retry_after >= end:
                        break
                    self.retries += 1
                    await asyncio.sleep(min(retry_after, 10.0))  # as the API asks; the upload is sent again

        await asyncio.gather(*(device(lane) for lane in range(self.concurrency)))

    # --- open loop -----------------------------------------------------------------------------

    def small_plan(self, count: int) -> list[Planned]:
        """Upload k is user k mod users' next upload (as the open loop draws them on the fly)."""
        return [self.draw(self.users[k % len(self.users)]) for k in range(count)]

    def backlog_plan(self, count: int) -> list[Planned]:
        """``count`` backlog syncs from the backlog model's closed-loop draws over its users
        (the other kinds drawn on the way are dropped)."""
        spec = self.spec["backlog"]
        traffic = model(spec["traffic"])
        out: list[Planned] = []
        draws = 0
        for upload in traffic.uploads(spec["users"], max(1000, count * 1000), self.now):
            draws += 1
            if upload.kind == "backlog":
                out.append(planned(upload))
                if len(out) == count:
                    break
        if len(out) < count:
            raise RuntimeError(f"{draws} draws gave {len(out)} backlogs, not {count}")
        return out

    async def schedule(self, sessions: list[aiohttp.ClientSession], seconds: float, rate: float,
                       uploads: Iterator[Planned], session_of: Callable[[int, Planned], int],
                       offset: float = 0.0) -> None:
        """Post upload k at t0 + offset + k / rate, whatever the answers; each on its own task."""
        cap = self.spec.get("max_in_flight", 1000)
        tasks: set[asyncio.Task[tuple[str, bytes, float | None]]] = set()
        k = 0
        while True:
            scheduled = self.t0 + offset + k / rate
            if scheduled >= self.t0 + seconds:
                break
            upload = next(uploads, None)
            if upload is None:
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
            task = asyncio.create_task(self.post(sessions[session_of(k, upload)], upload, scheduled))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            k += 1
        if tasks:
            await asyncio.gather(*tasks)

    def _on_the_fly(self) -> Iterator[Planned]:
        k = 0
        while True:
            yield self.draw(self.users[k % len(self.users)])
            k += 1

    async def open_loop(self, seconds: float, rate: float, small: list[Planned] | None,
                        backlogs: list[Planned] | None) -> None:
        users = len(self.users)
        index = {user: i for i, user in enumerate(self.users)}
        sessions = self.sessions(users)  # every user (device) has a connection of its own
        self._sessions += sessions
        runs = [self.schedule(sessions, seconds, rate, iter(small) if small is not None else self._on_the_fly(),
                              lambda k, upload: index[upload.user])]
        if backlogs:
            spec = self.spec["backlog"]
            lanes = self.sessions(len(spec["users"]), first=users)
            self._sessions += lanes
            mine = {user: i for i, user in enumerate(spec["users"])}
            backlog_rate = float(spec["rate"])
            runs.append(self.schedule(lanes, seconds, backlog_rate, iter(backlogs),
                                      lambda k, upload: mine[upload.user], offset=0.5 / backlog_rate))
        await asyncio.gather(*runs)

    # --- the maximum upload --------------------------------------------------------------------

    async def max_runs(self) -> list[dict[str, Any]]:
        spec = self.spec["max"]
        runs = []
        for index, user in enumerate(spec["users"]):
            upload = planned(self.traffic.max_upload(user, self.now))
            await asyncio.sleep(float(spec.get("pause_s", 1.0)))  # the gateway idle again
            (session,) = self.sessions(1, first=len(self.users) + index)
            try:
                began = self.loop.time()
                outcome, answer, _ = await self.post(session, upload, began)
                seconds = self.loop.time() - began
            finally:
                await session.close()
            try:
                accepted = json.loads(answer).get("accepted")
            except ValueError:
                accepted = None
            runs.append({"user": user, "status": outcome, "seconds": round(seconds, 3), "samples": upload.samples,
                         "body_bytes": len(upload.body), "accepted": accepted})
            emit("max-run", **runs[-1])
        return runs

    # --- the run -------------------------------------------------------------------------------

    def _pregenerate(self, seconds: float) -> tuple[list[Planned] | None, list[Planned] | None]:
        spec = self.spec
        if not spec.get("pregenerate"):
            return None, None
        began = time.perf_counter()
        small = self.small_plan(math.ceil(float(spec["rate"]) * seconds))
        drawn = time.perf_counter()
        backlogs = None
        if spec.get("backlog"):
            backlogs = self.backlog_plan(math.ceil(float(spec["backlog"]["rate"]) * seconds))
        self.generated = {
            "small": {"uploads": len(small), "samples": sum(u.samples for u in small),
                      "bytes": sum(len(u.body) for u in small), "seconds": round(drawn - began, 2)},
            **({"backlog": {"uploads": len(backlogs), "samples": sum(u.samples for u in backlogs),
                            "bytes": sum(len(u.body) for u in backlogs),
                            "seconds": round(time.perf_counter() - drawn, 2)}} if backlogs else {}),
        }
        return small, backlogs

    async def run(self) -> dict[str, Any]:
        spec = self.spec
        mode = spec["mode"]
        warmup, duration = float(spec.get("warmup", 0)), float(spec.get("duration", 0))
        self._sessions: list[aiohttp.ClientSession] = []
        if spec.get("fleet"):
            self.fleet = Fleet(spec["ws_url"], self.users, spec["tokens"], self.loop.time)
            began = self.loop.time()
            await self.fleet.start()
            emit("fleet-ready", ready=self.fleet.ready, failed=len(self.fleet.failed),
                 seconds=round(self.loop.time() - began, 2))
        small, backlogs = self._pregenerate(warmup + duration)
        if mode == "closed":
            self._sessions = self.sessions(self.concurrency)
        gc.collect()
        gc.freeze()  # tokens, sessions, sockets, planned bodies: nothing for the collector to walk again
        settle_s = None
        max_runs: list[dict[str, Any]] = []
        try:
            self.t0 = self.loop.time()
            if self.fleet is not None:
                self.fleet.t0 = self.t0
            emit("started", wall=time.time(), cpu=time.process_time(), generated=self.generated)
            reporter = asyncio.create_task(report_buckets(
                self.recorder, self.loop, self.t0, float(spec.get("bucket_seconds", 10)), self.buckets,
                self._bucket_extra if self.fleet is not None else None))
            if mode == "closed":
                await self.closed_loop(self._sessions, warmup + duration)
            elif mode == "open":
                await self.open_loop(warmup + duration, float(spec["rate"]), small, backlogs)
            elif mode == "max":
                max_runs = await self.max_runs()
            else:
                raise ValueError(f"unknown mode {mode!r}")
            load_end = self.loop.time() - self.t0
            reporter.cancel()
            if self.fleet is not None:
                settle_s = await self.fleet.settle(float(spec.get("settle_quiet", 15)),
                                                   float(spec.get("settle_max", 120)))
        finally:
            await asyncio.gather(*(session.close() for session in self._sessions))
            if self.fleet is not None:
                await self.fleet.stop()
        if mode == "max":
            window = (0.0, load_end + 1e-6)
        else:
            window = (warmup, warmup + duration)
        result: dict[str, Any] = {
            "mode": mode, "users": len(self.users), "concurrency": self.concurrency,
            "rate": spec.get("rate"), "warmup_s": warmup, "duration_s": duration,
            "load_seconds": round(load_end, 2), "generated": self.generated,
            "window": self.recorder.summary(*window),
            "whole": self.recorder.summary(0.0, load_end + 1e-6),
            "by_kind": self.recorder.by_kind(*window),
            "small": self.recorder.summary(*window, kinds=SMALL_KINDS),
            "buckets": self.buckets, "late_launches": self.late, "max_launch_lag_ms": round(self.max_lag * 1000, 1),
            "error_bodies": self.error_bodies, "client_rss_kib": _own_rss_kib(), "lane_counts": self.lane_counts,
            "retries": self.retries,
        }
        if spec.get("backlog"):
            result["backlog"] = {"rate": spec["backlog"]["rate"], "users": len(spec["backlog"]["users"]),
                                 "whole": self.recorder.summary(0.0, load_end + 1e-6, kinds=("backlog",))}
        if max_runs:
            result["max_runs"] = max_runs
        if self.fleet is not None:
            result["fleet"] = self.fleet.result(window) | {"settle_s": round(settle_s or 0.0, 1)}
        return result

    def _bucket_extra(self, start: float, end: float) -> dict[str, Any]:
        assert self.fleet is not None
        e2e = self.fleet.e2e.summary(start, end)
        return {"delivered_per_s": e2e["per_s"], "e2e_p50_ms": e2e["latency_ms"]["p50"],
                "e2e_p99_ms": e2e["latency_ms"]["p99"], "undelivered": self.fleet.undelivered(),
                "in_flight": self.in_flight}


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
