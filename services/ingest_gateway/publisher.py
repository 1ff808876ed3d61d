"""Publishing uploads to Kafka, answering only for what the broker acknowledged.

Failures are told apart by whether a retry can succeed (aiokafka's ``retriable``):
``BrokerUnavailable`` may pass on a retry (the gateway answers 503 with ``Retry-After``),
``RecordRefused`` never will (413 for a record over the topic's limit, else 500).

One upload's failure must not change another's. With the idempotent producer it would:
aiokafka gives every batch its sequence numbers when it sends it, and a batch the broker
refuses (a record over ``max.message.bytes``, say) leaves a gap in its partition's sequence,
so every later batch to that partition fails with ``OutOfOrderSequenceNumber`` until the
producer is replaced. So after a batch fails, the publisher replaces the producer: a new one
(a new producer id, sequences from zero) takes the new sends, the old one is closed once its
in-flight sends are answered, and a send that failed only because of the old producer's state
is sent once more on the new one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    DuplicateSequenceNumber,
    InvalidProducerEpoch,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    RecordTooLargeError,
    UnknownProducerId,
)

from circadia.kafka import PRODUCER_MAX_REQUEST_BYTES, create_producer, topic_max_message_bytes
from ingest_gateway import metrics
from ingest_gateway.limits import limit_problem, record_bytes, upload_record_bound

log = logging.getLogger(__name__)

# errors of the producer's own state, not of the record: the record is sent again on a new producer
PRODUCER_STATE_ERRORS = (OutOfOrderSequenceNumber, UnknownProducerId, InvalidProducerEpoch, ProducerFenced,
                         DuplicateSequenceNumber)
TOO_LARGE_ERRORS = (MessageSizeTooLargeError, RecordTooLargeError)
# the aiokafka instrumentation adds traceparent (and tracestate) inside send()
TRACE_HEADER_BYTES = 512
CLOSE_GRACE_SECONDS = 30.0


class PublishError(Exception):
    """The record was not acknowledged by the broker; nothing may be reported as accepted."""


class BrokerUnavailable(PublishError):
    """Not acknowledged, and a later retry may succeed (broker down, timeout, retriable error)."""


class RecordRefused(PublishError):
    """The record can never be stored as it is: a retry of the same upload cannot succeed."""

    def __init__(self, message: str, *, too_large: bool = False, limit: int | None = None) -> None:
        super().__init__(message)
        self.too_large = too_large
        self.limit = limit


class LimitMismatch(RuntimeError):
    """The topic does not accept every upload within the gateway's documented limits."""


