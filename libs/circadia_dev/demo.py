"""A simulated day: devices upload minute-level steps, each user's app listens on its socket.

Every user gets a reproducible day of step counts (quiet nights, active days), uploaded
an hour per request. One WebSocket client per user prints the predictions that arrive,
and the demo ends by checking that the steps the server reports add up to the steps
that were sent.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import httpx
from websockets.asyncio.client import ClientConnection, connect

from circadia_dev.devkeys import DevIssuer

USERS = ("demo-ada", "demo-grace", "demo-alan")
HOURS = 24


@dataclass
class UserRun:
    user_id: str
    token: str
    day: str = ""
    steps_sent: float = 0.0
    uploads: list[str] = field(default_factory=list)
    acknowledged: int = 0
    reflected: set[str] = field(default_factory=set)  # upload_ids some received result reflects
    window_steps: float = 0.0  # steps of the demo day in the latest result


def day_of_steps(seed: str, day: datetime) -> list[dict]:
    """1440 one-minute step_count samples for the local day starting at ``day``."""
    rng = random.Random(seed)  # noqa: S311  # nosec B311  # simulated, reproducible data: nothing secret
    wake, sleep = rng.randint(6 * 60, 8 * 60), rng.randint(22 * 60, 23 * 60 + 30)
    samples = []
    for minute in range(1440):
        awake = wake <= minute < sleep
        # activity follows a daily rhythm peaking in the afternoon, with random walks
        rhythm = 0.5 - 0.5 * math.cos(2 * math.pi * (minute - wake) / max(1, sleep - wake))
        walking = awake and rng.random() < 0.08 + 0.25 * rhythm
        steps = rng.randint(60, 130) if walking else (rng.randint(0, 8) if awake else 0)
        start = day + timedelta(minutes=minute)
        samples.append({
            "type": "step_count", "start": start.isoformat(),
            "end": (start + timedelta(minutes=1)).isoformat(), "value": steps, "unit": "count",
        })
    return samples


class Display:
    def __init__(self, total: int) -> None:
        self.total = total
        self.tty = sys.stdout.isatty()
        self.acked = 0
        self.received = 0
        self._last_line = 0.0

    def event(self, text: str) -> None:
        if self.tty:
            sys.stdout.write("\r\033[K")
        print(text)
        self.progress(force=True)

    def progress(self, force: bool = False) -> None:
        line = (f"uploads acknowledged {self.acked:>3}/{self.total}  "
                f"predictions received {self.received:>3}/{self.total}")
        if self.tty:
            filled = int(30 * self.received / self.total)
            sys.stdout.write(f"\r\033[K[{'#' * filled}{'.' * (30 - filled)}] {line}")
            sys.stdout.flush()
        elif force and time.monotonic() - self._last_line > 2:
            self._last_line = time.monotonic()
            print(line)


async def _listen(ws: ClientConnection, run: UserRun, runs: list[UserRun], display: Display,
                  done: asyncio.Event) -> None:
    async for raw in ws:
        message = json.loads(raw)
        if message.get("type") != "prediction":
            continue
        prediction = message["prediction"]
        if prediction["user_id"] != run.user_id:
            raise AssertionError(f"{run.user_id} received {prediction['user_id']}'s prediction")
        day = next((d for d in prediction["daily_activity"] if d["date"] == run.day), None)
        run.window_steps = (day["steps"] or 0.0) if day else 0.0
        run.reflected.update(prediction["source_upload_ids"])
        display.received += 1
        rhythm = prediction.get("cosinor") or {}
        peak = f", activity peaks at {rhythm['acrophase']}" if rhythm.get("acrophase") else ""
        display.event(f"  {run.user_id:<11} <- prediction {prediction['prediction_id'][:8]}: "
                      f"{run.window_steps:>6.0f} steps on {run.day} so far, "
                      f"{prediction['window_minutes_covered']} minutes in the 7-day window{peak} "
                      f"(partition {message['cursor']['partition']}, offset {message['cursor']['offset']})")
        if all(len(r.reflected) == HOURS for r in runs):
            done.set()


async def _upload_day(client: httpx.AsyncClient, run: UserRun, day: datetime, display: Display) -> None:
    samples = day_of_steps(run.user_id + day.date().isoformat(), day)
    run.steps_sent = sum(s["value"] for s in samples)
    for hour in range(HOURS):
        upload_id = str(uuid.uuid4())
        run.uploads.append(upload_id)
        body = {"upload_id": upload_id,
                "device": {"id": f"{run.user_id}-phone", "model": "DemoPhone 1", "os": "DemoOS 1.0"},
                "samples": samples[hour * 60:(hour + 1) * 60]}
        response = await client.post("/v1/uploads", json=body,
                                     headers={"Authorization": f"Bearer {run.token}"})
        if response.status_code != 202:
            raise RuntimeError(f"upload refused: {response.status_code} {response.text}")
        display.acked += 1
        display.progress()
        await asyncio.sleep(0.05)


async def run_demo(issuer: DevIssuer, ingest_url: str, stream_url: str, *, timeout: float = 120.0) -> bool:
    offset = timezone(timedelta(hours=1))
    yesterday = datetime.now(offset).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    runs = [UserRun(user, issuer.mint(user), day=yesterday.date().isoformat()) for user in USERS]
    display = Display(total=HOURS * len(runs))
    print(f"simulating {yesterday.date()} for {len(runs)} users: 1440 minutes of steps each, "
          f"uploaded an hour at a time to {ingest_url}")
    done = asyncio.Event()
    sockets = []
    for run in runs:
        ws = await connect(stream_url)
        await ws.send(json.dumps({"type": "auth", "token": run.token}))
        ready = json.loads(await ws.recv())
        print(f"  {run.user_id:<11} websocket ready ({ready})")
        sockets.append(ws)
    listeners = [asyncio.create_task(_listen(ws, run, runs, display, done))
                 for ws, run in zip(sockets, runs, strict=True)]
    try:
        async with httpx.AsyncClient(base_url=ingest_url, timeout=30) as client:
            await asyncio.gather(*(_upload_day(client, run, yesterday, display) for run in runs))
        try:
            await asyncio.wait_for(done.wait(), timeout)
        except TimeoutError:
            pass
    finally:
        for task in listeners:
            task.cancel()
        for ws in sockets:
            await ws.close()
    if display.tty:
        print()
    ok = True
    print("\nsummary (steps the device sent vs. the day's steps in the latest result):")
    for run in runs:
        complete = len(run.reflected) == len(run.uploads)
        match = complete and abs(run.window_steps - run.steps_sent) < 1e-6
        ok &= match
        print(f"  {run.user_id:<11} sent {run.steps_sent:>7.0f}  reported {run.window_steps:>9.0f}  "
              f"uploads reflected {len(run.reflected)}/{len(run.uploads)}  {'OK' if match else 'MISMATCH'}")
    return ok
