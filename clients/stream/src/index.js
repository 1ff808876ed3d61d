// The circadia fan-out stream protocol (docs/asyncapi.yaml) as an ES module, no dependencies.
//
//   const stream = connect({ url: "ws://127.0.0.1:8081/v1/stream", getToken: async () => token });
//   stream.addEventListener("prediction", (e) => render(e.detail.prediction));
//
// The client authenticates with a token from getToken(), keeps the cursor and epoch of the last
// prediction, and after any disconnect resumes from them, so it never receives an offset twice and
// misses nothing the history still holds. It answers the server's "refresh" by calling getToken()
// again, waits out a "reconnect" hint (after_ms) before reconnecting, backs off exponentially with
// full jitter otherwise, and surfaces every close code as a typed reason.

/** @typedef {"going_away"|"try_again_later"|"auth"|"forbidden"|"slow"|"erased"|"replaced"|"abnormal"|"closed"} CloseReason */

/** Close codes of the stream protocol and what each means for a client. */
export const CLOSE_REASONS = Object.freeze({
  1000: "closed", // the client closed
  1001: "going_away", // server shutting down, after a reconnect hint: reconnect after it
  1006: "abnormal", // the connection dropped: reconnect with backoff
  1013: "try_again_later", // replica full or key service unavailable: reconnect with backoff
  4401: "auth", // authentication failed or the token expired without refresh
  4403: "forbidden", // a refreshed token named another user
  4408: "slow", // the client read too slowly: reconnect and resume
  4410: "erased", // the user's data was erased: the cursor is void
  4429: "replaced", // a newer connection of the same user replaced this one
});

/** Reasons after which the client stops: reconnecting cannot help, or would undo what happened. */
export const FINAL_REASONS = Object.freeze(new Set(["closed", "auth", "forbidden", "erased", "replaced"]));

/**
 * @param {number} code
 * @returns {CloseReason}
 */
export function closeReason(code) {
  return CLOSE_REASONS[code] ?? "abnormal";
}

/**
 * The delay before reconnect attempt `attempt` (1, 2, ...): exponential with full jitter, at least a
 * server's reconnect hint.
 * @param {number} attempt
 * @param {{initialMs: number, maxMs: number}} backoff
 * @param {number} hintMs
 * @param {() => number} random
 */
export function reconnectDelay(attempt, backoff, hintMs = 0, random = Math.random) {
  const ceiling = Math.min(backoff.maxMs, backoff.initialMs * 2 ** Math.max(0, attempt - 1));
  return Math.max(hintMs, Math.floor(random() * ceiling));
}

export class StreamClient extends EventTarget {
  /**
   * @param {{url: string, getToken: () => (string|Promise<string>), WebSocket?: any,
   *          backoff?: {initialMs: number, maxMs: number}, random?: () => number}} options
   */
  constructor({ url, getToken, WebSocket = globalThis.WebSocket, backoff = { initialMs: 500, maxMs: 30_000 },
                random = Math.random }) {
    super();
    if (!url || typeof getToken !== "function") throw new TypeError("connect() needs a url and a getToken function");
    if (typeof WebSocket !== "function") throw new TypeError("no WebSocket implementation (pass options.WebSocket)");
    this.url = url;
    this._getToken = getToken;
    this._WebSocket = WebSocket;
    this._backoff = backoff;
    this._random = random;
    /** @type {{partition: number, offset: number} | null} */
    this.cursor = null;
    /** @type {string | null} */
    this.epoch = null;
    /** @type {"connecting"|"live"|"waiting"|"closed"} */
    this.state = "connecting";
    /** @type {string | null} */
    this.userId = null;
    this._socket = null;
    this._attempt = 0;
    this._hintMs = 0;
    this._timer = null;
    this._stopped = false;
    this._open();
  }

  /** Stop for good: no reconnect. */
  close() {
    this._stopped = true;
    clearTimeout(this._timer);
    if (this._socket) this._socket.close(1000, "client closed");
    this._setState("closed", { reason: "closed", code: 1000 });
  }

  _setState(state, detail = {}) {
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, ...detail } }));
  }

  _open() {
    const socket = new this._WebSocket(this.url);
    this._socket = socket;
    socket.addEventListener("open", () => this._authenticate(socket));
    socket.addEventListener("message", (event) => this._onMessage(socket, event));
    socket.addEventListener("close", (event) => this._onClose(socket, event));
    // A connection that fails before it opens: some implementations (Node's) report only the error.
    socket.addEventListener("error", () => setTimeout(() => {
      if (socket === this._socket && socket.readyState !== 1) this._onClose(socket, { code: 1006, reason: "" });
    }, 0));
  }

  async _token() {
    const token = await this._getToken();
    if (typeof token !== "string" || !token) throw new TypeError("getToken() returned no token");
    return token;
  }

  async _authenticate(socket) {
    let token;
    try {
      token = await this._token();
    } catch (error) {
      this.dispatchEvent(new CustomEvent("error", { detail: { reason: "token", error } }));
      socket.close(1000, "no token");
      return;
    }
    const resume = this.cursor && this.epoch;
    socket.send(JSON.stringify(resume ? { type: "resume", token, cursor: this.cursor, epoch: this.epoch }
                                      : { type: "auth", token }));
  }

  async _onMessage(socket, event) {
    let message;
    try {
      message = JSON.parse(typeof event.data === "string" ? event.data : new TextDecoder().decode(event.data));
    } catch (error) {
      this.dispatchEvent(new CustomEvent("error", { detail: { reason: "malformed", error } }));
      return;
    }
    switch (message.type) {
      case "ready":
        this.userId = message.user_id;
        this._attempt = 0;
        this._hintMs = 0;
        this._setState("live", { userId: message.user_id, expiresAt: message.expires_at });
        break;
      case "prediction": {
        const { partition, offset } = message.cursor;
        if (this.cursor && this.cursor.partition === partition && offset <= this.cursor.offset) break; // a repeat
        this.cursor = { partition, offset };
        if (message.epoch) this.epoch = message.epoch;
        this.dispatchEvent(new CustomEvent("prediction", {
          detail: { prediction: message.prediction, cursor: this.cursor, epoch: this.epoch } }));
        break;
      }
      case "reset":
        // the history cannot bridge from the cursor: the latest prediction follows, with a new cursor
        this.cursor = null;
        this.epoch = null;
        this.dispatchEvent(new CustomEvent("reset", { detail: { reason: message.reason } }));
        break;
      case "refresh":
        try {
          socket.send(JSON.stringify({ type: "auth", token: await this._token() }));
        } catch (error) {
          this.dispatchEvent(new CustomEvent("error", { detail: { reason: "token", error } }));
        }
        break;
      case "reconnect":
        this._hintMs = Number(message.after_ms) || 0;
        break;
      case "error":
        this.dispatchEvent(new CustomEvent("error", { detail: { reason: message.reason } }));
        break;
      default:
        break; // pong, and messages a newer server may add
    }
  }

  _onClose(socket, event) {
    if (socket !== this._socket || this._stopped) return;
    this._socket = null; // a close reported twice (an error, then the close event) counts once
    const reason = closeReason(event.code);
    if (reason === "erased") {
      this.cursor = null;
      this.epoch = null;
    }
    if (FINAL_REASONS.has(reason)) {
      this._stopped = true;
      this._setState("closed", { reason, code: event.code, message: event.reason });
      return;
    }
    this._attempt += 1;
    const delay = reconnectDelay(this._attempt, this._backoff, this._hintMs, this._random);
    this._hintMs = 0;
    this._setState("waiting", { reason, code: event.code, message: event.reason, retryInMs: delay });
    this._timer = setTimeout(() => {
      if (this._stopped) return;
      this._setState("connecting");
      this._open();
    }, delay);
  }
}

/**
 * Connect to the stream (see StreamClient).
 * @param {ConstructorParameters<typeof StreamClient>[0]} options
 */
export function connect(options) {
  return new StreamClient(options);
}
