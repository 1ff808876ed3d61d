"""Tables of a benchmark outcome, as text for the terminal and as the "Fan-out" section of
docs/benchmarks.md (replaced in place on re-runs; other sections are left as they are)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import replace_section

SECTION = "## Fan-out"
O1_TARGET = 1.2
NAMES = {"circadia": "circadia", "circadia+deflate": "circadia, permessage-deflate", "centrifugo": "Centrifugo"}

Result = dict[str, Any]


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def _ratio(a: float, b: float) -> str:
    if not a or not b or math.isnan(a) or math.isnan(b):
        return "–"
    return f"{a / b:.2f}×"


def _by(outcome: dict[str, Any]) -> dict[tuple[str, int], Result]:
    return {(r["system"], r["connections"]): r for r in outcome["results"]}


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _exactness(r: Result) -> str:
    s, b = r["steady"], r["burst"]
    text = (f"{s['lost'] + b['lost']} / {s['duplicates'] + b['duplicates']} / "
            f"{s['misrouted'] + b['misrouted']} of {s['expected'] + b['expected']:,}")
    closed = sum(r["closed_by_server"].values())
    if r["connect_failed"] or closed:
        text += f" ({r['connect_failed']} not connected, {closed} closed by the server)"
    return text


def _cpu(phase: dict[str, Any]) -> str:
    return f"{_fmt(phase['cpu_us_per_delivery'], 0)} ({_fmt(phase['cpu_us_per_delivery_net'], 0)})"


def _support(r: Result) -> str:
    if not r["system"].startswith("circadia"):
        return "–"
    return (f"{_fmt(r['steady'].get('support_cpu_us_per_delivery'), 0)} / "
            f"{_fmt(r['burst'].get('support_cpu_us_per_delivery'), 0)}")


# label, the cell of one result, the numbers the ratio column compares (None: no ratio)
Metric = tuple[str, Callable[[Result], str], Callable[[Result], list[float]] | None]
METRICS: list[Metric] = [
    ("all N ready after (s)", lambda r: _fmt(r["connect_s"]), None),
    ("server RSS per connection (KiB)", lambda r: _fmt(r["rss_per_connection_kib"]),
     lambda r: [r["rss_per_connection_kib"]]),
    ("steady: deliveries/s", lambda r: _fmt(r["steady"]["deliveries_per_s"], 0), None),
    ("steady: latency p50 / p99 / max (ms)",
     lambda r: " / ".join(_fmt(r["steady"][k], 2) for k in ("p50_ms", "p99_ms", "max_ms")),
     lambda r: [r["steady"]["p50_ms"], r["steady"]["p99_ms"], r["steady"]["max_ms"]]),
    ("lost / duplicate / misrouted deliveries", _exactness, None),
    ("burst: deliveries/s", lambda r: _fmt(r["burst"]["deliveries_per_s"], 0),
     lambda r: [r["burst"]["deliveries_per_s"]]),
    ("burst: latency p50 / p99 (ms)", lambda r: f"{_fmt(r['burst']['p50_ms'], 0)} / {_fmt(r['burst']['p99_ms'], 0)}",
     None),
    ("server CPU per delivery, steady: µs (net of idle)", lambda r: _cpu(r["steady"]),
     lambda r: [r["steady"]["cpu_us_per_delivery"]]),
    ("server CPU per delivery, burst: µs (net of idle)", lambda r: _cpu(r["burst"]),
     lambda r: [r["burst"]["cpu_us_per_delivery"]]),
    ("server CPU with N idle connections (%)", lambda r: _fmt(r["idle_cpu_percent"], 1), None),
    ("Kafka + Redis CPU per delivery, steady / burst (µs)", _support, None),
    ("load average (1 min), before → after the phases",
     lambda r: " → ".join(_fmt(x, 1) for x in r.get("loadavg_1m", [])), None),
]


def per_n_tables(outcome: dict[str, Any], heading: str = "") -> str:
    """One table per N: a row per metric, a column per system, and circadia / Centrifugo."""
    by = _by(outcome)
    parts = []
    for n in sorted({r["connections"] for r in outcome["results"]}):
        results = [by[(s, n)] for s in NAMES if (s, n) in by]
        ours, peer = by.get(("circadia", n)), by.get(("centrifugo", n))
        both = ours is not None and peer is not None
        header = ["", *(NAMES[r["system"]] for r in results)] + (["circadia / Centrifugo"] if both else [])
        rows = []
        for label, cell, compared in METRICS:
            row = [label, *(cell(r) for r in results)]
            if both:
                row.append(" / ".join(_ratio(a, b) for a, b in zip(compared(ours), compared(peer), strict=True))
                           if compared else "")
            rows.append(row)
        parts.append(f"{heading}N = {n:,} ({results[0]['users']:,} users)\n\n{_table(header, rows)}")
    return "\n\n".join(parts)


def o1_checks(outcome: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-delivery server CPU at the largest N over the smallest, for each system and phase."""
    by = _by(outcome)
    ns = sorted({r["connections"] for r in outcome["results"]})
    checks: list[dict[str, Any]] = []
    if len(ns) < 2:
        return checks
    low, high = ns[0], ns[-1]
    for system in NAMES:
        a, b = by.get((system, low)), by.get((system, high))
        if a is None or b is None:
            continue
        for phase in ("steady", "burst"):
            for key, label in (("cpu_us_per_delivery", "gross"), ("cpu_us_per_delivery_net", "net of idle")):
                ratio = b[phase][key] / a[phase][key] if a[phase][key] else float("nan")
                checks.append({"system": system, "phase": phase, "measure": label, "low": low, "high": high,
                               "low_us": a[phase][key], "high_us": b[phase][key], "ratio": ratio,
                               "met": ratio <= O1_TARGET})
    return checks


