"""``python -m tests.e2e.faulty_worker``: the prediction worker as deployed, with a failure
injected into one stage for the uploads of users named for it.

A user whose id starts with ``fault-<stage>-`` fails there:

- ``compute``: building the result raises (``RuntimeError``);
- ``encode``: the result has a field of the wrong type, which the Avro writer refuses;
- ``publish``: the result is far over predictions.v1's ``max.message.bytes``, which the
  broker refuses (a non-retriable ``MessageSizeTooLargeError`` from the real broker);
- ``model``: with ``FAULTY_WORKER_MODEL=1`` a model is configured (so every result takes the
  background path of a configured model); it raises the first time it runs for a device
  whose id starts with ``fault-model``, and otherwise reports itself unavailable.

Decode and apply failures need no injection: the tests write such records to the topic.
Everyone else's uploads go through the unchanged worker.
"""

from __future__ import annotations

import os
from typing import Any

from prediction_worker import __main__ as entry
from prediction_worker import app, processor
from prediction_worker.results import ModelOutcome
from prediction_worker.window import UserWindow

_real_build = processor.build_prediction
_real_build_app = app.build_app


def _stage(user_id: str) -> str | None:
    return user_id.split("-")[1] if user_id.startswith("fault-") else None


def faulty_build(window: UserWindow, user_id: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    stage = _stage(user_id)
    if stage == "compute":
        raise RuntimeError(f"injected compute failure for {user_id}")
    record = _real_build(window, user_id, *args, **kwargs)
    if stage == "encode":
        record["window_minutes_covered"] = "not a number"
    if stage == "publish":
        # 3 MiB of random hex, about 1.7 MB after zstd: predictions.v1 takes 1 MiB
        record["code_version"] = os.urandom(3 << 19).hex()
    return record


class FailingOnceModel:
    """A configured model (so results take the background path) that fails once per
    ``fault-model-`` user, then reports itself unavailable."""

    def __init__(self) -> None:
        self.failed: set[str] = set()

    async def run(self, window: UserWindow) -> ModelOutcome:
        device = next(iter(window.tracks), "")
        if device.startswith("fault-model") and device not in self.failed:
            self.failed.add(device)
            raise RuntimeError(f"injected model failure for {device}")
        return ModelOutcome(unavailable="test model: no weights", method="test-model@1")


def faulty_build_app(settings: Any, schemas: Any, model: Any = None, credentials: Any = None, **options: Any) -> Any:
    if os.environ.get("FAULTY_WORKER_MODEL") == "1":
        model = FailingOnceModel()
    return _real_build_app(settings, schemas, model, credentials, **options)


processor.build_prediction = faulty_build  # type: ignore[assignment]
entry.build_app = faulty_build_app  # type: ignore[assignment]

if __name__ == "__main__":
    entry.main()
