"""Retries of the worker's Kafka and key-service calls: only failures a retry can cure, with backoff."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiokafka.errors import KafkaError, KafkaTimeoutError

from circadia.userkeys import KeysUnavailable
from prediction_worker import metrics

log = logging.getLogger(__name__)

T = TypeVar("T")


def transient(exc: BaseException) -> bool:
    """Whether a retry can succeed: aiokafka's retriable errors, timeouts and lost connections.
    A Kafka error that is not retriable (a record over the topic's limit, an authorization
    failure) fails the same way every time, so it is never retried."""
    if isinstance(exc, KafkaError):
        return bool(exc.retriable) or isinstance(exc, KafkaTimeoutError)
    return isinstance(exc, TimeoutError | ConnectionError | KeysUnavailable)


async def retrying(stage: str, action: Callable[[], Awaitable[T]], *, attempts: int, backoff: float) -> T:
    """Run ``action``, retrying transient failures with exponential backoff; any other error,
    and the last transient one, is raised."""
    for attempt in range(1, attempts + 1):
        try:
            return await action()
        except Exception as exc:
            if not transient(exc) or attempt == attempts:
                raise
            metrics.RETRIES.labels(stage).inc()
            log.warning("transient failure, retrying", extra={"stage": stage, "attempt": attempt,
                                                               "error": repr(exc)})
            await asyncio.sleep(backoff * 2 ** (attempt - 1))
    raise AssertionError("unreachable")
