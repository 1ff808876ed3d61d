"""Per-user data keys against a real OpenBao: seal and open, the binding to user and topic,
tampering, erasure (and a fresh key after it), the caches, and OpenBao down."""

from __future__ import annotations

import dataclasses

import hvac
import pytest

from circadia.userkeys import Erased, KeysUnavailable, Tampered, UserKeys, key_name
from circadia_dev.devstack.openbao import LocalOpenBao
from tests.conftest import free_port

TOPIC = "health.samples.v1"


@pytest.fixture
def keys(openbao: LocalOpenBao) -> UserKeys:
    return UserKeys(hvac.Client(url=openbao.url, token=openbao.root_token))


def test_a_sealed_value_opens_for_its_user_and_topic_only(keys: UserKeys) -> None:
    sealed = keys.seal("ada", TOPIC, b"steps 412 at 08:01")
    assert b"412" not in sealed.ciphertext and b"412" not in sealed.wrapped_key.encode()
    assert keys.open("ada", TOPIC, sealed) == b"steps 412 at 08:01"
    with pytest.raises(Tampered):
        keys.open("ada", "predictions.v1", sealed)  # another topic
    with pytest.raises(Tampered):
        keys.open("grace", TOPIC, sealed)  # another user: not even her key


def test_a_changed_byte_anywhere_is_refused(keys: UserKeys) -> None:
    sealed = keys.seal("ada", TOPIC, b"heart rate 61")
    flipped = bytes([sealed.ciphertext[0] ^ 1]) + sealed.ciphertext[1:]
    with pytest.raises(Tampered):
        keys.open("ada", TOPIC, dataclasses.replace(sealed, ciphertext=flipped))
    with pytest.raises(Tampered):
        keys.open("ada", TOPIC, dataclasses.replace(sealed, nonce=bytes(12)))
    other = keys.seal("ada", TOPIC, b"x")
    fresh = UserKeys(keys._client)  # no cache: the wrapped key goes to OpenBao
    wrapped = other.wrapped_key[:-4] + ("AAAA" if not other.wrapped_key.endswith("AAAA") else "BBBB")
    with pytest.raises(Tampered):
        fresh.open("ada", TOPIC, dataclasses.replace(other, wrapped_key=wrapped))


def test_another_process_opens_with_the_users_key_and_caches_it(keys: UserKeys, openbao: LocalOpenBao) -> None:
    sealed = [keys.seal("lin", TOPIC, f"sample {n}".encode()) for n in range(5)]
    reader = UserKeys(hvac.Client(url=openbao.url, token=openbao.root_token))
    assert [reader.open("lin", TOPIC, s) for s in sealed] == [f"sample {n}".encode() for n in range(5)]
    assert len({s.wrapped_key for s in sealed}) == 1  # one data key per user until it rotates
    assert (reader.hits, reader.misses) == (4, 1)


def test_erasure_destroys_every_value_and_a_later_seal_gets_a_new_key(keys: UserKeys, openbao: LocalOpenBao) -> None:
    before = keys.seal("mary", TOPIC, b"a week of steps")
    other = keys.seal("emmy", TOPIC, b"someone else's week")
    assert keys.erase("mary") is True
    assert keys.erase("mary") is False  # erasing twice is no error
    admin = hvac.Client(url=openbao.url, token=openbao.root_token)
    with pytest.raises(hvac.exceptions.InvalidPath):
        admin.secrets.transit.read_key(name=key_name("mary"))
    with pytest.raises(Erased):
        keys.open("mary", TOPIC, before)
    with pytest.raises(Erased):
        UserKeys(admin).open("mary", TOPIC, before)  # a process that never saw the key
    after = keys.seal("mary", TOPIC, b"a fresh upload")
    assert after.key_id != before.key_id and keys.open("mary", TOPIC, after) == b"a fresh upload"
    with pytest.raises(Erased):
        keys.open("mary", TOPIC, before)  # the new key is another key: the old values stay erased
    assert keys.open("emmy", TOPIC, other) == b"someone else's week"


def test_a_cached_key_expires_and_forget_drops_it_at_once(openbao: LocalOpenBao) -> None:
    now = [0.0]
    keys = UserKeys(hvac.Client(url=openbao.url, token=openbao.root_token), ttl=10, rotate_after=10,
                    clock=lambda: now[0])
    first = keys.seal("kat", TOPIC, b"1")
    now[0] = 11.0
    second = keys.seal("kat", TOPIC, b"2")
    assert second.wrapped_key != first.wrapped_key  # rotated after the interval
    keys.forget("kat")
    misses = keys.misses
    assert keys.open("kat", TOPIC, second) == b"2" and keys.misses == misses + 1


def test_openbao_down_is_unavailable_never_plaintext(tmp_path_factory: pytest.TempPathFactory) -> None:
    server = LocalOpenBao(tmp_path_factory.mktemp("openbao-down"), port=free_port())
    server.start()
    keys = UserKeys(hvac.Client(url=server.url, token=server.root_token, timeout=2))
    sealed = keys.seal("rosalind", TOPIC, b"x")
    server.stop()
    with pytest.raises(KeysUnavailable):
        keys.seal("someone-new", TOPIC, b"y")
    with pytest.raises(KeysUnavailable):
        UserKeys(hvac.Client(url=server.url, token=server.root_token, timeout=2)).open("rosalind", TOPIC, sealed)


async def test_from_an_event_loop_cold_keys_go_to_a_thread_and_warm_ones_stay_inline(keys: UserKeys) -> None:
    import threading

    threads: list[str] = []
    real_seal = keys.seal

    def seal(*args: object) -> object:
        threads.append(threading.current_thread().name)
        return real_seal(*args)  # type: ignore[arg-type]

    keys.seal = seal  # type: ignore[method-assign]
    first = await keys.seal_async("noether", TOPIC, b"cold")
    second = await keys.seal_async("noether", TOPIC, b"warm")
    assert threads[0] != threading.main_thread().name and threads[1] == threading.main_thread().name
    assert await keys.open_async("noether", TOPIC, first) == b"cold"
    assert await keys.open_async("noether", TOPIC, second) == b"warm"
    reader = UserKeys(keys._client)
    assert await reader.open_async("noether", TOPIC, first) == b"cold"  # cold: unwrapped in a thread
