"""The one consumer path against a real nats-server: what has arrived is handed over at once, bad messages are
dead-lettered one by one, an outage holds the batch for as long as it lasts, a bug is retried a bounded number of
times, a stop leaves nothing behind."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import nats
import nats.js.errors
from nats.js.api import ConsumerConfig
from prometheus_client import CollectorRegistry
from sqlalchemy import exc as sa_exc

from shared.backoff import Backoff
from shared.consumer import Consumers, EventCounter, Outcome, Received, RetryPolicy
from shared.events import DossierEvent, parse_event
from shared.publishing import JetStreamPublisher
from shared.service import make_broker, utc_now
from shared.settings import CommonSettings
from shared.streams import DEADLETTER, DOSSIER_EVENTS, ensure_streams
from shared.testing import dossier_event, jetstream, metric_value, publish_event, wait_until

FAST_RETRY = RetryPolicy(max_deliver=3, backoff=Backoff(first=0.05, cap=0.1), ack_wait=30)


@contextlib.asynccontextmanager
async def consuming(url: str, register: Callable[[Consumers], None], *, batch_size: int = 100,
                    registry: CollectorRegistry | None = None, retry: RetryPolicy = FAST_RETRY,
                    publisher: type[JetStreamPublisher] = JetStreamPublisher,
                    linger: float = 0.0) -> AsyncIterator[Consumers]:
    broker = make_broker(CommonSettings(nats_url=url))
    await broker.connect()
    js = broker.connection.jetstream()
    await ensure_streams(js)
    consumers = Consumers("test", publisher=publisher(broker), retry=retry, batch_size=batch_size, linger=linger,
                          clock=utc_now, counter=EventCounter(registry) if registry else None)
    register(consumers)
    await consumers.start(js)
    try:
        yield consumers
    finally:
        await consumers.stop()
        await broker.stop()



def event(i: int, **data: Any) -> dict[str, Any]:
    return dossier_event(f"H{i}", 2, "2026-11-23T08:00:00+07:00", seq=1, event_id=f"e{i}", **data)


async def dead_letters(js: Any, count: int) -> list[Any]:
    """The dead letters stored, once ``count`` are: each read by its sequence, nothing waited for."""
    await wait_until(lambda: _stored(js, "TTHC_DEADLETTER", count), timeout=10)
    info = await js.stream_info("TTHC_DEADLETTER")
    return [parse_event((await js.get_msg("TTHC_DEADLETTER", seq)).data) for seq in range(1, info.state.last_seq + 1)]


async def _stored(js: Any, stream: str, count: int) -> bool:
    return (await js.stream_info(stream)).state.messages >= count


async def test_what_has_arrived_is_handed_over_at_once(own_nats_server) -> None:
    calls: list[list[str]] = []
    gate = asyncio.Event()

    def register(consumers: Consumers) -> None:
        @consumers.batches(DOSSIER_EVENTS, durable="quick", accept=DossierEvent)
        async def handle(received: Sequence[Received[DossierEvent]]) -> None:
            calls.append([r.event.id for r in received])
            if len(calls) == 1:
                await gate.wait()  # the first call holds on while more arrive

    async with jetstream(own_nats_server.url) as js, consuming(own_nats_server.url, register) as c:
        await publish_event(js, DOSSIER_EVENTS, event(0))
        await wait_until(lambda: calls == [["e0"]], timeout=5)  # alone: no batch to fill, no timeout to wait out
        for i in range(1, 31):
            await publish_event(js, DOSSIER_EVENTS, event(i))
        await wait_until(lambda: len(c.subscriptions[0].waiting) == 30, timeout=5)  # arrived while it is held
        gate.set()
        await wait_until(lambda: sum(len(c) for c in calls) == 31, timeout=5)
    assert calls[1] == [f"e{i}" for i in range(1, 31)]  # everything that arrived meanwhile, in one call


async def test_a_batch_hands_over_at_most_the_batch_size(own_nats_server) -> None:
    calls: list[int] = []
    gate = asyncio.Event()

    def register(consumers: Consumers) -> None:
        @consumers.batches(DOSSIER_EVENTS, durable="sized", accept=DossierEvent)
        async def handle(received: Sequence[Received[DossierEvent]]) -> None:
            calls.append(len(received))
            await gate.wait()

    async with jetstream(own_nats_server.url) as js, consuming(own_nats_server.url, register, batch_size=10):
        for i in range(25):
            await publish_event(js, DOSSIER_EVENTS, event(i))
        gate.set()
        await wait_until(lambda: sum(calls) == 25, timeout=5)
    assert max(calls) == 10


async def test_bad_messages_are_dead_lettered_one_by_one_and_the_rest_is_handled(own_nats_server) -> None:
    handled: list[str] = []
    registry = CollectorRegistry()

    def register(consumers: Consumers) -> None:
        @consumers.batches(DOSSIER_EVENTS, durable="strict", accept=DossierEvent)
        async def handle(received: Sequence[Received[DossierEvent]]) -> list[Outcome]:
            handled.extend(r.event.id for r in received)
            return [Outcome.DUPLICATE if r.event.id == "e2" else Outcome.ACCEPTED for r in received]

    async with jetstream(own_nats_server.url) as js:
        await publish_event(js, DOSSIER_EVENTS, event(1))
        await publish_event(js, DOSSIER_EVENTS, b"{not json", msg_id="bad-1")
        bad = event(9)
        bad["data"]["citizen_name"] = "Tran Thi B"
        await publish_event(js, DOSSIER_EVENTS, bad)
        await publish_event(js, DOSSIER_EVENTS, event(2))
        async with consuming(own_nats_server.url, register, registry=registry):
            letters = await dead_letters(js, 2)
            await wait_until(lambda: len(handled) == 2, timeout=5)
    assert handled == ["e1", "e2"]
    assert sorted(letter.data.stream_seq for letter in letters) == [2, 3]
    reasons = {letter.data.stream_seq: letter.data.reason for letter in letters}
    assert "not valid JSON" in reasons[2]
    assert reasons[3] == "unexpected field in data"  # named by the contract, never by the sender's key or value
    assert {letter.id for letter in letters} == {"deadletter:TTHC_DOSSIER:2", "deadletter:TTHC_DOSSIER:3"}
    counted = {r: metric_value(registry, "parwatch_events_total", stream="TTHC_DOSSIER", result=r)
               for r in ("accepted", "duplicate", "rejected")}
    assert counted == {"accepted": 1, "duplicate": 1, "rejected": 2}


async def test_an_outage_longer_than_the_retry_budget_holds_the_batch_and_dead_letters_nothing(
    own_nats_server,
) -> None:
    """Twice as many transient failures as ``max_deliver``, lasting three ``ack_wait``s: the same delivery is tried
    again until it passes, the server redelivers nothing meanwhile, and nothing is dead-lettered."""
    retry = RetryPolicy(max_deliver=3, backoff=Backoff(first=0.05, cap=0.4), ack_wait=1.0)
    attempts: list[tuple[int, float]] = []
    loop = asyncio.get_running_loop()
    started = loop.time()

    def register(consumers: Consumers) -> None:
        @consumers.batches(DOSSIER_EVENTS, durable="outage", accept=DossierEvent)
        async def handle(received: Sequence[Received[DossierEvent]]) -> None:
            attempts.append((received[0].delivered, loop.time() - started))
            if len(attempts) <= 2 * retry.max_deliver or loop.time() - started < 3 * retry.ack_wait:
                raise sa_exc.OperationalError("INSERT", {}, Exception("could not connect to server"))

    async with jetstream(own_nats_server.url) as js, consuming(own_nats_server.url, register, retry=retry):
        await publish_event(js, DOSSIER_EVENTS, event(1))
        await wait_until(lambda: _acked(js, "outage"), timeout=20)
        info = await js.consumer_info("TTHC_DOSSIER", "outage")
        stored = (await js.stream_info("TTHC_DEADLETTER")).state.messages
    assert len(attempts) > 2 * retry.max_deliver and attempts[-1][1] >= 3 * retry.ack_wait
    assert {delivered for delivered, _ in attempts} == {1}  # held, never redelivered
    assert info.num_redelivered == 0 and info.config.max_deliver == -1
    assert stored == 0


async def _acked(js: Any, durable: str) -> bool:
    info = await js.consumer_info("TTHC_DOSSIER", durable)
    return info.num_ack_pending == 0 and info.num_pending == 0


async def test_a_message_is_acked_only_once_its_dead_letter_is_stored(own_nats_server) -> None:
    """The dead-letter stream refuses twice (as a full or leaderless stream would): the rejected message is held,
    its dead letter stored on the third try, and only then acked."""

    class Refusing(JetStreamPublisher):
        refusals = 2

        async def publish(self, event: Any, *, subject: str) -> None:
            if subject == DEADLETTER and self.refusals:
                self.refusals -= 1
                raise nats.js.errors.ServiceUnavailableError()
            await super().publish(event, subject=subject)

    handled: list[str] = []

    def register(consumers: Consumers) -> None:
        @consumers.batches(DOSSIER_EVENTS, durable="letters", accept=DossierEvent)
        async def handle(received: Sequence[Received[DossierEvent]]) -> None:
            handled.extend(r.event.id for r in received)

    async with jetstream(own_nats_server.url) as js:
        await publish_event(js, DOSSIER_EVENTS, b"{not json", msg_id="bad-1")
        await publish_event(js, DOSSIER_EVENTS, event(2))
        async with consuming(own_nats_server.url, register, publisher=Refusing) as c:
            [letter] = await dead_letters(js, 1)
            await wait_until(lambda: _acked(js, "letters"), timeout=10)
            refusals_left = c.publisher.refusals
    assert refusals_left == 0
    assert letter.data.stream_seq == 1 and handled == ["e2"]


async def test_a_batch_held_through_an_outage_goes_back_at_once_when_the_service_stops(own_nats_server) -> None:
    seen: list[str] = []

    def down(consumers: Consumers) -> None:
        @consumers.batches(DOSSIER_EVENTS, durable="stopping", accept=DossierEvent)
        async def handle(received: Sequence[Received[DossierEvent]]) -> None:
            seen.extend(r.event.id for r in received)
            raise sa_exc.OperationalError("INSERT", {}, Exception("could not connect to server"))

    handled: list[str] = []

    def replica(consumers: Consumers) -> None:
        @consumers.batches(DOSSIER_EVENTS, durable="stopping", accept=DossierEvent)
        async def handle(received: Sequence[Received[DossierEvent]]) -> None:
            handled.extend(r.event.id for r in received)

    held_long = RetryPolicy(max_deliver=3, backoff=Backoff(first=3600.0, cap=3600.0), ack_wait=30)
    async with jetstream(own_nats_server.url) as js:
        await publish_event(js, DOSSIER_EVENTS, event(1))
        async with consuming(own_nats_server.url, down, retry=held_long):
            await wait_until(lambda: seen == ["e1"], timeout=5)  # failed once, held for an hour
        # ack_wait is 30 s and the hold an hour: the stop gave it back at once.
        async with consuming(own_nats_server.url, replica):
            await wait_until(lambda: handled == ["e1"], timeout=10)
        letters = (await js.stream_info("TTHC_DEADLETTER")).state.messages
    assert letters == 0


async def test_a_bug_that_persists_is_dead_lettered_after_bounded_deliveries(own_nats_server) -> None:
    def register(consumers: Consumers) -> None:
        @consumers.batches(DOSSIER_EVENTS, durable="buggy", accept=DossierEvent)
        async def handle(received: Sequence[Received[DossierEvent]]) -> None:
            raise KeyError("a bug every delivery meets")

    async with jetstream(own_nats_server.url) as js, consuming(own_nats_server.url, register):
        await publish_event(js, DOSSIER_EVENTS, event(1))
        [letter] = await dead_letters(js, 1)
        await wait_until(lambda: _acked(js, "buggy"), timeout=5)
    assert letter.data.reason == "processing failed (KeyError); gave up after 3 deliveries"


async def test_a_bug_on_one_message_does_not_hold_back_the_others(own_nats_server) -> None:
    handled: list[str] = []

    def register(consumers: Consumers) -> None:
        @consumers.batches(DOSSIER_EVENTS, durable="isolate", accept=DossierEvent)
        async def handle(received: Sequence[Received[DossierEvent]]) -> None:
            if any(r.event.id == "e2" for r in received):
                raise ValueError("a bug this message triggers")
            handled.extend(r.event.id for r in received)

    async with jetstream(own_nats_server.url) as js:
        for i in (1, 2, 3):
            await publish_event(js, DOSSIER_EVENTS, event(i))
        async with consuming(own_nats_server.url, register):
            [letter] = await dead_letters(js, 1)
            await wait_until(lambda: _acked(js, "isolate"), timeout=5)
    assert sorted(handled) == ["e1", "e3"]
    assert letter.data.stream_seq == 2
    assert letter.data.reason == "processing failed (ValueError); gave up after 3 deliveries"


async def test_at_stop_the_batch_in_hand_is_finished_and_what_waits_goes_back_at_once(own_nats_server) -> None:
    in_hand: list[str] = []
    first: list[str] = []
    second: list[str] = []
    gate = asyncio.Event()

    def held(consumers: Consumers) -> None:
        @consumers.batches(DOSSIER_EVENTS, durable="shared", accept=DossierEvent)
        async def handle(received: Sequence[Received[DossierEvent]]) -> None:
            in_hand.extend(r.event.id for r in received)
            await gate.wait()
            first.extend(r.event.id for r in received)

    def replica(consumers: Consumers) -> None:
        @consumers.batches(DOSSIER_EVENTS, durable="shared", accept=DossierEvent)
        async def handle(received: Sequence[Received[DossierEvent]]) -> None:
            second.extend(r.event.id for r in received)

    async with jetstream(own_nats_server.url) as js:
        async with consuming(own_nats_server.url, held, batch_size=5) as c:
            try:
                await publish_event(js, DOSSIER_EVENTS, event(0))
                await wait_until(lambda: in_hand == ["e0"], timeout=5)  # e0 in hand, alone
                for i in range(1, 5):
                    await publish_event(js, DOSSIER_EVENTS, event(i))
                await wait_until(lambda: len(c.subscriptions[0].waiting) == 4, timeout=5)  # four waiting
                stopping = asyncio.create_task(c.stop())
                await asyncio.sleep(0)
            finally:
                gate.set()  # a failed wait above must not leave the handler held for ever
            await stopping
        # ack_wait is 30 s: what the stopped consumer naked comes to the next one now, not after it.
        async with consuming(own_nats_server.url, replica):
            await wait_until(lambda: len(second) == 4, timeout=10)
    assert first == ["e0"]
    assert sorted(second) == [f"e{i}" for i in range(1, 5)]


async def test_a_linger_gathers_what_comes_within_it_and_ends_at_a_full_batch_or_a_stop(own_nats_server) -> None:
    calls: list[list[str]] = []

    def register(consumers: Consumers) -> None:
        @consumers.batches(DOSSIER_EVENTS, durable="linger", accept=DossierEvent)
        async def handle(received: Sequence[Received[DossierEvent]]) -> None:
            calls.append([r.event.id for r in received])

    async with jetstream(own_nats_server.url) as js:
        # Within the linger: three events one by one, one call.
        async with consuming(own_nats_server.url, register, batch_size=100, linger=2.0):
            for i in range(3):
                await publish_event(js, DOSSIER_EVENTS, event(i))
            await wait_until(lambda: calls, timeout=10)
            assert calls == [["e0", "e1", "e2"]]
        # A full batch does not wait out a linger of a minute.
        calls.clear()
        async with consuming(own_nats_server.url, register, batch_size=2, linger=60.0):
            for i in range(3, 5):
                await publish_event(js, DOSSIER_EVENTS, event(i))
            await wait_until(lambda: calls, timeout=10)
            assert calls == [["e3", "e4"]]
        # A stop does not wait out the linger either: what lingered goes back, for the next start.
        calls.clear()
        async with consuming(own_nats_server.url, register, batch_size=100, linger=60.0) as c:
            await publish_event(js, DOSSIER_EVENTS, event(5))
            await wait_until(lambda: len(c.subscriptions[0].waiting) == 1, timeout=10)
            await asyncio.wait_for(c.stop(), timeout=15)
        assert calls == []
        async with consuming(own_nats_server.url, register):
            await wait_until(lambda: calls == [["e5"]], timeout=10)


async def test_a_stop_gives_up_a_batch_that_never_finishes_and_it_comes_again(own_nats_server) -> None:
    stuck: list[str] = []
    second: list[str] = []

    def hung(consumers: Consumers) -> None:
        @consumers.batches(DOSSIER_EVENTS, durable="hung", accept=DossierEvent)
        async def handle(received: Sequence[Received[DossierEvent]]) -> None:
            stuck.extend(r.event.id for r in received)
            await asyncio.Event().wait()  # a handler that never returns

    def replica(consumers: Consumers) -> None:
        @consumers.batches(DOSSIER_EVENTS, durable="hung", accept=DossierEvent)
        async def handle(received: Sequence[Received[DossierEvent]]) -> None:
            second.extend(r.event.id for r in received)

    async with jetstream(own_nats_server.url) as js:
        short = RetryPolicy(ack_wait=2.0)
        async with consuming(own_nats_server.url, hung, retry=short) as c:
            c.subscriptions[0].finish_timeout = 0.5
            await publish_event(js, DOSSIER_EVENTS, event(0))
            await wait_until(lambda: stuck == ["e0"], timeout=5)
            await asyncio.wait_for(c.stop(), timeout=15)  # bounded: the drain's and the batch's waits
        async with consuming(own_nats_server.url, replica, retry=short):
            await wait_until(lambda: second == ["e0"], timeout=10)  # unacked: delivered again after ack_wait


async def test_an_old_pull_consumer_of_the_same_name_is_replaced_after_what_it_acked(own_nats_server) -> None:
    handled: list[str] = []

    def register(consumers: Consumers) -> None:
        @consumers.batches(DOSSIER_EVENTS, durable="upgraded", accept=DossierEvent)
        async def handle(received: Sequence[Received[DossierEvent]]) -> None:
            handled.extend(r.event.id for r in received)

    async with jetstream(own_nats_server.url) as js:
        for i in range(6):
            await publish_event(js, DOSSIER_EVENTS, event(i))
        pull = await js.pull_subscribe(DOSSIER_EVENTS, durable="upgraded", stream="TTHC_DOSSIER",
                                       config=ConsumerConfig(ack_wait=30))
        for msg in await pull.fetch(3, timeout=5):
            await msg.ack()  # an older parwatch handled e0..e2
        await pull.unsubscribe()
        async with consuming(own_nats_server.url, register):
            await wait_until(lambda: len(handled) == 3, timeout=10)
            info = await js.consumer_info("TTHC_DOSSIER", "upgraded")
        await publish_event(js, DOSSIER_EVENTS, event(6))
        async with consuming(own_nats_server.url, register):  # started again: the replaced consumer is kept
            await wait_until(lambda: len(handled) == 4, timeout=10)
    assert handled == ["e3", "e4", "e5", "e6"]
    assert info.config.deliver_group == "upgraded"


async def test_a_second_call_starts_early_only_for_a_full_batch_when_allowed(own_nats_server) -> None:
    running: list[int] = []
    gate = asyncio.Event()

    def register(consumers: Consumers) -> None:
        @consumers.batches(DOSSIER_EVENTS, durable="pipelined", accept=DossierEvent, in_flight=2)
        async def handle(received: Sequence[Received[DossierEvent]]) -> None:
            running.append(len(received))
            await gate.wait()

    async with jetstream(own_nats_server.url) as js, consuming(own_nats_server.url, register, batch_size=5):
        await publish_event(js, DOSSIER_EVENTS, event(0))
        await wait_until(lambda: running == [1], timeout=5)
        for i in range(1, 6):
            await publish_event(js, DOSSIER_EVENTS, event(i))
        await wait_until(lambda: running == [1, 5], timeout=5)  # a full batch went while the first is held
        gate.set()


async def test_a_plain_message_on_the_deliver_subject_is_dropped_and_the_deliveries_go_on(own_nats_server) -> None:
    """Anyone allowed to publish can aim a reply at a consumer's deliver subject (the server answers a request to
    whatever reply subject it names, and permissions do not check reply subjects): such a message is no JetStream
    delivery of this consumer, has nothing to ack or dead-letter, and is dropped; the deliveries around it are
    handled and acked as usual."""
    handled: list[str] = []

    def register(consumers: Consumers) -> None:
        @consumers.batches(DOSSIER_EVENTS, durable="guarded", accept=DossierEvent)
        async def handle(received: Sequence[Received[DossierEvent]]) -> list[Outcome]:
            handled.extend(r.event.id for r in received)
            return [Outcome.ACCEPTED for _ in received]

    async with jetstream(own_nats_server.url) as js:
        await publish_event(js, DOSSIER_EVENTS, event(1))
        # A linger gathers what comes within a second into one batch: the stray messages and e2 together.
        async with consuming(own_nats_server.url, register, linger=1.0):
            await wait_until(lambda: handled == ["e1"], timeout=5)
            nc = await nats.connect(own_nats_server.url)
            try:
                valid = json.dumps(event(7)).encode()  # a valid event, but not delivered by the stream
                await nc.publish("parwatch.deliver.guarded", b'{"stream":"TTHC_DOSSIER","seq":1}')  # a server answer
                await nc.publish("parwatch.deliver.guarded", valid, reply="tthc.alerts")
                await nc.publish("parwatch.deliver.guarded", valid,  # another consumer's delivery, forged
                                 reply="$JS.ACK.TTHC_DOSSIER.other.1.1.1.1700000000000000000.0")
                await nc.flush()
            finally:
                await nc.close()
            await publish_event(js, DOSSIER_EVENTS, event(2))
            # Well within ack_wait (30 s): a batch failing on the stray messages would leave e2 until then.
            await wait_until(lambda: handled == ["e1", "e2"], timeout=5)
            info = await js.consumer_info("TTHC_DOSSIER", "guarded")
            await wait_until(lambda: _all_acked(js, 2), timeout=5)
        assert (await js.stream_info("TTHC_DEADLETTER")).state.messages == 0
    assert handled == ["e1", "e2"] and info.num_pending == 0


async def _all_acked(js: Any, count: int) -> bool:
    info = await js.consumer_info("TTHC_DOSSIER", "guarded")
    return info.ack_floor.stream_seq >= count and info.num_ack_pending == 0
