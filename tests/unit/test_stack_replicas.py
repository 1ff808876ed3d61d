"""`circadia up --fanout-replicas N`: N fan-out gateways on consecutive ports, all scraped,
and `down`/`status` find every replica a previous `up` started."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from circadia_dev.cli import _positive
from circadia_dev.devstack.stack import SERVICES, LocalStack, Ports


def test_replicas_get_consecutive_ports_and_are_all_scraped(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path, Ports(fanout=9181), fanout_replicas=3)
    assert stack.fanout_gateways() == [("fanout-gateway", 9181), ("fanout-gateway-2", 9182),
                                       ("fanout-gateway-3", 9183)]
    assert stack.scrape_targets()["fanout-gateway"] == ["127.0.0.1:9181", "127.0.0.1:9182", "127.0.0.1:9183"]
    fanout = next(spec for spec in SERVICES if spec.name == "fanout-gateway")
    settings = [s for _, s, _ in stack._instances(fanout)]
    assert [s["CIRCADIA_FANOUT_PORT"] for s in settings] == ["9181", "9182", "9183"]


def test_status_and_down_find_the_replicas_of_an_earlier_up(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for name in ("fanout-gateway", "fanout-gateway-2", "fanout-gateway-3"):
        (run / f"{name}.pid").write_text(str(os.getpid()))  # a live pid stands in for each replica
    stack = LocalStack(tmp_path)  # started without the replica count
    names = [name for name, _ in stack.status()]
    assert {"fanout-gateway", "fanout-gateway-2", "fanout-gateway-3"} <= set(names)


def test_the_replica_count_must_be_positive() -> None:
    assert _positive("3") == 3
    with pytest.raises(argparse.ArgumentTypeError, match="at least 1"):
        _positive("0")
