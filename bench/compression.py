"""Kafka batch compression of the gateway's records on the traffic model's mix: bytes on the wire
and CPU per upload for none, gzip, lz4 and zstd. Stand-alone: no Kafka, no servers.

    .venv/bin/python bench/compression.py [--uploads 10000] [--users 1000] [--repeats 2] [--no-docs] [--json]

Why: the producers compress with ``circadia.kafka.COMPRESSION`` (zstd). What that buys and
costs depends on the records — Avro of one-minute samples whose timestamps, units and types
repeat — and on their sizes, which the traffic model spreads over three orders of magnitude
(a small upload is ~2 KB of Avro, a backlog ~400 KB). So the uploads are the model's: the
draws ``TrafficModel(seed).describe()`` summarises (``uploads(users, count, DESCRIBE_NOW)`` of
a fresh model over ``describe-00000``…, the same mix), plus one ``max_upload`` (50,000 samples)
reported apart.

For each upload: the ``io.circadia.health.HealthUpload`` record the gateway publishes
(``bench.ingest.workload.record_of``, checked against ``UploadRequest.to_record`` once per
kind), written with ``AvroSchema.write`` as the gateway does, with the gateway's key and
headers (schema, ``upload_id``, ``circadia.idempotency``, ``traceparent``). Then, per codec, one
record batch built as aiokafka's producer builds it (``aiokafka.producer.message_accumulator``:
``DefaultRecordBatchBuilder(magic=2, <the codec's compression_type attribute>,
is_transactional=0, producer_id=-1, producer_epoch=-1, base_sequence=0, batch_size=16384)``,
then the idempotent producer's ``set_producer_state`` and ``build()``, which compresses — and
keeps the batch uncompressed when compression would not make it smaller). Bytes on the wire
= the built batch; CPU = thread CPU time of constructing, appending and building, the least of
``--repeats`` tries. One upload per batch: the gateway awaits each acknowledgement, so a batch
holds one upload unless uploads for the same partition meet within ``linger_ms``; sizes are
per upload, upper bounds for batches of several. Every codec's batches are decoded again for
one upload of each kind (the value must come back).

Writes the "Kafka batch compression" section of docs/benchmarks.md unless ``--no-docs``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as ``python bench/compression.py``
    sys.path.insert(0, str(REPO))

from aiokafka.producer.producer import AIOKafkaProducer  # noqa: E402
from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder  # noqa: E402

from bench.common import replace_section, reporter  # noqa: E402
from bench.fanout.measure import machine, package_version  # noqa: E402
from bench.ingest.workload import check_record_of, record_of  # noqa: E402
from bench.traffic import DESCRIBE_NOW, TrafficModel, Upload  # noqa: E402
from circadia.avro import SchemaSet  # noqa: E402
from circadia.kafka import COMPRESSION  # noqa: E402

DOCS = REPO / "docs" / "benchmarks.md"
SECTION = "## Kafka batch compression"
COMMAND = ".venv/bin/python bench/compression.py"
CODECS = ("none", "gzip", "lz4", "zstd")
KINDS = ("small", "sleep", "radar", "backlog")
UPLOAD_SCHEMA = "io.circadia.health.HealthUpload"
BATCH_SIZE = 16384  # AIOKafkaProducer's max_batch_size default, which circadia keeps


def codec_attributes() -> dict[str, int]:
    """Each codec's ``compression_type`` attribute, as ``AIOKafkaProducer`` maps it (raising
    when its library is missing, as the producer does)."""
    attributes = {"none": 0}
    for name in CODECS[1:]:
        available, attribute = AIOKafkaProducer._COMPRESSORS[name]
        if not available():
            raise SystemExit(f"no library for {name} (aiokafka[{name}] / cramjam)")
        attributes[name] = attribute
    return attributes


def batch(attribute: int, key: bytes, value: bytes, headers: list[tuple[str, bytes]], timestamp_ms: int,
          sequence: int) -> bytearray:
    """One record batch holding one record, as the producer's accumulator and sender build it."""
    builder = DefaultRecordBatchBuilder(2, attribute, 0, -1, -1, 0, BATCH_SIZE)
    builder.append(0, timestamp_ms, key, value, headers)
    builder.set_producer_state(1000, 0, sequence)  # the idempotent producer's id, epoch and sequence
    return builder.build()


