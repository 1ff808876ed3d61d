"""docs/asyncapi.yaml against the code and the schemas it describes."""

from __future__ import annotations

import ast
import inspect
import json
import re

import pytest
import yaml

from circadia.avro import AvroSchema
from circadia.topics import TOPICS
from circadia_dev.paths import PROJECT_ROOT
from fanout_gateway import delivery, drain, expiry, history, protocol, session

DOC_PATH = PROJECT_ROOT / "docs" / "asyncapi.yaml"


@pytest.fixture(scope="module")
def doc() -> dict:
    return yaml.safe_load(DOC_PATH.read_text())


def _names(refs: list[dict]) -> set[str]:
    return {ref["$ref"].rsplit("/", 1)[1] for ref in refs}


def test_it_is_asyncapi_3(doc: dict) -> None:
    assert doc["asyncapi"] == "3.0.0"


def test_stream_messages_are_exactly_the_protocols(doc: dict) -> None:
    assert set(doc["channels"]["stream"]["messages"]) == set(protocol.CLIENT_MESSAGES + protocol.SERVER_MESSAGES)
    assert _names(doc["operations"]["receiveFromClient"]["messages"]) == set(protocol.CLIENT_MESSAGES)
    assert _names(doc["operations"]["sendToClient"]["messages"]) == set(protocol.SERVER_MESSAGES)
    for name in protocol.CLIENT_MESSAGES + protocol.SERVER_MESSAGES:
        payload = doc["components"]["messages"][name]["payload"]
        assert payload["properties"]["type"] == {"const": name}


def test_close_codes_are_exactly_the_protocols(doc: dict) -> None:
    assert set(doc["info"]["x-close-codes"]) == set(protocol.CLOSE_CODES)


def _sent_types(module: object) -> set[str]:
    """Every literal "type" the module puts in a message: dict literals, and message text it
    formats itself (the prediction message wraps an already serialised record)."""
    source = inspect.getsource(module)
    types = set(re.findall(r'\{\{"type": "(\w+)"', source))  # f-string message templates
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "type" and isinstance(value, ast.Constant):
                    types.add(value.value)
    return types


def test_the_code_sends_every_documented_message_and_nothing_else() -> None:
    # the prediction message is formatted where results are recorded and published
    sent = set().union(*(_sent_types(module) for module in (session, delivery, expiry, drain, history)))
    assert sent == set(protocol.SERVER_MESSAGES)


def test_kafka_channels_are_the_topics_with_their_avro_schemas(doc: dict) -> None:
    addresses = {channel["address"] for name, channel in doc["channels"].items() if name != "stream"}
    assert addresses == {spec.name for spec in TOPICS}
    expected = {"healthUpload": "io.circadia.health.HealthUpload",
                "predictionRecord": "io.circadia.prediction.Prediction",
                "configChange": "io.circadia.audit.ConfigChange", "userErasure": "io.circadia.audit.UserErasure",
                "erasure": "io.circadia.privacy.Erasure", "exportRequest": "io.circadia.privacy.ExportRequest",
                "exportReply": "io.circadia.privacy.ExportReply"}
    for message, full_name in expected.items():
        payload = doc["components"]["messages"][message]["payload"]
        assert payload["schemaFormat"].startswith("application/vnd.apache.avro")
        path = (DOC_PATH.parent / payload["schema"]["$ref"]).resolve()
        assert AvroSchema.from_file(path).name == full_name
        assert json.loads(path.read_text())["name"] == full_name.rsplit(".", 1)[1]
