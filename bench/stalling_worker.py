"""``python -m bench.stalling_worker``: the prediction worker as deployed, with a model
configured whose forward pass stalls for ``BENCH_STALL_SECONDS`` (5) for the users named in
``BENCH_STALLED_USERS`` (comma-separated) and takes no time for everyone else.

A configured model sends every result through the background path (``UploadProcessor._result``);
this one reports itself unavailable, so results carry no PAT block. bench/worker_pipeline.py runs it
to measure whether one user's slow model holds back the others.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from prediction_worker import __main__ as entry
from prediction_worker import app
from prediction_worker.results import ModelOutcome
from prediction_worker.window import UserWindow

_real_build_app = app.build_app
STALLED = {user for user in os.environ.get("BENCH_STALLED_USERS", "").split(",") if user}
STALL = float(os.environ.get("BENCH_STALL_SECONDS", "5"))


class StallingModel:
    """Stalls for the stalled users' devices (the bench names each device after its user)."""

    async def run(self, window: UserWindow) -> ModelOutcome:
        if any(device in STALLED for device in window.tracks):
            await asyncio.sleep(STALL)
        return ModelOutcome(unavailable="bench model: no weights", method="bench-model@1")


def stalling_build_app(settings: Any, schemas: Any, model: Any = None, credentials: Any = None) -> Any:
    return _real_build_app(settings, schemas, StallingModel(), credentials)


entry.build_app = stalling_build_app

if __name__ == "__main__":
    entry.main()