def measure(upload: Upload, schema: Any, attributes: dict[str, int], repeats: int, rng: random.Random,
            sequence: int) -> dict[str, Any]:
    """Avro bytes, and per codec the batch's bytes and its least CPU time over ``repeats``."""
    record = record_of(upload.body, upload.user, DESCRIBE_NOW + timedelta(seconds=1))
    value = schema.write(record)
    upload_id = upload.upload_id
    headers = [*schema.headers(), ("upload_id", upload_id.encode()), ("circadia.idempotency", b"ledger"),
               ("traceparent", f"00-{rng.getrandbits(128):032x}-{rng.getrandbits(64):016x}-01".encode())]
    key = upload.user.encode()
    timestamp_ms = int(DESCRIBE_NOW.timestamp() * 1000)
    out: dict[str, Any] = {"kind": upload.kind, "samples": upload.samples, "avro": len(value)}
    for name, attribute in attributes.items():
        best = float("inf")
        size = 0
        for _ in range(repeats):
            began = time.thread_time_ns()
            built = batch(attribute, key, value, headers, timestamp_ms, sequence)
            best = min(best, time.thread_time_ns() - began)
            size = len(built)
        out[name] = (size, best / 1000)  # bytes, µs
    return out


def roundtrip(upload: Upload, schema: Any, attributes: dict[str, int]) -> None:
    """Every codec's batch decodes to the same value (and its CRC holds)."""
    value = schema.write(record_of(upload.body, upload.user, DESCRIBE_NOW))
    for name, attribute in attributes.items():
        decoded = DefaultRecordBatch(bytes(batch(attribute, b"k", value, [], 0, 0)))
        if not decoded.validate_crc():
            raise AssertionError(f"{name}: CRC mismatch")
        records = list(decoded)
        if len(records) != 1 or records[0].value != value:
            raise AssertionError(f"{name}: the batch does not decode to the record")


def _stats(rows: list[dict[str, Any]], name: str) -> dict[str, Any]:
    sizes = [row[name][0] for row in rows]
    cpu = [row[name][1] for row in rows]
    samples = sum(row["samples"] for row in rows)
    avro = sum(row["avro"] for row in rows)
    return {"uploads": len(rows), "bytes_mean": round(sum(sizes) / len(rows), 1),
            "bytes_per_sample": round(sum(sizes) / samples, 2), "ratio": round(avro / sum(sizes), 2),
            "cpu_us_median": round(statistics.median(cpu), 1), "cpu_us_mean": round(sum(cpu) / len(cpu), 1),
            "cpu_us_per_sample": round(sum(cpu) / samples, 3),
            "uncompressed": sum(1 for row in rows if name != "none" and row[name][0] >= row["none"][0])}


def run(uploads: int, users: int, seed: int, repeats: int, report: Any) -> dict[str, Any]:
    schema = SchemaSet.load()[UPLOAD_SCHEMA]
    attributes = codec_attributes()
    model = TrafficModel(seed=seed)
    names = [f"describe-{index:05d}" for index in range(users)]
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    checked: set[str] = set()
    began = time.monotonic()
    for index, upload in enumerate(model.uploads(names, uploads, DESCRIBE_NOW)):
        if upload.kind not in checked:
            check_record_of(upload, DESCRIBE_NOW)
            roundtrip(upload, schema, attributes)
            checked.add(upload.kind)
        rows.append(measure(upload, schema, attributes, repeats, rng, index))
        if (index + 1) % 2000 == 0:
            report(f"{index + 1:,} uploads measured")
    largest = TrafficModel(seed=seed).max_upload("max-00000", DESCRIBE_NOW)
    check_record_of(largest, DESCRIBE_NOW)
    maximum = measure(largest, schema, attributes, repeats, rng, 0)
    report(f"measured {len(rows):,} uploads and one maximum upload in {time.monotonic() - began:.0f} s")
    avro = sum(row["avro"] for row in rows)
    samples = sum(row["samples"] for row in rows)
    result: dict[str, Any] = {
        "uploads": len(rows), "users": users, "seed": seed, "repeats": repeats, "now": DESCRIBE_NOW.isoformat(),
        "samples": samples, "avro_bytes_mean": round(avro / len(rows), 1),
        "avro_bytes_per_sample": round(avro / samples, 2), "checked_kinds": sorted(checked),
        "codecs": {name: _stats(rows, name) for name in attributes},
        "kinds": {kind: {"uploads": len(mine), "mean_samples": round(sum(r["samples"] for r in mine) / len(mine), 1),
                         "avro_bytes_mean": round(sum(r["avro"] for r in mine) / len(mine), 1),
                         **{name: _stats(mine, name) for name in attributes}}
                  for kind in KINDS if (mine := [row for row in rows if row["kind"] == kind])},
        "max": {"samples": maximum["samples"], "avro_bytes": maximum["avro"],
                **{name: {"bytes": maximum[name][0], "cpu_ms": round(maximum[name][1] / 1000, 2)}
                   for name in attributes}},
        "project_codec": COMPRESSION,
        "traffic": model.describe(),
    }
    result["verdict"] = verdict(result)
    return result


