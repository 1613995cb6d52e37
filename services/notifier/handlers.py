"""The notifier's one subscriber: a durable pull consumer of ``tthc.alerts``.

Receiving an alert is only recording it (idempotent on (source, id)) and
acking after commit; dispatch and delivery are background loops, so a
channel outage never slows consumption. ``BatchProcessor`` applies the
consumer rules: dead letters, retries with delay, manual acks.
"""

from __future__ import annotations

from faststream import AckPolicy, Context
from faststream.nats import JStream, NatsRouter, PullSub
from faststream.nats.message import NatsBatchMessage
from nats.js.api import ConsumerConfig

from shared.consuming import BatchProcessor, RetryPolicy
from shared.streams import ALERTS, stream_for


def build_router(processor: BatchProcessor, *, retry: RetryPolicy, durable: str = "notifier",
                 batch_size: int = 100) -> NatsRouter:
    router = NatsRouter()

    @router.subscriber(
        ALERTS,
        stream=JStream(name=stream_for(ALERTS).name, declare=False),
        durable=durable,
        pull_sub=PullSub(batch_size=batch_size, timeout=0.5, batch=True),
        ack_policy=AckPolicy.MANUAL,
        config=ConsumerConfig(max_deliver=retry.max_deliver + 1, ack_wait=retry.ack_wait),
        title="notifier.on_alerts",
        description="Alerts from deadline_monitor and scoring, recorded for dispatch.",
    )
    async def on_alerts(msg: NatsBatchMessage = Context("message")) -> None:
        await processor.handle(msg.raw_message)

    return router
