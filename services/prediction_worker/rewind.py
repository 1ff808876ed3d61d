"""``python -m prediction_worker rewind``: move the worker's committed offset back, so a stopped
worker processes skipped uploads again when it starts (circadia.offsets refuses anything else:
forward, outside the log, or under a live group). It connects as the worker does: its
``CIRCADIA_KAFKA_*`` settings and ``kafka_sasl_password`` secret."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from circadia.config import resolve
from circadia.kafka import client_security
from circadia.offsets import RewindRefused, rewind
from circadia.topics import HEALTH_SAMPLES
from prediction_worker.settings import WorkerSettings


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m prediction_worker rewind", description=__doc__)
    parser.add_argument("--partition", type=int, required=True, help=f"partition of {HEALTH_SAMPLES}")
    parser.add_argument("--offset", type=int, required=True, help="first offset to process again")
    parser.add_argument("--group", help="the worker's consumer group (default: CIRCADIA_WORKER_APP_ID)")
    parser.add_argument("--bootstrap-servers", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"),
                        help="the broker (default: KAFKA_BOOTSTRAP_SERVERS)")
    args = parser.parse_args(argv)
    if not args.bootstrap_servers:
        parser.error("set --bootstrap-servers or KAFKA_BOOTSTRAP_SERVERS")
    config = resolve("prediction-worker", WorkerSettings())
    group = args.group or config.settings.worker_app_id
    try:
        before = asyncio.run(rewind(args.bootstrap_servers, group, HEALTH_SAMPLES, args.partition, args.offset,
                                    **client_security(config)))
    except RewindRefused as refused:
        print(f"not rewound: {refused}", file=sys.stderr)
        return 1
    print(f"{group}: {HEALTH_SAMPLES}[{args.partition}] committed offset {before} -> {args.offset}; "
          "the worker reads from there when it starts")
    return 0
