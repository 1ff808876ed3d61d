"""When the blocks over the whole week are recomputed, and where they are kept meanwhile.

Once a user's window is full, every small upload moves it by a few minutes out of 10,080:
the circadian metrics, the cosinor fit, scored sleep and the sleep nights barely change,
yet recomputing them costs as much again as the rest of a result (about 2 ms of CPU
against 2.6 ms, ``bench/worker_apply.py``). So a user's week blocks are kept in memory
and recomputed when

- there are none (the user's first result on this worker, after a restart or a rebalance,
  or after the user left the cache),
- ``interval`` seconds have passed since they were computed (at most once per user per
  interval otherwise; 0 recomputes them for every result), or
- the window holds at least a day more of movement data than when they were computed (a
  first sync, a backlog that fills a gap), which changes them at once.

The model's block (PAT) follows the same rule, separately: it is recomputed in the
background (see ``prediction_worker.processor``). Each result's ``as_of`` names when every block
was computed and the window it covered.

The cache is bounded (``max_users``, least recently used first out). It holds results of
computations, never state: a user missing from it only costs one recomputation.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from prediction_worker import metrics
from prediction_worker.inputs import DEFAULT_NONWEAR, Movement
from prediction_worker.results import AsOf, ModelOutcome, WeekBlocks, covered_minutes, week_blocks
from prediction_worker.window import DAY_MINUTES, UserWindow


@dataclass
class _Entry:
    blocks: WeekBlocks | None = None
    model: ModelOutcome | None = None
    model_covered: int = 0


class WeekMetrics:
    def __init__(self, *, interval_seconds: float, max_users: int, nonwear: str = DEFAULT_NONWEAR) -> None:
        self.nonwear = nonwear
        self._interval = timedelta(seconds=interval_seconds)
        self._max_users = max_users
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()

    def _entry(self, user: bytes) -> _Entry:
        entry = self._entries.get(user)
        if entry is None:
            entry = self._entries[user] = _Entry()
            while len(self._entries) > self._max_users:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(user)
        metrics.WEEK_CACHE_USERS.set(len(self._entries))
        return entry

    def _stale(self, computed_at: datetime | None, covered_then: int, covered_now: int, now: datetime) -> bool:
        return (computed_at is None or now - computed_at >= self._interval or now < computed_at
                or covered_now - covered_then >= DAY_MINUTES)

    @staticmethod
    def _covered(window: UserWindow) -> int:
        return covered_minutes(window.movement("step_count"), window.movement("activity_count"))

    def blocks(self, user: bytes, window: UserWindow, now: datetime, moved: Movement | None = None) -> WeekBlocks:
        """The user's week blocks, recomputed first if they are stale (from ``moved``, the window's
        ``inputs.movement``, when the caller has it)."""
        entry = self._entry(user)
        cached = entry.blocks
        if cached is not None and not self._stale(cached.as_of.computed_at, cached.covered, self._covered(window), now):
            metrics.WEEK_BLOCKS.labels("reused").inc()
            return cached
        entry.blocks = week_blocks(window, now, self.nonwear, moved)
        metrics.WEEK_BLOCKS.labels("computed").inc()
        return entry.blocks

    def model_stale(self, user: bytes, window: UserWindow, now: datetime) -> bool:
        entry = self._entry(user)
        computed_at = entry.model.as_of.computed_at if entry.model is not None and entry.model.as_of else None
        return self._stale(computed_at, entry.model_covered, self._covered(window), now)

    def model(self, user: bytes) -> ModelOutcome | None:
        """The user's latest model outcome, or None before the first."""
        return self._entry(user).model

    def set_model(self, user: bytes, outcome: ModelOutcome, window: UserWindow, computed_at: datetime) -> ModelOutcome:
        entry = self._entry(user)
        entry.model = replace(outcome, as_of=AsOf.of(window, computed_at))
        entry.model_covered = self._covered(window)
        return entry.model

    def forget(self, user: bytes) -> None:
        """Forget one user's blocks (an erasure)."""
        self._entries.pop(user, None)
        metrics.WEEK_CACHE_USERS.set(len(self._entries))

    def clear(self) -> None:
        """Forget every user (after a rebalance the windows may have moved)."""
        self._entries.clear()
        metrics.WEEK_CACHE_USERS.set(0)
