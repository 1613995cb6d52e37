"""deadline_monitor's handlers: what each subscription takes and which service call it makes.

No event counter: dossier_tracker owns ``parwatch_events_total``. What a call
publishes is committed to the outbox in the same transaction as the state it
announces, so the ack after the call loses nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.deadline_monitor.service import MonitorService
from shared.consumer import Consumers, Outcome, Received
from shared.events import DeadLetterEvent, DossierStateEvent, PlanEvent
from shared.streams import ACCEPTED_PLAN_REPORTS, DEADLETTER, DOSSIER_STATE, stream_for


def snapshot_consumer(durable: str) -> tuple[str, str]:
    """(stream, durable name) of the dossier state consumer (its backlog says whether the monitor catches up)."""
    return stream_for(DOSSIER_STATE).name, f"{durable}_dossiers"


def register(consumers: Consumers, service: MonitorService, *, durable: str) -> None:
    @consumers.batches(DOSSIER_STATE, durable=snapshot_consumer(durable)[1], accept=DossierStateEvent)
    async def dossier_states(received: Sequence[Received[DossierStateEvent]]) -> list[Outcome]:
        """Dossier state facts from dossier_tracker: the highest revision wins; alerts settled at once."""
        return await service.apply_dossier_states(received)

    @consumers.batches(ACCEPTED_PLAN_REPORTS, durable=f"{durable}_plan", accept=PlanEvent)
    async def plan_reports(received: Sequence[Received[PlanEvent]]) -> list[Outcome]:
        """Plan reports dossier_tracker accepted: stored once, the occurrence they name settled."""
        return await service.apply_plan_reports(received)

    @consumers.batches(DEADLETTER, durable=f"{durable}_deadletter", accept=DeadLetterEvent)
    async def deadletters(received: Sequence[Received[DeadLetterEvent]]) -> list[Outcome]:
        """Every rejected message raises a ``deadletter`` alert."""
        return await service.apply_deadletters(received)
