"""BatchProcessor with batches in flight: bounded, applied in fetch order, acked after they are applied."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

from shared.consuming import BatchProcessor, Delivery, Outcome, settle_batches
from shared.events import DOSSIER_TYPE
from shared.testing import dossier_event


class FakeMsg:
    """What BatchProcessor reads of a nats-py message, and what it does to it."""

    def __init__(self, seq: int, body: bytes, log: list[str]) -> None:
        self.data = body
        self.subject = "tthc.dossier.events"
        self.metadata = SimpleNamespace(stream="TTHC_DOSSIER", sequence=SimpleNamespace(stream=seq), num_delivered=1)
        self.log = log
        self.seq = seq

    async def ack(self) -> None:
        self.log.append(f"ack {self.seq}")

    async def nak(self, delay: float | None = None) -> None:
        self.log.append(f"nak {self.seq}")


class NullPublisher:
    def __init__(self) -> None:
        self.published: list[Any] = []

    async def publish(self, event: Any, *, subject: str) -> None:
        self.published.append(event)

    async def publish_many(self, events: Sequence[Any], *, subject: str) -> None:
        self.published.extend(events)


def batch(first: int, n: int, log: list[str]) -> list[FakeMsg]:
    return [
        FakeMsg(seq, json.dumps(dossier_event(f"H{seq}", 2, "2026-11-23T08:00:00+07:00", seq=1,
                                              received_at="2026-11-23T08:00:00+07:00")).encode(), log)
        for seq in range(first, first + n)
    ]


async def test_a_batch_is_applied_while_the_next_is_parsed_and_batches_stay_in_order() -> None:
    log: list[str] = []
    release_first = asyncio.Event()

    async def apply(deliveries: Sequence[Delivery]) -> list[Outcome]:
        seqs = [d.stream_seq for d in deliveries]
        log.append(f"apply {seqs[0]}-{seqs[-1]}")
        if seqs[0] == 1:
            await release_first.wait()
        log.append(f"applied {seqs[0]}-{seqs[-1]}")
        return [Outcome.ACCEPTED] * len(deliveries)

    processor = BatchProcessor(service="test", accept=frozenset({DOSSIER_TYPE}), apply=apply,
                               publisher=NullPublisher(), in_flight=1)
    await asyncio.wait_for(processor.handle(batch(1, 3, log)), timeout=5)  # returns with the batch in flight
    await asyncio.sleep(0.05)
    assert log == ["apply 1-3"]  # not acked: not applied yet

    second = asyncio.create_task(processor.handle(batch(4, 2, log)))
    await asyncio.sleep(0.05)
    assert not second.done()  # waits for the first batch: one in flight at most
    assert log == ["apply 1-3"]

    release_first.set()
    await asyncio.wait_for(second, timeout=5)
    await asyncio.wait_for(settle_batches(), timeout=5)
    assert log == ["apply 1-3", "applied 1-3", "ack 1", "ack 2", "ack 3",
                   "apply 4-5", "applied 4-5", "ack 4", "ack 5"]


async def test_a_bad_message_is_dead_lettered_at_once_and_a_failed_batch_is_not_acked() -> None:
    log: list[str] = []
    publisher = NullPublisher()

    async def apply(deliveries: Sequence[Delivery]) -> list[Outcome]:
        raise ConnectionError("database went away")  # transient: nak with delay

    processor = BatchProcessor(service="test", accept=frozenset({DOSSIER_TYPE}), apply=apply, publisher=publisher,
                               in_flight=1)
    msgs = batch(1, 2, log)
    msgs[1].data = b"{not json"
    await processor.handle(msgs)
    assert log == ["ack 2"]  # the bad one: dead-lettered, then acked
    assert [e.data.stream_seq for e in publisher.published] == [2]
    await processor.settle()
    assert log == ["ack 2", "nak 1"]
