"""dossier_tracker's handlers: what each subscription takes and which service call it makes.

The tracker is the ingest point of the public input streams: every dossier
event, rating and plan report passes the contract here (or is dead-lettered
with a reason) and is counted in ``parwatch_events_total``.
"""

from __future__ import annotations

from functools import partial

from services.dossier_tracker.service import TrackerService
from shared.consumer import Consumers
from shared.events import DossierEvent, PlanEvent, RatingEvent
from shared.streams import ACCEPTED_PLAN_REPORTS, ACCEPTED_RATINGS, DOSSIER_EVENTS, PLAN_EVENTS, RATING_EVENTS


def register(consumers: Consumers, service: TrackerService, *, durable: str) -> None:
    """Each subscription hands its batches straight to the service call that applies them."""
    # Dossier status events: stored, folded into each dossier's state, the state published. A second full batch is
    # handed over while the first is published and acked, so the store's process never waits for this one.
    consumers.batches(DOSSIER_EVENTS, durable=durable, accept=DossierEvent, in_flight=2)(
        service.record_status_changes
    )
    # Citizen ratings and plan task reports: deduplicated and republished for scoring and deadline_monitor.
    consumers.batches(RATING_EVENTS, durable=f"{durable}_ratings", accept=RatingEvent)(
        partial(service.relay, subject=ACCEPTED_RATINGS)
    )
    consumers.batches(PLAN_EVENTS, durable=f"{durable}_plan", accept=PlanEvent)(
        partial(service.relay, subject=ACCEPTED_PLAN_REPORTS)
    )
