"""The WebSocket protocol of ``/v1/stream``, as data: message types and close codes.

docs/asyncapi.yaml describes the same protocol; a test holds the two together.

Client → server
  ``auth``    {"type": "auth", "token": "<Firebase ID token>"}: the first message (or ``resume``);
              later, the answer to ``refresh`` (same user only).
  ``resume``  {"type": "resume", "token": ..., "cursor": {"partition": p, "offset": o}, "epoch": "..."}:
              a first message that also asks for what was missed after ``cursor``.
  ``ping``    {"type": "ping"} → ``pong``.
Server → client
  ``ready``       authenticated: {"type": "ready", "user_id": ..., "expires_at": <unix s>}
  ``prediction``  {"type": "prediction", "cursor": {...}, "epoch": "...", "prediction": {...}}
  ``reset``       the history cannot bridge the gap from the cursor; the latest prediction follows
  ``refresh``     the token expires soon: send a fresh ``auth``
  ``pong``        answer to ``ping``
  ``error``       a refused client message: {"type": "error", "reason": ...}
  ``reconnect``   the server is shutting down: reconnect after ``after_ms`` (then close 1001)
"""

from __future__ import annotations

STREAM_PATH = "/v1/stream"

CLIENT_MESSAGES = ("auth", "resume", "ping")
SERVER_MESSAGES = ("ready", "prediction", "reset", "refresh", "pong", "error", "reconnect")

GOING_AWAY = 1001  # server shutdown, after a reconnect hint
TRY_AGAIN_LATER = 1013  # this replica is at its connection limit
CLOSE_AUTH = 4401  # authentication failed, timed out, or the token expired without refresh
CLOSE_FORBIDDEN = 4403  # a refreshed token names another user
CLOSE_SLOW = 4408  # the client read too slowly: its send queue overflowed
CLOSE_ERASED = 4410  # the user's data was erased (DELETE /v1/users/me or circadia erase)
CLOSE_REPLACED = 4429  # the user opened more than the per-user limit: the oldest connection goes

CLOSE_CODES = {
    GOING_AWAY: "server shutting down; reconnect after the hinted delay",
    TRY_AGAIN_LATER: "this replica is at its connection limit, or the key service is unavailable",
    CLOSE_AUTH: "authentication failed, timed out, or the token expired",
    CLOSE_FORBIDDEN: "a refreshed token names another user",
    CLOSE_SLOW: "client too slow: send queue overflowed",
    CLOSE_ERASED: "the user's data was erased",
    CLOSE_REPLACED: "replaced: the user opened more connections than allowed",
}
