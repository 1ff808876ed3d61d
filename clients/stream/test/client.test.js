// The client's rules without a server: backoff, the server's reconnect hint, typed reasons, repeats.
import { test } from "node:test";
import assert from "node:assert/strict";

import { closeReason, connect, reconnectDelay } from "../src/index.js";

class FakeSocket extends EventTarget {
  static made = [];
  constructor(url) { super(); this.url = url; this.sent = []; FakeSocket.made.push(this); }
  send(text) { this.sent.push(JSON.parse(text)); }
  close(code = 1000) { this.dispatchEvent(Object.assign(new Event("close"), { code, reason: "" })); }
  open() { this.dispatchEvent(new Event("open")); }
  receive(message) { this.dispatchEvent(Object.assign(new Event("message"), { data: JSON.stringify(message) })); }
  drop(code) { this.dispatchEvent(Object.assign(new Event("close"), { code, reason: "" })); }
}

const tick = () => new Promise((resolve) => setTimeout(resolve, 0));

test("delays grow exponentially with full jitter, capped, and never undercut a hint", () => {
  const backoff = { initialMs: 100, maxMs: 1000 };
  assert.equal(reconnectDelay(1, backoff, 0, () => 0.999), 99);
  assert.equal(reconnectDelay(3, backoff, 0, () => 0.5), 200);
  assert.equal(reconnectDelay(10, backoff, 0, () => 0.999), 999);
  assert.equal(reconnectDelay(1, backoff, 2500, () => 0.1), 2500);
});

test("every documented close code has its reason; unknown codes are abnormal", () => {
  assert.deepEqual([1001, 1013, 4401, 4403, 4408, 4410, 4429, 1006, 4999].map(closeReason),
    ["going_away", "try_again_later", "auth", "forbidden", "slow", "erased", "replaced", "abnormal", "abnormal"]);
});

test("after a going-away hint the client waits, then resumes from its cursor; repeats are dropped", async () => {
  FakeSocket.made = [];
  let tokens = 0;
  const client = connect({ url: "ws://x", getToken: () => `t${++tokens}`, WebSocket: FakeSocket,
                           backoff: { initialMs: 1, maxMs: 2 }, random: () => 0 });
  const seen = [], states = [];
  client.addEventListener("prediction", (e) => seen.push(e.detail.cursor.offset));
  client.addEventListener("state", (e) => states.push(e.detail));
  const first = FakeSocket.made[0];
  first.open(); await tick();
  assert.deepEqual(first.sent, [{ type: "auth", token: "t1" }]);
  first.receive({ type: "ready", user_id: "ada", expires_at: 1 });
  first.receive({ type: "prediction", cursor: { partition: 2, offset: 7 }, epoch: "e1", prediction: {} });
  first.receive({ type: "prediction", cursor: { partition: 2, offset: 7 }, epoch: "e1", prediction: {} });
  first.receive({ type: "reconnect", after_ms: 20 });
  first.drop(1001);
  assert.equal(states.at(-1).reason, "going_away");
  assert.equal(states.at(-1).retryInMs, 20);
  await new Promise((resolve) => setTimeout(resolve, 40));
  const second = FakeSocket.made[1];
  second.open(); await tick();
  assert.deepEqual(second.sent, [{ type: "resume", token: "t2", cursor: { partition: 2, offset: 7 }, epoch: "e1" }]);
  second.receive({ type: "prediction", cursor: { partition: 2, offset: 8 }, epoch: "e1", prediction: {} });
  assert.deepEqual(seen, [7, 8]);
  client.close();
});

test("refresh asks getToken again; replaced and erased stop the client, erased voids the cursor", async () => {
  FakeSocket.made = [];
  let tokens = 0;
  const client = connect({ url: "ws://x", getToken: async () => `t${++tokens}`, WebSocket: FakeSocket });
  const socket = FakeSocket.made[0];
  socket.open(); await tick();
  socket.receive({ type: "prediction", cursor: { partition: 0, offset: 1 }, epoch: "e", prediction: {} });
  socket.receive({ type: "refresh", expires_at: 2 }); await tick();
  assert.deepEqual(socket.sent.at(-1), { type: "auth", token: "t2" });
  socket.drop(4410);
  assert.equal(client.state, "closed");
  assert.equal(client.cursor, null);
  await new Promise((resolve) => setTimeout(resolve, 10));
  assert.equal(FakeSocket.made.length, 1); // no reconnect after an erasure
});
