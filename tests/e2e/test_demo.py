"""`make run`'s demo against a running stack: every device's day arrives, and adds up."""

from __future__ import annotations

from circadia_dev.demo import run_demo
from circadia_dev.devstack.stack import LocalStack


async def test_the_demo_day_arrives_and_adds_up(stack: LocalStack, capsys) -> None:
    p = stack.ports
    ok = await run_demo(stack.issuer, f"http://127.0.0.1:{p.ingest}", f"ws://127.0.0.1:{p.fanout}/v1/stream",
                        timeout=120)
    out = capsys.readouterr().out
    assert ok, out
    assert out.count("OK") == 3 and "uploads reflected 24/24" in out
