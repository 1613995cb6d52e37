"""JetStreamPublisher against a real nats-server: atomic batches on the facts stream, per-message acks elsewhere."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from nats.js.api import StreamConfig

from shared import publishing
from shared.events import DOSSIER_STATE_TYPE, DossierStateChanged, new_event, parse_event
from shared.publishing import BatchNotStored, JetStreamPublisher
from shared.service import make_broker
from shared.settings import CommonSettings
from shared.streams import DOSSIER_STATE, StreamSpec, ensure_streams

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


async def test_facts_go_in_atomic_batches_of_at_most_the_server_cap(nats_server: str, monkeypatch) -> None:
    monkeypatch.setattr(publishing, "ATOMIC_BATCH_MAX", 40)  # the cap is 1000; keep the test small
    broker = make_broker(CommonSettings(nats_url=nats_server))
    await broker.connect()
    js = broker.connection.jetstream()
    await ensure_streams(js)
    info = await js.stream_info("PARWATCH_DOSSIER_STATE")
    assert info.config.allow_atomic is True
    first = info.state.last_seq + 1
    publisher = JetStreamPublisher(broker)
    tag = uuid.uuid4().hex[:6]
    try:
        await publisher.publish_many([fact(f"A{tag}-{i}") for i in range(95)], subject=DOSSIER_STATE)
        await publisher.publish_many([fact(f"B{tag}")], subject=DOSSIER_STATE)  # a batch of one commits at once
        await publisher.publish_many([], subject=DOSSIER_STATE)
        msgs = [m for m in await stored(js, "PARWATCH_DOSSIER_STATE", first) if tag in parse_event(m.data).subject]
        codes = [parse_event(m.data).subject for m in msgs]
        assert codes == [f"A{tag}-{i}" for i in range(95)] + [f"B{tag}"]
        batches = [m.headers.get("Nats-Batch-Id") for m in msgs]
        assert len(set(batches[:95])) == 3  # 40 + 40 + 15
        assert all("Nats-Msg-Id" not in (m.headers or {}) for m in msgs)
    finally:
        await broker.stop()


async def test_a_stream_that_refuses_atomic_batches_raises_and_stores_nothing(nats_server: str, monkeypatch) -> None:
    name = f"NOATOMIC_{uuid.uuid4().hex[:6].upper()}"
    subject = f"test.noatomic.{name.lower()}"
    broker = make_broker(CommonSettings(nats_url=nats_server))
    await broker.connect()
    js = broker.connection.jetstream()
    await js.add_stream(StreamConfig(name=name, subjects=[subject]))
    monkeypatch.setattr(publishing, "stream_for", lambda s: StreamSpec(name, (subject,), 1, allow_atomic=True))
    try:
        with pytest.raises(BatchNotStored, match="refused"):
            await JetStreamPublisher(broker, ack_timeout=5).publish_many([fact("X1"), fact("X2")], subject=subject)
        assert (await js.stream_info(name)).state.messages == 0
    finally:
        await js.delete_stream(name)
        await broker.stop()
