"""Tables of an ingest benchmark outcome, as text for the terminal and as the "Ingest load and
soak" section of docs/benchmarks.md (replaced in place on re-runs; other sections are kept)."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from bench.common import replace_section

SECTION = "## Ingest load and soak"
THROUGHPUT_TARGET = 0.5  # gateway uploads/s over the raw producer's records/s
RSS_TARGET_PERCENT = 5.0
MEMORY_PROCESSES = (("ingest-gateway", "ingest gateway"), ("prediction-worker", "prediction worker"),
                    ("fanout-gateway", "fan-out gateway"))
INFO_PROCESSES = (("redis", "Redis"), ("kafka", "Kafka broker (JVM)"), ("client", "load generator + fleet"))


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _met(ok: bool | None) -> str:
    return "–" if ok is None else ("**met**" if ok else "**not met**")


def memory_analysis(memory: dict[str, Any], name: str) -> dict[str, Any]:
    """Start, end, max VmRSS and growth: the mean of the last ``window_s`` over the mean of the
    ``window_s`` after the warm-up."""
    samples = [(row["t"], row.get(name)) for row in memory["samples"] if row.get(name) is not None]
    if not samples:
        return {"start": None, "end": None, "max": None, "first": None, "last": None, "growth_percent": None,
                "gaps": len(memory["samples"])}
    warmup, window = memory["warmup_s"], memory["window_s"]
    end_t = max(t for t, _ in samples)
    first = [v for t, v in samples if warmup <= t < warmup + window]
    last = [v for t, v in samples if t > end_t - window]
    first_mean = sum(first) / len(first) if first else None
    last_mean = sum(last) / len(last) if last else None
    growth = (last_mean - first_mean) / first_mean * 100 if first_mean and last_mean else None
    return {"start": samples[0][1], "end": samples[-1][1], "max": max(v for _, v in samples),
            "first": first_mean, "last": last_mean, "growth_percent": growth,
            "gaps": len(memory["samples"]) - len(samples)}


def checks(outcome: dict[str, Any]) -> dict[str, Any]:
    baseline, gateway = outcome["baseline"]["window"]["per_s"], outcome["gateway"]["window"]["per_s"]
    ratio = gateway / baseline if baseline else None
    memory = {name: memory_analysis(outcome["soak"]["memory"], name) for name, _ in MEMORY_PROCESSES}
    growths = [m["growth_percent"] for m in memory.values()]
    return {
        "ratio": ratio,
        "throughput_met": None if ratio is None else ratio >= THROUGHPUT_TARGET,
        "memory": memory,
        "memory_met": None if any(g is None for g in growths) else all(g < RSS_TARGET_PERCENT for g in growths),
    }


def _mib(kib: float | None) -> str:
    return "–" if kib is None else f"{kib / 1024:,.1f}"


def _lat(summary: dict[str, Any]) -> str:
    lat = summary["latency_ms"]
    return f"{_fmt(lat['p50'])} / {_fmt(lat['p99'])} / {_fmt(lat['max'], 0)}"


def _outcomes(summary: dict[str, Any]) -> str:
    return ", ".join(f"{k}: {v:,}" for k, v in summary["outcomes"].items()) or "–"


def _counters(phase: dict[str, Any], service: str, strip: str = "circadia_") -> str:
    """The service's watched counters that moved during the phase, e.g. ``idempotency{new} 1,234``."""
    items = []
    for key, value in (phase.get("counters") or {}).items():
        name, _, metric = key.partition(":")
        if name != service:
            continue
        metric = metric.removeprefix(strip).replace("_total", "")
        metric = re.sub(r'(\w+)="([^"]*)"', r"\2", metric)  # {outcome="new"} -> {new}
        items.append(f"{metric} {value:,.0f}")
    return "; ".join(items) or "–"


def _degraded(phase: dict[str, Any]) -> str:
    """Uploads the gateway stored without its Redis ledger or limiter (counted in its /metrics)."""
    counters = phase.get("counters") or {}

    def total(prefix: str, label: str = "") -> float:
        return sum(v for k, v in counters.items() if k.startswith(f"ingest-gateway:{prefix}") and label in k)

    unchecked = total("circadia_ingest_idempotency_total", 'outcome="unchecked"')
    unmarked = total("circadia_ingest_idempotency_total", 'outcome="unmarked"')
    fail_open = total("circadia_ratelimit_unavailable_total")
    return f"{unchecked:,.0f} / {unmarked:,.0f} / {fail_open:,.0f}"


