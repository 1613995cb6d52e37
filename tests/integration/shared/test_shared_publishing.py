"""JetStreamPublisher against a real nats-server: pipelined publishes, every one acked, each stored once."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from shared.events import DOSSIER_STATE_TYPE, DossierStateChanged, encode, new_event, parse_event
from shared.outbox import Delivered, Pending, Retry
from shared.publishing import JetStreamPublisher
from shared.service import make_broker
from shared.settings import CommonSettings
from shared.streams import ALERTS, DOSSIER_STATE, ensure_streams
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
