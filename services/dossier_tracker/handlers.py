"""dossier_tracker's handlers: what each subscription takes and which service call it makes.

The tracker is the ingest point of the public input streams: every dossier
event, rating and plan report passes the contract here (or is dead-lettered
with a reason) and is counted in ``parwatch_events_total``.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.dossier_tracker.service import TrackerService
from shared.consumer import Consumers, Outcome, Received
from shared.events import DossierEvent, PlanEvent, RatingEvent
from shared.streams import ACCEPTED_PLAN_REPORTS, ACCEPTED_RATINGS, DOSSIER_EVENTS, PLAN_EVENTS, RATING_EVENTS


def register(consumers: Consumers, service: TrackerService, *, durable: str) -> None:
    @consumers.batches(DOSSIER_EVENTS, durable=durable, accept=DossierEvent, in_flight=2)  # store busy while we ack
    async def status_changes(received: Sequence[Received[DossierEvent]]) -> list[Outcome]:
        """Dossier status events: stored, folded into each dossier's state, the state published."""
        return await service.record_status_changes(received)

    @consumers.batches(RATING_EVENTS, durable=f"{durable}_ratings", accept=RatingEvent)
    async def ratings(received: Sequence[Received[RatingEvent]]) -> list[Outcome]:
        """Citizen ratings: deduplicated and republished for scoring."""
        return await service.relay(received, subject=ACCEPTED_RATINGS)

    @consumers.batches(PLAN_EVENTS, durable=f"{durable}_plan", accept=PlanEvent)
    async def plan_reports(received: Sequence[Received[PlanEvent]]) -> list[Outcome]:
        """Plan task reports: deduplicated and republished for deadline_monitor."""
        return await service.relay(received, subject=ACCEPTED_PLAN_REPORTS)
