"""The worker's consumer reports every offset it jumps over, and keeps faust's commit rule."""

from __future__ import annotations

import logging
from pathlib import Path

import faust
import pytest
from faust.types import TP

from circadia.avro import SchemaSet
from circadia.topics import HEALTH_SAMPLES
from prediction_worker import metrics
from prediction_worker.app import build_app
from prediction_worker.consumer import GapReportingConsumer
from prediction_worker.settings import WorkerSettings

PARTITION = TP(HEALTH_SAMPLES, 3)


def skipped_so_far() -> float:
    return metrics.OFFSET_GAPS.labels(HEALTH_SAMPLES)._value.get()


@pytest.fixture
def app(tmp_path: Path) -> faust.App:
    settings = WorkerSettings(worker_app_id="consumer-test", worker_data_dir=tmp_path,
                              kafka_bootstrap_servers="127.0.0.1:1")
    return build_app(settings, SchemaSet.load())


async def test_the_worker_consumes_with_the_gap_reporting_consumer(app: faust.App) -> None:
    assert isinstance(app.consumer, GapReportingConsumer)


async def test_a_jump_over_offsets_is_counted_logged_and_still_committed_past(
        app: faust.App, caplog: pytest.LogCaptureFixture) -> None:
    consumer = app.consumer
    before = skipped_so_far()

    with caplog.at_level(logging.ERROR, logger="prediction_worker.consumer"):
        await consumer._add_gap(PARTITION, 15, 18)  # 14 delivered, then 18: 15, 16 and 17 skipped

    assert skipped_so_far() - before == 3
    [record] = caplog.records
    assert (record.topic, record.partition, record.first, record.last) == (HEALTH_SAMPLES, 3, 15, 17)
    assert sorted((interval.begin, interval.end) for interval in consumer._gap[PARTITION]) == [(15, 19)]


async def test_an_empty_gap_is_not_reported(app: faust.App, caplog: pytest.LogCaptureFixture) -> None:
    before = skipped_so_far()
    with caplog.at_level(logging.ERROR, logger="prediction_worker.consumer"):
        await app.consumer._add_gap(PARTITION, 18, 18)
    assert skipped_so_far() == before
    assert caplog.records == []
