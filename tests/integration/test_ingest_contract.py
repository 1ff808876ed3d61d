"""Schemathesis against the live ingest gateway (real Kafka, real Redis): generated requests,
valid and invalid, never get a server error or a response the OpenAPI document does not allow.

All of schemathesis's checks run except ``positive_data_acceptance``: a schema-valid body
may still be refused with 422, because some rules depend on the clock (the accepted
history, no future samples) or on two fields at once, which a JSON Schema cannot state;
the document says so in the Sample description."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from circadia_dev.devkeys import DevIssuer
from circadia_dev.devstack.openbao import LocalOpenBao
from ingest_gateway import openapi
from tests.integration.conftest import Launcher


@pytest.fixture(scope="module")
def ingest_url(launch: Launcher, openbao: LocalOpenBao) -> Iterator[str]:
    """The gateway as deployed: sealing with a key service (so DELETE /v1/users/me erases)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CIRCADIA_USER_KEYS_TOKEN", openbao.service_token("ingest-gateway"))
        with launch(user_keys_addr=openbao.url) as client:
            yield str(client.base_url)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_error_and_no_undocumented_response(ingest_url: str, dev_issuer: DevIssuer,
                                                     mode: GenerationMode) -> None:
    served = httpx.get(f"{ingest_url}/openapi.json").json()
    assert served == openapi.build()
    # the export is answered by the worker, which this gateway runs without (its 503 would count as a
    # server error): tests/e2e/test_export.py covers it on the whole stack
    api = schemathesis.openapi.from_dict(served).exclude(path="/v1/users/me/export")
    headers = {"Authorization": f"Bearer {dev_issuer.mint('contract-user')}"}
    calls: list[int] = []

    @given(case=api.as_strategy(mode))
    @settings(max_examples=250, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def conforms(case: schemathesis.Case) -> None:
        response = case.call(base_url=ingest_url, headers=headers)
        calls.append(response.status_code)
        case.validate_response(response, headers=headers,
                               excluded_checks=[positive_data_acceptance])

    conforms()
    assert len(calls) >= 100 and max(calls) < 500
    print(f"schemathesis {mode}: {len(calls)} calls, statuses {sorted(set(calls))}")