class UploadPublisher:
    """Owns the idempotent producer; connects in the background until the broker answers.

    The gateway starts (and reports not ready) while Kafka is down, instead of crashing,
    and serves as soon as the broker is reachable. On connecting it reads the topic's
    ``max.message.bytes``: when the gateway's limits do not fit, the publisher refuses to run
    (``fatal``; ``on_fatal`` is called once) instead of accepting uploads it cannot store.
    """

    def __init__(self, bootstrap_servers: str, *, topic: str, max_samples: int, produce_timeout: float,
                 retry_interval: float = 2.0, security: dict[str, object] | None = None,
                 on_fatal: Callable[[LimitMismatch], None] | None = None) -> None:
        self._bootstrap = bootstrap_servers
        self._topic = topic
        self._max_samples = max_samples
        self._security = dict(security or {})
        self._timeout = produce_timeout
        self._retry_interval = retry_interval
        self._on_fatal = on_fatal
        self._producer: AIOKafkaProducer | None = None
        self._generation = 0  # which producer a send used; a failure replaces that one only
        self._connector: asyncio.Task[None] | None = None
        self._renewal: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._connected = asyncio.Event()
        self.fatal: LimitMismatch | None = None
        self.max_message_bytes: int | None = None
        self._probe_at = 0.0
        self._probe_ok = False

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self, *, wait: float = 0.0) -> None:
        """Connect in the background; with ``wait``, wait that long for the first connection so a
        topic that cannot hold the gateway's uploads stops the start (``LimitMismatch``)."""
        self._connected = asyncio.Event()
        self._connector = asyncio.create_task(self._connect(), name="kafka-connect")
        if wait > 0:
            try:
                await asyncio.wait_for(self._connected.wait(), wait)
            except TimeoutError:
                log.warning("Kafka not reachable within %.0f s; the gateway starts not ready", wait)
        if self.fatal is not None:
            raise self.fatal

    async def _connect(self) -> None:
        while True:
            producer = self._new_producer()
            try:
                await producer.start()
                limit = await topic_max_message_bytes(self._bootstrap, self._topic, **self._security)
            except KafkaError as exc:
                await producer.stop()
                # authentication failures say so here (e.g. SaslAuthenticationFailed); the gateway
                # stays up, answers 503 and /readyz false until the credentials work
                log.warning("Kafka not reachable yet, retrying: %r", exc, extra={"error": repr(exc)})
                await asyncio.sleep(self._retry_interval)
                continue
            problem = limit_problem(self._topic, limit, self._max_samples)
            if problem is not None:
                await producer.stop()
                self.fatal = LimitMismatch(problem)
                log.critical("refusing to run: %s", problem)
                self._connected.set()
                if self._on_fatal is not None:
                    self._on_fatal(self.fatal)
                return
            self._set_limit(limit)
            self._producer = producer
            self._connected.set()
            log.info("connected to Kafka", extra={"bootstrap_servers": self._bootstrap,
                                                  "max_message_bytes": limit})
            return

    def _new_producer(self) -> AIOKafkaProducer:
        # the client's own bound on a request never refuses what the limits allow: the topic decides
        request = max(PRODUCER_MAX_REQUEST_BYTES, upload_record_bound(self._max_samples) + TRACE_HEADER_BYTES)
        return create_producer(self._bootstrap, client_id="ingest-gateway", max_request_size=request,
                               **self._security)

    def _set_limit(self, limit: int) -> None:
        self.max_message_bytes = limit
        metrics.TOPIC_LIMIT.set(limit)

    async def stop(self) -> None:
        for task in (self._connector, self._renewal):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._connector = self._renewal = None
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def reconnect(self, security: dict[str, object]) -> None:
        """Rotated credentials: close the producer and connect again with the new ones."""
        await self.stop()
        self._security = dict(security)
        self._probe_at = 0.0
        await self.start()

    # --- publishing --------------------------------------------------------------------------

    async def publish(self, topic: str, key: bytes, value: bytes,
                      headers: Sequence[tuple[str, bytes]]) -> tuple[int, int]:
        """Send and wait for the acknowledgement; returns (partition, offset)."""
        deadline = time.monotonic() + self._timeout
        limit = self.max_message_bytes
        size = record_bytes(key, value, headers) + TRACE_HEADER_BYTES
        if limit is not None and size > limit:
            raise RecordRefused(f"the record would be {size:,} bytes; {topic} accepts at most {limit:,}",
                                too_large=True, limit=limit)
        for attempt in (1, 2):
            producer, generation = self._producer, self._generation
            if producer is None:
                raise BrokerUnavailable("not connected to Kafka")
            try:
                metadata = await asyncio.wait_for(
                    producer.send_and_wait(topic, value=value, key=key, headers=list(headers)),
                    max(0.0, deadline - time.monotonic()),
                )
            except TimeoutError as exc:
                raise BrokerUnavailable(f"produce to {topic} not acknowledged within {self._timeout:g} s") from exc
            except KafkaError as exc:
                failure = self._classify(exc, topic)
                metrics.PRODUCE_ERRORS.labels(type(exc).__name__,
                                              "retriable" if isinstance(failure, BrokerUnavailable) else "final").inc()
                if isinstance(failure, BrokerUnavailable):
                    raise failure from exc  # retried by aiokafka already; the producer is not to blame
                await self._renew(generation, exc, deadline)
                if isinstance(exc, TOO_LARGE_ERRORS):
                    self._spawn(self._refresh_limit())  # the topic's limit may have changed
                if attempt == 1 and isinstance(exc, PRODUCER_STATE_ERRORS):
                    log.warning("send failed on the producer's state (%r); sending again on a new producer",
                                exc, extra={"error": repr(exc)})
                    continue
                raise failure from exc
            return metadata.partition, metadata.offset
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _classify(exc: KafkaError, topic: str) -> PublishError:
        if isinstance(exc, TOO_LARGE_ERRORS):
            return RecordRefused(f"{topic} refused the record as too large ({exc!r})", too_large=True)
        # aiokafka does not retry its own timeouts (a full buffer, an expired batch), but a later
        # upload can pass: a timeout is load or an outage, not this record's fault
        if getattr(exc, "retriable", False) or isinstance(exc, KafkaTimeoutError):
            return BrokerUnavailable(f"produce to {topic} failed: {exc!r}")
        return RecordRefused(f"{topic} refused the record: {exc!r}")

    async def _renew(self, generation: int, cause: KafkaError, deadline: float) -> None:
        """Replace the producer of ``generation`` (once, however many sends failed on it) and wait
        until the new one is ready, at most until ``deadline``."""
        if generation == self._generation:
            self._generation += 1
            log.warning("a batch failed (%r): replacing the producer", cause, extra={"error": repr(cause)})
            self._renewal = asyncio.create_task(self._replace(self._producer), name="kafka-renew")
        renewal = self._renewal
        if renewal is None or renewal.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(renewal), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise BrokerUnavailable("the Kafka producer is being replaced; retry") from None

    async def _replace(self, old: AIOKafkaProducer | None) -> None:
        while True:
            producer = self._new_producer()
            try:
                await producer.start()
                break
            except KafkaError as exc:
                await producer.stop()
                log.warning("replacement producer not started, retrying: %r", exc, extra={"error": repr(exc)})
                await asyncio.sleep(self._retry_interval)
        self._producer = producer
        metrics.PRODUCER_RENEWALS.inc()
        log.info("producer replaced", extra={"generation": self._generation})
        if old is not None:
            self._spawn(self._close(old))

    async def _close(self, producer: AIOKafkaProducer) -> None:
        """Close a replaced producer after its in-flight sends are answered (stop flushes)."""
        try:
            await asyncio.wait_for(producer.stop(), CLOSE_GRACE_SECONDS)
        except TimeoutError:
            log.error("a replaced producer did not close within %.0f s", CLOSE_GRACE_SECONDS)

    async def _refresh_limit(self) -> None:
        try:
            limit = await topic_max_message_bytes(self._bootstrap, self._topic, **self._security)
        except KafkaError as exc:
            log.warning("could not read %s's max.message.bytes: %r", self._topic, exc)
            return
        if limit != self.max_message_bytes:
            log.error("%s's max.message.bytes changed from %s to %s", self._topic, self.max_message_bytes, limit)
            self._set_limit(limit)
        problem = limit_problem(self._topic, limit, self._max_samples)
        if problem is not None:
            # refusing to start would be right; stopping a running gateway for every upload is not:
            # uploads over the new limit get 413, and the metric raises the alert
            log.error("uploads within the documented limits can no longer all be stored: %s", problem)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("publisher background task failed", exc_info=task.exception())

    # --- readiness ---------------------------------------------------------------------------

    async def ready(self) -> bool:
        """Whether the broker answers a metadata request (cached for one second)."""
        if self._producer is None or self.fatal is not None:
            return False
        now = time.monotonic()
        if now - self._probe_at >= 1.0:
            self._probe_at = now
            try:
                await asyncio.wait_for(self._producer.client.fetch_all_metadata(), 2.0)
                self._probe_ok = True
            except (TimeoutError, KafkaError) as exc:
                log.warning("Kafka readiness probe failed", extra={"error": repr(exc)})
                self._probe_ok = False
        return self._probe_ok
