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
from shared.consuming import BatchProcessor, Delivery, Outcome, Publisher, RetryPolicy, subscribe_batches
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
    router = NatsRouter()

    def processor(apply: Callable[[Sequence[Delivery]], object], accept: str) -> BatchProcessor:
        return BatchProcessor(
            service=SERVICE,
            accept=frozenset({accept}),
            apply=apply,  # type: ignore[arg-type]
            publisher=publisher,
            counter=None,
            retry=retry,
            clock=clock,
        )

    states = processor(StateIngest(store=store, clock=clock), DOSSIER_STATE_TYPE)
    ratings = processor(RatingIngest(store=store), RATING_TYPE)
    tasks = processor(TaskIngest(store=store), PLAN_TASK_STATE_TYPE)

    for subject, name, processor_ in (
        (DOSSIER_STATE, f"{durable}_state", states),
        (ACCEPTED_RATINGS, f"{durable}_ratings", ratings),
        (PLAN_TASK_STATE, f"{durable}_tasks", tasks),
    ):
        subscribe_batches(
            router,
            subject=subject,
            durable=name,
            processor=processor_,
            batch_size=batch_size,
            batch_timeout=batch_timeout,
        )
    return router
