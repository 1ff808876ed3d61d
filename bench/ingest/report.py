"""Tables of an ingest benchmark outcome, as text for the terminal and as the "Ingest load and
soak" section of docs/benchmarks.md (replaced in place on re-runs; other sections are kept)."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from bench.common import replace_section

SECTION = "## Ingest load and soak"
THROUGHPUT_TARGET = 0.5  # gateway uploads/s over the raw producer's, on the same mix
LATENCY_TARGET = 2.0  # small uploads' p99 with backlogs over without
RSS_TARGET_PERCENT = 5.0
KINDS = ("small", "sleep", "radar", "backlog")
MEMORY_PROCESSES = (("ingest-gateway", "ingest gateway"), ("prediction-worker", "prediction worker"),
                    ("fanout-gateway", "fan-out gateway"))
INFO_PROCESSES = (("redis", "Redis"), ("kafka", "Kafka broker (JVM)"), ("client", "load generator + fleet"))
GATEWAY, PARSERS = "ingest-gateway", "ingest-parsers"


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
    """Each target's ratio and verdict (None where its phase did not run)."""
    ratio = core_ratio = p99_ratio = None
    if outcome.get("baseline") and outcome.get("gateway"):
        baseline, gateway = outcome["baseline"]["window"]["per_s"], outcome["gateway"]["window"]["per_s"]
        ratio = gateway / baseline if baseline else None
        core_b = outcome["baseline"]["per_core"]["uploads_per_cpu_s"]
        core_g = outcome["gateway"]["per_core"]["uploads_per_cpu_s"]
        core_ratio = core_g / core_b if core_b and core_g else None
    if latency := outcome.get("latency"):
        without = latency["without"]["small"]["latency_ms"]["p99"]
        with_ = latency["with"]["small"]["latency_ms"]["p99"]
        p99_ratio = with_ / without if without and with_ is not None else None
    memory = {name: memory_analysis(outcome["soak"]["memory"], name) for name, _ in MEMORY_PROCESSES} \
        if outcome.get("soak") else {}
    growths = [m["growth_percent"] for m in memory.values()]
    return {
        "ratio": ratio,
        "throughput_met": None if ratio is None else ratio >= THROUGHPUT_TARGET,
        "per_core_ratio": core_ratio,
        "p99_ratio": p99_ratio,
        "latency_met": None if p99_ratio is None else p99_ratio <= LATENCY_TARGET,
        "memory": memory,
        "memory_met": None if not growths or any(g is None for g in growths)
        else all(g < RSS_TARGET_PERCENT for g in growths),
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
        if name != service or "_seconds_" in metric:
            continue
        metric = metric.removeprefix(strip).replace("_total", "")
        metric = re.sub(r'(\w+)="([^"]*)"', r"\2", metric)  # {outcome="new"} -> {new}
        items.append(f"{metric} {value:,.0f}")
    return "; ".join(items) or "–"


def _counter(phase: dict[str, Any], prefix: str, label: str = "") -> float:
    counters = phase.get("counters") or {}
    return sum(v for k, v in counters.items() if k.startswith(f"ingest-gateway:{prefix}") and label in k)


def _degraded(phase: dict[str, Any]) -> str:
    """Uploads the gateway stored without its Redis ledger or limiter (counted in its /metrics)."""
    unchecked = _counter(phase, "circadia_ingest_idempotency_total", 'outcome="unchecked"')
    unmarked = _counter(phase, "circadia_ingest_idempotency_total", 'outcome="unmarked"')
    fail_open = _counter(phase, "circadia_ratelimit_unavailable_total")
    return f"{unchecked:,.0f} / {unmarked:,.0f} / {fail_open:,.0f}"


def _produce_ms(phase: dict[str, Any]) -> str:
    """The gateway's mean time from send to broker acknowledgement (its histogram's sum / count)."""
    total = _counter(phase, "circadia_ingest_produce_duration_seconds_sum")
    count = _counter(phase, "circadia_ingest_produce_duration_seconds_count")
    return _fmt(total / count * 1000, 1) if count else "–"


def _offloaded(phase: dict[str, Any]) -> str:
    offloaded = _counter(phase, "circadia_ingest_parse_offloaded_total")
    requests = phase["whole"]["requests"]
    return f"{offloaded:,.0f} ({offloaded / requests:.1%})" if requests else "–"


def _warmup_outcomes(phase: dict[str, Any]) -> str:
    whole, window = phase["whole"]["outcomes"], phase["window"]["outcomes"]
    rest = {k: whole[k] - window.get(k, 0) for k in whole if whole[k] - window.get(k, 0)}
    return ", ".join(f"{k}: {v:,}" for k, v in sorted(rest.items())) or "–"


def _cpu(phase: dict[str, Any], name: str) -> dict[str, Any]:
    return phase.get("cpu", {}).get(name) or {}


# --- the workload ---------------------------------------------------------------------------------


def _parameters_line(described: dict[str, Any]) -> str:
    params = described["parameters"]

    def value(v: Any) -> str:
        return "–".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v) if isinstance(v, list) \
            else (f"{v:g}" if isinstance(v, float) else str(v))

    shown = {k: v for k, v in params.items() if k != "utc_offsets_min"}
    return ", ".join(f"`{k}` {value(v)}" for k, v in shown.items()) + \
        f", `utc_offsets_min` {len(params['utc_offsets_min'])} offsets ({value(params['utc_offsets_min'])})"