def verdict(result: dict[str, Any]) -> dict[str, Any]:
    """Whether the numbers support the project's codec: it must be the smallest on the wire (or
    within 5 % of the smallest) and cost no more CPU than gzip, the other codec chosen for size."""
    codecs = result["codecs"]
    ours = codecs[COMPRESSION]
    compressed = {name: c for name, c in codecs.items() if name != "none"}
    smallest = min(compressed, key=lambda name: compressed[name]["bytes_mean"])
    fastest = min(compressed, key=lambda name: compressed[name]["cpu_us_mean"])
    small_enough = ours["bytes_mean"] <= 1.05 * compressed[smallest]["bytes_mean"]
    cheap_enough = "gzip" not in codecs or ours["cpu_us_mean"] <= codecs["gzip"]["cpu_us_mean"]
    return {"codec": COMPRESSION, "smallest": smallest, "cheapest": fastest,
            "supported": small_enough and cheap_enough}


def _fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def codec_table(result: dict[str, Any]) -> str:
    kinds = [kind for kind in KINDS if kind in result["kinds"]]
    rows = []
    for name, c in result["codecs"].items():
        label = f"**{name}** (circadia)" if name == result["project_codec"] else name
        rows.append([label, _fmt(c["bytes_mean"], 0), _fmt(c["bytes_per_sample"], 2), f"{c['ratio']:.2f}×",
                     *(_fmt(result["kinds"][kind][name]["bytes_mean"], 0) for kind in kinds),
                     f"{_fmt(c['cpu_us_median'])} / {_fmt(c['cpu_us_mean'])}", _fmt(c["cpu_us_per_sample"], 3),
                     f"{c['uncompressed']:,}"])
    return _table(["codec", "bytes per upload (mean)", "bytes per sample", "Avro ÷ wire",
                   *(f"{kind}: bytes (mean)" for kind in kinds),
                   "CPU per upload, median / mean (µs)", "CPU per sample (µs)", "batches left uncompressed"], rows)


def kind_table(result: dict[str, Any]) -> str:
    rows = []
    for kind, k in result["kinds"].items():
        rows.append([kind, f"{k['uploads']:,}", _fmt(k["mean_samples"]), _fmt(k["avro_bytes_mean"], 0),
                     *(f"{k[name]['ratio']:.2f}× · {_fmt(k[name]['cpu_us_mean'])}" for name in result["codecs"]
                       if name != "none")])
    return _table(["kind", "uploads", "mean samples", "Avro bytes (mean)",
                   *(f"{name}: ratio · CPU µs (mean)" for name in result["codecs"] if name != "none")], rows)


def max_line(result: dict[str, Any]) -> str:
    m = result["max"]
    parts = ", ".join(f"{name} {m[name]['bytes']:,} B ({m[name]['cpu_ms']:g} ms)" for name in result["codecs"])
    return f"The maximum upload ({m['samples']:,} samples, {m['avro_bytes']:,} B of Avro), one batch: {parts}."


def verdict_line(result: dict[str, Any]) -> str:
    v, codecs = result["verdict"], result["codecs"]
    ours = codecs[v["codec"]]
    others = "; ".join(f"{name} {c['bytes_mean']:,.0f} B at {c['cpu_us_mean']:,.0f} µs"
                       for name, c in codecs.items() if name not in ("none", v["codec"]))
    lz4 = codecs.get("lz4")
    trade = ""
    if lz4 and v["codec"] != "lz4":
        extra = ours["cpu_us_mean"] - lz4["cpu_us_mean"]
        trade = (f" Against lz4 (aiokafka's level 9), {v['codec']} sends "
                 f"{1 - ours['bytes_mean'] / lz4['bytes_mean']:.0%} fewer bytes and costs {abs(extra):,.0f} µs "
                 f"{'more' if extra > 0 else 'less'} CPU per upload.")
    return (f"The project compresses with **{v['codec']}** (`circadia.kafka.COMPRESSION`): "
            f"{ours['bytes_mean']:,.0f} B per upload on the wire ({ours['ratio']:.2f}× smaller than the Avro) at "
            f"{ours['cpu_us_mean']:,.0f} µs of CPU per upload (mean; {others}; uncompressed "
            f"{codecs['none']['bytes_mean']:,.0f} B at {codecs['none']['cpu_us_mean']:,.0f} µs).{trade} Smallest: "
            f"{v['smallest']}; cheapest: {v['cheapest']}. "
            + ("**The numbers support it.**" if v["supported"] else "**The numbers do not support it**: it is "
               "neither within 5 % of the smallest nor cheaper than gzip."))


