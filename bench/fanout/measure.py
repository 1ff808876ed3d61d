"""What is measured and how: /proc readings of a server process, the analysis of the
fleet's receipts, and the description of the machine. No I/O beyond /proc and version calls."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.fanout.workload import Plan

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of ``pid`` (all its threads), in seconds; 0 without a pid."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14, 15)


@dataclass(frozen=True)
class PhaseResult:
    messages: int
    expected: int  # deliveries: messages x connections of the addressed user
    received: int  # every delivery of a message of this phase, duplicates included
    lost: int
    duplicates: int
    misrouted: int  # delivered to a connection of another user (must be 0)
    deliveries_per_s: float  # received / (last receipt - first publish)
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    cpu_s: float  # server CPU over the phase (first publish to last receipt, plus the client's report)
    cpu_us_per_delivery: float
    cpu_us_per_delivery_net: float  # the same after subtracting the idle rate over the phase


def analyse_phase(plan: Plan, receipts: dict[str, Any], published: np.ndarray, first: int, end: int,
                  cpu_s: float, wall_s: float, idle_cpu_per_s: float) -> PhaseResult:
    seqs = np.asarray(receipts["seqs"], dtype=np.int64)
    conns = np.asarray(receipts["conns"], dtype=np.int64)
    times = np.asarray(receipts["times"], dtype=np.float64)
    in_phase = (seqs >= first) & (seqs < end)
    seqs, conns, times = seqs[in_phase], conns[in_phase], times[in_phase]
    own = (conns // plan.connections_per_user) == (seqs % plan.users)
    keys = seqs[own] * plan.connections + conns[own]
    unique, counts = np.unique(keys, return_counts=True)
    expected = plan.deliveries(first, end)
    latency_ms = (times - published[seqs]) * 1000.0
    received = int(in_phase.sum())
    span = float(times.max() - published[first:end].min()) if received else float("nan")
    pct = (lambda q: float(np.percentile(latency_ms, q))) if received else (lambda q: float("nan"))
    return PhaseResult(
        messages=end - first, expected=expected, received=received,
        lost=expected - len(unique), duplicates=int((counts - 1).sum()), misrouted=int((~own).sum()),
        deliveries_per_s=received / span if received else 0.0, seconds=span,
        p50_ms=pct(50), p99_ms=pct(99), max_ms=float(latency_ms.max()) if received else float("nan"),
        cpu_s=cpu_s, cpu_us_per_delivery=cpu_s / received * 1e6 if received else float("nan"),
        cpu_us_per_delivery_net=max(0.0, cpu_s - idle_cpu_per_s * wall_s) / received * 1e6
        if received else float("nan"),
    )


def phase_dict(result: PhaseResult) -> dict[str, Any]:
    return {key: round(value, 3) if isinstance(value, float) else value for key, value in asdict(result).items()}


def machine(versions: dict[str, str]) -> dict[str, str]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown")
    mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:"))
    return {
        "cpu": model,
        "cores": str(os.cpu_count()),
        "ram": f"{mem_kib / 2**20:.1f} GiB",
        "kernel": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        **versions,
    }


def package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def command_output(argv: list[str]) -> str:
    try:
        # argv list, no shell; used for version strings of tools the benchmark runs
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False).stdout.strip()  # noqa: S603
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
