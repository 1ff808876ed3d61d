"""Which connections each user has open: user id → set of connections.

Register, unregister and lookup are O(1) on average (one dict and one set operation).
The registry holds no I/O; the server decides what to do with the connections it finds.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Set
from typing import Generic, TypeVar

C = TypeVar("C", bound=Hashable)

_EMPTY: frozenset = frozenset()


class ConnectionRegistry(Generic[C]):
    def __init__(self) -> None:
        self._by_user: dict[str, set[C]] = {}
        self._count = 0

    def register(self, user_id: str, connection: C) -> None:
        connections = self._by_user.setdefault(user_id, set())
        if connection not in connections:
            connections.add(connection)
            self._count += 1

    def unregister(self, user_id: str, connection: C) -> bool:
        """Forget ``connection``; False when it was not registered for ``user_id``."""
        connections = self._by_user.get(user_id)
        if connections is None or connection not in connections:
            return False
        connections.remove(connection)
        self._count -= 1
        if not connections:
            del self._by_user[user_id]  # no empty sets left behind by departed users
        return True

    def lookup(self, user_id: str) -> Set[C]:
        """The live, read-only set of the user's connections (empty when none)."""
        return self._by_user.get(user_id, _EMPTY)

    def users(self) -> Iterator[str]:
        return iter(self._by_user)

    @property
    def user_count(self) -> int:
        return len(self._by_user)

    def __len__(self) -> int:
        """Number of connections across all users."""
        return self._count
