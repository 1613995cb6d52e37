"""dossier_tracker's subscriptions: one router, thin handlers.

The tracker is the ingest point of the public input streams: it validates,
deduplicates and counts every dossier event, rating and plan report
(``parwatch_events_total``), dead-letters what it cannot accept, derives
dossier state, and republishes accepted ratings and plan reports for scoring
and deadline_monitor.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Any, Protocol

from faststream.nats import NatsRouter
from pydantic_core import to_json

from services.dossier_tracker.domain import DossierState, RecordedEvent
from services.dossier_tracker.store import Incoming, TrackerStore
from shared.consuming import (
    Delivery,
    EventCounter,
    Outcome,
    Publisher,
    RetryPolicy,
    Route,
    consumer_router,
)
from shared.events import (
    DOSSIER_STATE_TYPE,
    DOSSIER_TYPE,
    PLAN_TYPE,
    RATING_TYPE,
    CloudEvent,
    DossierStateChanged,
    new_event,
)
from shared.publishing import JetStreamPublisher
from shared.streams import (
    ACCEPTED_PLAN_REPORTS,
    ACCEPTED_RATINGS,
    DOSSIER_EVENTS,
    DOSSIER_STATE,
    PLAN_EVENTS,
    RATING_EVENTS,
)

SOURCE = "parwatch/dossier_tracker"


_FACT_FIELDS = tuple(k for k in DossierStateChanged.model_fields if k != "updated_at")


def state_fact(state: DossierState, *, now: dt.datetime) -> DossierStateChanged:
    """The fact of a dossier's state, built without validating again (a third of a fact's cost).

    Every value is the tracker's own: fields of validated events, or computed
    from them by the timeliness rules. The integration tests parse each
    published fact with the strict contract model.
    """
    return DossierStateChanged.model_construct(**{k: getattr(state, k) for k in _FACT_FIELDS}, updated_at=now)


def fact_event(state: DossierState, *, now: dt.datetime) -> CloudEvent[Any]:
    """The ``vn.parwatch.dossier.state_changed`` event of a dossier's state."""
    return new_event(
        type=DOSSIER_STATE_TYPE,
        source=SOURCE,
        id=f"{state.dossier_code}:{state.revision}",
        subject=state.dossier_code,
        data=state_fact(state, now=now),
        time=now,
    )


FactValues = tuple[object, ...]  # a state's values in _FACT_FIELDS order
fact_values: Callable[[DossierState], FactValues] = attrgetter(*_FACT_FIELDS)
if _FACT_FIELDS[:2] != ("dossier_code", "revision"):
    raise RuntimeError(f"encode_fact_values reads the code and revision first, not {_FACT_FIELDS[:2]}")


def encode_fact_values(values: FactValues, *, now: dt.datetime) -> bytes:
    """The fact of a state given as :data:`fact_values`: ``encode(fact_event(state, now=now))``'s bytes at a
    fifth of the cost.

    The envelope and its data as plain dicts in the models' field order, None
    left out, serialised by pydantic-core as the models are (a property test
    holds the bytes equal to the models' for any state).
    """
    data = {k: v for k, v in zip(_FACT_FIELDS, values, strict=True) if v is not None}
    data["updated_at"] = now
    code = values[0]
    return to_json({
        "specversion": "1.0", "id": f"{code}:{values[1]}", "source": SOURCE, "type": DOSSIER_STATE_TYPE,
        "time": now, "subject": code, "datacontenttype": "application/json", "data": data,
    })


EventValues = tuple[object, ...]  # RecordedEvent's fields, in order
Items = Sequence[tuple[EventValues, int | None]]  # with each event's stream sequence


def store_batch(store: TrackerStore, items: Items, *, now: dt.datetime) -> tuple[list[bool], list[FactValues]]:
    """Store a batch; per event whether it was a duplicate, and the touched dossiers' states as fact values.

    The facts are encoded by the caller: in the service's process, which has
    time to spare while the store process is the ingest's bottleneck.
    """
    result = store.apply_batch([Incoming(RecordedEvent(*values), seq) for values, seq in items], now=now)  # type: ignore[arg-type]
    return result.duplicate, [fact_values(state) for state in result.states.values()]


