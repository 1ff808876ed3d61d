"""One connection's ordering rules, without sockets: held while catching up, no offset twice,
and a gap in the live stream noticed at the next publication."""

from __future__ import annotations

import json

from fanout_gateway.history import Publication, prediction_message
from fanout_gateway.sendqueue import Connection, Push


def _queued(connection: Connection) -> list[int]:
    offsets = []
    while not connection._queue.empty():
        text, _ = connection._queue.get_nowait()
        offsets.append(json.loads(text)["cursor"]["offset"])
    return offsets


def _push(offset: int, previous: int | None = None, partition: int = 3) -> Push:
    return Push(partition, offset, prediction_message(partition, offset, "e1", f'{{"n": {offset}}}'),
                previous=previous)


async def test_live_pushes_wait_for_the_catch_up_and_nothing_is_sent_twice() -> None:
    connection = Connection(websocket=None, user_id="ada", queue_size=16)  # type: ignore[arg-type]
    connection.push(_push(12, previous=10))  # arrives while the history is being read
    connection.push(_push(10, previous=7))
    assert _queued(connection) == []
    connection.go_live([_push(7), _push(10, previous=7)], after=(3, 5))
    assert _queued(connection) == [7, 10, 12]
    connection.push(_push(12, previous=10))  # a partition's new owner publishes it again
    connection.push(_push(15, previous=12))
    assert _queued(connection) == [15]


async def test_a_missed_publication_is_noticed_and_bridged_in_order() -> None:
    gaps: list[Connection] = []
    connection = Connection(websocket=None, user_id="ada", queue_size=16, on_gap=gaps.append)  # type: ignore[arg-type]
    connection.go_live([_push(4)])
    assert _queued(connection) == [4]
    connection.push(_push(9, previous=6))  # 6 never arrived (the subscriber's Redis link dropped)
    assert gaps == [connection] and not connection.live and _queued(connection) == []
    connection.push(_push(11, previous=9))  # held while the history is read
    connection.go_live([_push(6, previous=4), _push(9, previous=6)])  # what the history holds after 4
    assert _queued(connection) == [6, 9, 11]
    connection.push(_push(14, previous=11))
    assert _queued(connection) == [14] and gaps == [connection]


async def test_a_resubscription_confirmed_during_the_catch_up_bridges_once_live() -> None:
    gaps: list[Connection] = []
    connection = Connection(websocket=None, user_id="ada", queue_size=16, on_gap=gaps.append)  # type: ignore[arg-type]
    connection.resync_when_live = True
    connection.go_live([_push(2)])
    assert _queued(connection) == [2] and gaps == [connection] and not connection.live


async def test_a_publication_carries_the_record_and_its_position() -> None:
    payload = f"1 41 38 1700000000000 00-{'a' * 32}-{'b' * 16}-01 f1ngerprint ep0ch\n".encode() + b"\x00avro\n\x01"
    publication = Publication.parse(payload)
    assert (publication.partition, publication.offset, publication.previous) == (1, 41, 38)
    assert publication.timestamp_ms == 1_700_000_000_000 and publication.traceparent.startswith("00-")
    assert (publication.fingerprint, publication.epoch, publication.record) == ("f1ngerprint", "ep0ch",
                                                                                 b"\x00avro\n\x01")
    first = Publication.parse(b"1 0 -1 5 - fp ep\n")
    assert first.previous is None and first.traceparent is None and first.record == b""
