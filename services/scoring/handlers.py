"""scoring's handlers: what each subscription takes and which service call it makes.

Every fact is applied idempotently by content, so redeliveries, duplicates
and out-of-order arrivals leave the same aggregates. ``parwatch_events_total``
is dossier_tracker's: nothing is counted here.
"""

from __future__ import annotations

from services.scoring.service import ScoringService
from shared.consumer import Consumers
from shared.events import DossierStateEvent, PlanTaskStateEvent, RatingEvent
from shared.streams import ACCEPTED_RATINGS, DOSSIER_STATE, PLAN_TASK_STATE, stream_for


def snapshot_consumer(durable: str) -> tuple[str, str]:
    """(stream, durable name) of the dossier state consumer (its backlog says whether the KPI rounds wait)."""
    return stream_for(DOSSIER_STATE).name, f"{durable}_state"


def register(consumers: Consumers, service: ScoringService, *, durable: str) -> None:
    """Each subscription hands its batches straight to the service call that applies them."""
    # Dossier state snapshots from dossier_tracker: the highest revision of a dossier wins.
    consumers.batches(DOSSIER_STATE, durable=snapshot_consumer(durable)[1], accept=DossierStateEvent)(
        service.apply_dossier_states
    )
    # Ratings accepted by dossier_tracker: a dossier's latest rating wins.
    consumers.batches(ACCEPTED_RATINGS, durable=f"{durable}_ratings", accept=RatingEvent)(service.apply_ratings)
    # Plan-task occurrence states from deadline_monitor: the latest state wins.
    consumers.batches(PLAN_TASK_STATE, durable=f"{durable}_tasks", accept=PlanTaskStateEvent)(service.apply_task_states)
