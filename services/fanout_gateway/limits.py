"""The bounds one replica keeps on its sockets: timeouts, send queues, connection counts and the drain."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    auth_timeout: float = 5.0
    queue_size: int = 64
    per_user: int = 10
    per_process: int = 20_000
    refresh_lead: float = 60.0
    drain_seconds: float = 5.0
    reconnect_spread_ms: int = 5000
    subscribe_timeout: float = 2.0
