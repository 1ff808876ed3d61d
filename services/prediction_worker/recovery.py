"""faust's table recovery, with the stream partitions sought before they are resumed.

After a rebalance faust 0.15.3 (``Recovery.on_recovery_completed``) resumes the stream
partitions, then seeks them to their committed offsets, then resumes flow control. The
consumer's flow is already running at that point (changelog recovery resumed it), so
records fetched while the seek is in flight are handed to the agents' queues, and
resuming flow control clears those queues. The records are gone from the queues, Kafka's
fetch position is already past them, and the next record shows up as a gap that faust
counts as acknowledged: an upload answered 202 would never be processed, and its offset
would be committed.

Here the seek comes first, while the stream partitions are still paused, and the
partitions are resumed in the same step as flow control, with no await in between. A
fetch that returns records of the paused partitions during the seek gives them back
(``prediction_worker.consumer``), so every record of a stream partition is fetched from
the committed offset after the queues were cleared. Records processed before the
rebalance but not committed are read again; the worker drops them by their ``upload_id``.

Only ``on_recovery_completed`` changes: the order; a second check after the seek that the
group has not rebalanced meanwhile (then the next recovery resumes the partitions); and a
seek that times out stops the worker instead of leaving the partitions paused. The path
faust takes for an app without tables (``Recovery._resume_streams``) has the old order, but
the worker always has its windows table.

Upstream: faust-streaming/faust#596 (open) reports this race, queues cleared after the
consumer resumed leaving gaps in the acked offsets; #216, fixed by #217, was the same order
in ``_resume_streams``, the path of an app without tables.

This recovery and the worker's consumer go together. In faust's order the active set is
not empty during the seek; here it can be, and only the consumer's give-back keeps a
waiting fetch from undoing the seek. ``tests/unit/test_worker_recovery.py`` checks that faust's own
recovery still has the old order, so an upgrade of faust that changes it fails there
until this is checked again.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from faust.tables import TableManager
from faust.tables.recovery import Recovery


class SeekFirstRecovery(Recovery):
    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        consumer = self.app.consumer
        self.log.info("Restore complete!")
        await self.app.on_rebalance_complete.send()
        self._set_recovery_ended()
        completions = [asyncio.ensure_future(table.on_recovery_completed(self.actives_for_table[table],
                                                                         self.standbys_for_table[table]))
                       for table in self.tables.values()]
        if completions:
            await asyncio.wait(completions)
        if self.app.consumer_generation_id != generation_id:
            self.log.warning(f"Recovery rebalancing again app id {self.app.consumer_generation_id} "
                             f"param {generation_id}")
            return
        assignment = consumer.assignment()
        if assignment:
            self.log.info("Seek stream partitions to committed offsets.")
            timeout = self.app.conf.broker_request_timeout
            try:
                await self._wait(asyncio.wait_for(consumer.perform_seek(), timeout))
            except TimeoutError:
                # the stream partitions are still paused: rather than sit idle, the worker stops
                # (logged with the cause, exit status 1); started again, it seeks again
                await self.app.crash(TimeoutError(f"seeking to the committed offsets took over {timeout:g} s"))
                return
        if self.app.consumer_generation_id != generation_id:  # rebalanced during the seek
            self.log.warning("Recovery rebalancing again during the seek")
            return
        self.completed.set()
        # no await from here until flow control is resumed (which clears the queues)
        consumer.resume_partitions({tp for tp in assignment if not self._is_changelog_tp(tp)})
        self.app.flow_control.resume()
        consumer.resume_flow()
        await cast(Any, self.app)._fetcher.maybe_start()
        self.tables.on_actives_ready()
        if not self.app.assignor.assigned_standbys():
            self.tables.on_standbys_ready()
        self.app.on_rebalance_end()
        self.log.info("Worker ready")


class SeekFirstTableManager(TableManager):
    """``TableManager`` whose recovery is :class:`SeekFirstRecovery` (``faust.App(TableManager=...)``)."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = SeekFirstRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery
