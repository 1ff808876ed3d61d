"""The fan-out's answers beside the WebSocket: who is admitted to the stream, and when."""

from __future__ import annotations

import asyncio
import json

from websockets.datastructures import Headers
from websockets.http11 import Request

from fanout_gateway.http import PlainHttp
from fanout_gateway.page import ResultsPage
from fanout_gateway.protocol import STREAM_PATH


def answers(*, starting: bool = False, shutting_down: bool = False, open_sockets: int = 0) -> PlainHttp:
    ready = asyncio.Event()
    ready.set()
    return PlainHttp(ready, asyncio.Event(), ResultsPage(), per_process=2, open_sockets=lambda: open_sockets,
                     shutting_down=lambda: shutting_down, starting=lambda: starting)


def stream() -> Request:
    return Request(STREAM_PATH, Headers())


def test_a_starting_replica_asks_the_client_to_come_back_in_a_moment() -> None:
    """Until the history knows the Kafka cluster no user's channel can be named: a socket
    admitted then would fail in its handler instead of being told to retry."""
    refused = answers(starting=True).process_request(None, stream())  # type: ignore[arg-type]
    assert refused is not None and refused.status_code == 503
    assert json.loads(refused.body) == {"error": "starting"} and refused.headers["Retry-After"] == "1"
    assert answers().process_request(None, stream()) is None  # type: ignore[arg-type]


def test_a_replica_shutting_down_or_full_refuses_with_its_reason() -> None:
    for refused in (answers(shutting_down=True).process_request(None, stream()),  # type: ignore[arg-type]
                    answers(open_sockets=2).process_request(None, stream())):  # type: ignore[arg-type]
        assert refused is not None and refused.status_code == 503
        assert json.loads(refused.body) == {"error": "at_capacity"} and refused.headers["Retry-After"] == "5"
