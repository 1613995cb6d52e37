"""JetStreamPublisher against a real nats-server: every message acked and stored once, a few one by one with their
ids, a backlog's in atomic batches."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from nats.js.api import StreamConfig

from shared import publishing
from shared.events import DOSSIER_STATE_TYPE, DossierStateChanged, encode, new_event, parse_event
from shared.outbox import Delivered, Pending, Retry
from shared.publishing import BatchNotStored, JetStreamPublisher
from shared.service import make_broker
from shared.settings import CommonSettings
from shared.streams import ALERTS, DOSSIER_STATE, StreamSpec, ensure_streams
from shared.testing import wait_until

NOW = dt.datetime(2026, 11, 27, 3, 0, tzinfo=dt.timezone.utc)


def fact(code: str, revision: int = 1) -> object:
    data = DossierStateChanged(dossier_code=code, revision=revision, agency_code="PTP", procedure_code="1.000001",
                               field_code="HT", status=2, counted=True, updated_at=NOW)
    return new_event(type=DOSSIER_STATE_TYPE, source="parwatch/dossier_tracker", id=f"{code}:{revision}",
                     subject=code, data=data, time=NOW)


async def stored(js, stream: str, first_seq: int) -> list:
    """Every message the stream holds from ``first_seq`` on, read by its sequence."""
    last = (await js.stream_info(stream)).state.last_seq
    return [await js.get_msg(stream, seq) for seq in range(first_seq, last + 1)]


@pytest.fixture
async def broker(nats_server: str):  # type: ignore[no-untyped-def]
    broker = make_broker(CommonSettings(nats_url=nats_server))
    await broker.connect()
    await ensure_streams(broker.connection.jetstream())
    yield broker
    await broker.stop()


async def test_many_events_are_stored_in_order_each_once_with_its_id(broker) -> None:  # type: ignore[no-untyped-def]
    js = broker.connection.jetstream()
    first = (await js.stream_info("PARWATCH_DOSSIER_STATE")).state.last_seq + 1
    publisher = JetStreamPublisher(broker)
    tag = uuid.uuid4().hex[:6]
    facts = [fact(f"A{tag}-{i}") for i in range(250)]
    await publisher.publish_many(facts, subject=DOSSIER_STATE)
    await publisher.publish_many(facts[:10], subject=DOSSIER_STATE)  # a batch published again: stored once
    await publisher.publish_many([], subject=DOSSIER_STATE)
    msgs = await stored(js, "PARWATCH_DOSSIER_STATE", first)
    assert [parse_event(m.data).subject for m in msgs] == [f"A{tag}-{i}" for i in range(250)]
    assert [m.headers["Nats-Msg-Id"] for m in msgs] == [f.id for f in facts]  # type: ignore[attr-defined]


async def test_an_outbox_message_is_delivered_with_its_id_and_an_outage_is_a_retry(own_nats_server) -> None:
    broker = make_broker(CommonSettings(nats_url=own_nats_server.url))
    await broker.connect()
    js = broker.connection.jetstream()
    await ensure_streams(js)
    publisher = JetStreamPublisher(broker, ack_timeout=2)
    event = fact(f"B{uuid.uuid4().hex[:6]}")
    pending = Pending(id=1, topic=ALERTS, key="k", payload=encode(event).decode(), message_id=event.id,  # type: ignore[attr-defined]
                      attempts=0, created_at=NOW)
    assert await publisher.deliver(pending) == Delivered()
    last = (await js.stream_info("TTHC_ALERTS")).state.last_seq
    msg = await js.get_msg("TTHC_ALERTS", last)
    assert msg.headers["Nats-Msg-Id"] == event.id  # type: ignore[attr-defined]
    own_nats_server.stop()  # the broker away: a failure that may pass, said so, never raised
    try:
        result = await publisher.deliver(pending)
        assert isinstance(result, Retry) and "publish failed" in result.reason
    finally:
        own_nats_server.start()  # back, so that the client stops reconnecting and closes cleanly
        await wait_until(lambda: broker.connection.is_connected, timeout=15)
        await broker.stop()


async def test_a_backlogs_facts_go_in_atomic_batches_of_at_most_the_server_cap(broker, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(publishing, "ATOMIC_FROM", 30)  # 256 and 1000 in the service; keep the test small
    monkeypatch.setattr(publishing, "ATOMIC_BATCH_MAX", 40)
    js = broker.connection.jetstream()
    info = await js.stream_info("PARWATCH_DOSSIER_STATE")
    assert info.config.allow_atomic is True
    first = info.state.last_seq + 1
    publisher = JetStreamPublisher(broker)
    tag = uuid.uuid4().hex[:6]
    await publisher.publish_many([fact(f"A{tag}-{i}") for i in range(95)], subject=DOSSIER_STATE)
    await publisher.publish_many([fact(f"B{tag}-{i}") for i in range(3)], subject=DOSSIER_STATE)  # a few: one by one
    msgs = await stored(js, "PARWATCH_DOSSIER_STATE", first)
    assert [parse_event(m.data).subject for m in msgs] == [f"A{tag}-{i}" for i in range(95)] + [
        f"B{tag}-{i}" for i in range(3)
    ]
    batches = [m.headers.get("Nats-Batch-Id") for m in msgs[:95]]  # type: ignore[union-attr]
    assert len(set(batches)) == 3  # 40 + 40 + 15
    assert all("Nats-Msg-Id" not in m.headers for m in msgs[:95])  # type: ignore[operator]
    assert all("Nats-Batch-Id" not in m.headers and "Nats-Msg-Id" in m.headers for m in msgs[95:])  # type: ignore[operator]


async def test_a_stream_that_refuses_atomic_batches_raises_and_stores_nothing(broker, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    name = f"NOATOMIC_{uuid.uuid4().hex[:6].upper()}"
    subject = f"test.noatomic.{name.lower()}"
    js = broker.connection.jetstream()
    await js.add_stream(StreamConfig(name=name, subjects=[subject]))
    monkeypatch.setattr(publishing, "stream_for", lambda s: StreamSpec(name, (subject,), 1, allow_atomic=True))
    monkeypatch.setattr(publishing, "ATOMIC_FROM", 2)
    try:
        with pytest.raises(BatchNotStored, match="refused"):
            await JetStreamPublisher(broker, ack_timeout=5).publish_many([fact("X1"), fact("X2")], subject=subject)
        assert (await js.stream_info(name)).state.messages == 0
    finally:
        await js.delete_stream(name)
