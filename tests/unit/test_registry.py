"""The fan-out connection registry: user → set of connections."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fanout_gateway.registry import ConnectionRegistry


class Socket:
    """Stands for a connection: the registry only needs identity."""


def test_register_lookup_unregister() -> None:
    registry: ConnectionRegistry[Socket] = ConnectionRegistry()
    a = Socket()
    registry.register("ada", a)
    assert set(registry.lookup("ada")) == {a}
    assert len(registry) == 1 and registry.user_count == 1
    assert registry.unregister("ada", a) is True
    assert set(registry.lookup("ada")) == set()
    assert len(registry) == 0 and registry.user_count == 0


def test_many_connections_per_user_and_isolation_between_users() -> None:
    registry: ConnectionRegistry[Socket] = ConnectionRegistry()
    ada = [Socket() for _ in range(50)]
    grace = [Socket() for _ in range(3)]
    for s in ada:
        registry.register("ada", s)
    for s in grace:
        registry.register("grace", s)
    assert set(registry.lookup("ada")) == set(ada)
    assert set(registry.lookup("grace")) == set(grace)
    assert len(registry) == 53 and registry.user_count == 2
    registry.unregister("ada", ada[0])
    assert set(registry.lookup("ada")) == set(ada[1:])
    assert set(registry.lookup("grace")) == set(grace)
    assert sorted(registry.users()) == ["ada", "grace"]


def test_registering_twice_counts_once() -> None:
    registry: ConnectionRegistry[Socket] = ConnectionRegistry()
    s = Socket()
    registry.register("ada", s)
    registry.register("ada", s)
    assert len(registry) == 1


def test_unregister_of_unknown_connection_or_user_is_a_no_op() -> None:
    registry: ConnectionRegistry[Socket] = ConnectionRegistry()
    s = Socket()
    registry.register("ada", s)
    assert registry.unregister("grace", s) is False
    assert registry.unregister("ada", Socket()) is False
    assert len(registry) == 1


def test_departed_users_leave_no_empty_entries() -> None:
    registry: ConnectionRegistry[Socket] = ConnectionRegistry()
    sockets = [Socket() for _ in range(1000)]
    for i, s in enumerate(sockets):
        registry.register(f"user-{i}", s)
    for i, s in enumerate(sockets):
        registry.unregister(f"user-{i}", s)
    assert registry.user_count == 0 and list(registry.users()) == []


def test_lookup_of_unknown_user_is_empty_and_creates_nothing() -> None:
    registry: ConnectionRegistry[Socket] = ConnectionRegistry()
    assert len(registry.lookup("nobody")) == 0
    assert registry.user_count == 0


def test_oldest_is_the_earliest_still_registered() -> None:
    registry: ConnectionRegistry[Socket] = ConnectionRegistry()
    first, second, third = Socket(), Socket(), Socket()
    for s in (first, second, third):
        registry.register("ada", s)
    assert registry.oldest("ada") is first and registry.count("ada") == 3
    registry.unregister("ada", first)
    assert registry.oldest("ada") is second
    assert registry.oldest("nobody") is None


operations = st.lists(st.tuples(st.booleans(), st.sampled_from(["a", "b", "c"]), st.integers(0, 5)), max_size=200)


@given(ops=operations)
def test_the_registry_behaves_like_a_map_of_ordered_sets(ops: list[tuple[bool, str, int]]) -> None:
    sockets = [Socket() for _ in range(6)]
    registry: ConnectionRegistry[Socket] = ConnectionRegistry()
    model: dict[str, list[Socket]] = {}
    for add, user, index in ops:
        s = sockets[index]
        if add:
            registry.register(user, s)
            if s not in model.setdefault(user, []):
                model[user].append(s)
        else:
            assert registry.unregister(user, s) == (s in model.get(user, []))
            if s in model.get(user, []):
                model[user].remove(s)
            if not model.get(user):
                model.pop(user, None)
        assert len(registry) == sum(len(v) for v in model.values())
        assert registry.user_count == len(model)
    for user in ("a", "b", "c"):
        assert list(registry.lookup(user)) == model.get(user, [])
        assert registry.oldest(user) is (model[user][0] if model.get(user) else None)
