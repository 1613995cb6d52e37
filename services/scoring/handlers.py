"""scoring's handlers: what each subscription takes and which service call it makes.

Every fact is applied idempotently by content, so redeliveries, duplicates
and out-of-order arrivals leave the same aggregates. ``parwatch_events_total``
is dossier_tracker's: nothing is counted here.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.scoring.service import ScoringService
from shared.consumer import Consumers, Outcome, Received
from shared.events import DossierStateEvent, PlanTaskStateEvent, RatingEvent
from shared.streams import ACCEPTED_RATINGS, DOSSIER_STATE, PLAN_TASK_STATE


def register(consumers: Consumers, service: ScoringService, *, durable: str) -> None:
    @consumers.batches(DOSSIER_STATE, durable=f"{durable}_state", accept=DossierStateEvent)
    async def dossier_states(received: Sequence[Received[DossierStateEvent]]) -> list[Outcome]:
        """Dossier state snapshots from dossier_tracker: the highest revision of a dossier wins."""
        return await service.apply_dossier_states(received)

    @consumers.batches(ACCEPTED_RATINGS, durable=f"{durable}_ratings", accept=RatingEvent)
    async def ratings(received: Sequence[Received[RatingEvent]]) -> list[Outcome]:
        """Ratings accepted by dossier_tracker: a dossier's latest rating wins."""
        return await service.apply_ratings(received)

    @consumers.batches(PLAN_TASK_STATE, durable=f"{durable}_tasks", accept=PlanTaskStateEvent)
    async def task_states(received: Sequence[Received[PlanTaskStateEvent]]) -> list[Outcome]:
        """Plan-task occurrence states from deadline_monitor: the latest state wins."""
        return await service.apply_task_states(received)
