"""What the worker does with each record: an upload applied to its user's window and a result
published, an erasure, an export request.

Each upload is applied to its user's window (``store.py``), then a result is published, or left
pending when results are debounced or publishing fails; ``flush`` publishes what is pending. A
record that cannot be decoded or applied goes to the dead-letter topic (``deadletter.py``) with
its stage and error and is never half-applied.

The week's blocks are reused between results (``prediction_worker.weekly``). With a model
configured, a user whose model block is stale gets the model run in a task of its own:
the agent goes on with other users' uploads, the user's uploads stay pending (in the
window, so a restart loses none of them), and the result goes out when the model is done.
One user's slow model (up to its timeout) thus delays only that user's result.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol

import cramjam
import faust
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind

from circadia.avro import AvroSchema, SchemaSet
from circadia.sealing import RecordSeal
from circadia.topics import EXPORT_REPLIES, HEALTH_SAMPLES, PREDICTIONS
from circadia.tracing import context_from_headers
from circadia.userkeys import Erased, KeysUnavailable, UserKeys
from prediction_worker import metrics
from prediction_worker.deadletter import DeadLetters, StageError
from prediction_worker.export import export_document
from prediction_worker.headers import Headers, header_list
from prediction_worker.inputs import movement
from prediction_worker.results import ModelOutcome, build_prediction
from prediction_worker.retry import retrying, transient
from prediction_worker.settings import WorkerSettings
from prediction_worker.store import WindowStore
from prediction_worker.weekly import WeekMetrics
from prediction_worker.window import UserWindow

log = logging.getLogger(__name__)
tracer = trace.get_tracer("prediction_worker")

UPLOAD_SCHEMA = "io.circadia.health.HealthUpload"
PREDICTION_SCHEMA = "io.circadia.prediction.Prediction"
EXPORT_REQUEST, EXPORT_REPLY = "io.circadia.privacy.ExportRequest", "io.circadia.privacy.ExportReply"
# what stays readable of sealed records (circadia.sealing)
UPLOAD_ROUTING = ("upload_id", "user_id", "received_at")
PREDICTION_ROUTING = ("prediction_id", "user_id", "source_upload_ids", "computed_at", "code_version")


class ModelStage(Protocol):
    async def run(self, window: UserWindow) -> ModelOutcome: ...


class NoModel:
    """No weights configured: results carry no PAT block, and say nothing about it."""

    async def run(self, window: UserWindow) -> ModelOutcome:
        return ModelOutcome()


class UploadProcessor:
    def __init__(self, settings: WorkerSettings, schemas: SchemaSet, store: WindowStore,
                 predictions: faust.TopicT, dead_letters: DeadLetters, model: ModelStage,
                 keys: UserKeys | None = None) -> None:
        self._settings = settings
        self._schemas = schemas
        self._upload_schema: AvroSchema = schemas[UPLOAD_SCHEMA]
        self._prediction_schema: AvroSchema = schemas[PREDICTION_SCHEMA]
        self._keys = keys  # None: no key service (development only), records in plaintext
        self._uploads_seal = RecordSeal(schemas, self._upload_schema, HEALTH_SAMPLES, UPLOAD_ROUTING)
        self._predictions_seal = RecordSeal(schemas, self._prediction_schema, PREDICTIONS, PREDICTION_ROUTING)
        self._store = store
        self._predictions = predictions
        self._dead_letters = dead_letters
        self._model = model
        self._uses_model = not isinstance(model, NoModel)
        self._weeks = WeekMetrics(interval_seconds=settings.worker_week_metrics_interval_seconds,
                                  max_users=settings.worker_week_metrics_cache_users,
                                  nonwear=settings.worker_nonwear_method)
        self._model_runs: dict[bytes, asyncio.Task[None]] = {}
        self.pending_users: set[bytes] = set()
        self.rescan_needed = True

    async def handle(self, event: faust.EventT) -> None:
        headers = header_list(event.headers)
        started = time.perf_counter()
        with tracer.start_as_current_span(
            f"{HEALTH_SAMPLES} process",
            context=context_from_headers(headers),
            kind=SpanKind.CONSUMER,
            attributes={"messaging.system": "kafka", "messaging.destination.name": HEALTH_SAMPLES,
                        "messaging.operation.type": "process",
                        "messaging.destination.partition.id": str(event.message.partition),
                        "messaging.kafka.offset": event.message.offset},
        ):
            try:
                outcome = await self._apply(event, headers)
            except StageError as error:
                await self._dead_letters.send(event, headers, error)
                return
        metrics.RECORDS.labels(outcome).inc()
        metrics.PROCESSING.observe(time.perf_counter() - started)

    async def _apply(self, event: faust.EventT, headers: Headers) -> str:
        try:
            # timestamps as the integers on the wire: the window works in milliseconds
            upload = self._schemas.decode(event.value, headers, self._upload_schema, logical=False)
        except Exception as exc:  # undecodable bytes take many exception types; all are permanent
            raise StageError("decode", exc) from exc
        try:
            upload = await retrying("open", partial(self._uploads_seal.open, self._keys, upload, logical=False),
                                    attempts=self._settings.worker_publish_attempts,
                                    backoff=self._settings.worker_retry_backoff_seconds)
        except Erased:
            # the user was erased after this upload was stored: it is gone, not failed
            log.info("upload of an erased user: skipped", extra={"upload_id": str(upload["upload_id"])})
            return "erased"
        except Exception as exc:  # tampered, or the key service still down after the retries
            raise StageError("open", exc) from exc
        user, upload_id = upload["user_id"].encode(), str(upload["upload_id"])
        try:
            return await self._apply_to_window(user, upload_id, upload)
        except KeysUnavailable as exc:  # the window could not be opened or sealed: nothing was written
            raise StageError("window", exc) from exc

    async def _apply_to_window(self, user: bytes, upload_id: str, upload: dict[str, Any]) -> str:
        async with self._store.editing(user) as window:
            if window.holds(upload_id):
                log.info("upload already applied, skipped", extra={"upload_id": upload_id})
                return "duplicate"
            try:
                report = window.apply(upload)
            except Exception as exc:  # the window is not written back: nothing is half-applied
                raise StageError("apply", exc) from exc
            window.pending.append(upload_id)
            if len(window.pending) == 1:
                carrier: dict[str, str] = {}
                propagate.inject(carrier)
                window.pending_trace = carrier.get("traceparent", "")
            self._bound_pending(window)
            log.info("upload applied", extra={"upload_id": upload_id, "samples": report.samples,
                                              "dropped_too_old": report.dropped_too_old})
            if self._due(user, window):
                await self._result(user, window)
            self._track_pending(user, window)
        return "applied"

    def _bound_pending(self, window: UserWindow) -> None:
        """While results cannot be published, ``pending`` would grow with every upload. At the
        bound the oldest ids leave it: their samples stay in the window, so the next result still
        reflects them; only its ``source_upload_ids`` no longer name them (counted and logged)."""
        excess = len(window.pending) - self._settings.worker_max_pending
        if excess > 0:
            metrics.PENDING_DROPPED.inc(excess)
            log.warning("pending uploads over the bound: the oldest leave the next result's source_upload_ids",
                        extra={"dropped": excess, "bound": self._settings.worker_max_pending})
            del window.pending[:excess]

    def _due(self, user: bytes, window: UserWindow) -> bool:
        """Whether the user's pending uploads may be published now: not while the user's model
        runs (its end publishes them), and not before the debounce interval has passed."""
        if user in self._model_runs:
            return False
        waited = time.time() * 1000 - window.last_published_ms
        return waited >= self._settings.worker_debounce_seconds * 1000

    async def _result(self, user: bytes, window: UserWindow) -> None:
        """Publish the pending uploads' result now; or, when the user's model block is stale,
        start the model in the background and publish when it is done."""
        now = datetime.now(UTC)
        if self._uses_model and self._weeks.model_stale(user, window, now):
            task = asyncio.create_task(self._run_model(user, window, now), name=f"model {user.decode()}")
            self._model_runs[user] = task
            task.add_done_callback(partial(self._model_ended, user))
            return
        await self._publish(user, window, now)

    async def _run_model(self, user: bytes, window: UserWindow, started: datetime) -> None:
        """The model on ``window`` (the value read for this upload: later uploads read their own
        copy, so nothing changes it meanwhile), then the user's result for what is pending now."""
        with tracer.start_as_current_span("model forward", attributes={"circadia.model": "pat"}):
            outcome = await self._model.run(window)
        self._weeks.set_model(user, outcome, window, started)
        self._model_runs.pop(user, None)
        async with self._store.editing(user) as current:
            if current.pending and self._due(user, current):
                # with the model's block just computed: publish, never start the model again
                await self._publish_or_dead_letter(user, current, model_done=True)
            self._track_pending(user, current)
        metrics.MODEL_REFRESHES.labels("published").inc()

    def _model_ended(self, user: bytes, task: asyncio.Task[None]) -> None:
        if self._model_runs.get(user) is task:
            del self._model_runs[user]
        if task.cancelled():
            return
        if (exc := task.exception()) is not None:
            # the uploads stay pending in the window: the flush timer tries again
            metrics.MODEL_REFRESHES.labels("failed").inc()
            log.error("model run or its result failed; the uploads stay pending", exc_info=exc,
                      extra={"user": user.decode()})

    async def erase(self, erasure: faust.EventT) -> None:
        """An erasure event (user.erasures.v1, co-partitioned with the uploads): the user's window,
        pending uploads, week blocks and cached keys go."""
        user = bytes(erasure.key or b"")
        if not user:
            log.error("erasure event without a key skipped", extra={"offset": erasure.message.offset})
            metrics.ERASURES.labels("unkeyed").inc()
            return
        task = self._model_runs.pop(user, None)
        if task is not None:
            task.cancel()
        self._weeks.forget(user)
        self.pending_users.discard(user)
        if self._keys is not None:
            self._keys.forget(user.decode())
        try:
            removed = await retrying("erase", partial(self._store.erase, user),
                                     attempts=self._settings.worker_publish_attempts,
                                     backoff=self._settings.worker_retry_backoff_seconds)
        except KeysUnavailable:
            # the window stays, sealed with the destroyed key: unreadable, and replaced by the user's
            # next window; counted so an operator can see erasures that left a tombstone undone
            metrics.ERASURES.labels("window_kept").inc()
            log.error("erasure: the window could not be checked (key service unavailable); it stays sealed",
                      extra={"offset": erasure.message.offset})
            return
        metrics.ERASURES.labels("window_removed" if removed else "no_window").inc()
        log.info("user erased", extra={"window_removed": removed})

    async def export(self, event: faust.EventT, replies: faust.TopicT) -> None:
        """An export request (user.export.requests.v1): the user's window and a result on it, sealed,
        to user.export.replies.v1 (``prediction_worker.export``). A request that cannot be answered
        is logged and counted; the gateway's wait for it ends in a 503 the client may retry."""
        try:
            request = self._schemas.decode(event.value, header_list(event.headers), self._schemas[EXPORT_REQUEST])
            user_id = request["user_id"]
            window = await self._store.read(user_id.encode())
            now = datetime.now(UTC)
            content = bytes(cramjam.zstd.compress(export_document(user_id, window, now), level=3))
            reply: dict[str, Any] = {"request_id": str(request["request_id"]), "user_id": user_id,
                                     "produced_at": now, "content": content}
            if self._keys is not None:
                sealed = await self._keys.seal_async(user_id, EXPORT_REPLIES, content)
                reply.update(content=sealed.ciphertext, key_id=sealed.key_id, wrapped_key=sealed.wrapped_key,
                             nonce=sealed.nonce)
            schema = self._schemas[EXPORT_REPLY]
            await (await replies.send(key=user_id.encode(), value=schema.encode(reply), headers=schema.headers(),
                                      force=True))
        except Exception:
            metrics.EXPORTS.labels("failed").inc()
            log.error("export request not answered", exc_info=True, extra={"offset": event.message.offset})
            return
        metrics.EXPORTS.labels("answered" if window is not None else "empty").inc()
        log.info("export answered", extra={"request_id": reply["request_id"], "bytes": len(reply["content"])})

    def cancel_model_runs(self) -> None:
        """Partitions were revoked: a running model's user may now belong to another worker,
        which publishes the uploads still pending in the window it restores."""
        for task in list(self._model_runs.values()):
            task.cancel()
        self._model_runs.clear()

    def rebalanced(self) -> None:
        """Windows were restored from the changelog: find the uploads still to publish, and
        recompute week blocks (a user's window may have changed on another worker)."""
        self.rescan_needed = True
        self._weeks.clear()

    async def _publish_or_dead_letter(self, user: bytes, window: UserWindow, *, model_done: bool = False) -> None:
        try:
            if model_done:
                await self._publish(user, window, datetime.now(UTC))
            else:
                await self._result(user, window)
        except StageError as error:
            # the uploads were acknowledged when applied: each gets a dead letter, and the user's
            # next upload starts a new result
            await self._dead_letters.send_unpublished(user, window.pending, error)
            window.pending, window.pending_trace = [], ""

    async def _publish(self, user: bytes, window: UserWindow, now: datetime) -> None:
        """Publish one result for the window's pending uploads; on failure they stay pending."""
        model = self._weeks.model(user) or ModelOutcome()
        with tracer.start_as_current_span("compute metrics"):
            try:
                moved = movement(window, self._weeks.nonwear)  # once for the week's blocks and the days
                blocks = self._weeks.blocks(user, window, now, moved)
                record = build_prediction(window, user.decode(), window.pending, now, model, blocks,
                                          nonwear=self._weeks.nonwear, moved=moved)
            except Exception as exc:
                raise StageError("compute", exc) from exc
            try:
                # the strict writer refuses a wrong type, a missing or unknown field; the separate
                # validation pass would cost as much again for a record this code built
                value = self._prediction_schema.write(record)
            except Exception as exc:  # a result the schema refuses is a bug, not a retry
                raise StageError("encode", exc) from exc
        if self._keys is not None:
            try:
                value = await self._predictions_seal.seal(self._keys, user.decode(), value, record)
            except KeysUnavailable:
                metrics.PUBLISH_FAILURES.inc()
                log.error("result not sealed (key service unavailable); uploads stay pending", exc_info=True,
                          extra={"pending": len(window.pending)})
                return
        # the aiokafka instrumentation adds the PRODUCER span and the traceparent header
        headers = self._prediction_schema.headers() + [("prediction_id", record["prediction_id"].encode())]

        async def send() -> None:
            await (await self._predictions.send(key=user, value=value, headers=headers, force=True))

        try:
            await retrying("publish", send, attempts=self._settings.worker_publish_attempts,
                           backoff=self._settings.worker_retry_backoff_seconds)
        except Exception as exc:
            if not transient(exc):
                raise StageError("publish", exc) from exc
            metrics.PUBLISH_FAILURES.inc()
            log.error("result not published; uploads stay pending", exc_info=True,
                      extra={"pending": len(window.pending)})
            return
        metrics.PREDICTIONS.inc()
        log.info("prediction published", extra={"prediction_id": record["prediction_id"],
                                                 "uploads": len(window.pending)})
        window.pending, window.pending_trace = [], ""
        window.last_published_ms = int(time.time() * 1000)

    def _track_pending(self, user: bytes, window: UserWindow) -> None:
        if window.pending:
            self.pending_users.add(user)
        else:
            self.pending_users.discard(user)
        metrics.PENDING_USERS.set(len(self.pending_users))

    async def flush(self) -> None:
        """Publish for every user whose pending uploads are due (debounce, failed publishes,
        and after a restart the pending uploads restored from the changelog)."""
        if self.rescan_needed:
            self.rescan_needed = False
            self.pending_users = self._store.users_with_pending()
        for user in list(self.pending_users):
            try:
                async with self._store.editing(user) as window:
                    if window.pending and self._due(user, window):
                        # in the trace of the upload that started the pending batch
                        cause = context_from_headers([("traceparent", window.pending_trace.encode())])
                        with tracer.start_as_current_span("publish pending", context=cause,
                                                          attributes={"circadia.uploads": len(window.pending)}):
                            await self._publish_or_dead_letter(user, window)
                    self._track_pending(user, window)
            except KeysUnavailable:
                metrics.PUBLISH_FAILURES.inc()
                log.warning("pending uploads not published: the window's key is unavailable; next flush retries",
                            exc_info=True, extra={"user": user.decode()})
