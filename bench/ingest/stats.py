"""Request outcomes and their summaries (pure; numpy only).

A ``Recorder`` keeps one entry per request — when it completed (seconds since the phase
began), its latency and its outcome (an HTTP status, ``"ack"`` for a broker acknowledgement,
or the name of the exception) — in compact arrays, and summarises a time window of them.
"""

from __future__ import annotations

from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SUCCESS = frozenset({"202", "ack"})


def percentiles(values: Any, qs: tuple[float, ...] = (50, 99)) -> dict[str, float | None]:
    """p50, p99 and max of a sequence of numbers (rounded to 0.01); None for an empty one."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        empty: dict[str, float | None] = {f"p{q:g}": None for q in qs}
        return empty | {"max": None}
    result: dict[str, float | None] = {f"p{q:g}": round(float(np.percentile(data, q)), 2) for q in qs}
    result["max"] = round(float(data.max()), 2)
    return result


@dataclass
class Recorder:
    outcomes: list[str] = field(default_factory=list)  # distinct outcome names; codes index into it
    done: array = field(default_factory=lambda: array("d"))  # completion, seconds since the phase began
    latency_ms: array = field(default_factory=lambda: array("d"))
    codes: array = field(default_factory=lambda: array("H"))
    _index: dict[str, int] = field(default_factory=dict)

    def add(self, done: float, latency_s: float, outcome: str) -> None:
        code = self._index.get(outcome)
        if code is None:
            code = self._index[outcome] = len(self.outcomes)
            self.outcomes.append(outcome)
        self.done.append(done)
        self.latency_ms.append(latency_s * 1000.0)
        self.codes.append(code)

    def __len__(self) -> int:
        return len(self.done)

    def summary(self, start: float, end: float, *, items_per_success: int = 1) -> dict[str, Any]:
        """Requests completed in [start, end): throughput, latency of the successful ones, outcomes."""
        done = np.frombuffer(self.done, dtype=np.float64) if len(self.done) else np.zeros(0)
        latency = np.frombuffer(self.latency_ms, dtype=np.float64) if len(self.latency_ms) else np.zeros(0)
        codes = np.frombuffer(self.codes, dtype=np.uint16) if len(self.codes) else np.zeros(0, dtype=np.uint16)
        inside = (done >= start) & (done < end)
        success_codes = [i for i, name in enumerate(self.outcomes) if name in SUCCESS]
        ok = inside & np.isin(codes, success_codes)
        counts = Counter({self.outcomes[int(c)]: int(n) for c, n in zip(*np.unique(codes[inside], return_counts=True),
                                                                       strict=True)})
        seconds = max(end - start, 1e-9)
        successes = int(ok.sum())
        return {
            "seconds": round(seconds, 2),
            "requests": int(inside.sum()),
            "succeeded": successes,
            "per_s": round(successes / seconds, 1),
            "items_per_s": round(successes * items_per_success / seconds, 1),
            "latency_ms": percentiles(latency[ok]),
            "outcomes": dict(sorted(counts.items())),
            "errors": int(inside.sum()) - successes,
        }
