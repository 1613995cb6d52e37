"""The monitor's work, as the handlers and the tick loop call it.

One process writes through one :class:`Monitor`: an asyncio lock serialises
its database transactions (the tick, snapshots, reports and dead letters may
touch the same rows), the blocking work runs in a thread, and every commit
wakes the outbox.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from services.deadline_monitor.domain import OccurrenceSpec
from services.deadline_monitor.outbox import Outbox, is_retryable
from services.deadline_monitor.store import MonitorStore, TickResult
from shared.calendar import local_date
from shared.consuming import Delivery, Outcome, run_in_thread
from shared.db import is_transient

log = logging.getLogger(__name__)


def _outcomes(duplicate: Sequence[bool]) -> list[Outcome]:
    return [Outcome.DUPLICATE if dup else Outcome.ACCEPTED for dup in duplicate]


class Monitor:
    def __init__(
        self,
        *,
        store: MonitorStore,
        outbox: Outbox | None,
        clock: Callable[[], dt.datetime],
        district_code: str,
        tick_interval: float = 30.0,
        catch_up_threshold: int = 1000,
        snapshot_backlog: Callable[[], Awaitable[int | None]] | None = None,
        upstream_backlog: Callable[[], Awaitable[int | None]] | None = None,
    ) -> None:
        self.store = store
        self.outbox = outbox
        self.clock = clock
        self.district_code = district_code
        self.tick_interval = tick_interval
        self.catch_up_threshold = catch_up_threshold
        self.snapshot_backlog = snapshot_backlog
        self.upstream_backlog = upstream_backlog
        self._own_backlog = 0  # snapshots waiting on the consumer, as last seen
        self._upstream = 0  # dossier events dossier_tracker has not read, as last seen
        self._upstream_probed = -1e9  # monotonic time of the last upstream probe
        self._lock = asyncio.Lock()

    @property
    def _backlog(self) -> int:
        return self._own_backlog + self._upstream

    @property
    def catching_up(self) -> bool:
        """More state waits upstream than the threshold: stored states may be stale."""
        return self._backlog > self.catch_up_threshold

    async def _probe_upstream_at_most_every(self, seconds: float) -> None:
        now = time.monotonic()
        if self.upstream_backlog is None or now - self._upstream_probed < seconds:
            return
        self._upstream_probed = now
        try:
            found = await self.upstream_backlog()
        except Exception as exc:
            if not is_retryable(exc):
                raise
            return
        if found is not None:
            self._upstream = found

    async def _probe_backlog(self) -> None:
        self._upstream_probed = time.monotonic()
        for probe, attr in ((self.snapshot_backlog, "_own_backlog"), (self.upstream_backlog, "_upstream")):
            if probe is None:
                continue
            try:
                found = await probe()
            except Exception as exc:
                if not is_retryable(exc):
                    raise
                log.debug("backlog unknown error=%s; keeping the last value", type(exc).__name__)
                continue
            if found is not None:
                setattr(self, attr, found)

    def _committed(self) -> None:
        if self.outbox is not None:
            self.outbox.notify()

    async def tick(self, now: dt.datetime | None = None) -> TickResult:
        """Find what came due by ``now`` (default: the clock) and record its transitions.

        The lock is taken per transaction (``tick_chunk`` rows), so a long first
        tick in front of a backlog does not hold the consumers back.
        """
        now = now or self.clock()
        await self._probe_backlog()
        if self.catching_up:
            log.info("catching up on dossier snapshots backlog=%d: dossier alerts wait", self._backlog)
        steps = self.store.tick_steps(now=now, dossiers=not self.catching_up)
        result = TickResult()
        while steps:
            async with self._lock:
                part, steps = await run_in_thread(self.store.run_transaction, steps)
            result += part
            if part.transitions:
                self._committed()
        if result.transitions:
            log.info("tick day=%s examined=%d transitions=%d", local_date(now), result.examined, result.transitions)
        return result

    async def run_ticks(self) -> None:
        """Background loop: a tick every ``tick_interval`` seconds; a database outage is waited out."""
        while True:
            try:
                await self.tick()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning("tick failed error=%s; next tick in %.0fs", type(exc).__name__, self.tick_interval)
            await asyncio.sleep(self.tick_interval)

    async def sync_plans(self, specs: Sequence[OccurrenceSpec]) -> TickResult:
        async with self._lock:
            result = await run_in_thread(self.store.sync_occurrences, specs, now=self.clock())
        log.info("plan occurrences synced tracked=%d transitions=%d", len(specs), result.transitions)
        self._committed()
        return result

    # -- BatchProcessor appliers ----------------------------------------------------------------
    async def apply_snapshots(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        """Store the snapshots; alert at once unless the consumer is catching up on a backlog.

        A backlog (a first start in front of the stream's history, or a restart
        after a long stop) holds older revisions of dossiers whose later ones
        follow; settling each on arrival would fire and resolve alerts for
        dossiers that ended long ago. So while more than ``catch_up_threshold``
        snapshots wait, dossiers are stored unsettled, and settled with their
        latest state when the backlog is read.
        """
        snapshots = [d.event.data for d in deliveries]
        last = deliveries[-1].raw if deliveries else None
        if last is not None:
            self._own_backlog = last.metadata.num_pending
        await self._probe_upstream_at_most_every(1.0)
        settle = not self.catching_up
        now = self.clock()
        async with self._lock:
            duplicate = await run_in_thread(self.store.apply_snapshots, snapshots, now=now, settle=settle)
            if settle:
                await run_in_thread(self.store.settle_unsettled, now=now)
        self._committed()
        return _outcomes(duplicate)

    async def apply_reports(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        reports = [(d.event.source, d.event.id, d.event.data) for d in deliveries]
        async with self._lock:
            duplicate = await run_in_thread(self.store.apply_reports, reports, now=self.clock())
        self._committed()
        return _outcomes(duplicate)

    async def apply_deadletters(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        letters = [d.event.data for d in deliveries]
        async with self._lock:
            duplicate = await run_in_thread(
                self.store.record_deadletters, letters, district_code=self.district_code, now=self.clock()
            )
        self._committed()
        return _outcomes(duplicate)
