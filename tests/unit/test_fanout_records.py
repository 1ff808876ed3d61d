"""The owner reads only a result's head; it must agree with the full decoder on every record
the schema allows, refuse what is cut short, and render what clients receive."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from circadia.avro import SchemaSet
from circadia.jsonable import jsonable
from fanout_gateway.records import Renderer, UnreadableRecord

SCHEMAS = SchemaSet.load()
SCHEMA = SCHEMAS["io.circadia.prediction.Prediction"]
RENDERER = Renderer(SCHEMAS, SCHEMA)


def _record(user_id: str, sources: list[str]) -> dict:
    now = datetime.now(UTC)
    return {"prediction_id": str(uuid.uuid4()), "user_id": user_id, "source_upload_ids": sources,
            "computed_at": now, "window_start": now, "window_end": now, "code_version": "test",
            "daily_activity": [], "methods": {"window": "w@1"}, "window_minutes_covered": 0, "window_coverage": 0.0,
            "circadian": None, "cosinor": None, "sleep_nights": [], "naps": [], "scored_sleep": None, "pat": None,
            "pat_unavailable": None, "clinical_scores": [], "as_of": {}}


@settings(max_examples=200, deadline=None)
@given(user_id=st.text(min_size=1, max_size=300), sources=st.lists(st.text(max_size=80), min_size=1, max_size=70))
def test_the_head_is_what_the_full_decoder_reads(user_id: str, sources: list[str]) -> None:
    record = _record(user_id, sources)
    value = SCHEMA.encode(record)
    head = RENDERER.head(value, SCHEMA.headers())
    decoded = RENDERER.decode(head.fingerprint, value)
    assert (head.prediction_id, head.user_id, head.sources) == (
        str(decoded["prediction_id"]), decoded["user_id"], decoded["source_upload_ids"])
    assert head.user_id == user_id and head.sources == sources


def test_a_record_cut_short_or_of_an_unknown_schema_is_refused() -> None:
    value = SCHEMA.encode(_record("ada", ["u1", "u2"]))
    for cut in (0, 5, 38, 42):
        with pytest.raises(UnreadableRecord):
            RENDERER.head(value[:cut], SCHEMA.headers())
    with pytest.raises(UnreadableRecord):
        RENDERER.head(value, [("avro.schema.fingerprint", b"not-a-known-schema")])
    with pytest.raises(UnreadableRecord):
        RENDERER.head(value, [])
    with pytest.raises(UnreadableRecord):
        RENDERER.render(SCHEMA.fingerprint, value[:60])


def test_a_writer_schema_without_the_head_first_is_read_in_full() -> None:
    renderer = Renderer(SCHEMAS, SCHEMA)
    renderer._head_first[SCHEMA.fingerprint] = False  # as for a schema that moved the fields
    value = SCHEMA.encode(_record("ada", ["u1"]))
    head = renderer.head(value, SCHEMA.headers())
    assert (head.user_id, head.sources) == ("ada", ["u1"])


def test_the_rendered_json_is_the_decoded_record_without_its_envelope() -> None:
    record = _record("ada", ["u1"])
    value = SCHEMA.encode(record)
    rendered = json.loads(RENDERER.render(SCHEMA.fingerprint, value))
    decoded = SCHEMAS.decode(value, SCHEMA.headers(), SCHEMA)
    assert decoded.pop("sealed") is None and "sealed" not in rendered
    assert rendered == json.loads(json.dumps(jsonable(decoded)))
    assert rendered["computed_at"].endswith("+00:00") and rendered["prediction_id"] == record["prediction_id"]
