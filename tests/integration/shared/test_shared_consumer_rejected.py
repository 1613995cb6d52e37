"""A handler's ``Rejected(reason)`` outcome, against a real nats-server: the message is dead-lettered with that
reason, once, counted as rejected, and acked; the rest of its batch is acked as the handler said."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry

from shared.backoff import Backoff
from shared.consumer import Consumers, EventCounter, Outcome, Received, Rejected, RetryPolicy
from shared.events import DossierEvent, parse_event
from shared.publishing import JetStreamPublisher
from shared.service import make_broker, utc_now
from shared.settings import CommonSettings
from shared.streams import DOSSIER_EVENTS, ensure_streams
from shared.testing import dossier_event, jetstream, metric_value, publish_event, wait_until


def event(i: int) -> dict[str, Any]:
    return dossier_event(f"H{i}", 2, "2026-11-23T08:00:00+07:00", seq=1, event_id=f"e{i}")


async def _acked_all(js: Any, durable: str, count: int) -> bool:
    info = await js.consumer_info("TTHC_DOSSIER", durable)
    return info.ack_floor.stream_seq >= count and info.num_ack_pending == 0 and info.num_pending == 0


async def test_a_rejected_outcome_is_dead_lettered_with_its_reason_and_acked(own_nats_server) -> None:
    registry = CollectorRegistry()
    broker = make_broker(CommonSettings(nats_url=own_nats_server.url))
    await broker.connect()
    js_broker = broker.connection.jetstream()
    await ensure_streams(js_broker)
    consumers = Consumers("test", publisher=JetStreamPublisher(broker), batch_size=100, clock=utc_now,
                          retry=RetryPolicy(max_deliver=3, backoff=Backoff(first=0.05, cap=0.1), ack_wait=30),
                          counter=EventCounter(registry))
    calls: list[list[str]] = []

    @consumers.batches(DOSSIER_EVENTS, durable="picky", accept=DossierEvent)
    async def handle(received: Sequence[Received[DossierEvent]]) -> list[Outcome | Rejected]:
        calls.append([r.event.id for r in received])
        return [Rejected("no tracked occurrence for this report") if r.event.id == "e2" else Outcome.ACCEPTED
                for r in received]

    try:
        async with jetstream(own_nats_server.url) as js:
            for i in (1, 2, 3):
                await publish_event(js, DOSSIER_EVENTS, event(i))
            await consumers.start(js_broker)
            await wait_until(lambda: _acked_all(js, "picky", 3), timeout=10)
            info = await js.stream_info("TTHC_DEADLETTER")
            letters = [parse_event((await js.get_msg("TTHC_DEADLETTER", s)).data)
                       for s in range(1, info.state.last_seq + 1)]
    finally:
        await consumers.stop()
        await broker.stop()
    assert sorted(i for call in calls for i in call) == ["e1", "e2", "e3"]  # each handled once: nothing redelivered
    assert [(d.id, d.data.stream_seq, d.data.reason) for d in letters] == [
        ("deadletter:TTHC_DOSSIER:2", 2, "no tracked occurrence for this report")
    ]
    counted = {r: metric_value(registry, "parwatch_events_total", stream="TTHC_DOSSIER", result=r)
               for r in ("accepted", "rejected")}
    assert counted == {"accepted": 2, "rejected": 1}
