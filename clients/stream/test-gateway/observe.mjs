// Prints every event of one stream client as a JSON line, for tests that act on the server meanwhile
// (tests/e2e/test_stream_client.py stops a gateway under it, or starves it). Configuration in
// CIRCADIA_STREAM_OBSERVE (JSON): url, token, and optionally cursor and epoch to resume from.
import { connect } from "../src/index.js";

const config = JSON.parse(process.env.CIRCADIA_STREAM_OBSERVE ?? "null");
if (!config) throw new Error("CIRCADIA_STREAM_OBSERVE is not set");
const print = (line) => process.stdout.write(`${JSON.stringify(line)}\n`);
const client = connect({ url: config.url, getToken: () => config.token, backoff: { initialMs: 100, maxMs: 400 } });
if (config.cursor) { // resume from a cursor this process never saw (the test knows the history)
  client.cursor = config.cursor;
  client.epoch = config.epoch;
}
client.addEventListener("state", (e) => print({ event: "state", ...e.detail }));
client.addEventListener("prediction", (e) => print({ event: "prediction", cursor: e.detail.cursor }));
client.addEventListener("reset", (e) => print({ event: "reset", reason: e.detail.reason }));
process.stdin.on("end", () => { client.close(); process.exit(0); });
process.stdin.resume();