def mix_table(described: dict[str, Any]) -> str:
    """The model's mix by kind of upload (``describe()``: a closed loop's draws)."""
    mix = described["mix"]
    rows = []
    for kind in KINDS:
        k = mix["kinds"].get(kind) or {}
        if not k.get("fraction"):
            continue
        rows.append([kind, f"{k['fraction']:.3f}", _fmt(k["mean_samples"]), f"{k['p50']:,}", f"{k['p90']:,}",
                     f"{k['p99']:,}", f"{k['max']:,}"])
    pct = mix["samples_percentiles"]
    rows.append(["all", "1", _fmt(mix["mean_samples"]), f"{pct['p50']:,}", f"{pct['p90']:,}", f"{pct['p99']:,}",
                 f"{pct['max']:,}"])
    return _table(["kind", "share of uploads", "mean samples", "p50", "p90", "p99", "max"], rows)


def workload_lines(outcome: dict[str, Any]) -> str:
    traffic, o = outcome["traffic"], outcome["options"]
    mix, small = traffic["mix"], traffic["small"]
    rt = mix["real_time"]
    return (f"Traffic model `{mix['model']}`, seed {o['seed']}, `now` {outcome['now']} (fixed for the run). "
            f"Parameters: {_parameters_line(mix)}. Mix (`describe()`: {mix['mix']['draws']:,} closed-loop draws "
            f"over {mix['mix']['users']:,} users):\n\n{mix_table(mix)}\n\n"
            f"In real time the population would send {rt['uploads_per_user_hour']:g} uploads and "
            f"{rt['samples_per_user_hour']:,} samples per user-hour. The small uploads of phase 3 and the soak "
            f"come from the same model with `backlog_fraction` 0 (mean {small['mix']['mean_samples']:g} samples; "
            + ", ".join(f"{k} {v:.3f}" for k, v in small["mix"]["fraction"].items() if v) + ")"
            + (f"; the soak's also with `clock_lag_days` {traffic['soak']['parameters']['clock_lag_days']:g}"
               " (see 5.)" if traffic.get("soak") else "") + ".")


# --- phases 1 and 2 -------------------------------------------------------------------------------


