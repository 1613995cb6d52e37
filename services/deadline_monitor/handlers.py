"""deadline_monitor's handlers: what each subscription takes and which service call it makes.

No event counter: dossier_tracker owns ``parwatch_events_total``. What a call
publishes is committed to the outbox in the same transaction as the state it
announces, so the ack after the call loses nothing.
"""

from __future__ import annotations

from services.deadline_monitor.service import MonitorService
from shared.consumer import Consumers
from shared.events import DeadLetterEvent, DossierStateEvent, PlanEvent
from shared.streams import ACCEPTED_PLAN_REPORTS, DEADLETTER, DOSSIER_STATE, stream_for


def snapshot_consumer(durable: str) -> tuple[str, str]:
    """(stream, durable name) of the dossier state consumer (its backlog says whether the monitor catches up)."""
    return stream_for(DOSSIER_STATE).name, f"{durable}_dossiers"


def register(consumers: Consumers, service: MonitorService, *, durable: str) -> None:
    """Each subscription hands its batches straight to the service call that applies them."""
    # Dossier state facts from dossier_tracker: the highest revision wins; alerts settled at once.
    consumers.batches(DOSSIER_STATE, durable=snapshot_consumer(durable)[1], accept=DossierStateEvent)(
        service.apply_dossier_states
    )
    # Plan reports dossier_tracker accepted: stored once, the occurrence they name settled.
    consumers.batches(ACCEPTED_PLAN_REPORTS, durable=f"{durable}_plan", accept=PlanEvent)(service.apply_plan_reports)
    # Every rejected message raises a ``deadletter`` alert.
    consumers.batches(DEADLETTER, durable=f"{durable}_deadletter", accept=DeadLetterEvent)(service.apply_deadletters)