def render_text(result: dict[str, Any]) -> str:
    return "\n".join([
        f"Kafka batch compression — {result['uploads']:,} uploads of the traffic model (seed {result['seed']}, "
        f"{result['samples']:,} samples, {result['avro_bytes_mean']:,.0f} B of Avro per upload, "
        f"{result['avro_bytes_per_sample']} B per sample)", "", codec_table(result), "", kind_table(result), "",
        max_line(result), "", verdict_line(result)])


def render_markdown(result: dict[str, Any], command: str) -> str:
    m = result["machine"]
    mix = result["traffic"]["mix"]
    shares = ", ".join(f"{kind} {k['uploads'] / result['uploads']:.3f}" for kind, k in result["kinds"].items())
    same = (result["uploads"], result["users"]) == (mix["draws"], mix["users"])
    return f"""{SECTION}

What compressing the gateway's record batches costs and saves, per codec, on the traffic model's mix
(`bench/compression.py`, stand-alone: no Kafka). The uploads: {result['uploads']:,} closed-loop draws of
`TrafficModel(seed={result['seed']})` (its defaults; every parameter is in the `--json` output) over
{result['users']:,} users at {result['now']}{" — the draws `describe()` summarises" if same else ""}: {shares};
mean {result['samples'] / result['uploads']:,.1f} samples. Each becomes the `HealthUpload` record
the gateway publishes, written with `AvroSchema.write`, with the gateway's key and headers; then one record
batch per codec, built as aiokafka's producer builds it (`DefaultRecordBatchBuilder` with the codec's
`compression_type` attribute, `batch_size` 16,384, the idempotent producer's state, `build()`; aiokafka's
levels: gzip 9, lz4 9, zstd 3; a batch that compression would not shrink is sent uncompressed). Bytes = the
built batch; CPU = thread CPU time of building it, the least of {result['repeats']} tries. One upload per
batch (the gateway awaits each ack; uploads that meet within `linger_ms` share a batch and compress
better): these are per-upload upper bounds.

```
{command}
```

Machine: {m['cpu']}, {m['cores']} cores, {m['ram']}, {m['kernel']}; Python {m['python']}, aiokafka
{m.get('aiokafka', '?')}, cramjam {m.get('cramjam', '?')}, fastavro {m.get('fastavro', '?')}; {m['date']}.
Records: {result['avro_bytes_mean']:,.0f} B of Avro per upload on average, {result['avro_bytes_per_sample']} B
per sample.

{codec_table(result)}

Per kind of upload (compression ratio = Avro bytes ÷ bytes on the wire):

{kind_table(result)}

{max_line(result)}

{verdict_line(result)}
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uploads", type=int, default=10_000, help="uploads drawn (describe() draws 10,000)")
    parser.add_argument("--users", type=int, default=1_000, help="users they are drawn over (describe(): 1,000)")
    parser.add_argument("--seed", type=int, default=1, help="the traffic model's seed")
    parser.add_argument("--repeats", type=int, default=2, help="tries per upload and codec; the least CPU counts")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md")
    args = parser.parse_args(argv)
    report = reporter()
    result = run(args.uploads, args.users, args.seed, max(1, args.repeats), report)
    result["machine"] = machine({name: package_version(name) for name in ("aiokafka", "cramjam", "fastavro")})
    command = " ".join([COMMAND, *(argv if argv is not None else sys.argv[1:])])
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(render_text(result))
    if not args.no_docs:
        replace_section(DOCS, SECTION, render_markdown(result, command))
        print(f"wrote the Kafka batch compression section of {DOCS.relative_to(REPO)}", file=sys.stderr)


if __name__ == "__main__":
    main()
