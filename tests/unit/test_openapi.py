"""The committed OpenAPI document is the one the models produce."""

from __future__ import annotations

import json

from ingest_gateway import openapi
from ingest_gateway.app import OPENAPI_PATH


def test_committed_document_matches_the_models() -> None:
    committed = json.loads(OPENAPI_PATH.read_text())
    assert committed == openapi.build(), "regenerate: python -m ingest_gateway.openapi > " + str(OPENAPI_PATH)


def test_document_is_openapi_3_1_and_documents_every_status() -> None:
    document = openapi.build()
    assert document["openapi"] == "3.1.0"
    responses = document["paths"]["/v1/uploads"]["post"]["responses"]
    assert set(responses) == {"200", "202", "401", "403", "409", "413", "415", "422", "429", "500", "503"}
    assert "Retry-After" in responses["429"]["headers"] and "Retry-After" in responses["503"]["headers"]
    assert "Retry-After" not in responses["500"].get("headers", {})  # no retry can cure it
    assert "WWW-Authenticate" in responses["401"]["headers"]
