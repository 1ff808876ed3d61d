"""What sealing each user's data (``circadia.sealing``) adds to the gateway's and the worker's CPU per
upload, under the traffic model, against the same work in plaintext.

    .venv/bin/python -m bench.sealing [--uploads 300] [--seed 11] [--json]

Workload (bench/traffic.py, ``TrafficModel(seed)`` at its defaults, the fixed ``now`` of
bench/worker_apply.py): the first user of each profile (watch, band, RADAR phone) with its window
filled by its prefill week, then 20 warm-up and ``--uploads`` measured ``next_upload``s (small
uploads and the model's week backlogs, as they come). For each upload, on one thread:

- the gateway: ``prepare`` (parse, validate, write the ``HealthUpload``: the gateway's own CPU per
  upload, without HTTP, Redis and Kafka), then the seal of that value with the user's data key
  (``RecordSeal.seal``'s inline path: AES-256-GCM and the envelope record);
- the worker: the decode of the plaintext value against the decode of the sealed record plus its
  opening (decrypt, decode the content, check the routing fields); the window's state written and
  read (``to_bytes`` / ``from_bytes``) against the same plus sealing and opening it
  (``prediction_worker.store``'s ``frame`` / ``unframe`` around ``UserKeys.seal`` / ``open``);
  the ``Prediction`` written against written and sealed;
- the fan-out: a result rendered as JSON for its sockets (``Renderer.render``, once per result and
  replica), plaintext against sealed (its opening inline, the key cached).

Keys are warm (a real OpenBao dev server, ``LocalOpenBao``, loopback): a cold key is a transit round
trip of about 4 ms, and how often one is needed under the traffic model is in bench/userkeys.py
(90.9 % of seals and opens hit at the default hour). Times are ``time.perf_counter`` medians and
means in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import hvac
import numpy as np

from bench.common import free_port
from bench.traffic import TrafficModel
from bench.worker_apply import NOW, Codec, filled, find_users, machine, stats, timed
from circadia.sealing import RecordSeal
from circadia.topics import HEALTH_SAMPLES, PREDICTIONS
from circadia.userkeys import UserKeys
from circadia_dev.devstack.openbao import LocalOpenBao
from fanout_gateway.records import Renderer
from ingest_gateway.body import BodyLimits
from ingest_gateway.models import ValidationRules
from ingest_gateway.prepare import BodyToPrepare, Schemas, prepare
from prediction_worker.processor import PREDICTION_ROUTING, UPLOAD_ROUTING
from prediction_worker.results import ModelOutcome, build_prediction, week_blocks
from prediction_worker.store import STATE_BINDING, frame, unframe
from prediction_worker.window import UserWindow

WARMUP = 20


class Parts:
    """What one upload's measurement needs, built once."""

    def __init__(self, keys: UserKeys) -> None:
        self.keys, self.codec = keys, Codec()
        self.upload_seal = RecordSeal(self.codec.schemas, self.codec.upload_schema, HEALTH_SAMPLES, UPLOAD_ROUTING)
        self.prediction_seal = RecordSeal(self.codec.schemas, self.codec.prediction_schema, PREDICTIONS,
                                          PREDICTION_ROUTING)
        self.schemas = Schemas.of(self.codec.schemas)
        self.limits = BodyLimits(8 << 20, 32 << 20)
        self.rules = ValidationRules(now=NOW, history=timedelta(days=30))
        self.renderer = Renderer(self.codec.schemas, self.codec.prediction_schema, keys)

    def seal_upload(self, user: str, upload_id: str, value: bytes) -> bytes:
        routing = {"upload_id": upload_id, "user_id": user, "received_at": NOW}
        return self.upload_seal.envelope(routing, self.keys.seal(user, HEALTH_SAMPLES, value))

    def open_upload(self, sealed: bytes) -> dict[str, Any]:
        outer = self.codec.schemas.decode(sealed, self.codec.upload_schema.headers(), self.codec.upload_schema,
                                          logical=False)
        opened = self.upload_seal.open_cached(self.keys, outer, logical=False)
        if opened is None:
            raise RuntimeError("the data key was not cached")
        return opened

    def seal_state(self, user: str, state: bytes, pending: list[str]) -> bytes:
        return frame(self.keys.seal(user, STATE_BINDING, state), pending)

    def open_state(self, user: str, stored: bytes) -> bytes:
        return self.keys.open(user, STATE_BINDING, unframe(stored)[1])

    def seal_prediction(self, user: str, record: dict[str, Any], value: bytes) -> bytes:
        return self.prediction_seal.envelope(record, self.keys.seal(user, PREDICTIONS, value))

    def one(self, user: str, window: UserWindow, blocks: Any, upload: Any, first_plain: bool) -> dict[str, float]:
        """One upload's times, plaintext and sealed (module docstring)."""
        c = self.codec
        body = BodyToPrepare(json.dumps(upload.body).encode(), "application/json", None, self.limits, self.rules,
                             user, NOW)
        prepared, gateway = timed(prepare, body, self.schemas)
        sealed, seal_ms = timed(self.seal_upload, user, prepared.upload_id, prepared.value)
        decode = partial(c.schemas.decode, prepared.value, c.upload_schema.headers(), c.upload_schema, logical=False)
        if first_plain:  # the two decodes alternate their order: the second runs with more objects alive
            plain, decode_ms = timed(decode)
            opened, open_ms = timed(self.open_upload, sealed)
        else:
            opened, open_ms = timed(self.open_upload, sealed)
            plain, decode_ms = timed(decode)
        if opened["samples"] != plain["samples"]:
            raise AssertionError("the opened upload is not the plaintext one")
        window.apply(plain)
        state, to_bytes_ms = timed(window.to_bytes)
        _, from_bytes_ms = timed(UserWindow.from_bytes, state)
        sealed_state, seal_state_ms = timed(self.seal_state, user, state, window.pending)
        opened_state, open_state_ms = timed(self.open_state, user, sealed_state)
        if opened_state != state:
            raise AssertionError("the opened window is not the plaintext one")
        record = build_prediction(window, user, [prepared.upload_id], NOW, ModelOutcome(), blocks)
        value, encode_ms = timed(c.prediction_schema.write, record)
        sealed_prediction, seal_prediction_ms = timed(self.seal_prediction, user, record, value)
        fingerprint = c.prediction_schema.fingerprint
        text, render_ms = timed(self.renderer.render, fingerprint, value)
        opened_text, render_sealed_ms = timed(self.renderer.render, fingerprint, sealed_prediction)
        if opened_text != text:
            raise AssertionError("the fan-out rendered the sealed result differently")
        return {"gateway_plain": gateway, "gateway_sealed": gateway + seal_ms,
                "worker_decode_plain": decode_ms, "worker_decode_sealed": open_ms,
                "worker_state_plain": to_bytes_ms + from_bytes_ms,
                "worker_state_sealed": to_bytes_ms + from_bytes_ms + seal_state_ms + open_state_ms,
                "worker_result_plain": encode_ms, "worker_result_sealed": encode_ms + seal_prediction_ms,
                "fanout_render_plain": render_ms, "fanout_render_sealed": render_sealed_ms,
                "samples": upload.samples, "state_bytes": len(state), "upload_bytes": len(prepared.value),
                "sealed_upload_bytes": len(sealed)}