def _o1_table(checks: list[dict[str, Any]]) -> str:
    rows = [[NAMES[c["system"]], c["phase"], c["measure"], _fmt(c["low_us"], 0), _fmt(c["high_us"], 0),
             f"{c['ratio']:.2f}×", "met" if c["met"] else "not met"] for c in checks]
    low, high = checks[0]["low"], checks[0]["high"]
    return _table(["system", "phase", "server CPU", f"µs / delivery at N = {low:,}", f"at N = {high:,}",
                   "ratio", f"≤ {O1_TARGET}×"], rows)


def _machine_line(m: dict[str, str]) -> str:
    return (f"{m['cpu']}, {m['cores']} cores, {m['ram']}, {m['kernel']}; Python {m['python']}, {m['go']}, "
            f"Centrifugo {m['centrifugo']}, websockets {m['websockets']}, aiokafka {m['aiokafka']}, "
            f"uvloop {m['uvloop']}; {m['date']}")


def render_text(outcome: dict[str, Any]) -> str:
    parts = [per_n_tables(outcome)]
    if checks := o1_checks(outcome):
        parts.append(f"O(1) check: server CPU per delivery, largest N / smallest N (target ≤ {O1_TARGET}×)\n\n"
                     + _o1_table(checks))
    parts.append("machine: " + _machine_line(outcome["machine"]))
    return "\n\n".join(parts)


def render_markdown(outcome: dict[str, Any], command: str) -> str:
    m, w = outcome["machine"], outcome["workload"]
    ns = ", ".join(f"{n:,}" for n in w["connections"])
    deflate = ("The sockets do not offer permessage-deflate (Centrifugo's default config would not "
               "negotiate it); the gateway is also run with a fleet that offers it, as browsers do, and "
               "accepts it (column \"circadia, permessage-deflate\")." if w["deflate"] == "both"
               else "The sockets do not offer permessage-deflate.")
    body = f"""{SECTION}

The circadia fan-out gateway (`services/fanout_gateway`, one Python process) against Centrifugo
{m['centrifugo']} (one Go process) on loopback, both pushing the same ~2.2 KB prediction JSON over
WebSockets. For each system and each N ({ns} connections, {w['per_user']} per user): a fresh server; a
client fleet in its own process (`bench/fanout/client.py`, asyncio + uvloop, websockets {m['websockets']})
opens the N sockets and waits until every one is ready. {deflate} **Steady**: {w['messages']:,} messages
at {w['rate']:,.0f}/s, message k to user k mod users ({w['messages'] * w['per_user']:,} deliveries).
**Burst**: {w['burst']:,} messages published as fast as the publisher goes ({w['burst'] * w['per_user']:,}
deliveries). Every message must arrive exactly once at each connection of its user: lost, duplicate and
misrouted deliveries are counted per connection.

- **circadia**: Kafka 4.4 (the project's launcher) and Redis on free ports; the gateway started with
  `LocalStack.start_service("fanout-gateway")` and the stack's dev token issuer, its own defaults except
  the connection caps (raised so N fit) and no OTLP collector (spans are created, not exported). One
  replica owns all partitions: it reads each result's head, records it in the user's Redis history and
  publishes it on the user's sharded Pub/Sub channel in one Lua call, receives it back on its
  subscription (the user is connected to it), decodes it once and pushes it to the user's sockets — the
  whole path of the tier, in one process. Records produced to
  `predictions.v1` with aiokafka {m['aiokafka']} as the worker writes them (schemaless Avro, schema headers,
  key = user id; acks=all, `linger_ms=0`). Latency = client receipt − the Kafka record timestamp (set to
  the moment of the `send` call; millisecond resolution).
- **Centrifugo**: `go install github.com/centrifugal/centrifugo/v6@v6.9.1` into `.cache/centrifugo/bin`
  (built once, then reused); a config generated per run: 127.0.0.1, HMAC token secret and API key
  generated at run time, `client.subscribe_to_user_personal_channel` (namespace `personal`), memory
  engine, no history. Clients speak the JSON protocol on `/connection/websocket` with an HS256 token and
  are subscribed server-side to `personal:#<user>`. Publishing through the server HTTP API: one
  `/api/publish` request per message (steady), `/api/batch` of 100 (burst). Latency = client receipt −
  the moment before the HTTP request. GOMAXPROCS: {outcome.get('gomaxprocs') or 'default (2)'}.
- Server memory per connection = (VmRSS with all N ready − VmRSS before the first) / N. Server CPU =
  utime + stime of the server process (`/proc/<pid>/stat`) from the first publish until the fleet holds
  every delivery, over deliveries; "net of idle" first subtracts the CPU rate measured for
  {w['idle_seconds']:g} s with the N connections idle (keep-alive pings). The gateway's Kafka broker and
  Redis are separate processes: their CPU is a row of its own, not in the gateway's.

```
{command}
```

Machine: {_machine_line(m)}. **A 2-core machine shared with other jobs**: server, client fleet,
publisher and, for circadia, Kafka and Redis share the two cores with whatever else runs (the load
average row includes the benchmark's own processes), so absolute numbers are pessimistic and noisy;
the one-process Python fleet also bounds the burst throughput it can observe.

{per_n_tables(outcome, heading="#### ")}
"""
    checks = o1_checks(outcome)
    if checks:
        body += f"""
O(1) check — server CPU per delivery at N = {checks[0]['high']:,} over N = {checks[0]['low']:,}
(target ≤ {O1_TARGET}×):

{_o1_table(checks)}
"""
    return body


def update_docs(path: Path, section: str) -> None:
    replace_section(path, SECTION, section)
