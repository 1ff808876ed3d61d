"""Structured log lines, and the throttle on chatty library loggers."""

from __future__ import annotations

import json
import logging

from circadia.logs import JsonFormatter, RepeatThrottle


def record(name: str, msg: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_a_line_is_one_json_object_with_the_extras() -> None:
    line = record("circadia.test", "upload %s accepted", "u-1")
    line.upload_id = "u-1"
    entry = json.loads(JsonFormatter("ingest-gateway").format(line))
    assert entry["msg"] == "upload u-1 accepted" and entry["upload_id"] == "u-1"
    assert entry["service"] == "ingest-gateway" and entry["level"] == "ERROR"


def test_repeats_of_a_library_message_pass_once_per_interval_with_their_count() -> None:
    now = [100.0]
    throttle = RepeatThrottle(interval=10.0, clock=lambda: now[0])
    refused = "Unable connect to node with id %s: %s"
    passed = []
    for step in range(25):  # ten attempts a second for 2.5 s, then silence, then one more
        now[0] = 100.0 + step * 0.1
        line = record("aiokafka", refused, 1, "Connect call failed")
        if throttle.filter(line):
            passed.append(line)
    assert len(passed) == 1 and not hasattr(passed[0], "repeated")
    assert throttle.filter(record("aiokafka.consumer.fetcher", "Failed fetch messages from %s: %s", 1, "x"))
    now[0] = 111.0
    late = record("aiokafka", refused, 1, "Connect call failed")
    assert throttle.filter(late) and late.repeated == 24
    now[0] = 125.0
    again = record("aiokafka", refused, 1, "Connect call failed")
    assert throttle.filter(again) and not hasattr(again, "repeated")


def test_other_loggers_and_lower_levels_are_never_held() -> None:
    throttle = RepeatThrottle(interval=10.0, clock=lambda: 0.0)
    for _ in range(3):
        assert throttle.filter(record("circadia.ingest", "upload not stored"))
        assert throttle.filter(record("aiokafka.conn", "Authenticated as %s", "svc", level=logging.INFO))
