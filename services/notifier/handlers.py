"""The notifier's one subscription: ``tthc.alerts``, durable ``notifier``.

Receiving an alert is only recording it (idempotent on (source, id)); the
batch is acked after the commit. Dispatch and delivery are background loops,
so a channel outage never slows consumption.
"""

from __future__ import annotations

from services.notifier.service import NotifierService
from shared.consumer import Consumers
from shared.events import AlertEvent
from shared.streams import ALERTS


def register(consumers: Consumers, service: NotifierService, *, durable: str) -> None:
    """Firing and resolved alerts from deadline_monitor and scoring: recorded for the dispatch loop."""
    consumers.batches(ALERTS, durable=durable, accept=AlertEvent)(service.record)
