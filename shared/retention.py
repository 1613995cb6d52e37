"""Retention: what a service forgets, and the cleanup that runs by itself.

Every table that grows with traffic has a retention (docs/running.md
"Limits and retention"), from :class:`shared.settings.CommonSettings`:

* ``dedup``: a consumed event's (source, id), kept at least as long as the
  input streams keep the event (a replay is then always recognised);
* ``history``: an ended dossier's history, a resolved alert, a superseded
  plan report, after their last change (at least the input streams'
  retention too: what was forgotten can no longer be delivered again);
* ``log``: the notification log, failed notices, expired silences.

What still matters is never pruned: an open dossier, a firing alert, a
notice not delivered yet (the outboxes hold only those: a delivered message
is deleted at once).

Each service's store has ``prune(retention, now=...)``: one pass that
deletes at most ``retention.chunk`` rows of each table, each table in a
short transaction of its own, and says how many went. :class:`Cleanup` runs
it with ``service.every(...)``; a pass that filled a chunk runs again at
once, so a backlog goes in bounded steps without holding a long
transaction. Tests call ``prune`` with the time they choose.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Retention:
    dedup: dt.timedelta
    history: dt.timedelta
    log: dt.timedelta
    chunk: int = 500

    @property
    def keys(self) -> dt.timedelta:
        """How long a record that is also a dedup key is kept: the longer of ``dedup`` and ``history``."""
        return max(self.dedup, self.history)


#: One bounded pass of a store's retention: rows deleted, by table.
Prune = Callable[..., Mapping[str, int]]


class Cleanup:
    """Runs a store's ``prune`` in the background: ``service.every(interval, cleanup.once, name="retention")``."""

    def __init__(self, prune: Prune, retention: Retention, *, clock: Callable[[], dt.datetime]) -> None:
        self.prune = prune
        self.retention = retention
        self.clock = clock

    async def once(self, now: dt.datetime | None = None) -> bool:
        """One pass; True when a table filled its chunk (more may wait: the loop runs again at once)."""
        deleted = await asyncio.to_thread(self.prune, self.retention, now=now or self.clock())
        for table, rows in sorted(deleted.items()):
            if rows:
                log.info("retention deleted table=%s rows=%d", table, rows)
        return any(rows >= self.retention.chunk for rows in deleted.values())
