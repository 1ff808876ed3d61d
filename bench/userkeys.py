"""The per-user key layer (``circadia.userkeys``) under the traffic model: what sealing and opening
an upload costs, what a cold key costs against a real OpenBao, and how often the caches hit.

    .venv/bin/python -m bench.userkeys [--uploads 300] [--seed 11] [--hours 24]

Workload:

- (a) sealing and opening, warm caches: the uploads of ``bench/traffic.py`` (``TrafficModel(seed)``,
  its defaults): for each profile's first user, 20 warm-up and ``--uploads`` measured ``next_upload``s
  and the week backlog (``backlog_days`` = 7) turned into the ``HealthUpload`` Avro value as the
  gateway writes it; the value sealed for the user and topic and opened again. CPU per upload
  (``time.perf_counter``, one thread).
- (b) cold keys against a real OpenBao dev server (started by the project's ``LocalOpenBao`` on a
  free port, loopback): a user's first seal (the transit key made, its identity read, a data key
  generated), a later data key (rotation), and an open by a process that has not seen the key (the
  identity read and the data key unwrapped). Wall-clock round trips, 50 users each.
- (c) cache hits in real time: the traffic model's users (its profile mix and real-time upload
  rates, ``describe()["real_time"]``) upload as Poisson arrivals for ``--hours`` of simulated time;
  for each cache time the share of seals that reuse the user's current data key (the gateway) and
  of opens that find it unwrapped (the worker, which opens what the gateway sealed). The caches
  themselves are the class's own, on a simulated clock, against the same OpenBao.

Not measured: the services' other work (their own benchmarks), OpenBao under load from many
processes, TLS to OpenBao.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import hvac
import numpy as np

from bench.common import free_port
from bench.traffic import PROFILES, TrafficModel
from bench.worker_apply import NOW, Codec, find_users, stats
from circadia.topics import HEALTH_SAMPLES
from circadia.userkeys import UserKeys
from circadia_dev.devstack.openbao import LocalOpenBao

WARMUP = 20
CACHE_SECONDS = (300.0, 900.0, 3600.0)


def timed_ms(action: Any) -> tuple[Any, float]:
    began = time.perf_counter()
    result = action()
    return result, (time.perf_counter() - began) * 1000


def warm_costs(keys: UserKeys, uploads: int, seed: int) -> dict[str, Any]:
    model, codec = TrafficModel(seed=seed), Codec()
    out: dict[str, Any] = {}
    for profile, (user, _prefill) in find_users(model).items():
        seal, open_, sizes = [], [], []
        keys.seal(user, HEALTH_SAMPLES, b"warm")  # the user's key made before timing
        for n in range(WARMUP + uploads):
            upload = model.next_upload(user, NOW)
            if upload.kind == "backlog":
                continue
            value = codec.wire(upload).value
            sealed, seal_ms = timed_ms(lambda value=value, user=user: keys.seal(user, HEALTH_SAMPLES, value))
            opened, open_ms = timed_ms(lambda sealed=sealed, user=user: keys.open(user, HEALTH_SAMPLES, sealed))
            assert opened == value
            if n >= WARMUP:
                seal.append(seal_ms)
                open_.append(open_ms)
                sizes.append(len(value))
        out[profile] = {"bytes_p50": int(np.median(sizes)), "seal_ms": stats(seal), "open_ms": stats(open_)}
    backlog_model = TrafficModel(seed=seed, backlog_fraction=0.99, backlog_days=(7.0, 7.0))
    user = "bench-backlog"
    while (upload := backlog_model.next_upload(user, NOW)).kind != "backlog":
        pass
    value = codec.wire(upload).value
    keys.seal(user, HEALTH_SAMPLES, b"warm")  # the user's key made before timing
    sealed, seal_ms = timed_ms(lambda: keys.seal(user, HEALTH_SAMPLES, value))
    _, open_ms = timed_ms(lambda: keys.open(user, HEALTH_SAMPLES, sealed))
    out["backlog"] = {"bytes": len(value), "samples": upload.samples, "seal_ms": seal_ms, "open_ms": open_ms}
    return out


def cold_costs(client: hvac.Client, users: int = 50) -> dict[str, Any]:
    first, rotated, cold_open = [], [], []
    for n in range(users):
        user = f"cold-{n}-{random.getrandbits(32):08x}"
        now = [0.0]
        keys = UserKeys(client, ttl=10, rotate_after=10, clock=lambda now=now: now[0])
        sealed, ms = timed_ms(lambda keys=keys, user=user: keys.seal(user, HEALTH_SAMPLES, b"x"))
        first.append(ms)
        now[0] = 20.0
        _, ms = timed_ms(lambda keys=keys, user=user: keys.seal(user, HEALTH_SAMPLES, b"y"))
        rotated.append(ms)
        reader = UserKeys(client)
        _, ms = timed_ms(lambda reader=reader, user=user, sealed=sealed: reader.open(user, HEALTH_SAMPLES, sealed))
        cold_open.append(ms)
    return {"first_seal_ms": stats(first), "new_data_key_ms": stats(rotated), "cold_open_ms": stats(cold_open)}


def hit_rates(client: hvac.Client, hours: float, seed: int, users: int = 200) -> dict[str, Any]:
    rates = TrafficModel(seed=seed).describe()["real_time"]["profiles"]
    rng = random.Random(seed)
    shares = [rates[p]["users"] for p in PROFILES]
    population = [(f"hit-{n}-{rng.getrandbits(32):08x}", rng.choices(PROFILES, shares)[0]) for n in range(users)]
    arrivals: list[tuple[float, str]] = []
    for user, profile in population:
        at, per_second = 0.0, rates[profile]["uploads_per_hour"] / 3600
        while (at := at + rng.expovariate(per_second)) < hours * 3600:
            arrivals.append((at, user))
    arrivals.sort()
    out: dict[str, Any] = {"uploads": len(arrivals), "users": users}
    for seconds in CACHE_SECONDS:
        now = [0.0]
        gateway = UserKeys(client, ttl=seconds, rotate_after=seconds, clock=lambda now=now: now[0])
        worker = UserKeys(client, ttl=seconds, rotate_after=seconds, clock=lambda now=now: now[0])
        made = 0
        for at, user in arrivals:
            now[0] = at
            before = gateway._current.get(user)
            sealed = gateway.seal(user, HEALTH_SAMPLES, b"v")
            made += gateway._current.get(user) is not before
            worker.open(user, HEALTH_SAMPLES, sealed)
        out[f"{seconds:g}"] = {"seal_reuse": 1 - made / len(arrivals),
                              "open_hits": worker.hits / (worker.hits + worker.misses)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uploads", type=int, default=300)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        server = LocalOpenBao(Path(home), port=free_port())
        server.start()
        try:
            client = hvac.Client(url=server.url, token=server.root_token)
            results = {"warm": warm_costs(UserKeys(client), args.uploads, args.seed),
                       "cold": cold_costs(client), "hits": hit_rates(client, args.hours, args.seed)}
        finally:
            server.stop()
    if args.json:
        print(json.dumps(results, indent=1))
        return
    print(f"workload: bench/traffic.py TrafficModel(seed={args.seed}); {args.uploads} uploads per profile; "
          f"{args.hours:g} h of real-time arrivals")
    print("\n(a) warm caches, per upload: value bytes p50, seal p50 / p99 ms, open p50 / p99 ms")
    for profile, row in results["warm"].items():
        if profile == "backlog":
            print(f"  week backlog: {row['bytes']:,} bytes ({row['samples']:,} samples), seal {row['seal_ms']:.3f} ms, "
                  f"open {row['open_ms']:.3f} ms")
        else:
            print(f"  {profile:6} {row['bytes_p50']:>8,}  {row['seal_ms']['median']:.3f} / {row['seal_ms']['p99']:.3f}"
                  f"  {row['open_ms']['median']:.3f} / {row['open_ms']['p99']:.3f}")
    print("\n(b) cold keys against OpenBao, p50 / p99 ms")
    for name, row in results["cold"].items():
        print(f"  {name:16} {row['median']:.2f} / {row['p99']:.2f}")
    hits = results["hits"]
    print(f"\n(c) cache hits over {hits['uploads']:,} uploads of {hits['users']} users")
    for seconds in CACHE_SECONDS:
        row = hits[f"{seconds:g}"]
        print(f"  cache {seconds:>6g} s: seals reusing the current key {row['seal_reuse']:.1%}, "
              f"opens hitting the cache {row['open_hits']:.1%}")


if __name__ == "__main__":
    main()
