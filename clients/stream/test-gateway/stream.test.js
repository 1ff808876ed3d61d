// The client against the real gateway: a running stack (the project's LocalStack), its addresses and
// tokens minted by its development issuer in CIRCADIA_STREAM_TEST (JSON). tests/e2e/test_stream_client.py
// starts the stack and runs this file; without the variable it fails, it never skips.
import { test } from "node:test";
import assert from "node:assert/strict";

import { connect } from "../src/index.js";

const config = JSON.parse(process.env.CIRCADIA_STREAM_TEST ?? "null");
assert.ok(config, "CIRCADIA_STREAM_TEST is not set: run through tests/e2e/test_stream_client.py");
const { streamUrl, ingestUrl, tokens, day } = config;
const fast = { initialMs: 50, maxMs: 200 };

function next(client, type, timeoutMs = 30_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${type} within ${timeoutMs} ms`)), timeoutMs);
    client.addEventListener(type, (event) => { clearTimeout(timer); resolve(event.detail); }, { once: true });
  });
}

function closed(client, timeoutMs = 30_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`not closed within ${timeoutMs} ms`)), timeoutMs);
    client.addEventListener("state", (event) => {
      if (event.detail.state === "closed") { clearTimeout(timer); resolve(event.detail); }
    });
  });
}

async function live(client) {
  if (client.state === "live") return;
  await new Promise((resolve) => client.addEventListener("state", (e) => e.detail.state === "live" && resolve()));
}

let minute = 0;
async function upload(user, steps) {
  const start = new Date(`${day}T08:00:00Z`).getTime() + 60_000 * minute++;
  const body = { upload_id: crypto.randomUUID(), device: { id: "phone", model: "Pixel 9", os: "Android 16" },
                 samples: [{ type: "step_count", start: new Date(start).toISOString(),
                             end: new Date(start + 60_000).toISOString(), value: steps, unit: "count" }] };
  const response = await fetch(`${ingestUrl}/v1/uploads`, { method: "POST", body: JSON.stringify(body),
    headers: { "content-type": "application/json", authorization: `Bearer ${tokens[user]}` } });
  assert.equal(response.status, 202, await response.text());
  return body.upload_id;
}

test("a prediction arrives; after a disconnect the client resumes with neither a gap nor a repeat", async () => {
  // reconnects ~3 s after the drop: the next result is published while no connection is open
  const client = connect({ url: streamUrl, getToken: () => tokens.ada, backoff: { initialMs: 3000, maxMs: 3000 },
                           random: () => 0.99 });
  await live(client);
  const first = await upload("ada", 10);
  const got = await next(client, "prediction");
  assert.deepEqual(got.prediction.source_upload_ids, [first]);
  assert.ok(got.epoch && got.cursor.offset >= 0);
  const offsets = [got.cursor.offset];
  client.addEventListener("prediction", (e) => offsets.push(e.detail.cursor.offset));
  const waiting = new Promise((resolve) => client.addEventListener("state", (e) => {
    if (e.detail.state === "waiting") resolve(e.detail);
  }));
  client._socket.close(4000, "test drops the connection");
  assert.equal((await waiting).reason, "abnormal");
  const missed = await upload("ada", 11); // its result is published while no connection is open
  await live(client);
  await new Promise((resolve) => setTimeout(resolve, 2000));
  assert.equal(offsets.length, 2, `offsets ${offsets}`);
  assert.ok(offsets[1] > offsets[0]);
  assert.equal(client.cursor.offset, offsets[1]);
  assert.ok(missed);
  client.close();
});

test("a resume with an epoch the history no longer has is reset, then gets the latest", async () => {
  const client = connect({ url: streamUrl, getToken: () => tokens.reset, backoff: fast });
  await live(client);
  await upload("reset", 5);
  const latest = await next(client, "prediction");
  client.epoch = "an-epoch-the-history-never-had";
  const reset = next(client, "reset");
  const again = next(client, "prediction");
  client._socket.close(4000, "test drops the connection");
  assert.ok((await reset).reason);
  assert.equal((await again).cursor.offset, latest.cursor.offset);
  assert.notEqual(client.epoch, "an-epoch-the-history-never-had");
  client.close();
});

test("refresh is answered with getToken's next token; another user's token there is 4403", async () => {
  let calls = 0;
  const refreshed = connect({ url: streamUrl, getToken: () => (++calls === 1 ? tokens.short : tokens.refreshed),
                              backoff: fast });
  await live(refreshed);
  await new Promise((resolve) => setTimeout(resolve, 6000)); // the short token's refresh comes after ~3 s
  assert.equal(calls, 2);
  assert.equal(refreshed.state, "live");
  refreshed.close();

  let turns = 0;
  const stolen = connect({ url: streamUrl, getToken: () => (++turns === 1 ? tokens.short : tokens.other),
                           backoff: fast });
  const end = await closed(stolen);
  assert.deepEqual([end.reason, end.code], ["forbidden", 4403]);
});

test("a token the gateway refuses is 4401, and the client stops", async () => {
  const client = connect({ url: streamUrl, getToken: () => "not-a-token", backoff: fast });
  const end = await closed(client);
  assert.deepEqual([end.reason, end.code], ["auth", 4401]);
});

test("the oldest of too many connections is replaced (4429) and stops", async () => {
  const clients = [];
  const first = connect({ url: streamUrl, getToken: () => tokens.crowd, backoff: fast });
  await live(first);
  const end = closed(first);
  for (let i = 0; i < 10; i += 1) {
    const client = connect({ url: streamUrl, getToken: () => tokens.crowd, backoff: fast });
    clients.push(client);
    await live(client);
  }
  assert.deepEqual([(await end).reason, (await end).code], ["replaced", 4429]);
  for (const client of clients) client.close();
});

test("an erasure closes the stream with 4410, the cursor is void, and the client stops", async () => {
  const client = connect({ url: streamUrl, getToken: () => tokens.erased, backoff: fast });
  await live(client);
  await upload("erased", 3);
  await next(client, "prediction");
  const end = closed(client);
  const response = await fetch(`${ingestUrl}/v1/users/me`, { method: "DELETE",
                                                             headers: { authorization: `Bearer ${tokens.erased}` } });
  assert.equal(response.status, 202);
  assert.deepEqual([(await end).reason, (await end).code], ["erased", 4410]);
  assert.equal(client.cursor, null);
});