def measure(keys: UserKeys, uploads: int, seed: int) -> dict[str, Any]:
    parts, model = Parts(keys), TrafficModel(seed=seed)
    out: dict[str, Any] = {}
    for profile, (user, prefill) in find_users(model).items():
        window = filled(parts.codec, prefill)
        blocks = week_blocks(window, NOW)
        t: dict[str, list[float]] = defaultdict(list)
        for n in range(WARMUP + uploads):
            times = parts.one(user, window, blocks, model.next_upload(user, NOW), first_plain=n % 2 == 0)
            if n >= WARMUP:
                for key, value in times.items():
                    t[key].append(value)
        out[profile] = {key: stats(values) for key, values in t.items()}
    return out


def print_report(out: dict[str, Any]) -> None:
    for key, value in out["machine"].items():
        print(f"{key}: {value}")
    print(f"\n{'profile':<8} {'part':<26} {'plaintext ms':>13} {'sealed ms':>10} {'added ms':>9} {'added':>7}")
    for profile, t in out["profiles"].items():
        for part, label in (("gateway", "gateway: prepare (+ seal)"), ("worker_decode", "worker: decode (+ open)"),
                            ("worker_state", "worker: state (+ seal/open)"),
                            ("worker_result", "worker: result (+ seal)"),
                            ("fanout_render", "fan-out: render (+ open)")):
            plain, sealed = t[f"{part}_plain"]["mean"], t[f"{part}_sealed"]["mean"]
            print(f"{profile:<8} {label:<26} {plain:>13.3f} {sealed:>10.3f} {sealed - plain:>9.3f} "
                  f"{(sealed - plain) / plain:>7.1%}")
        print(f"{profile:<8} samples mean {t['samples']['mean']:.0f}, upload {t['upload_bytes']['mean']:.0f} B "
              f"(sealed {t['sealed_upload_bytes']['mean']:.0f} B), window state {t['state_bytes']['mean']:.0f} B")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--uploads", type=int, default=300)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sealing-") as folder:
        server = LocalOpenBao(Path(folder), port=free_port())
        server.start()
        try:
            keys = UserKeys(hvac.Client(url=server.url, token=server.root_token))
            began = time.time()
            profiles = measure(keys, args.uploads, args.seed)
        finally:
            server.stop()
    out = {"machine": machine(), "uploads": args.uploads, "seed": args.seed, "profiles": profiles,
           "seconds": round(time.time() - began, 1), "numpy": np.__version__}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print_report(out)


if __name__ == "__main__":
    main()