def throughput_table(outcome: dict[str, Any]) -> str:
    b, g = outcome["baseline"], outcome["gateway"]
    phases = [g] + [outcome[k] for k in ("gateway_high", "gateway_small") if outcome.get(k)]
    c = checks(outcome)

    def gateway_cells(phase: dict[str, Any]) -> list[str]:
        w, core = phase["window"], phase["per_core"]
        gw, parsers = _cpu(phase, GATEWAY), _cpu(phase, PARSERS)
        return [_fmt(w["per_s"], 1), _fmt(w["items_per_s"], 0), _fmt(w["mean_samples"]), "",
                _fmt(core["uploads_per_cpu_s"]), _fmt(core["samples_per_cpu_s"], 0),
                f"{_fmt(gw.get('ms_per_upload'), 2)} / {_fmt(parsers.get('ms_per_upload'), 2)}",
                f"{_fmt(gw.get('core_percent'), 0)} % / {_fmt(parsers.get('core_percent'), 0)} %",
                _offloaded(phase), _lat(w), f"{w['requests']:,}", _outcomes(w), f"{w['errors']:,}",
                f"{phase.get('retries', 0):,}", _warmup_outcomes(phase), _degraded(phase), _produce_ms(phase), "–",
                f"{_fmt(_cpu(phase, 'kafka').get('ms_per_upload'), 2)} / "
                f"{_fmt(_cpu(phase, 'redis').get('ms_per_upload'), 2)}",
                _fmt(_cpu(phase, "client").get("ms_per_upload"), 2),
                f"{phase['loadavg_1m'][0]} / {phase['loadavg_1m'][1]}"]

    gateway_columns = [gateway_cells(p) for p in phases]
    bw, bc, pool, enc = b["window"], _cpu(b, "client"), b["pool"], b["encode"]
    producer = [_fmt(bw["per_s"], 1), _fmt(bw["items_per_s"], 0), _fmt(bw["mean_samples"]), "",
                _fmt(b["per_core"]["uploads_per_cpu_s"]), _fmt(b["per_core"]["samples_per_cpu_s"], 0),
                _fmt(bc.get("ms_per_upload"), 2), f"{_fmt(bc.get('core_percent'), 0)} %", "–", _lat(bw),
                f"{bw['requests']:,}", _outcomes(bw), f"{bw['errors']:,}", "–", _warmup_outcomes(b), "–", "–",
                f"draw {_fmt(pool['draw_ms']['mean'], 2)} ms ({_fmt(pool['draw_ms']['us_per_sample'], 2)} µs/sample);"
                f" build {_fmt(pool['build_ms']['mean'], 2)} ms ({_fmt(pool['build_ms']['us_per_sample'], 2)} µs/"
                f"sample); write {_fmt(enc['ms_per_upload'], 2)} ms ({_fmt(enc['us_per_sample'], 2)} µs/sample, "
                f"{_fmt(enc['avro_bytes_per_sample'])} B/sample)",
                f"{_fmt(_cpu(b, 'kafka').get('ms_per_upload'), 2)} / {_fmt(_cpu(b, 'redis').get('ms_per_upload'), 2)}",
                "–", f"{b['loadavg_1m'][0]} / {b['loadavg_1m'][1]}"]
    drawn = pool.get("drawn", {})
    producer.insert(3, f"{pool['uploads']:,} chosen of the {drawn.get('uploads', 0):,} the gateway's devices drew "
                       f"(mean {_fmt(pool['mean_samples'])} samples; drawn: {_fmt(drawn.get('mean_samples'))})")
    for column in gateway_columns:
        column.insert(3, "–")
    labels = ["uploads/s", "samples/s", "mean samples per upload", "the uploads (raw producer: its pool)",
              "gateway ÷ raw producer (uploads/s)",
              "uploads per CPU-second (producer process / gateway + its parsers)", "samples per CPU-second",
              "CPU per upload, ms: producer / gateway main process / parser processes",
              "… share of one core", "bodies parsed in the parser processes (gateway's /metrics)",
              "latency p50 / p99 / max (ms): ack / HTTP answer", "requests in the window", "outcomes", "errors",
              "uploads sent again after a 503 with Retry-After (whole phase)",
              "outcomes during the warm-up (not measured)",
              "ledger unchecked / unmarked / rate limit failed open (gateway's /metrics)",
              "gateway's produce → ack, mean (ms)",
              "per upload, mean, before the load (draw, build) and in it (Avro write)",
              "CPU per upload, Kafka broker / Redis (ms)", "CPU per upload, load generator (ms)",
              "load average (1 min) before / after"]
    columns = [producer, *gateway_columns]
    ratio = f"{c['ratio']:.2f}× (target ≥ {THROUGHPUT_TARGET}×: {_met(c['throughput_met'])})" if c["ratio"] else "–"
    samples_ratio = g["window"]["items_per_s"] / bw["items_per_s"] if bw["items_per_s"] else None
    columns[1][4] = ratio + (f"; samples/s: {samples_ratio:.2f}×" if samples_ratio else "")
    if c["per_core_ratio"]:
        columns[1][5] += f" ({c['per_core_ratio']:.2f}× the producer's)"
    rows = [[label, *(column[i] for column in columns)] for i, label in enumerate(labels)]
    header = ["", f"raw producer ({b['concurrency']} tasks)", f"gateway ({g['concurrency']} devices)"]
    if outcome.get("gateway_high"):
        h = outcome["gateway_high"]
        header.append(f"gateway ({h['concurrency']} devices, {h['duration_s']:g} s)")
    if outcome.get("gateway_small"):
        s = outcome["gateway_small"]
        header.append(f"gateway, small uploads only ({s['concurrency']} devices, {s['duration_s']:g} s)")
    return _table(header, rows)


