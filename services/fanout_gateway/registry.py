"""Which connections each user has open: user id → connections in the order they joined.

Register, unregister, lookup and "oldest of a user" are O(1) on average: one dict of
insertion-ordered dicts used as ordered sets. The registry holds no I/O; the server
decides what to do with the connections it finds.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, KeysView
from typing import Generic, TypeVar

C = TypeVar("C", bound=Hashable)


class ConnectionRegistry(Generic[C]):
    def __init__(self) -> None:
        self._by_user: dict[str, dict[C, None]] = {}
        self._count = 0

    def register(self, user_id: str, connection: C) -> None:
        connections = self._by_user.setdefault(user_id, {})
        if connection not in connections:
            connections[connection] = None
            self._count += 1

    def unregister(self, user_id: str, connection: C) -> bool:
        """Forget ``connection``; False when it was not registered for ``user_id``."""
        connections = self._by_user.get(user_id)
        if connections is None or connection not in connections:
            return False
        del connections[connection]
        self._count -= 1
        if not connections:
            del self._by_user[user_id]  # no empty entries left behind by departed users
        return True

    def lookup(self, user_id: str) -> KeysView[C]:
        """The live, read-only view of the user's connections (empty when none)."""
        return self._by_user.get(user_id, {}).keys()

    def oldest(self, user_id: str) -> C | None:
        connections = self._by_user.get(user_id)
        return next(iter(connections)) if connections else None

    def count(self, user_id: str) -> int:
        return len(self._by_user.get(user_id, ()))

    def users(self) -> Iterator[str]:
        return iter(self._by_user)

    def connections(self) -> Iterator[C]:
        for connections in self._by_user.values():
            yield from connections

    @property
    def user_count(self) -> int:
        return len(self._by_user)

    def __len__(self) -> int:
        """Number of connections across all users."""
        return self._count
