"""Dead letters on ``health.samples.dlq.v1``: a record that failed permanently, with its stage and error.

A dead letter carries the record's key, value and headers, and ``error.*`` and ``source.*``
headers naming the stage, the error and where the record is; one the topic refuses whole is
written without the value. Uploads applied to their window whose result can never be published
get one dead letter each, naming the upload. Publishing waits out a broker outage: none is lost.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime

import faust

from circadia.deadletters import VALUE_OMITTED
from circadia.topics import HEALTH_SAMPLES
from prediction_worker import metrics
from prediction_worker.headers import Headers
from prediction_worker.retry import transient

log = logging.getLogger(__name__)


class StageError(Exception):
    """A record failed permanently at ``stage``; it goes to the dead-letter topic."""

    def __init__(self, stage: str, cause: BaseException) -> None:
        super().__init__(f"{stage}: {cause!r}")
        self.stage = stage
        self.cause = cause


class DeadLetters:
    def __init__(self, topic: faust.TopicT, *, backoff: float) -> None:
        self._topic = topic
        self._backoff = backoff

    async def send(self, event: faust.EventT, headers: Headers, error: StageError) -> None:
        name = type(error.cause).__name__
        metrics.DEAD_LETTERS.labels(error.stage, name).inc()
        metrics.RECORDS.labels("dead_lettered").inc()
        message = event.message
        log.error("record sent to the dead-letter topic", exc_info=error.cause, extra={
            "stage": error.stage, "topic": message.topic, "partition": message.partition, "offset": message.offset})
        stack = "".join(traceback.format_exception(error.cause))[-4000:]
        dead_headers = [(k, v) for k, v in headers if not k.startswith(("error.", "source."))] + [
            ("error.stage", error.stage.encode()),
            ("error.class", name.encode()),
            ("error.message", str(error.cause)[:1000].encode()),
            ("error.stack", stack.encode()),
            ("source.topic", message.topic.encode()),
            ("source.partition", str(message.partition).encode()),
            ("source.offset", str(message.offset).encode()),
            ("dead_lettered_at", datetime.now(UTC).isoformat().encode()),
        ]
        try:
            await self._deliver(event.key, event.value, dead_headers)
        except Exception as exc:  # not transient: this dead letter can never be written as it is
            # The record stays on its topic (retention 14 days), so a dead letter without the
            # value still lets an operator find it and rewind to it.
            log.error("dead letter refused; writing it without the value", exc_info=True,
                      extra={"error": repr(exc), "partition": message.partition, "offset": message.offset})
            await self._deliver(event.key, b"", [*dead_headers, (VALUE_OMITTED, repr(exc)[:1000].encode())])

    async def _deliver(self, key: bytes | None, value: bytes, headers: Headers) -> None:
        while True:  # a dead letter must not be lost: wait out a broker outage
            try:
                await (await self._topic.send(key=key, value=value, headers=headers, force=True))
                return
            except Exception as exc:
                if not transient(exc):
                    raise
                metrics.RETRIES.labels("dead_letter").inc()
                log.warning("dead-letter publish failed, retrying", extra={"error": repr(exc)})
                await asyncio.sleep(self._backoff)

    async def send_unpublished(self, user: bytes, upload_ids: Sequence[str], error: StageError) -> None:
        """Uploads already applied and acknowledged whose result can never be published: one dead
        letter each, naming the upload (the record itself is on health.samples.v1)."""
        name = type(error.cause).__name__
        for upload_id in upload_ids:
            metrics.DEAD_LETTERS.labels(error.stage, name).inc()
            await self._deliver(user, b"", [
                ("upload_id", upload_id.encode()),
                (VALUE_OMITTED, b"applied to the window; no result could be published"),
                ("error.stage", error.stage.encode()),
                ("error.class", name.encode()),
                ("error.message", str(error.cause)[:1000].encode()),
                ("source.topic", HEALTH_SAMPLES.encode()),
                ("dead_lettered_at", datetime.now(UTC).isoformat().encode()),
            ])
        log.error("uploads applied but no result can be published for them: dead-lettered",
                  exc_info=error.cause, extra={"user": user.decode(), "uploads": len(upload_ids), "stage": error.stage})