def kind_table(outcome: dict[str, Any]) -> str:
    """Latency per kind of upload in the closed loops (phases 1 and 2)."""
    phases = [("raw producer (ack)", outcome["baseline"]), (f"gateway ({outcome['gateway']['concurrency']})",
                                                            outcome["gateway"])]
    if outcome.get("gateway_high"):
        phases.append((f"gateway ({outcome['gateway_high']['concurrency']})", outcome["gateway_high"]))
    rows = []
    for kind in KINDS:
        row = [kind]
        for _, phase in phases:
            s = phase.get("by_kind", {}).get(kind)
            row.append("–" if not s else f"{s['succeeded']:,} · {_fmt(s['mean_samples'], 0)} · {_lat(s)}")
        rows.append(row)
    return _table(["kind: uploads · mean samples · p50 / p99 / max (ms)", *(name for name, _ in phases)], rows)


# --- phase 3 --------------------------------------------------------------------------------------


def latency_table(outcome: dict[str, Any]) -> str:
    lat = outcome["latency"]
    a, b = lat["without"], lat["with"]
    c = checks(outcome)
    backlog = b["backlog"]["whole"]

    def cells(phase: dict[str, Any]) -> list[str]:
        s = phase["small"]
        gw, parsers = _cpu(phase, GATEWAY), _cpu(phase, PARSERS)
        return [f"{s['per_s']:,.1f} ({s['items_per_s']:,.0f} samples/s)", _lat(s), _outcomes(s),
                " · ".join(f"{k} {_fmt(v['latency_ms']['p99'])}" for k, v in phase["by_kind"].items()
                           if k != "backlog"),
                f"{phase['late_launches']:,} (max lag {phase['max_launch_lag_ms']} ms)",
                f"{_fmt(gw.get('core_percent'), 0)} % / {_fmt(parsers.get('core_percent'), 0)} %", _offloaded(phase),
                f"{phase['loadavg_1m'][0]} / {phase['loadavg_1m'][1]}"]

    labels = ["small uploads answered per s (window)", "small uploads: latency p50 / p99 / max (ms)",
              "small uploads: outcomes", "p99 by kind (ms)", "uploads that left > 100 ms late (generator behind)",
              "gateway main / parser processes, share of one core", "bodies parsed in the parser processes",
              "load average (1 min) before / after"]
    rows = [[label, x, y] for label, x, y in zip(labels, cells(a), cells(b), strict=True)]
    ratio = f"{c['p99_ratio']:.2f}× (target ≤ {LATENCY_TARGET:g}×: {_met(c['latency_met'])})" \
        if c["p99_ratio"] is not None else "–"
    rows.insert(2, ["p99 with ÷ p99 without", "", ratio])
    generated = b.get("generated", {}).get("backlog", {})
    rows += [
        ["backlog syncs (whole phase)", "–",
         f"{backlog['requests']:,} at {lat['backlog_rate']:g}/s from {b['backlog']['users']} users "
         f"(mean {_fmt(backlog['mean_samples'], 0)} samples, "
         f"{_fmt(generated.get('bytes', 0) / max(1, generated.get('uploads', 1)) / 1e6, 2)} MB of JSON each)"],
        ["backlog syncs: outcomes", "–", _outcomes(backlog)],
        ["backlog syncs: latency p50 / p99 / max (ms)", "–", _lat(backlog)],
    ]
    return _table(["", f"without backlogs ({a['duration_s']:g} s)", f"with backlog syncs ({b['duration_s']:g} s)"],
                  rows)


# --- phase 4 --------------------------------------------------------------------------------------


