"""A consumer's stop when the client's drain does not finish (seen once under heavy load): it returns."""

from __future__ import annotations

import asyncio
import datetime as dt

from shared.consumer import Consumers, RetryPolicy
from shared.events import DossierEvent
from shared.streams import DOSSIER_EVENTS


class StuckDrain:
    """A subscription whose drain never ends (the client waiting on a message nobody marks done)."""

    async def drain(self) -> None:
        await asyncio.Event().wait()


async def test_a_stop_does_not_wait_for_ever_on_a_drain_that_never_ends() -> None:
    consumers = Consumers("test", publisher=None, retry=RetryPolicy(), batch_size=10,  # type: ignore[arg-type]
                          clock=lambda: dt.datetime.now(dt.UTC))

    @consumers.batches(DOSSIER_EVENTS, durable="stuck", accept=DossierEvent)
    async def handle(received: object) -> None:
        raise AssertionError("nothing is delivered")

    [sub] = consumers.subscriptions
    sub._subscription = StuckDrain()  # type: ignore[assignment]
    sub.drain_timeout = 0.2
    await asyncio.wait_for(consumers.stop(), timeout=5)  # without the bound: the wait_for fails here
    assert sub._subscription is None