def _warmup_outcomes(phase: dict[str, Any]) -> str:
    whole, window = phase["whole"]["outcomes"], phase["window"]["outcomes"]
    rest = {k: whole[k] - window.get(k, 0) for k in whole if whole[k] - window.get(k, 0)}
    return ", ".join(f"{k}: {v:,}" for k, v in sorted(rest.items())) or "–"


def throughput_table(outcome: dict[str, Any]) -> str:
    b, g, h = outcome["baseline"], outcome["gateway"], outcome.get("gateway_high")
    c = checks(outcome)

    def gateway_cells(phase: dict[str, Any]) -> list[str]:
        w, cpu = phase["window"], phase["cpu"]
        return [_fmt(w["per_s"], 0), _fmt(w["items_per_s"], 0), _lat(w), f"{w['requests']:,}", _outcomes(w),
                f"{w['errors']:,}", _warmup_outcomes(phase), _degraded(phase), "–",
                _fmt(cpu["ingest-gateway"]["ms_per_upload"], 2), f"{_fmt(cpu['ingest-gateway']['core_percent'], 0)} %",
                f"{_fmt(cpu['kafka']['ms_per_upload'], 2)} / {_fmt(cpu['redis']['ms_per_upload'], 2)}",
                _fmt(cpu["client"]["ms_per_upload"], 2), f"{phase['loadavg_1m'][0]} / {phase['loadavg_1m'][1]}"]

    bw, bc = b["window"], b["cpu"]
    encode = b.get("encode_ms", {})
    producer = [_fmt(bw["per_s"], 0), _fmt(bw["items_per_s"], 0), _lat(bw), f"{bw['requests']:,}", _outcomes(bw),
                f"{bw['errors']:,}", _warmup_outcomes(b), "–",
                f"{_fmt(encode.get('build'), 2)} / {_fmt(encode.get('encode'), 2)}",
                _fmt(bc["client"]["ms_per_upload"], 2), f"{_fmt(bc['client']['core_percent'], 0)} %",
                f"{_fmt(bc['kafka']['ms_per_upload'], 2)} / {_fmt(bc['redis']['ms_per_upload'], 2)}", "–",
                f"{b['loadavg_1m'][0]} / {b['loadavg_1m'][1]}"]
    labels = ["uploads/s (records/s)", "samples/s", "latency p50 / p99 / max (ms): ack / HTTP answer",
              "requests in the window", "outcomes", "errors", "outcomes during the warm-up (not measured)",
              "ledger unchecked / unmarked / rate limit failed open (gateway's /metrics)",
              "building / Avro-encoding one record, median (ms)",
              "CPU per upload of the publishing process: producer / gateway (ms)", "… its share of one core",
              "CPU per upload, Kafka broker / Redis (ms)", "CPU per upload, load generator (ms)",
              "load average (1 min) before / after"]
    columns = [producer, gateway_cells(g)] + ([gateway_cells(h)] if h else [])
    rows = [[label, *(column[i] for column in columns)] for i, label in enumerate(labels)]
    ratio = f"{c['ratio']:.2f}× (target ≥ {THROUGHPUT_TARGET}×: {_met(c['throughput_met'])})" if c["ratio"] else "–"
    rows.insert(1, ["gateway / raw producer", "", ratio] + ([""] if h else []))
    header = ["", f"raw producer ({b['concurrency']} tasks)", f"gateway ({g['concurrency']} devices)"]
    if h:
        header.append(f"gateway ({h['concurrency']} devices, {h['duration_s']:g} s)")
    return _table(header, rows)


def _sockets(f: dict[str, Any]) -> str:
    text = f"{f['ready']} of {f['sockets']} ready"
    refused = f.get("refused") or {}
    if refused:
        codes = ", ".join(f"{n} × {code}" for code, n in refused.items())
        text += f" (first authentication refused, then retried: {codes})"
    text += f"; {f['failed_count']} failed attempts, {sum(f['closed'].values())} closed by the server later, " \
            f"{f['reconnects']} reconnects"
    return text


