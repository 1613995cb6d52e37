"""The notifier's one subscription: ``tthc.alerts``, durable ``notifier``.

Receiving an alert is only recording it (idempotent on (source, id)); the
batch is acked after the commit. Dispatch and delivery are background loops,
so a channel outage never slows consumption.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.notifier.service import NotifierService
from shared.consumer import Consumers, Outcome, Received
from shared.events import AlertEvent
from shared.streams import ALERTS


def register(consumers: Consumers, service: NotifierService, *, durable: str) -> None:
    @consumers.batches(ALERTS, durable=durable, accept=AlertEvent)
    async def alerts(received: Sequence[Received[AlertEvent]]) -> list[Outcome]:
        """Firing and resolved alerts from deadline_monitor and scoring: recorded for the dispatch loop."""
        return await service.record(received)
