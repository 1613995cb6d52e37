"""deadline_monitor's subscriptions: one router, thin handlers.

* ``parwatch.dossier.state``: dossier snapshots from dossier_tracker; the
  highest revision per dossier wins; alerts are settled at once.
* ``parwatch.accepted.plan``: plan reports that dossier_tracker accepted;
  stored once per (source, id); the occurrence they name is settled.
* ``tthc.deadletter``: every rejected message raises a ``deadletter`` alert.

Each is a durable pull consumer in batch mode with manual acks, driven by
:class:`shared.consuming.BatchProcessor` (no event counter: the tracker owns
``parwatch_events_total``). What the work publishes is committed to the
outbox in the same transaction, so the ack after the commit loses nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from faststream.nats import NatsRouter

from services.deadline_monitor.monitor import Monitor
from shared.consuming import Publisher, RetryPolicy, Route, consumer_router
from shared.events import DEADLETTER_TYPE, DOSSIER_STATE_TYPE, PLAN_TYPE
from shared.streams import ACCEPTED_PLAN_REPORTS, DEADLETTER, DOSSIER_STATE, stream_for

SERVICE = "deadline_monitor"


def snapshot_consumer(durable: str) -> tuple[str, str]:
    """(stream, durable name) of the snapshot consumer."""
    return stream_for(DOSSIER_STATE).name, f"{durable}_dossiers"


def build_router(
    *,
    monitor: Monitor,
    publisher: Publisher,
    retry: RetryPolicy,
    clock: Callable[[], dt.datetime],
    durable: str,
    batch_size: int,
    batch_timeout: float,
) -> NatsRouter:
    return consumer_router(
        service=SERVICE,
        routes=[
            Route(DOSSIER_STATE, snapshot_consumer(durable)[1], DOSSIER_STATE_TYPE, monitor.apply_snapshots),
            Route(ACCEPTED_PLAN_REPORTS, f"{durable}_plan", PLAN_TYPE, monitor.apply_reports),
            Route(DEADLETTER, f"{durable}_deadletter", DEADLETTER_TYPE, monitor.apply_deadletters),
        ],
        publisher=publisher,
        retry=retry,
        clock=clock,
        batch_size=batch_size,
        batch_timeout=batch_timeout,
    )