def soak_table(outcome: dict[str, Any]) -> str:
    s = outcome["soak"]
    w, whole, f = s["window"], s["whole"], s["fleet"]
    delivered = f"{f['delivered']:,} of {f['accepted']:,} accepted"
    if f["undelivered"]:
        delivered += f" ({f['undelivered']:,} not delivered)"
    rows = [
        ["target rate", f"{s['rate']:g} uploads/s ({s.get('rate_source', '')})"],
        ["achieved (whole soak)", f"{whole['per_s']:,.1f} uploads/s, {whole['items_per_s']:,.0f} samples/s"],
        ["uploads answered", f"{whole['requests']:,}: {_outcomes(whole)}"],
        ["errors (whole soak)", f"{whole['errors']:,}"],
        ["HTTP latency p50 / p99 / max (ms), after warm-up", _lat(w)],
        ["uploads that left > 100 ms late (generator behind)", f"{s['late_launches']:,} (max lag "
                                                                f"{s['max_launch_lag_ms']} ms)"],
        ["WebSockets (one per user)", _sockets(f)],
        ["predictions received", f"{f['predictions']:,}"],
        ["uploads delivered (in a prediction's source_upload_ids)", delivered],
        ["duplicates / misrouted / foreign", f"{f['duplicates']} / {f['misrouted']} / {f['foreign']}"],
        ["end-to-end latency p50 / p99 / max (ms), after warm-up",
         f"{_fmt(f['e2e_ms_window']['p50'])} / {_fmt(f['e2e_ms_window']['p99'])} / "
         f"{_fmt(f['e2e_ms_window']['max'], 0)}"],
        ["last deliveries after the load stopped (s)", _fmt(f["settle_s"])],
        ["ingest gateway: ledger unchecked / unmarked / rate limit failed open", _degraded(s)],
        ["ingest gateway counters", _counters(s, "ingest-gateway")],
        ["worker counters", _counters(s, "prediction-worker")],
        ["fan-out counters", _counters(s, "fanout-gateway")],
    ]
    return _table(["soak", ""], rows)


def memory_table(outcome: dict[str, Any]) -> str:
    s = outcome["soak"]
    memory = s["memory"]
    rows = []
    for name, label in (*MEMORY_PROCESSES, *INFO_PROCESSES):
        m = memory_analysis(memory, name)
        cpu = s["cpu"].get(name, {})
        target = ""
        if name in dict(MEMORY_PROCESSES) and m["growth_percent"] is not None:
            target = _met(m["growth_percent"] < RSS_TARGET_PERCENT)
        elif name in dict(MEMORY_PROCESSES):
            target = "**not measured**"
        growth = "–" if m["growth_percent"] is None else f"{m['growth_percent']:+.1f} %"
        rows.append([label, _mib(m["start"]), _mib(m["end"]), _mib(m["max"]), _mib(m["first"]), _mib(m["last"]),
                     growth, target or "(information)",
                     f"{_fmt(cpu.get('core_percent'), 0)} %" if cpu else "–",
                     _fmt(cpu.get("ms_per_upload"), 2) if cpu else "–"])
    w, window = memory["warmup_s"], memory["window_s"]
    return _table(["process", "RSS start (MiB)", "end", "max", f"mean {w:g}–{w + window:g} s",
                   f"mean last {window:g} s", "growth", f"< {RSS_TARGET_PERCENT:g} %", "CPU (one core)",
                   "CPU ms / upload"], rows)


