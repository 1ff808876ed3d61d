"""The users' windows in the faust table (its changelog on Kafka), sealed per user.

Each value is the user's :class:`~prediction_worker.window.UserWindow` (CWIN2), sealed with the
user's data key when a key service is configured (``circadia.userkeys``):

    CSEAL1 | header length (u32, big-endian) | header (JSON) | ciphertext

The header holds what opening needs (the key id, the wrapped data key, the nonce) and the window's
``pending`` upload ids, which are ids, not health data: a worker that has just restored thousands
of windows finds the ones with uploads to publish without opening each. The associated data binds
the value to the user and to the table (``STATE_BINDING``). A window of an erased user opens as
``Erased`` and is read as a new, empty window; its changelog entry is replaced at the next write.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import struct
from collections.abc import AsyncIterator

from faust.types import AppT, TableT

from circadia.topics import SAMPLES_MAX_MESSAGE_BYTES
from circadia.userkeys import Erased, Sealed, Tampered, UserKeys
from prediction_worker import metrics
from prediction_worker.window import StateFormatError, UserWindow

log = logging.getLogger(__name__)

SEALED_MAGIC = b"CSEAL1"
STATE_BINDING = "prediction-worker.user-windows"  # the changelog's name depends on the app id
WINDOWS_TABLE = "user-windows"


def windows_table(app: AppT, partitions: int) -> TableT:
    """The app's table of windows, with ``partitions`` those of health.samples.v1.

    Keyed like health.samples.v1 (user id bytes) and written through the producer's
    partitioner, so each window lives in its user's partition even when the flush timer,
    outside any stream event, writes it."""
    return app.Table(WINDOWS_TABLE, key_type=bytes, value_type=bytes,  # bytes: raw serialisation
                     partitions=partitions, use_partitioner=True,
                     extra_topic_configs={"max.message.bytes": str(SAMPLES_MAX_MESSAGE_BYTES)})


class WindowStore:
    """Read-modify-write of users' windows in the faust table, one writer per user at a time."""

    def __init__(self, table: TableT, keys: UserKeys | None = None) -> None:
        self._table = table
        self._keys = keys  # None: windows stored in plaintext (development without a key service)
        self._locks: dict[bytes, asyncio.Lock] = {}

    @contextlib.asynccontextmanager
    async def editing(self, user: bytes) -> AsyncIterator[UserWindow]:
        """Yield the user's window; it is written back only if the block completes.
        ``KeysUnavailable`` when the window cannot be opened or sealed (nothing is written)."""
        lock = self._locks.setdefault(user, asyncio.Lock())
        try:
            async with lock:
                window = await self._read(user)
                yield window
                self._table[user] = await self._encode(user, window)
        finally:
            if not lock.locked():
                self._locks.pop(user, None)

    async def read(self, user: bytes) -> UserWindow | None:
        """The user's window as stored, or None (an export: nothing is written back)."""
        lock = self._locks.setdefault(user, asyncio.Lock())
        try:
            async with lock:
                if self._table.get(user) is None:
                    return None
                return await self._read(user)
        finally:
            if not lock.locked():
                self._locks.pop(user, None)

    async def erase(self, user: bytes) -> bool:
        """An erasure event: remove the user's window (a tombstone on the changelog) unless it was
        sealed with a key made after the erasure (uploads of the user that this worker applied
        before it got the event); True when a window was removed. ``KeysUnavailable`` when the
        window cannot be tried (it stays; sealed with a destroyed key, it is unreadable anyway)."""
        lock = self._locks.setdefault(user, asyncio.Lock())
        try:
            async with lock:
                raw = self._table.get(user)
                if raw is None:
                    return False
                if self._keys is not None and raw.startswith(SEALED_MAGIC):
                    self._keys.forget(user.decode())  # a data key cached before the erasure
                    try:
                        await self._plain(user, raw)
                    except Erased:
                        pass
                    else:
                        return False  # sealed with the user's new key: data from after the erasure
                del self._table[user]
                return True
        finally:
            if not lock.locked():
                self._locks.pop(user, None)

    async def _encode(self, user: bytes, window: UserWindow) -> bytes:
        plain = window.to_bytes()
        if self._keys is None:
            return plain
        return frame(await self._keys.seal_async(user.decode(), STATE_BINDING, plain), window.pending)

    async def _read(self, user: bytes) -> UserWindow:
        raw = self._table.get(user)
        if raw is None:
            return UserWindow()
        try:
            return UserWindow.from_bytes(await self._plain(user, raw))
        except Erased:
            metrics.STATE_RESETS.inc()
            log.info("window of an erased user: starting afresh", extra={"user": user.decode()})
            return UserWindow()
        except StateFormatError:
            metrics.STATE_RESETS.inc()
            log.error("unreadable user window, starting afresh", exc_info=True, extra={"user": user.decode()})
            return UserWindow()

    async def _plain(self, user: bytes, raw: bytes) -> bytes:
        """The window's CWIN bytes: opened when sealed (``Tampered`` reads as a corrupt window)."""
        if not raw.startswith(SEALED_MAGIC):
            return raw
        if self._keys is None:
            raise StateFormatError("a sealed window reached a worker without a key service")
        _, sealed = unframe(raw)
        try:
            return await self._keys.open_async(user.decode(), STATE_BINDING, sealed)
        except Tampered as exc:
            raise StateFormatError(f"sealed window refused: {exc}") from None

    def users_with_pending(self) -> set[bytes]:
        """Users whose window holds uploads not yet reflected in a result (read from each
        window's header; an unreadable window is left to its next upload, which resets it)."""
        found = set()
        for user, raw in self._table.items():  # no await in the loop: nothing changes the table
            try:
                if pending_in(raw):
                    found.add(user)
            except StateFormatError:
                log.error("unreadable user window while looking for pending uploads", exc_info=True,
                          extra={"user": user.decode(errors="replace")})
        return found


def pending_in(raw: bytes) -> list[str]:
    """The pending upload ids of a stored window, sealed or not, from its header alone."""
    if not raw.startswith(SEALED_MAGIC):
        return UserWindow.pending_in(raw)
    return unframe(raw)[0]


def frame(sealed: Sealed, pending: list[str]) -> bytes:
    """A sealed window as the table stores it (module docstring)."""
    header = json.dumps({"pending": pending, "key_id": sealed.key_id, "wrapped_key": sealed.wrapped_key,
                         "nonce": base64.b64encode(sealed.nonce).decode()}).encode()
    return SEALED_MAGIC + struct.pack(">I", len(header)) + header + sealed.ciphertext


def unframe(raw: bytes) -> tuple[list[str], Sealed]:
    """The pending ids and the sealed window of a stored value (``StateFormatError`` when corrupt)."""
    start = len(SEALED_MAGIC) + 4
    if len(raw) < start:
        raise StateFormatError("truncated sealed window")
    (size,) = struct.unpack(">I", raw[len(SEALED_MAGIC):start])
    if len(raw) < start + size:
        raise StateFormatError("truncated sealed window")
    try:
        header = json.loads(raw[start:start + size])
        sealed = Sealed(str(header["key_id"]), str(header["wrapped_key"]), base64.b64decode(header["nonce"]),
                        raw[start + size:])
        return [str(upload_id) for upload_id in header["pending"]], sealed
    except (ValueError, KeyError, TypeError) as exc:
        raise StateFormatError(f"corrupt sealed window: {exc!r}") from None
