"""From a request body to the record the gateway publishes, in one step that can run elsewhere.

Parsing, validating and encoding an upload costs about 20 µs per sample: 0.2 s for a week's
backlog, about a second for an upload at the 50,000-sample limit. On the event loop that
would hold every other request for as long, so bodies over ``offload_bytes`` are prepared
in a pool of parser processes (:class:`UploadParsers`) and the loop only waits for the
answer; small bodies, the common case, are prepared inline, where a process hop would cost
more than the work.

:func:`prepare` is pure and the same in both places: bytes in, a :class:`PreparedUpload`
(or a ``Rejection``) out, so what a client sees never depends on where its body was parsed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import multiprocessing
import os
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime
from functools import cache

from circadia.avro import AvroSchema, AvroValidationError, SchemaSet
from ingest_gateway import metrics
from ingest_gateway.body import BodyLimits, parse_upload
from ingest_gateway.errors import Rejection
from ingest_gateway.models import ValidationRules

log = logging.getLogger(__name__)

UPLOAD_SCHEMA = "io.circadia.health.HealthUpload"
REQUEST_SCHEMA = "io.circadia.health.UploadRequest"


@dataclass(frozen=True)
class BodyToPrepare:
    """What :func:`prepare` needs (picklable: it crosses to a parser process)."""

    raw: bytes
    content_type: str | None
    content_encoding: str | None
    limits: BodyLimits
    rules: ValidationRules
    user_id: str  # the token's subject: the record's user, whatever the body says
    received_at: datetime


@dataclass(frozen=True)
class PreparedUpload:
    upload_id: str
    body_user_id: str | None  # the body's own user_id, if it named one (a mismatch is a 403)
    samples: int
    digest: str  # the idempotency digest of what is stored (UploadRequest.digest)
    value: bytes  # the io.circadia.health.HealthUpload record, Avro
    received_at: datetime  # the record's received_at (a routing field of the sealed record)


@dataclass(frozen=True)
class Schemas:
    upload: AvroSchema
    request: AvroSchema

    @classmethod
    def of(cls, schemas: SchemaSet) -> Schemas:
        return cls(upload=schemas[UPLOAD_SCHEMA], request=schemas[REQUEST_SCHEMA])


def prepare(body: BodyToPrepare, schemas: Schemas) -> PreparedUpload:
    """Decompress, parse and validate the body, and encode the record it becomes."""
    upload = parse_upload(body.raw, content_type=body.content_type, content_encoding=body.content_encoding,
                          limits=body.limits, rules=body.rules, avro_schema=schemas.request)
    try:
        # the record is built from validated values: the writer's own checks are enough
        value = schemas.upload.write(upload.to_record(body.user_id, body.received_at))
    except AvroValidationError as exc:
        raise Rejection(422, "schema_violation",
                        errors=[{"loc": ["body"], "msg": problem} for problem in exc.problems]) from None
    return PreparedUpload(upload_id=str(upload.upload_id), body_user_id=upload.user_id,
                          samples=len(upload.samples), digest=upload.digest(), value=value,
                          received_at=body.received_at)


# --- the parser processes ------------------------------------------------------------------


@cache
def _process_schemas() -> Schemas:
    return Schemas.of(SchemaSet.load())


def _prepare_in_process(body: BodyToPrepare) -> PreparedUpload:
    return prepare(body, _process_schemas())


def _warm() -> int:
    _process_schemas()
    return os.getpid()


PARSER_NICENESS = 19


def _lower_priority() -> None:
    """Backlog syncs are throughput, small uploads are latency: when a parser and the event loop
    (or Kafka, Redis, anything at the default priority) want the same core, the parser yields
    (at nice 19 it gets about 1.5 % of a contended core). Measured: the small uploads' p99 while
    backlogs arrive was 2.05x the p99 without them at nice 10, 1.60x at nice 19 (docs/benchmarks.md)."""
    os.nice(PARSER_NICENESS)


class ParsersBusy(Exception):
    """More large bodies are waiting for a parser than the queue allows."""


class UploadParsers:
    """A pool of parser processes for large bodies; small ones are prepared inline.

    At most ``queue_limit`` bodies are handed to the pool at once; more wait for a place, up to
    ``wait_seconds``, and are then refused with ``ParsersBusy`` (the gateway answers 503 with
    ``Retry-After``: it is load, which passes). ``workers=0`` prepares everything inline.
    """

    def __init__(self, schemas: Schemas, *, workers: int, offload_bytes: int, queue_limit: int,
                 wait_seconds: float = 10.0) -> None:
        self._schemas = schemas
        self._workers = workers
        self._offload_bytes = offload_bytes
        self._slots = asyncio.Semaphore(max(1, queue_limit))
        self._queue_limit = queue_limit
        self._wait = wait_seconds
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    async def start(self) -> None:
        """Start the processes now (each loads the schemas), not on the first large upload."""
        if self._workers <= 0:
            return
        self._pool = self._new_pool()
        loop = asyncio.get_running_loop()
        pids = await asyncio.gather(*(loop.run_in_executor(self._pool, _warm) for _ in range(self._workers)))
        log.info("upload parsers started", extra={"pids": sorted(set(pids)), "offload_bytes": self._offload_bytes})

    def _new_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        # spawned, not forked: a fork of a process with running threads (the exporters', the
        # secret watcher's) can inherit a lock held by one of them
        return concurrent.futures.ProcessPoolExecutor(self._workers, mp_context=multiprocessing.get_context("spawn"),
                                                      initializer=_lower_priority)

    async def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    async def prepare(self, body: BodyToPrepare) -> PreparedUpload:
        if self._pool is None or len(body.raw) < self._offload_bytes:
            return prepare(body, self._schemas)
        try:
            await asyncio.wait_for(self._slots.acquire(), self._wait)
        except TimeoutError:
            raise ParsersBusy(f"{self._queue_limit} large uploads were being parsed for {self._wait:g} s") from None
        try:
            metrics.PARSE_OFFLOADED.inc()
            pool = self._pool
            try:
                return await asyncio.get_running_loop().run_in_executor(pool, _prepare_in_process, body)
            except BrokenProcessPool:
                # a parser died (killed, out of memory): later uploads get a new pool
                log.error("an upload parser process died; starting new ones", extra={"bytes": len(body.raw)})
                if self._pool is pool:
                    pool.shutdown(wait=False, cancel_futures=True)
                    self._pool = self._new_pool()
                raise
        finally:
            self._slots.release()
