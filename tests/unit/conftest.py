"""Fixtures of the unit tests: ``app``, the worker's faust app built as the worker builds it,
never started (for tests of the faust parts the worker replaces)."""

from __future__ import annotations

from pathlib import Path

import faust
import pytest

from circadia.avro import SchemaSet
from prediction_worker.app import build_app
from prediction_worker.settings import WorkerSettings
from prediction_worker.store import WINDOWS_TABLE

APP_ID = "worker-test"
CHANGELOG_TOPIC = f"{APP_ID}-{WINDOWS_TABLE}-changelog"


@pytest.fixture
def app(tmp_path: Path) -> faust.App:
    settings = WorkerSettings(worker_app_id=APP_ID, worker_data_dir=tmp_path, kafka_bootstrap_servers="127.0.0.1:1")
    return build_app(settings, SchemaSet.load())
