"""The notifier's one subscriber: a durable pull consumer of ``tthc.alerts``.

Receiving an alert is only recording it (idempotent on (source, id)) and
acking after commit; dispatch and delivery are background loops, so a
channel outage never slows consumption. ``BatchProcessor`` applies the
consumer rules: dead letters, retries with delay, manual acks.
"""

from __future__ import annotations

from faststream.nats import NatsRouter

from shared.consuming import BatchProcessor, subscribe_batches
from shared.streams import ALERTS


def build_router(processor: BatchProcessor, *, durable: str = "notifier", batch_size: int = 100) -> NatsRouter:
    router = NatsRouter()

    subscribe_batches(
        router,
        subject=ALERTS,
        durable=durable,
        processor=processor,
        batch_size=batch_size,
        batch_timeout=0.5,
    )
    return router