class StoreBatches(Protocol):
    """Where :func:`store_batch` runs: the store process, or a thread of this one."""

    async def apply(self, items: Items, *, now: dt.datetime) -> tuple[list[bool], list[FactValues]]: ...


class InThread:
    """:func:`store_batch` in a worker thread of this process (``PARWATCH_TRACKER_STORE_PROCESS=false``)."""

    def __init__(self, store: TrackerStore) -> None:
        self.store = store

    async def apply(self, items: Items, *, now: dt.datetime) -> tuple[list[bool], list[FactValues]]:
        return await asyncio.to_thread(store_batch, self.store, items, now=now)


class DossierIngest:
    """Stores a batch of status events and publishes the touched dossiers' state.

    The batch goes to ``worker`` (the store process; by default a thread over
    ``store``) as plain tuples of the parsed events' fields (pickled in a few
    microseconds, where the event objects took tens) and comes back as
    duplicate flags and the touched dossiers' fact values, encoded here.
    """

    def __init__(
        self,
        *,
        store: TrackerStore,
        publisher: JetStreamPublisher,
        clock: Callable[[], dt.datetime],
        worker: StoreBatches | None = None,
    ) -> None:
        self.publisher = publisher
        self.clock = clock
        self.worker = worker or InThread(store)

    async def __call__(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        now = self.clock()
        items = [
            (RecordedEvent.values_from_contract(d.event.data, source=d.event.source, event_id=d.event.id), d.stream_seq)
            for d in deliveries
        ]
        duplicate, states = await self.worker.apply(items, now=now)
        await self.publisher.publish_encoded([encode_fact_values(v, now=now) for v in states], subject=DOSSIER_STATE)
        return [Outcome.DUPLICATE if dup else Outcome.ACCEPTED for dup in duplicate]


class Relay:
    """Deduplicates accepted ratings or plan reports and republishes them unchanged."""

    def __init__(self, *, store: TrackerStore, publisher: Publisher, subject: str, clock: Callable[[], dt.datetime]):
        self.store = store
        self.publisher = publisher
        self.subject = subject
        self.clock = clock

    async def __call__(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        keys = [(d.event.source, d.event.id, d.stream) for d in deliveries]
        duplicate = await asyncio.to_thread(self.store.record_seen, keys, now=self.clock())
        # Republished even when a duplicate: the first delivery may have been
        # stored and then lost before its republish was acked.
        await self.publisher.publish_many([d.event for d in deliveries], subject=self.subject)
        return [Outcome.DUPLICATE if dup else Outcome.ACCEPTED for dup in duplicate]


def build_router(
    *,
    store: TrackerStore,
    publisher: JetStreamPublisher,
    counter: EventCounter,
    worker: StoreBatches | None = None,
    retry: RetryPolicy,
    clock: Callable[[], dt.datetime],
    durable: str,
    batch_size: int,
    batch_timeout: float,
    in_flight: int = 0,
) -> NatsRouter:
    return consumer_router(
        service="dossier_tracker",
        routes=[
            Route(
                DOSSIER_EVENTS,
                durable,
                DOSSIER_TYPE,
                DossierIngest(store=store, publisher=publisher, clock=clock, worker=worker),
            ),
            Route(
                RATING_EVENTS,
                f"{durable}_ratings",
                RATING_TYPE,
                Relay(store=store, publisher=publisher, subject=ACCEPTED_RATINGS, clock=clock),
            ),
            Route(
                PLAN_EVENTS,
                f"{durable}_plan",
                PLAN_TYPE,
                Relay(store=store, publisher=publisher, subject=ACCEPTED_PLAN_REPORTS, clock=clock),
            ),
        ],
        publisher=publisher,
        counter=counter,
        retry=retry,
        clock=clock,
        batch_size=batch_size,
        batch_timeout=batch_timeout,
        in_flight=in_flight,
    )
