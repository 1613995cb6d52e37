"""The one outbox, on SQLite and PostgreSQL: what a transaction adds goes out after its commit, in order per key,
a failure that may pass holds its key back until it went out, and a delivery's records share its transaction."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, func, select, text

from shared.backoff import Backoff
from shared.db import make_engine
from shared.outbox import Delivered, GiveUp, Message, Outbox, Pending, Relay, Result, Retry, outbox_table

T0 = dt.datetime(2026, 12, 1, 1, 0, tzinfo=dt.timezone.utc)
BACKOFF = Backoff(first=10, cap=60)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def outbox(engine: Engine) -> Outbox:
    box = Outbox(engine, outbox_table("test", MetaData()))
    box.create()
    return box


class Channel:
    """A delivery that records what it sent and fails on command."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.failing: dict[str, Result] = {}

    async def __call__(self, p: Pending) -> Result:
        if p.payload in self.failing:
            return self.failing[p.payload]
        self.sent.append(p.payload)
        return Delivered()


def add(outbox: Outbox, *messages: tuple[str, str], now: dt.datetime = T0) -> None:
    with outbox.engine.begin() as conn:
        outbox.add(conn, [Message(topic="t", key=key, payload=payload) for key, payload in messages], now=now)


async def test_what_a_rolled_back_transaction_added_never_goes_out(outbox: Outbox) -> None:
    with pytest.raises(RuntimeError):
        with outbox.engine.begin() as conn:
            outbox.add(conn, [Message(topic="t", key="k", payload="lost")], now=T0)
            raise RuntimeError("the state change failed")
    add(outbox, ("k", "kept"))
    channel = Channel()
    await Relay(outbox, channel, clock=lambda: T0).once(T0)
    assert channel.sent == ["kept"]
    assert outbox.size() == 0


async def test_messages_of_a_key_go_out_in_order_and_a_retry_holds_its_key_back(outbox: Outbox) -> None:
    add(outbox, ("alert:A", "A1"), ("alert:B", "B1"), ("alert:A", "A2"), ("alert:B", "B2"), ("alert:A", "A3"))
    channel = Channel()
    channel.failing["A1"] = Retry("channel down")
    clock = [T0]
    relay = Relay(outbox, channel, clock=lambda: clock[0], backoff=BACKOFF)
    await relay.once(T0)
    assert channel.sent == ["B1", "B2"]  # A2 and A3 wait behind A1
    assert outbox.size() == 3
    await relay.once(T0 + dt.timedelta(seconds=9))  # before A1's next try: nothing of A goes
    assert channel.sent == ["B1", "B2"]
    del channel.failing["A1"]
    await relay.once(T0 + dt.timedelta(seconds=10))
    assert channel.sent == ["B1", "B2", "A1", "A2", "A3"]
    assert outbox.size() == 0


async def test_a_retry_counts_attempts_and_backs_off_further(outbox: Outbox, engine: Engine) -> None:
    add(outbox, ("k", "m"))
    channel = Channel()
    channel.failing["m"] = Retry("smtp 451")
    now = T0
    for attempt in (1, 2, 3):
        clock = [now]
        await Relay(outbox, channel, clock=lambda: clock[0], backoff=BACKOFF).once(now)
        with engine.connect() as conn:
            row = conn.execute(select(outbox.table.c.attempts, outbox.table.c.next_attempt_at,
                                      outbox.table.c.last_error)).one()
        assert row.attempts == attempt and row.last_error == "smtp 451"
        assert row.next_attempt_at == now + dt.timedelta(seconds=BACKOFF.delay(attempt))
        now = row.next_attempt_at


async def test_a_delivery_that_raises_is_kept_for_another_try(outbox: Outbox) -> None:
    add(outbox, ("k", "m"))

    async def broken(p: Pending) -> Result:
        raise KeyError("a bug in the channel")

    await Relay(outbox, broken, clock=lambda: T0, backoff=BACKOFF).once(T0)
    assert outbox.size() == 1
    assert outbox.due(now=T0, limit=10) == []


async def test_records_are_written_in_the_transaction_that_removes_the_message(outbox: Outbox, engine: Engine) -> None:
    log = Table("test_log", MetaData(), Column("id", Integer, primary_key=True), Column("what", String(32)))
    log.create(engine)
    add(outbox, ("k1", "sent"), ("k2", "refused"))

    def note(what: str):  # type: ignore[no-untyped-def]
        return lambda conn: conn.execute(log.insert().values(what=what))

    async def deliver(p: Pending) -> Result:
        if p.payload == "sent":
            return Delivered(record=note("sent"))
        return GiveUp("address unknown", record=note("failed"))

    await Relay(outbox, deliver, clock=lambda: T0).once(T0)
    with engine.connect() as conn:
        assert sorted(conn.execute(select(log.c.what)).scalars()) == ["failed", "sent"]
    assert outbox.size() == 0


async def test_ids_never_repeat_once_the_outbox_was_empty(outbox: Outbox) -> None:
    add(outbox, ("k", "first"))
    [first] = outbox.due(now=T0, limit=10)
    await Relay(outbox, Channel(), clock=lambda: T0).once(T0)
    add(outbox, ("k", "second"))
    [second] = outbox.due(now=T0, limit=10)
    assert second.id > first.id


async def test_a_full_batch_says_there_is_more(outbox: Outbox) -> None:
    add(outbox, *((f"k{i}", f"m{i}") for i in range(5)))
    channel = Channel()
    relay = Relay(outbox, channel, clock=lambda: T0, batch=3)
    assert await relay.once(T0) is True
    assert await relay.once(T0) is False
    assert channel.sent == [f"m{i}" for i in range(5)]


def test_an_older_table_of_the_same_name_is_set_aside(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE old_outbox (id INTEGER PRIMARY KEY, subject VARCHAR(64))"))
        conn.execute(text("CREATE INDEX ix_old_outbox_due ON old_outbox (subject)"))  # the new table's index name
        conn.execute(text("INSERT INTO old_outbox (id, subject) VALUES (1, 'tthc.alerts')"))
    box = Outbox(engine, outbox_table("old", MetaData()))
    box.create()
    box.create()  # a second start changes nothing
    assert box.size() == 0
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(text("old_outbox_legacy"))).scalar_one() == 1