def max_table(outcome: dict[str, Any]) -> str:
    m = outcome["max"]
    rows = [[str(i + 1), run["user"], f"{run['samples']:,}", f"{run['body_bytes']:,}", run["status"],
             str(run["accepted"]), _fmt(run["seconds"], 2)] for i, run in enumerate(m["max_runs"])]
    rows.append(["median / max", "", "", "", "all 202" if m["all_202"] else "**not all 202**", "",
                 f"{_fmt(m['seconds']['median'], 2)} / {_fmt(m['seconds']['max'], 2)}"])
    return _table(["run", "user", "samples", "body (bytes, JSON)", "status", "accepted", "time to the answer (s)"],
                  rows)


# --- phase 5 --------------------------------------------------------------------------------------


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
        ["achieved (whole soak)", f"{whole['per_s']:,.1f} uploads/s, {whole['items_per_s']:,.0f} samples/s "
                                  f"(mean {_fmt(whole['mean_samples'])} samples)"],
        ["uploads answered", f"{whole['requests']:,}: {_outcomes(whole)}"],
        ["errors (whole soak)", f"{whole['errors']:,}"],
        ["HTTP latency p50 / p99 / max (ms), after warm-up", _lat(w)],
        ["… by kind, p99 (ms)", " · ".join(f"{k} {_fmt(v['latency_ms']['p99'])}" for k, v in s["by_kind"].items())],
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


# --- the whole ------------------------------------------------------------------------------------


def _machine_line(m: dict[str, str]) -> str:
    libs = ", ".join(f"{k} {m[k]}" for k in ("aiokafka", "aiohttp", "uvicorn", "starlette", "pydantic", "fastavro",
                                             "redis", "limits", "websockets", "faust-streaming", "uvloop", "cramjam")
                     if k in m)
    return f"{m['cpu']}, {m['cores']} cores, {m['ram']}, {m['kernel']}; Python {m['python']}, {libs}; {m['date']}"


def _log_lines(outcome: dict[str, Any]) -> str:
    logs = outcome.get("service_logs") or {}
    lines = []
    for service, counts in logs.items():
        for message, count in sorted(counts.items(), key=lambda kv: -kv[1])[:5]:
            lines.append(f"  - {service}: {count:,} × `{message}`")
    return "\n".join(lines) if lines else "  - none"


PHASES = (("baseline", "raw producer"), ("gateway", "gateway"), ("gateway_high", "gateway, high concurrency"),
          ("gateway_small", "gateway, small uploads"), ("max", "maximum upload"), ("soak", "soak"))


