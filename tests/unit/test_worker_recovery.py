"""After a rebalance the worker seeks its stream partitions before it resumes them.

faust's own recovery resumes the partitions first: records fetched during the seek reach
the agents' queues, which resuming flow control then clears, and they are never read
again. These tests run both recoveries against a consumer that records what happens.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from faust.tables.recovery import Recovery
from faust.types import TP

from circadia.topics import HEALTH_SAMPLES
from prediction_worker.recovery import SeekFirstRecovery, SeekFirstTableManager
from tests.unit.conftest import CHANGELOG_TOPIC

GENERATION = 7


class RecordingConsumer:
    """The consumer calls recovery makes, in order, with what was resumed when the seek ran."""

    def __init__(self, app: faust.App, assignment: set[TP], seek: Any = None) -> None:
        self._app = app
        self._assignment = assignment
        self._seek = seek
        self.calls: list[str] = []
        self.resumed: set[TP] = set()
        self.resumed_during_seek: set[TP] | None = None
        self.flow_control_active_during_seek: bool | None = None

    def assignment(self) -> set[TP]:
        return set(self._assignment)

    def resume_partitions(self, tps: set[TP]) -> None:
        self.calls.append("resume_partitions")
        self.resumed |= set(tps)

    async def perform_seek(self) -> None:
        self.calls.append("perform_seek")
        self.resumed_during_seek = set(self.resumed)
        self.flow_control_active_during_seek = self._app.flow_control.is_active()
        if self._seek is not None:
            await self._seek()

    def resume_flow(self) -> None:
        self.calls.append("resume_flow")



STREAM = {TP(HEALTH_SAMPLES, 0), TP(HEALTH_SAMPLES, 3)}


async def recover(app: faust.App, recovery: Recovery, monkeypatch: pytest.MonkeyPatch,
                  seek: Any = None) -> RecordingConsumer:
    changelog = {TP(CHANGELOG_TOPIC, 0)}
    consumer = RecordingConsumer(app, STREAM | changelog, seek)
    monkeypatch.setattr(app, "_consumer", consumer)
    monkeypatch.setattr(app, "consumer_generation_id", GENERATION)

    async def fetcher_started() -> None:
        consumer.calls.append("fetcher")

    monkeypatch.setitem(app.__dict__, "_fetcher", SimpleNamespace(maybe_start=fetcher_started))
    resume = app.flow_control.resume

    def flow_control_resumed() -> None:
        consumer.calls.append("flow_control.resume")
        resume()

    monkeypatch.setattr(app.flow_control, "resume", flow_control_resumed)
    # as after the changelogs were read: flow control and the consumer's flow are running
    await recovery.on_recovery_completed(GENERATION)
    return consumer


async def test_the_worker_seeks_while_its_stream_partitions_are_paused(app: faust.App,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    recovery = app.tables.recovery
    assert isinstance(app.tables, SeekFirstTableManager)
    assert isinstance(recovery, SeekFirstRecovery)

    consumer = await recover(app, recovery, monkeypatch)

    assert consumer.calls == ["perform_seek", "resume_partitions", "flow_control.resume", "resume_flow", "fetcher"]
    assert consumer.resumed_during_seek == set()
    assert consumer.resumed == STREAM  # changelogs stay paused
    assert app.flow_control.is_active()
    assert recovery.completed.is_set()


async def test_no_partition_is_resumed_when_the_group_rebalanced_again(app: faust.App,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    recovery = app.tables.recovery
    consumer = RecordingConsumer(app, {TP(HEALTH_SAMPLES, 0)})
    monkeypatch.setattr(app, "_consumer", consumer)
    monkeypatch.setattr(app, "consumer_generation_id", GENERATION + 1)
    app.flow_control.suspend()

    await recovery.on_recovery_completed(GENERATION)

    assert consumer.calls == []
    assert not app.flow_control.is_active()
    assert not recovery.completed.is_set()


async def test_a_rebalance_during_the_seek_leaves_the_partitions_to_the_next_recovery(
        app: faust.App, monkeypatch: pytest.MonkeyPatch) -> None:
    async def rebalanced() -> None:
        app.consumer_generation_id = GENERATION + 1

    consumer = await recover(app, app.tables.recovery, monkeypatch, seek=rebalanced)
    assert consumer.calls == ["perform_seek"]
    assert not app.tables.recovery.completed.is_set()


@pytest.mark.filterwarnings("ignore:Setting new value for configuration key")  # a short timeout, set late
async def test_a_seek_that_times_out_stops_the_worker(app: faust.App, monkeypatch: pytest.MonkeyPatch) -> None:
    crashes: list[BaseException] = []

    async def crash(reason: BaseException) -> None:
        crashes.append(reason)

    async def hang() -> None:
        await asyncio.sleep(30)

    monkeypatch.setattr(app, "crash", crash)
    monkeypatch.setattr(app.conf, "broker_request_timeout", 0.05)
    consumer = await recover(app, app.tables.recovery, monkeypatch, seek=hang)
    assert consumer.calls == ["perform_seek"]  # nothing resumed
    [reason] = crashes
    assert isinstance(reason, TimeoutError) and "committed offsets" in str(reason)


async def test_faust_own_recovery_resumes_the_partitions_before_it_seeks(app: faust.App,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Why SeekFirstRecovery exists. If this fails, faust changed the order: check whether
    prediction_worker.recovery is still needed."""
    consumer = await recover(app, Recovery(app, app.tables), monkeypatch)

    assert consumer.calls.index("resume_partitions") < consumer.calls.index("perform_seek")
    assert consumer.resumed_during_seek == STREAM
