"""scoring's subscriptions: one router, thin handlers.

* ``parwatch.dossier.state``: dossier state snapshots from dossier_tracker
  (the highest revision of a dossier wins);
* ``parwatch.accepted.rating``: ratings accepted by dossier_tracker (the
  latest rating of a dossier wins; applying one twice changes nothing);
* ``parwatch.plan.task_state``: plan-task occurrence states from
  deadline_monitor (the latest state wins).

Every handler is idempotent by content: redeliveries, duplicates and
out-of-order arrivals leave the same aggregates. ``parwatch_events_total`` is
dossier_tracker's, so the processors here count nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Sequence

from faststream.nats import NatsRouter

from services.scoring.domain import DossierFacts, RatingFacts, TaskFacts
from services.scoring.store import ScoringStore
from shared.consuming import Delivery, Outcome, Publisher, RetryPolicy, Route, consumer_router
from shared.events import DOSSIER_STATE_TYPE, PLAN_TASK_STATE_TYPE, RATING_TYPE
from shared.streams import ACCEPTED_RATINGS, DOSSIER_STATE, PLAN_TASK_STATE

SERVICE = "scoring"


def _outcomes(changed: Sequence[bool]) -> list[Outcome]:
    return [Outcome.ACCEPTED if c else Outcome.DUPLICATE for c in changed]


class StateIngest:
    def __init__(self, *, store: ScoringStore, clock: Callable[[], dt.datetime]) -> None:
        self.store = store
        self.clock = clock

    async def __call__(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        facts = [DossierFacts.from_state(d.event.data) for d in deliveries]
        return _outcomes(await asyncio.to_thread(self.store.apply_states, facts, now=self.clock()))


class RatingIngest:
    def __init__(self, *, store: ScoringStore) -> None:
        self.store = store

    async def __call__(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        facts = [RatingFacts.from_event(d.event.data, event_id=d.event.id) for d in deliveries]
        return _outcomes(await asyncio.to_thread(self.store.apply_ratings, facts))


class TaskIngest:
    def __init__(self, *, store: ScoringStore) -> None:
        self.store = store

    async def __call__(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        facts = [TaskFacts.from_event(d.event.data, event_id=d.event.id) for d in deliveries]
        return _outcomes(await asyncio.to_thread(self.store.apply_tasks, facts))


def build_router(
    *,
    store: ScoringStore,
    publisher: Publisher,
    retry: RetryPolicy,
    clock: Callable[[], dt.datetime],
    durable: str,
    batch_size: int,
    batch_timeout: float,
) -> NatsRouter:
    return consumer_router(
        service=SERVICE,
        routes=[
            Route(DOSSIER_STATE, f"{durable}_state", DOSSIER_STATE_TYPE, StateIngest(store=store, clock=clock)),
            Route(ACCEPTED_RATINGS, f"{durable}_ratings", RATING_TYPE, RatingIngest(store=store)),
            Route(PLAN_TASK_STATE, f"{durable}_tasks", PLAN_TASK_STATE_TYPE, TaskIngest(store=store)),
        ],
        publisher=publisher,
        retry=retry,
        clock=clock,
        batch_size=batch_size,
        batch_timeout=batch_timeout,
    )