def _phases(outcome: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out = [(label, outcome[key]) for key, label in PHASES if outcome.get(key)]
    if outcome.get("latency"):
        out += [("latency, without backlogs", outcome["latency"]["without"]),
                ("latency, with backlogs", outcome["latency"]["with"])]
    return out


def _error_lines(outcome: dict[str, Any]) -> str:
    """The first answers of failed requests, per phase and outcome."""
    lines = []
    for label, phase in _phases(outcome):
        for status, bodies in (phase.get("error_bodies") or {}).items():
            total = phase["whole"]["outcomes"].get(status, len(bodies))
            lines.append(f"  - {label}: {total:,} × {status}, e.g. `{bodies[0][:300]}`")
    return "\n".join(lines) if lines else "  - none"


def _targets(outcome: dict[str, Any]) -> str:
    c = checks(outcome)
    growth = ", ".join(f"{label} {c['memory'][name]['growth_percent']:+.1f} %"
                       if c["memory"][name]["growth_percent"] is not None else f"{label} –"
                       for name, label in MEMORY_PROCESSES if name in c["memory"]) or "not run"
    ratio = f"{c['ratio']:.2f}×" if c["ratio"] is not None else "not run"
    p99 = f"{c['p99_ratio']:.2f}×" if c["p99_ratio"] is not None else "not run"
    return (f"gateway ≥ {THROUGHPUT_TARGET}× the raw producer (uploads/s, same mix): {_met(c['throughput_met'])} "
            f"({ratio}); small-upload p99 with backlogs ≤ {LATENCY_TARGET:g}× without: {_met(c['latency_met'])} "
            f"({p99}); RSS growth < {RSS_TARGET_PERCENT:g} % over the soak: {_met(c['memory_met'])} ({growth})")


def render_text(outcome: dict[str, Any]) -> str:
    m = outcome["machine"]
    parts = [f"\nIngest load and soak — {_machine_line(m)}", "\nWorkload: " + workload_lines(outcome)]
    if outcome.get("gateway") and outcome.get("baseline"):
        parts += [f"\nCapacity (closed loop, {outcome['options']['concurrency']} concurrent):\n"
                  + throughput_table(outcome), "\nLatency per kind (closed loops):\n" + kind_table(outcome)]
    if outcome.get("latency"):
        parts.append("\nSmall-upload latency with and without backlog syncs (open loop):\n" + latency_table(outcome))
    if outcome.get("max"):
        parts.append("\nThe maximum upload:\n" + max_table(outcome))
    if outcome.get("soak"):
        parts += ["\nSoak:\n" + soak_table(outcome), "\nMemory and CPU over the soak:\n" + memory_table(outcome),
                  "\nSoak timeline:\n" + timeline_table(outcome)]
    parts += [
        "\nFailed requests (first answers):\n" + _error_lines(outcome),
        "\nWarnings/errors in the service logs:\n" + _log_lines(outcome),
        "\nTargets: " + _targets(outcome),
    ]
    return "\n".join(parts)


def render_markdown(outcome: dict[str, Any]) -> str:
    o, m, s = outcome["options"], outcome["machine"], outcome["soak"]
    memory = s["memory"]
    lag = outcome["traffic"]["soak"]["parameters"]["clock_lag_days"]
    lat = outcome.get("latency") or {}
    h, small = outcome.get("gateway_high"), outcome.get("gateway_small")
    high = (f" Then {h['duration_s']:g} s (after {h['warmup_s']:g} s unmeasured) with {h['concurrency']} devices: "
            "more requests at once than the gateway's Redis connection pool holds." if h else "")
    small_line = (f" Last, {small['duration_s']:g} s with small uploads only (the model with `backlog_fraction` 0): "
                  "the small-upload capacity that sets the rates of phase 3 and the soak." if small else "")
    latency = (f"""- **3. Small-upload latency, with and without backlog syncs** (open loop, every body drawn and
  encoded before the first is sent, latency from the scheduled moment): small/radar/sleep uploads of the
  small-only model at {lat['rate']:g}/s ({lat.get('rate_source', '').replace(' (', ', ').rstrip(')')}) from
  {o['users']} users, each on its own
  connection, for {lat['warmup_s']:g} + {lat['duration_s']:g} s without backlogs; then the same schedule (same
  bodies, upload ids re-derived) with backlog syncs of the model (kind `backlog`, 1–7 days) from
  {o['backlog_users']} other users on connections of their own at {lat['backlog_rate']:g}/s
  ({lat.get('backlog_rate_source', '')}; the model's share at this rate would be
  {lat.get('model_backlog_rate', 0):g}/s). Target: the small uploads' p99 with backlogs ≤ {LATENCY_TARGET:g}×
  without.
""" if lat else "")
    maximum = ("- **4. The maximum upload**: `TrafficModel.max_upload` (50,000 samples: steps and heart rate of "
               f"25,000 minutes) posted {o['max_runs']} times, each for a new user, one at a time on an idle "
               "gateway (2 s apart): time to the answer.\n" if outcome.get("max") else "")
    sections = [f"""{SECTION}

The ingest gateway (`services/ingest_gateway`: one uvicorn process, bodies ≥ 32 KiB parsed and encoded in
its 2 spawned parser processes) under the traffic of `bench/traffic.py`, against a raw Kafka producer
publishing the same records; then small-upload latency with and without backlog syncs, the maximum upload,
and a soak of the whole pipeline (gateway → Kafka → prediction worker → fan-out gateway → WebSockets). One
command starts a `LocalStack` of its own (Kafka 4.4 via the project's launcher, Redis, the three services;
no Jaeger/Prometheus, so spans are created but not exported) on free ports in a temporary folder, runs the
phases and stops everything. Rate limits are raised through the stack's overrides
(`CIRCADIA_INGEST_RATE_LIMIT_PER_USER={o['rate_limit_per_user']}`, `_PER_IP={o['rate_limit_per_ip']}`) so
the limiter does its Redis work on every request but never refuses; everything else is the services'
defaults (idempotency ledger in Redis, JSON logs to a file, zstd, `linger_ms` 5, acks=all).

**Workload.** {workload_lines(outcome)} Each phase has users of its own ({o['users']} per phase).

- **1. Raw producer** (`bench/ingest/baseline.py`, own process, run right after phase 2's first closed
  loop): that loop's uploads — the same model, seed, `now`, users and lanes, drawn again — of which
  {o['pool']:,} are chosen with its mix (each kind's share, and each kind's sizes at evenly spaced ranks) and
  built into `io.circadia.health.HealthUpload` records before the load (a direct conversion of the body,
  checked against `UploadRequest.to_record` for each kind; draw and build timed apart, not in the load);
  then {o['concurrency']} tasks cycle through them: each send writes the record with `AvroSchema.write`
  (fresh `upload_id` and `received_at`), produces it with `circadia.kafka.create_producer`'s defaults
  (acks=all, idempotent, zstd, `linger_ms` 5, the gateway's `max_request_size`) with the gateway's key and
  headers (a `traceparent` like its instrumentation's included), and awaits the ack.
- **2. Gateway capacity** (`bench/ingest/load.py`, own process, aiohttp {m.get('aiohttp', '?')} keep-alive,
  uvloop): {o['concurrency']} devices in a closed loop, each posting `next_upload(user, now)` of its next user as
  compact JSON as soon as the previous one is answered; each device has its own loopback source address.
  Phases 1 and 2: {o['warmup_seconds']:g} s unmeasured, then {o['load_seconds']:g} s measured.{high}{small_line}
  Per core = uploads (samples) over the CPU-seconds (utime + stime, `/proc/<pid>/stat`) of the gateway
  process plus its parser processes (its descendants, `/proc/<pid>/task/*/children`). The generator draws
  each body just before posting it (a backlog costs it ~25 ms, while other devices' answers wait), so the
  closed loops' latencies are upper bounds. Target: gateway uploads/s ≥ {THROUGHPUT_TARGET}× the raw producer's.
{latency}{maximum}- **5. Soak**: the worker (its consumer group first moved to the end of `health.samples.v1`, so it
  does not replay the earlier phases) and the fan-out gateway are started, one WebSocket per user authenticates,
  then small uploads of the small-only model arrive on a fixed schedule at {s['rate']:g}/s
  ({s.get('rate_source', '')}) for {o['soak_minutes']:g} min. **Backlogs and full windows are left out of the
  soak on purpose: the worker's cost on them is measured by its own benchmark
  (`bench/worker_apply.py`).** So: no backlogs,
  no prefill, and the users' clocks start {lag:g} × 24 h behind `now` (`clock_lag_days`; the model's
  default is 22): each user reaches `now` within its first ~{lag * 1440 / 34:.0f} uploads and then re-sends its
  latest minutes, so its window holds about a day, not a week that fills during the soak. VmRSS of
  each process every {memory['every_s']:g} s; growth = mean of the last {memory['window_s']:g} s over the mean of
  the {memory['window_s']:g} s after a {memory['warmup_s']:g}-s warm-up. Delivered = the upload's id arrived in a
  prediction's `source_upload_ids` on its user's socket; end-to-end latency = that moment − the scheduled send.

```
{outcome['command']}
```

Machine: {_machine_line(m)}. **A 2-core machine shared with other jobs**, and the load generator, the
WebSocket fleet, Kafka and Redis run on the same two cores as the services: every number is a
pessimistic, noisy lower bound of what the code does on dedicated hardware.

#### 1–2. Capacity on the model's mix

{throughput_table(outcome)}

Latency per kind of upload in the closed loops:

{kind_table(outcome)}
"""]
    if lat:
        sections.append(f"""#### 3. Small-upload latency with and without backlog syncs

{latency_table(outcome)}
""")
    if outcome.get("max"):
        sections.append(f"""#### 4. The maximum upload (50,000 samples)

{max_table(outcome)}
""")
    sections.append(f"""#### 5. Soak ({o['soak_minutes']:g} min, {o['users']} users, small uploads, full pipeline)

{soak_table(outcome)}

{memory_table(outcome)}

Per minute of the soak (RSS: the sample nearest the minute's end):

{timeline_table(outcome)}

Failed requests over the run (the first answers of each status):

{_error_lines(outcome)}

Warnings and errors in the services' logs over the run (most frequent first):

{_log_lines(outcome)}

**Targets**: {_targets(outcome)}.
""")
    return "\n".join(sections)


def update_docs(path: Path, section: str) -> None:
    replace_section(path, SECTION, section)
