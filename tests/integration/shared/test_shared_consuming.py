"""The batch consumer against a real nats-server: what it keeps alive once a batch is done."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import weakref
from collections.abc import Sequence

import pytest

from shared.consuming import Delivery, Outcome, RetryPolicy, Route, consumer_router
from shared.events import DOSSIER_TYPE
from shared.publishing import JetStreamPublisher
from shared.service import make_broker
from shared.settings import CommonSettings
from shared.streams import DOSSIER_EVENTS, ensure_streams
from shared.testing import dossier_event, publish_event, wait_until

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize("in_flight", [0, 2])
async def test_a_done_batch_is_not_kept_alive_by_a_timer_scheduled_while_it_was_applied(own_nats_server, in_flight) -> None:
    """A publish's ack timeout is a timer; cancelled, it stays scheduled until it would have fired.

    The timer holds the context it was scheduled in. FastStream's context
    holds the batch message, so the batch's raw messages would stay alive as
    long as the timer (10 s for a publish ack, an hour here).
    """
    raws: list[weakref.ref[object]] = []

    async def apply(deliveries: Sequence[Delivery]) -> list[Outcome]:
        asyncio.get_running_loop().call_later(3600, lambda: None).cancel()  # an ack timeout, answered in time
        raws.extend(weakref.ref(d.raw) for d in deliveries)
        return [Outcome.ACCEPTED] * len(deliveries)

    broker = make_broker(CommonSettings(nats_url=own_nats_server.url))
    broker.include_router(
        consumer_router(
            service="test",
            routes=[Route(DOSSIER_EVENTS, "timers", DOSSIER_TYPE, apply)],
            publisher=JetStreamPublisher(broker),
            retry=RetryPolicy(),
            clock=lambda: dt.datetime.now(dt.timezone.utc),
            batch_size=20,
            batch_timeout=0.2,
            in_flight=in_flight,
        )
    )
    await broker.connect()
    js = broker.config.connection_state.stream
    await ensure_streams(js)
    for i in range(60):
        await publish_event(js, DOSSIER_EVENTS, dossier_event(f"T-{i:03d}", 2, "2026-11-27T09:00:00+07:00"))
    await broker.start()
    try:
        await wait_until(lambda: len(raws) == 60, timeout=15)

        async def all_acked() -> bool:
            return (await js.consumer_info("TTHC_DOSSIER", "timers")).num_ack_pending == 0

        await wait_until(all_acked, timeout=15)
        await asyncio.sleep(0.5)  # the consumer is back in its fetch, holding no batch
        gc.collect()
        alive = sum(ref() is not None for ref in raws)
        assert alive == 0, f"{alive} of 60 raw messages still alive after their batches were acked"
    finally:
        await broker.stop()
