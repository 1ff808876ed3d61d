"""A user's copy of their data (GET /v1/users/me/export) on the real stack: the gateway asks the worker
holding the window through Kafka, the reply travels sealed, and the document holds exactly the
user's own minutes and a result computed on them; nothing of another user; nothing after erasure."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx

from circadia_dev.devstack.stack import LocalStack
from tests.e2e.conftest import next_prediction, open_socket, post, upload_body

RUN = uuid.uuid4().hex[:6]
MORNING = datetime.now(UTC).replace(hour=6, minute=0, second=0, microsecond=0) - timedelta(days=1)


async def export(stack: LocalStack, user: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.ports.ingest}", timeout=30) as client:
        return await client.get("/v1/users/me/export", headers={"Authorization": f"Bearer {stack.issuer.mint(user)}"})


async def test_the_export_holds_the_users_own_minutes_and_a_result_on_them(stack: LocalStack) -> None:
    ada, grace = f"export-ada-{RUN}", f"export-grace-{RUN}"
    ws = await open_socket(stack, ada)
    body = upload_body([11, 0, 13], start=MORNING)
    body["device"] = {"id": f"band-{RUN}", "model": "Band 2", "os": "BandOS 4"}
    assert (await post(stack, ada, body)).status_code == 202
    await next_prediction(ws, 30)
    theirs = upload_body([99] * 3, start=MORNING)
    assert (await post(stack, grace, theirs)).status_code == 202

    response = await export(stack, ada)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-disposition"].startswith('attachment; filename="circadia-export-')
    assert response.headers["cache-control"] == "no-store"
    document = response.json()
    assert (document["format"], document["user_id"]) == ("circadia-export@1", ada)
    window = document["window"]
    (device,) = window["devices"]
    assert device == f"band-{RUN}"
    steps = window["devices"][device]["minutes"]["step_count"]
    start = datetime.fromisoformat(window["start"])
    first = int((MORNING - start).total_seconds() // 60)
    assert steps[first:first + 3] == [11.0, 0.0, 13.0]
    assert sum(v for v in steps if v is not None) == 24 and len(steps) == window["minutes"] == 10_080
    assert list(window["uploads_applied"]) == [body["upload_id"]]
    result = document["result"]
    assert result["user_id"] == ada and sum(d["steps"] or 0 for d in result["daily_activity"]) == 24
    assert theirs["upload_id"] not in response.text and grace not in response.text  # nothing of Grace's

    nobody = await export(stack, f"export-nobody-{RUN}")
    assert nobody.status_code == 200 and nobody.json()["window"] is None and nobody.json()["result"] is None
    await ws.close()


async def test_after_erasure_the_export_is_empty(stack: LocalStack) -> None:
    user = f"export-erased-{RUN}"
    ws = await open_socket(stack, user)
    assert (await post(stack, user, upload_body([5] * 3, start=MORNING))).status_code == 202
    await next_prediction(ws, 30)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.ports.ingest}") as client:
        erased = await client.delete("/v1/users/me", headers={"Authorization": f"Bearer {stack.issuer.mint(user)}"})
    assert erased.status_code == 202
    deadline = datetime.now(UTC) + timedelta(seconds=30)
    while (document := (await export(stack, user)).json())["window"] is not None:
        assert datetime.now(UTC) < deadline, "the window outlived the erasure"
    assert document["result"] is None
