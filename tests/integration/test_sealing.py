"""Sealed records and sealed worker state against a real OpenBao: what stays readable, what opens,
what is refused (another user's content, a tampered byte, an unknown schema, an erased user), and
the per-service policies of the local stack's key service."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

import hvac
import pytest
from hvac.exceptions import Forbidden

from circadia.avro import SchemaSet
from circadia.sealing import RecordSeal, placeholder
from circadia.userkeys import Erased, KeysUnavailable, Tampered, UserKeys
from circadia_dev.devstack.openbao import LocalOpenBao
from fanout_gateway.records import ColdKey, ErasedRecord, Renderer, UnreadableRecord
from prediction_worker.store import SEALED_MAGIC, WindowStore, pending_in
from prediction_worker.window import UserWindow
from tests.conftest import free_port

SCHEMAS = SchemaSet.load()
UPLOAD = SCHEMAS["io.circadia.health.HealthUpload"]
PREDICTION = SCHEMAS["io.circadia.prediction.Prediction"]
ROUTING = ("upload_id", "user_id", "received_at")
DEVICE = "watch-unique-4f2a9c"


def upload(user: str) -> dict:
    received = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    return {"upload_id": str(uuid.uuid4()), "user_id": user, "received_at": received,
            "device": {"id": DEVICE, "model": "Watch7,1", "os": "watchOS 11.2", "activity_counts": "actigraph"},
            "samples": [{"type": "step_count", "start": received, "end": received, "utc_offset_minutes": 60,
                         "value": 4321.0, "stage": None, "unit": "count"}]}


@pytest.fixture
def keys(openbao: LocalOpenBao) -> UserKeys:
    return UserKeys(hvac.Client(url=openbao.url, token=openbao.root_token))


@pytest.fixture
def seal() -> RecordSeal:
    return RecordSeal(SCHEMAS, UPLOAD, "health.samples.v1", ROUTING)


async def sealed_upload(seal: RecordSeal, keys: UserKeys, record: dict) -> bytes:
    return await seal.seal(keys, record["user_id"], UPLOAD.write(record), record)


def test_placeholders_are_the_empty_values_of_their_types() -> None:
    device = next(f for f in UPLOAD.parsed["fields"] if f["name"] == "device")
    assert placeholder(device["type"]) == {"id": "", "model": "", "os": "", "activity_counts": "UNKNOWN"}
    assert placeholder(["null", "double"]) is None and placeholder({"type": "array", "items": "int"}) == []
    assert placeholder({"type": "long", "logicalType": "timestamp-millis"}) == 0


async def test_a_sealed_upload_keeps_its_routing_fields_and_nothing_else(seal: RecordSeal, keys: UserKeys) -> None:
    record = upload("ada")
    value = await sealed_upload(seal, keys, record)
    assert DEVICE.encode() not in value and b"Watch7,1" not in value
    outer = SCHEMAS.decode(value, UPLOAD.headers(), UPLOAD, logical=False)
    assert outer["upload_id"] == record["upload_id"] and outer["user_id"] == "ada"
    assert outer["samples"] == [] and outer["device"]["id"] == ""
    assert outer["sealed"]["content_fingerprint"] == UPLOAD.fingerprint
    opened = await seal.open(keys, outer, logical=False)
    assert opened["device"]["id"] == DEVICE and opened["samples"][0]["value"] == 4321.0
    assert opened["sealed"] is None


async def test_a_plaintext_record_opens_as_itself(seal: RecordSeal, keys: UserKeys) -> None:
    record = SCHEMAS.decode(UPLOAD.write(upload("ada")), UPLOAD.headers(), UPLOAD)
    assert await seal.open(keys, record) is record


async def test_content_moved_under_another_record_is_refused(seal: RecordSeal, keys: UserKeys) -> None:
    first, second = upload("ada"), upload("ada")
    outer = SCHEMAS.decode(await sealed_upload(seal, keys, first), UPLOAD.headers(), UPLOAD, logical=False)
    other = SCHEMAS.decode(await sealed_upload(seal, keys, second), UPLOAD.headers(), UPLOAD, logical=False)
    moved = {**other, "sealed": outer["sealed"]}  # the same user's content under another upload id
    with pytest.raises(Tampered, match="upload_id"):
        await seal.open(keys, moved)
    stolen = {**other, "user_id": "grace", "sealed": outer["sealed"]}
    with pytest.raises(Tampered):
        await seal.open(keys, stolen)


async def test_a_changed_byte_and_an_unknown_schema_are_refused(seal: RecordSeal, keys: UserKeys) -> None:
    outer = SCHEMAS.decode(await sealed_upload(seal, keys, upload("ada")), UPLOAD.headers(), UPLOAD, logical=False)
    ciphertext = outer["sealed"]["ciphertext"]
    flipped = {**outer, "sealed": {**outer["sealed"], "ciphertext": ciphertext[:-1] + bytes([ciphertext[-1] ^ 1])}}
    with pytest.raises(Tampered):
        await seal.open(keys, flipped)
    from circadia.avro import UnknownSchemaError

    unknown = {**outer, "sealed": {**outer["sealed"], "content_fingerprint": "0" * 64}}
    with pytest.raises(UnknownSchemaError):
        await seal.open(keys, unknown)


async def test_an_erased_users_records_open_as_erased(seal: RecordSeal, keys: UserKeys, openbao: LocalOpenBao) -> None:
    record = upload(f"erased-{uuid.uuid4().hex[:6]}")
    outer = SCHEMAS.decode(await sealed_upload(seal, keys, record), UPLOAD.headers(), UPLOAD, logical=False)
    assert keys.erase(record["user_id"])
    with pytest.raises(Erased):
        await seal.open(UserKeys(hvac.Client(url=openbao.url, token=openbao.root_token)), outer)


async def test_the_fanout_renders_sealed_results_inline_once_the_key_is_cached(keys: UserKeys,
                                                                             openbao: LocalOpenBao) -> None:
    from tests.unit.test_schemas import prediction_record

    record = prediction_record()
    routing = ("prediction_id", "user_id", "source_upload_ids", "computed_at", "code_version")
    value = await RecordSeal(SCHEMAS, PREDICTION, "predictions.v1", routing).seal(
        keys, record["user_id"], PREDICTION.write(record), record)
    renderer = Renderer(SCHEMAS, PREDICTION, UserKeys(hvac.Client(url=openbao.url, token=openbao.root_token)))
    head = renderer.head(value, PREDICTION.headers())
    assert (head.prediction_id, head.user_id) == (record["prediction_id"], record["user_id"])
    with pytest.raises(ColdKey):
        renderer.render(PREDICTION.fingerprint, value)
    text = await renderer.render_async(PREDICTION.fingerprint, value)
    assert '"steps":42.0' in text and '"sealed"' not in text
    assert renderer.render(PREDICTION.fingerprint, value) == text  # now inline
    assert keys.erase(record["user_id"])
    with pytest.raises(ErasedRecord):
        await Renderer(SCHEMAS, PREDICTION, UserKeys(hvac.Client(url=openbao.url, token=openbao.root_token))
                       ).render_async(PREDICTION.fingerprint, value)
    with pytest.raises(UnreadableRecord):  # a sealed result where no key service is configured
        Renderer(SCHEMAS, PREDICTION).render(PREDICTION.fingerprint, value)


async def test_a_sealed_window_keeps_only_its_pending_ids_readable(keys: UserKeys, openbao: LocalOpenBao) -> None:
    table: dict[bytes, bytes] = {}
    store = WindowStore(table, keys)  # type: ignore[arg-type]  # a dict is the table's mapping
    user = f"win-{uuid.uuid4().hex[:6]}".encode()
    record = SCHEMAS.decode(UPLOAD.write(upload(user.decode())), UPLOAD.headers(), UPLOAD, logical=False)
    record["samples"][0]["start"] = int(datetime.now(UTC).timestamp() * 1000) - 3_600_000
    record["samples"][0]["end"] = record["samples"][0]["start"] + 60_000
    async with store.editing(user) as window:
        window.apply(record)
        window.pending.append(record["upload_id"])
    raw = table[user]
    assert raw.startswith(SEALED_MAGIC) and DEVICE.encode() not in raw
    assert pending_in(raw) == [record["upload_id"]] and store.users_with_pending() == {user}
    reader = WindowStore(table, UserKeys(hvac.Client(url=openbao.url, token=openbao.root_token)))  # type: ignore[arg-type]
    async with reader.editing(user) as window:
        assert DEVICE in window.tracks and window.pending == [record["upload_id"]]
    assert keys.erase(user.decode())
    erased = WindowStore(table, UserKeys(hvac.Client(url=openbao.url, token=openbao.root_token)))  # type: ignore[arg-type]
    async with erased.editing(user) as window:
        assert window.tracks == {} and window.pending == []  # read as a new window, not as data


async def test_a_window_is_not_written_when_its_key_service_is_down(tmp_path: Path) -> None:
    server = LocalOpenBao(tmp_path / "bao", port=free_port())
    server.start()
    keys = UserKeys(hvac.Client(url=server.url, token=server.root_token, timeout=2))
    server.stop()
    table: dict[bytes, bytes] = {b"u": UserWindow().to_bytes()}
    store = WindowStore(table, keys)  # type: ignore[arg-type]
    with pytest.raises(KeysUnavailable):
        async with store.editing(b"u") as window:
            window.pending.append("an upload")
    assert UserWindow.from_bytes(table[b"u"]).pending == []  # the plaintext-free write never happened


def test_each_service_token_allows_only_its_own_part(tmp_path: Path) -> None:
    server = LocalOpenBao(tmp_path / "bao", port=free_port(), persistent=True, cluster_port=free_port())
    server.start()
    try:
        def service(name: str) -> UserKeys:
            return UserKeys(hvac.Client(url=server.url, token=server.service_token(name)))

        sealed = service("ingest-gateway").seal("ada", "health.samples.v1", b"a week")
        assert service("prediction-worker").open("ada", "health.samples.v1", sealed) == b"a week"
        assert service("fanout-gateway").open("ada", "health.samples.v1", sealed) == b"a week"
        with pytest.raises(KeysUnavailable, match="permission denied"):  # the fan-out never seals
            service("fanout-gateway").seal("grace", "predictions.v1", b"x")
        for name in ("prediction-worker", "fanout-gateway"):  # only the gateway (erasure) destroys keys
            with pytest.raises(Forbidden):
                hvac.Client(url=server.url, token=server.service_token(name)).secrets.transit.delete_key(
                    name="circadia-user-x")
        server.stop()
        server.start()  # raft storage: the key survives a restart
        assert service("prediction-worker").open("ada", "health.samples.v1", sealed) == b"a week"
        assert service("ingest-gateway").erase("ada") is True
    finally:
        server.stop()


def test_concurrent_opens_of_one_cold_key_all_succeed(keys: UserKeys, openbao: LocalOpenBao) -> None:
    sealed = keys.seal("lin", "t", b"x")
    reader = UserKeys(hvac.Client(url=openbao.url, token=openbao.root_token))

    async def many() -> list[bytes]:
        return await asyncio.gather(*(reader.open_async("lin", "t", sealed) for _ in range(8)))

    assert asyncio.run(many()) == [b"x"] * 8
