"""Publishes the events the store committed to ``monitor_outbox``, with JetStream acks.

A row is deleted only after its stream acked it. A crash between the ack and
the delete re-sends the event with the same id (``Nats-Msg-Id``), which the
stream's duplicate window drops, and consumers dedup on (source, id) anyway.

Events of one alert (or one task occurrence) keep their order: a pass
publishes rows in waves in which no ordering key repeats, each wave
concurrently, and stops at the first wave that fails.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import nats.errors

from services.deadline_monitor.store import MonitorStore, PendingEvent
from shared.consuming import Publisher, run_in_thread
from shared.db import is_transient
from shared.events import parse_event

log = logging.getLogger(__name__)


def waves(rows: Sequence[PendingEvent]) -> list[list[PendingEvent]]:
    """Consecutive groups of rows in which no ordering key appears twice."""
    out: list[list[PendingEvent]] = []
    current: list[PendingEvent] = []
    keys: set[str] = set()
    for row in rows:
        if row.ordering_key in keys:
            out.append(current)
            current, keys = [], set()
        current.append(row)
        keys.add(row.ordering_key)
    if current:
        out.append(current)
    return out


def is_retryable(exc: BaseException) -> bool:
    """Broker or database trouble that may pass: keep the rows and try again later."""
    return is_transient(exc) or isinstance(exc, (nats.errors.Error, asyncio.TimeoutError, ConnectionError, OSError))


class Outbox:
    def __init__(self, store: MonitorStore, publisher: Publisher, *, batch: int = 500, interval: float = 1.0) -> None:
        self.store = store
        self.publisher = publisher
        self.batch = batch
        self.interval = interval
        self._wake = asyncio.Event()

    def notify(self) -> None:
        """Something was committed: drain now rather than at the next poll."""
        self._wake.set()

    async def drain_once(self) -> int:
        """Publish one batch of pending events; returns how many were published and deleted."""
        rows = await run_in_thread(self.store.pending, self.batch)
        done: list[int] = []
        try:
            for wave in waves(rows):
                results = await asyncio.gather(*(self._publish(r) for r in wave), return_exceptions=True)
                done += [r.id for r, res in zip(wave, results, strict=True) if not isinstance(res, BaseException)]
                failures = [res for res in results if isinstance(res, BaseException)]
                if failures:
                    raise failures[0]
        finally:
            if done:
                await run_in_thread(self.store.delete_published, done)
        return len(done)

    async def drain(self) -> int:
        """Publish until nothing is pending."""
        total = 0
        while True:
            n = await self.drain_once()
            total += n
            if n < self.batch:
                return total

    async def _publish(self, row: PendingEvent) -> None:
        await self.publisher.publish(parse_event(row.payload), subject=row.subject)

    async def run(self) -> None:
        """Background loop: drain on notice or every ``interval`` seconds; back off while the broker is away."""
        backoff = self.interval
        while True:
            self._wake.clear()
            try:
                n = await self.drain_once()
            except Exception as exc:
                if not is_retryable(exc):
                    raise
                log.warning("outbox publish failed error=%s; retrying in %.1fs", type(exc).__name__, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 60.0)
                continue
            backoff = self.interval
            if n >= self.batch:
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval)
            except TimeoutError:
                pass
