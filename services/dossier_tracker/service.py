"""dossier_tracker's service layer: applies accepted events to the store and publishes what changed.

* A batch of dossier status events is stored in one transaction (history,
  each touched dossier's state, ended counts); the new state of every
  dossier it touched is then published on ``parwatch.dossier.state``, every
  ack awaited (``shared.publishing``), before the events are acked.
  When a dossier's new events cross a month's end (a history sent at once,
  a batch straddling the last midnight of a month), its state at that month's
  end goes out first, with ``period_end`` (for closed periods). A batch
  redelivered after a crash or a failed publication is all duplicates, and
  still publishes the dossiers' state and those month ends (from the stored
  history).
  Storing happens in the store's own process (``TrackerStore.apply_batch``): it costs
  about as much Python time as receiving, decoding, encoding the facts,
  publishing and acking, which this process does meanwhile.
* An accepted rating or plan report is recorded as seen (deduplication on
  (``source``, ``id``)) and republished unchanged for scoring and
  deadline_monitor, also when it is a duplicate: the first delivery may have
  been stored and lost before its republication was acked. Its
  ``Nats-Msg-Id`` there is a digest of its type, source and id
  (``shared.publishing.source_scoped_id``): sources share that stream, and two
  of them may use the same event id.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

from services.dossier_tracker.domain import DossierState, RecordedEvent
from services.dossier_tracker.store import BatchResult, TrackerStore
from shared.calendar import load_calendar
from shared.consumer import Outcome, Received
from shared.db import make_engine
from shared.events import DOSSIER_STATE_TYPE, CloudEvent, DossierEvent, DossierStateChanged, new_event
from shared.process import WorkerProcess
from shared.publishing import JetStreamPublisher, source_scoped_id
from shared.streams import DOSSIER_STATE

SOURCE = "parwatch/dossier_tracker"


def state_fact(
    state: DossierState, *, now: dt.datetime, occurred_at: dt.datetime | None = None,
    period_end: dt.date | None = None, rewrites_from: int | None = None,
) -> CloudEvent[Any]:
    """The ``vn.parwatch.dossier.state_changed`` event of a dossier's state (id: code, revision and, once its
    history was folded again, generation).

    ``occurred_at``, the latest occurrence among the events that led to it, is the fact's event time:
    deadline_monitor holds dossier alerts while it lags far behind now (a backlog being replayed).
    ``period_end``: the state as it stood at the end of that day (a month's last), told for closed periods;
    a later revision of the same batch is the dossier's current state. ``rewrites_from``: the batch tells the
    dossier again from that revision on (a history folded again)."""
    data = DossierStateChanged(**state._asdict(), updated_at=now, occurred_at=occurred_at, period_end=period_end,
                               rewrites_from=rewrites_from)
    generation = f":g{state.generation}" if state.generation else ""
    return new_event(
        type=DOSSIER_STATE_TYPE,
        source=SOURCE,
        id=f"{state.dossier_code}:{state.revision}{generation}",
        subject=state.dossier_code,
        data=data,
        time=now,
    )


def open_store(database_url: str, calendar_overrides: str | None) -> TrackerStore:
    """The store of the store's process (``shared.process.WorkerProcess``), which runs ``TrackerStore.apply_batch``."""
    return TrackerStore(make_engine(database_url, checkpoint_every=1.0), calendar=load_calendar(calendar_overrides))


def event_times(events: Sequence[RecordedEvent]) -> dict[str, dt.datetime]:
    """The latest ``occurred_at`` of each dossier's events in a batch."""
    latest: dict[str, dt.datetime] = {}
    for e in events:
        if e.dossier_code not in latest or e.occurred_at > latest[e.dossier_code]:
            latest[e.dossier_code] = e.occurred_at
    return latest


def batch_facts(events: Sequence[RecordedEvent], result: BatchResult, *, now: dt.datetime) -> list[CloudEvent[Any]]:
    """The facts a stored batch publishes: each dossier's month ends, then its current state (a consumer keeps
    the highest revision), told again from ``result.rewrites`` where the batch told a dossier again."""
    times = event_times(events) | result.latest  # a dossier told again: the latest of its whole history
    rewrites = result.rewrites
    return [
        *(state_fact(s, now=now, occurred_at=at, period_end=day, rewrites_from=rewrites.get(s.dossier_code))
          for s, day, at in result.month_ends),
        *(state_fact(s, now=now, occurred_at=times.get(s.dossier_code), rewrites_from=rewrites.get(s.dossier_code))
          for s in result.states.values()),
    ]


def outcomes(duplicate: Sequence[bool]) -> list[Outcome]:
    return [Outcome.DUPLICATE if dup else Outcome.ACCEPTED for dup in duplicate]


class TrackerService:
    """The store works in a process of its own (``store``): storing a batch costs about as much Python
    time as receiving and decoding it, which the event loop does meanwhile."""

    def __init__(
        self, *, store: WorkerProcess[TrackerStore], publisher: JetStreamPublisher, clock: Callable[[], dt.datetime]
    ) -> None:
        self.store = store
        self.publisher = publisher
        self.clock = clock

    async def record_status_changes(self, received: Sequence[Received[DossierEvent]]) -> list[Outcome]:
        now = self.clock()
        events = [RecordedEvent.from_contract(r.event.data, source=r.event.source, event_id=r.event.id) for r in received]
        result = await self.store.run(TrackerStore.apply_batch, events, [r.seq for r in received], now=now)
        await self.publisher.publish_many(batch_facts(events, result, now=now), subject=DOSSIER_STATE)
        return outcomes(result.duplicate)

    async def relay(self, received: Sequence[Received[Any]], *, subject: str) -> list[Outcome]:
        keys = [(r.event.source, r.event.id, r.stream) for r in received]
        duplicate = await self.store.run(TrackerStore.record_seen, keys, now=self.clock())
        await self.publisher.publish_many([r.event for r in received], subject=subject, msg_id=source_scoped_id)
        return outcomes(duplicate)
