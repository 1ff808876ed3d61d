"""The client fleet: one process holding every connection of a run, on one event loop.

    python -m bench.fanout.client SPEC.json

SPEC names the protocol (``circadia`` or ``centrifugo``), the URL, one token per user and
how many connections each user opens. Optionally (circadia; bench/fanout/tier.py): ``urls``,
several replicas' URLs, with ``url_index`` giving each connection's (default: all on the
first), and ``reconnect``: a connection the server closes or drops reconnects at once to
another of the URLs (spread by user, with ``reconnect_jitter`` seconds of jitter), sending
``resume`` with the cursor and epoch of the last prediction it received. The fleet opens them all (a bounded number of
handshakes at a time), then prints one JSON line ``{"event": "ready", ...}`` on stdout.
From then on it records every message of this run it receives — (sequence number,
connection, wall-clock receipt time) — and answers commands, one JSON line each, on stdin:

    {"cmd": "finish", "phase": "steady", "first": 0, "end": 4000, "quiet": 20}
        wait until every connection has the messages first <= seq < end meant for it
        (or nothing new arrived for ``quiet`` seconds), then print ``phase-done``
    {"cmd": "quit"}
        write the receipts to SPEC["results"], print ``written``, exit

Latency is computed by the caller, which knows when each message was published.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import random
import sys
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.fanout.workload import parse_prediction_id


@dataclass
class Receipts:
    """Every delivery of this run, in three parallel arrays (compact for 10^5 entries)."""

    nonce_hex: str
    seqs: array = field(default_factory=lambda: array("q"))
    conns: array = field(default_factory=lambda: array("i"))
    times: array = field(default_factory=lambda: array("d"))
    foreign: int = 0  # predictions not published by this run
    other: int = 0  # messages of other types (latest, reset, refresh, pong, ...)
    phase: tuple[int, int] | None = None
    phase_count: int = 0
    last_arrival: float = 0.0
    progress: asyncio.Event = field(default_factory=asyncio.Event)

    def record(self, prediction_id: object, connection: int, received: float) -> None:
        seq = parse_prediction_id(prediction_id, self.nonce_hex) if isinstance(prediction_id, str) else None
        if seq is None:
            self.foreign += 1
            return
        self.seqs.append(seq)
        self.conns.append(connection)
        self.times.append(received)
        self.last_arrival = received
        if self.phase is not None and self.phase[0] <= seq < self.phase[1]:
            self.phase_count += 1
            self.progress.set()

    def start_phase(self, first: int, end: int) -> None:
        self.phase = (first, end)
        self.phase_count = sum(1 for seq in self.seqs if first <= seq < end)


class Fleet:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.protocol: str = spec["protocol"]
        self.urls: list[str] = list(spec.get("urls") or [spec["url"]])
        self.url = self.urls[0]
        self.tokens: list[str] = spec["tokens"]
        self.per_user: int = spec["connections_per_user"]
        self.receipts = Receipts(spec["nonce_hex"])
        self.handshakes = asyncio.Semaphore(spec.get("connect_concurrency", 100))
        self.closed: dict[str, int] = {}  # close code -> connections the server closed
        self.failed: list[str] = []
        self.extensions: set[str] = set()
        self.ready_count = 0
        self.all_ready = asyncio.Event()
        connections = self.connections
        self.url_index: list[int] = list(spec.get("url_index") or [0] * connections)  # per connection, now
        self.reconnect: bool = bool(spec.get("reconnect", False)) and self.protocol == "circadia"
        self.cursors: list[tuple[dict, str] | None] = [None] * connections  # last (cursor, epoch) received
        self.reconnects = 0  # reconnections that were ready again
        self.resumed = 0  # of which with a cursor (``resume``), the others with a plain ``auth``
        self.resets = 0  # ``reset`` messages received (a resume the history could not bridge)
        self.reconnect_errors: list[str] = []  # failed reconnection attempts (then the next URL)
        self.given_up = 0  # connections that could not reconnect before the deadline

    @property
    def connections(self) -> int:
        return len(self.tokens) * self.per_user

    async def run_connection(self, index: int) -> None:
        token = self.tokens[index // self.per_user]
        try:
            async with self.handshakes:
                ws = await self.open(self.urls[self.url_index[index]], token)
        except Exception as exc:  # counted and reported: the run shows up as failed
            self.failed.append(f"{type(exc).__name__}: {exc}"[:200])
            self._count_ready()
            return
        self._count_ready()
        while True:
            try:
                if self.protocol == "circadia":
                    await self.receive_circadia(ws, index)
                else:
                    await self.receive_centrifugo(ws, index)
                if not self.reconnect:
                    return
                code = str(ws.close_code) if ws.close_code is not None else "abnormal"  # a clean close
            except ConnectionClosed as exc:
                code = str(exc.rcvd.code) if exc.rcvd else "abnormal"
            self.closed[code] = self.closed.get(code, 0) + 1
            if not self.reconnect or code in ("4401", "4403", "4429"):
                return  # refused, or replaced by a newer connection of the same user: not a failover
            reopened = await self.reopen(index, token)
            if reopened is None:
                return
            ws = reopened

    async def open(self, url: str, token: str, last: tuple[dict, str] | None = None) -> ClientConnection:
        ws = await connect(url, compression="deflate" if self.spec.get("deflate") else None,
                           ping_interval=None, max_size=2**20, open_timeout=60, close_timeout=1,
                           max_queue=None)
        self.extensions.add(ws.response.headers.get("Sec-WebSocket-Extensions", "") or "none")
        try:
            await self.authenticate(ws, token, last)
        except BaseException:
            await ws.close()
            raise
        return ws

    async def reopen(self, index: int, token: str) -> ClientConnection | None:
        """Reconnect to another URL (the user's connections fail over together, users spread
        over the others), then to the old one, until ``reconnect_deadline`` passes."""
        user = index // self.per_user
        current = self.url_index[index]
        others = [i for i in range(len(self.urls)) if i != current]
        if others:
            start = user % len(others)
            others = others[start:] + others[:start]
        order = [*others, current]
        deadline = time.monotonic() + float(self.spec.get("reconnect_deadline", 120))
        await asyncio.sleep(random.uniform(0, float(self.spec.get("reconnect_jitter", 0.5))))  # noqa: S311
        attempt = 0
        while time.monotonic() < deadline:
            target = order[attempt % len(order)]
            attempt += 1
            last = self.cursors[index]
            try:
                async with self.handshakes:
                    ws = await self.open(self.urls[target], token, last)
            except Exception as exc:  # a replica that is down or not ready: try the next
                self.reconnect_errors.append(f"{type(exc).__name__}: {exc}"[:200])
                await asyncio.sleep(min(0.25 * attempt, 2.0))
                continue
            self.url_index[index] = target
            self.reconnects += 1
            self.resumed += last is not None
            return ws
        self.given_up += 1
        return None

    def _count_ready(self) -> None:
        self.ready_count += 1
        if self.ready_count == self.connections:
            self.all_ready.set()

    async def authenticate(self, ws: ClientConnection, token: str, last: tuple[dict, str] | None = None) -> None:
        if self.protocol == "circadia":
            first: dict[str, Any] = {"type": "auth", "token": token}
            if last is not None:
                first = {"type": "resume", "token": token, "cursor": last[0], "epoch": last[1]}
            await ws.send(json.dumps(first))
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 60))
                if message.get("type") == "ready":
                    return
                if message.get("type") == "error":
                    raise RuntimeError(f"refused: {message}")
        else:
            await ws.send(json.dumps({"id": 1, "connect": {"token": token, "name": "bench-fanout"}}))
            reply = json.loads((await asyncio.wait_for(ws.recv(), 60)).split("\n")[0])
            if "connect" not in reply or not reply["connect"].get("subs"):
                raise RuntimeError(f"connect refused or no personal channel: {reply}")

    async def receive_circadia(self, ws: ClientConnection, index: int) -> None:
        record, receipts, cursors = self.receipts.record, self.receipts, self.cursors
        async for raw in ws:
            received = time.time()
            message = json.loads(raw)
            kind = message.get("type")
            if kind == "prediction":
                record(message.get("prediction", {}).get("prediction_id"), index, received)
                cursor, epoch = message.get("cursor"), message.get("epoch")
                if isinstance(cursor, dict):
                    last = cursors[index]
                    if isinstance(epoch, str):
                        cursors[index] = (cursor, epoch)
                    elif last is not None:  # delivered without an epoch (Redis down)
                        cursors[index] = (cursor, last[1])
            else:
                receipts.other += 1
                if kind == "reset":
                    self.resets += 1

    async def receive_centrifugo(self, ws: ClientConnection, index: int) -> None:
        record, receipts = self.receipts.record, self.receipts
        async for raw in ws:
            received = time.time()
            for line in raw.split("\n"):  # the JSON protocol may batch replies, one per line
                if line == "{}":  # server ping: answer with an empty command
                    await ws.send("{}")
                    continue
                message = json.loads(line)
                publication = message.get("push", {}).get("pub")
                if publication is None:
                    receipts.other += 1
                    continue
                record(publication.get("data", {}).get("prediction", {}).get("prediction_id"), index, received)

    async def finish(self, first: int, end: int, quiet: float) -> dict[str, Any]:
        receipts = self.receipts
        receipts.start_phase(first, end)
        expected = (end - first) * self.per_user
        started = time.time()
        while receipts.phase_count < expected:
            receipts.progress.clear()
            try:
                await asyncio.wait_for(receipts.progress.wait(), quiet)
            except TimeoutError:
                break  # nothing new for `quiet` seconds: whatever is missing is lost
        return {"event": "phase-done", "received": receipts.phase_count, "expected": expected,
                "complete": receipts.phase_count >= expected, "waited": round(time.time() - started, 3),
                "last_arrival": receipts.last_arrival}

    def write_results(self, path: Path) -> None:
        r = self.receipts
        path.write_text(json.dumps({
            "seqs": r.seqs.tolist(), "conns": r.conns.tolist(), "times": r.times.tolist(),
            "foreign": r.foreign, "other": r.other, "closed": self.closed, "failed": self.failed[:20],
            "failed_count": len(self.failed), "extensions": sorted(self.extensions),
            "client_rss_kib": _rss_kib(),
            "url_index": self.url_index, "reconnects": self.reconnects, "resumed": self.resumed,
            "resets": self.resets, "reconnect_errors": len(self.reconnect_errors),
            "reconnect_error_samples": self.reconnect_errors[:5], "given_up": self.given_up,
        }))


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def main(spec: dict[str, Any]) -> None:
    fleet = Fleet(spec)
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    tasks = [asyncio.create_task(fleet.run_connection(i)) for i in range(fleet.connections)]
    await fleet.all_ready.wait()
    # Everything allocated so far lives as long as the run: keep the collector from walking
    # it again and again, so the fleet's own pauses stay out of the measured latencies.
    gc.collect()
    gc.freeze()
    emit({"event": "ready", "connected": fleet.connections - len(fleet.failed), "failed": len(fleet.failed),
          "errors": fleet.failed[:5], "seconds": round(time.monotonic() - started, 2),
          "extensions": sorted(fleet.extensions), "client_rss_kib": _rss_kib()})

    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        command = json.loads(line)
        if command["cmd"] == "finish":
            result = await fleet.finish(command["first"], command["end"], command.get("quiet", 20))
            emit({**result, "phase": command["phase"]})
        elif command["cmd"] == "quit":
            break
    fleet.write_results(Path(spec["results"]))
    emit({"event": "written"})
    # Closing 10,000 sockets one handshake at a time is not part of the measurement: the
    # kernel closes them when the process exits.
    del tasks
    os._exit(0)


if __name__ == "__main__":
    fleet_spec = json.loads(Path(sys.argv[1]).read_text())
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(fleet_spec))
    else:
        uvloop.run(main(fleet_spec))
