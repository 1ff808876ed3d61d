"""Request outcomes and their summaries (pure; numpy only).

A ``Recorder`` keeps one entry per request — when it completed (seconds since the phase
began), its latency, its outcome (an HTTP status, ``"ack"`` for a broker acknowledgement,
or the name of the exception), the samples it carried and its kind of upload (the traffic
model's ``Upload.kind``) — in compact arrays, and summarises a time window of them, in all
or per kind: the uploads of the traffic model differ by three orders of magnitude in size,
so one latency distribution over all of them says little about either end.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Iterable
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


def _codes(names: list[str], index: dict[str, int], name: str) -> int:
    code = index.get(name)
    if code is None:
        code = index[name] = len(names)
        names.append(name)
    return code


@dataclass
class Recorder:
    outcomes: list[str] = field(default_factory=list)  # distinct outcome names; codes index into it
    kinds: list[str] = field(default_factory=list)  # distinct kinds of upload; kind codes index into it
    done: array = field(default_factory=lambda: array("d"))  # completion, seconds since the phase began
    latency_ms: array = field(default_factory=lambda: array("d"))
    codes: array = field(default_factory=lambda: array("H"))
    kind_codes: array = field(default_factory=lambda: array("B"))
    items: array = field(default_factory=lambda: array("I"))  # samples carried (1 when not counted)
    _index: dict[str, int] = field(default_factory=dict)
    _kind_index: dict[str, int] = field(default_factory=dict)

    def add(self, done: float, latency_s: float, outcome: str, *, items: int = 1, kind: str = "") -> None:
        self.done.append(done)
        self.latency_ms.append(latency_s * 1000.0)
        self.codes.append(_codes(self.outcomes, self._index, outcome))
        self.kind_codes.append(_codes(self.kinds, self._kind_index, kind))
        self.items.append(items)

    def __len__(self) -> int:
        return len(self.done)

    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        def view(values: array, dtype: Any) -> np.ndarray:
            return np.frombuffer(values, dtype=dtype) if len(values) else np.zeros(0, dtype=dtype)

        return (view(self.done, np.float64), view(self.latency_ms, np.float64), view(self.codes, np.uint16),
                view(self.kind_codes, np.uint8), view(self.items, np.uint32))

    def summary(self, start: float, end: float, *, kinds: Iterable[str] | None = None) -> dict[str, Any]:
        """Requests completed in [start, end) (of the given kinds, or all): throughput in uploads
        and samples, latency of the successful ones, outcomes."""
        done, latency, codes, kind_codes, items = self._arrays()
        inside = (done >= start) & (done < end)
        if kinds is not None:
            inside &= np.isin(kind_codes, [self._kind_index[k] for k in kinds if k in self._kind_index])
        success_codes = [i for i, name in enumerate(self.outcomes) if name in SUCCESS]
        ok = inside & np.isin(codes, success_codes)
        counts = Counter({self.outcomes[int(c)]: int(n) for c, n in zip(*np.unique(codes[inside], return_counts=True),
                                                                       strict=True)})
        seconds = max(end - start, 1e-9)
        successes = int(ok.sum())
        samples = int(items[ok].sum(dtype=np.int64))
        return {
            "seconds": round(seconds, 2),
            "requests": int(inside.sum()),
            "succeeded": successes,
            "samples": samples,
            "mean_samples": round(samples / successes, 1) if successes else None,
            "per_s": round(successes / seconds, 1),
            "items_per_s": round(samples / seconds, 1),
            "latency_ms": percentiles(latency[ok]),
            "outcomes": dict(sorted(counts.items())),
            "errors": int(inside.sum()) - successes,
        }

    def by_kind(self, start: float, end: float) -> dict[str, dict[str, Any]]:
        """:meth:`summary` for each kind of upload seen."""
        return {kind: self.summary(start, end, kinds=(kind,)) for kind in sorted(self.kinds) if kind}