def timeline_table(outcome: dict[str, Any], every_s: float = 60.0) -> str:
    """Per ``every_s``: throughput, latency, errors, deliveries and RSS, from the soak's buckets."""
    s = outcome["soak"]
    buckets, samples = s["buckets"], s["memory"]["samples"]
    bucket_s = s["memory"]["every_s"]
    per = max(1, round(every_s / bucket_s))
    rows = []
    for start in range(0, len(buckets), per):
        group = buckets[start:start + per]
        if not group:
            break
        t_end = group[-1]["t"]
        rate = sum(b["per_s"] for b in group) / len(group)
        errors = sum(b["errors"] for b in group)
        p99 = max((b["p99_ms"] or 0) for b in group)
        p50 = sorted(b["p50_ms"] or 0 for b in group)[len(group) // 2]
        delivered = sum(b.get("delivered_per_s", 0) for b in group) / len(group)
        e2e50 = sorted(b.get("e2e_p50_ms") or 0 for b in group)[len(group) // 2]
        e2e99 = max((b.get("e2e_p99_ms") or 0) for b in group)
        row = min(samples, key=lambda r: abs(r["t"] - t_end)) if samples else {}
        rows.append([f"{t_end - bucket_s * len(group):.0f}–{t_end:.0f}", _fmt(rate), _fmt(p50), _fmt(p99),
                     str(errors), _fmt(delivered), _fmt(e2e50), _fmt(e2e99),
                     *(_mib(row.get(name)) for name, _ in MEMORY_PROCESSES)])
    return _table(["soak s", "uploads/s", "p50 ms", f"p99 ms (max of {bucket_s:g} s)", "errors", "delivered/s",
                   "e2e p50 ms", f"e2e p99 ms (max of {bucket_s:g} s)", "RSS gateway MiB", "worker", "fan-out"],
                  rows)


def _machine_line(m: dict[str, str]) -> str:
    libs = ", ".join(f"{k} {m[k]}" for k in ("aiokafka", "aiohttp", "uvicorn", "starlette", "pydantic", "fastavro",
                                             "redis", "limits", "websockets", "faust-streaming", "uvloop") if k in m)
    return f"{m['cpu']}, {m['cores']} cores, {m['ram']}, {m['kernel']}; Python {m['python']}, {libs}; {m['date']}"


def _log_lines(outcome: dict[str, Any]) -> str:
    logs = outcome.get("service_logs") or {}
    lines = []
    for service, counts in logs.items():
        for message, count in sorted(counts.items(), key=lambda kv: -kv[1])[:5]:
            lines.append(f"  - {service}: {count:,} × `{message}`")
    return "\n".join(lines) if lines else "  - none"


def render_text(outcome: dict[str, Any]) -> str:
    c = checks(outcome)
    m = outcome["machine"]
    parts = [
        f"\nIngest load and soak — {_machine_line(m)}",
        f"\nThroughput ({outcome['options']['concurrency']} concurrent, "
        f"{outcome['options']['samples']} samples per upload):\n" + throughput_table(outcome),
        "\nSoak:\n" + soak_table(outcome),
        "\nMemory and CPU over the soak:\n" + memory_table(outcome),
        "\nSoak timeline:\n" + timeline_table(outcome),
        "\nWarnings/errors in the service logs:\n" + _log_lines(outcome),
        f"\nTargets: gateway ≥ {THROUGHPUT_TARGET}× raw producer: {_met(c['throughput_met'])}"
        f" ({c['ratio']:.2f}×); RSS growth < {RSS_TARGET_PERCENT:g} %: {_met(c['memory_met'])}",
    ]
    return "\n".join(parts)


def render_markdown(outcome: dict[str, Any]) -> str:
    o, m, s = outcome["options"], outcome["machine"], outcome["soak"]
    c = checks(outcome)
    memory = s["memory"]
    growth = ", ".join(f"{label} {c['memory'][name]['growth_percent']:+.1f} %"
                       if c["memory"][name]["growth_percent"] is not None else f"{label} –"
                       for name, label in MEMORY_PROCESSES)
    h = outcome.get("gateway_high")
    high = (f"\n  Then {h['duration_s']:g} s more (after {h['warmup_s']:g} s unmeasured) with {h['concurrency']} "
            "devices: more requests at once than\n  the gateway's Redis connection pool holds "
            "(`CIRCADIA_REDIS_MAX_CONNECTIONS`, 100; a request waits for a free connection)." if h else "")
    return f"""{SECTION}

The ingest gateway (`services/ingest_gateway`, one uvicorn process) under load, against a raw Kafka
producer publishing the same records, then a soak of the whole pipeline (gateway → Kafka → prediction
worker → fan-out gateway → WebSockets) at a steady rate, with the processes' memory sampled throughout.
One command starts a `LocalStack` of its own (Kafka 4.4 via the project's launcher, Redis, the three
services; no Jaeger/Prometheus, so spans are created but not exported) on free ports in a temporary
folder, runs the phases and stops everything. Rate limits are raised through the stack's overrides
(`CIRCADIA_INGEST_RATE_LIMIT_PER_USER={o['rate_limit_per_user']}`, `_PER_IP={o['rate_limit_per_ip']}`) so
the limiter does its Redis work on every request but never refuses; everything else is the services'
defaults (idempotency ledger in Redis, JSON logs to a file, `linger_ms` 5, acks=all).

- **Uploads**: {o['users']} users; each upload is {o['samples']} one-minute `step_count` samples of one
  user's watch (~{o["samples"] * 120 / 1000:.0f} KB of JSON), a fresh `upload_id`, timestamps within the last day.
- **Raw producer** (`bench/ingest/baseline.py`, own process): `circadia.kafka.create_producer` with the
  gateway's options (acks=all, idempotent, `linger_ms` 5, 8 MiB `max_request_size`); {o['concurrency']}
  tasks each build the `io.circadia.health.HealthUpload` record the gateway builds for such an upload,
  encode it with `circadia.avro` (validate + schemaless write), send it to `health.samples.v1` with the
  gateway's key and headers, and await the acknowledgement before the next.
- **Gateway** (`bench/ingest/load.py`, own process, aiohttp {m.get('aiohttp', '?')} keep-alive, uvloop):
  {o['concurrency']} devices in a closed loop, each posting its next upload as soon as the previous one
  is answered; each device has its own loopback source address (127.0.1.x), so the per-address limit
  sees many clients, as in production. Both phases: {o['warmup_seconds']:g} s unmeasured, then
  {o['load_seconds']:g} s measured. Latency = until the HTTP answer (gateway) or the ack (producer).{high}
  The gateway's own counters (`/metrics`) are read before and after each phase: uploads stored
  without the idempotency ledger (`unchecked`), stored but not marked in it (`unmarked`), and requests
  let through because the limiter's Redis calls failed.
- **Soak**: the worker (its consumer group first moved to the end of `health.samples.v1`, so it does not
  replay the throughput phases) and the fan-out gateway are started, one WebSocket per user
  authenticates, then uploads arrive on a fixed schedule (open loop: latency counted from the scheduled
  moment) at {s['rate']:g}/s ({s.get('rate_source', '')}) for {o['soak_minutes']:g} min. VmRSS of each
  process (`/proc/<pid>/status`) every {memory['every_s']:g} s; growth = mean of the last
  {memory['window_s']:g} s over the mean of the {memory['window_s']:g} s after a {memory['warmup_s']:g}-s
  warm-up. Delivered = the upload's id arrived in a prediction's `source_upload_ids` on its user's
  socket; end-to-end latency = that moment − the upload's scheduled send. CPU = utime + stime
  (`/proc/<pid>/stat`) over the soak.

```
{outcome['command']}
```

Machine: {_machine_line(m)}. **A 2-core machine shared with other jobs**, and the load generator, the
WebSocket fleet, Kafka and Redis run on the same two cores as the services: every number is a
pessimistic, noisy lower bound of what the code does on dedicated hardware, and the throughput ratio
compares two setups that both share the cores with Kafka and their own client.

#### Throughput

{throughput_table(outcome)}

#### Soak ({o['soak_minutes']:g} min, {o['users']} users, full pipeline)

{soak_table(outcome)}

{memory_table(outcome)}

Per minute of the soak (RSS: the sample nearest the minute's end):

{timeline_table(outcome)}

Warnings and errors in the services' logs over the run (most frequent first):

{_log_lines(outcome)}

**Targets**: gateway ≥ {THROUGHPUT_TARGET}× the raw producer: {_met(c['throughput_met'])}
({c['ratio']:.2f}×). RSS growth < {RSS_TARGET_PERCENT:g} % over the soak: {_met(c['memory_met'])} ({growth}).
"""


def update_docs(path: Path, section: str) -> None:
    replace_section(path, SECTION, section)
