"""The retention's shared parts on SQLite and PostgreSQL: bounded deletes, 64-bit columns made in place, the
cleanup loop's step."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import BigInteger, Column, Engine, Integer, MetaData, String, Table, func, inspect, select, text

from shared.db import UtcDateTime, delete_chunk, make_engine, widen_to_bigint
from shared.retention import Cleanup, Retention

T0 = dt.datetime(2027, 3, 1, 3, 0, tzinfo=dt.timezone.utc)
RETENTION = Retention(dedup=dt.timedelta(days=400), history=dt.timedelta(days=400), log=dt.timedelta(days=400),
                      chunk=3)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def keys_table() -> Table:
    return Table(
        "test_keys",
        MetaData(),
        Column("source", String(64), primary_key=True),
        Column("event_id", String(64), primary_key=True),
        Column("seen_at", UtcDateTime, nullable=False),
    )


def test_delete_chunk_takes_at_most_its_chunk_and_only_what_matches(engine: Engine) -> None:
    table = keys_table()
    table.create(engine)
    with engine.begin() as conn:
        conn.execute(table.insert(), [
            {"source": f"s{i % 2}", "event_id": f"e{i}", "seen_at": T0 - dt.timedelta(days=i * 100)} for i in range(8)
        ])
    old = table.c.seen_at < T0 - dt.timedelta(days=400)  # e5, e6, e7 (e4 is exactly 400 days old: kept)
    assert delete_chunk(engine, table, old, limit=2) == 2
    assert delete_chunk(engine, table, old, limit=2) == 1
    assert delete_chunk(engine, table, old, limit=2) == 0
    with engine.connect() as conn:
        left = sorted(conn.execute(select(table.c.event_id)).scalars())
    assert left == ["e0", "e1", "e2", "e3", "e4"]


def test_an_older_32_bit_column_is_widened_in_place_and_holds_2_pow_53(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE test_seq (id INTEGER PRIMARY KEY, sequence INTEGER, note VARCHAR(8))"))
        conn.execute(text("INSERT INTO test_seq (id, sequence, note) VALUES (1, 7, 'old')"))
    model = Table("test_seq", MetaData(), Column("id", Integer, primary_key=True), Column("sequence", BigInteger),
                  Column("note", String(8)))
    widened = widen_to_bigint(engine, model)
    assert widened == (["sequence"] if engine.dialect.name == "postgresql" else [])  # SQLite's are 64-bit already
    assert widen_to_bigint(engine, model) == []  # done once
    with engine.begin() as conn:
        conn.execute(model.insert().values(id=2, sequence=2**53, note="new"))
        assert conn.execute(select(model.c.sequence).where(model.c.id == 2)).scalar_one() == 2**53
        assert conn.execute(select(model.c.sequence).where(model.c.id == 1)).scalar_one() == 7
    if engine.dialect.name == "postgresql":
        types = {c["name"]: c["type"] for c in inspect(engine).get_columns("test_seq")}
        assert isinstance(types["sequence"], BigInteger) and not isinstance(types["id"], BigInteger)


class Pruner:
    """A store's prune: deletes up to the chunk from a pile, says how many."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.calls: list[dt.datetime] = []

    def prune(self, retention: Retention, *, now: dt.datetime) -> dict[str, int]:
        self.calls.append(now)
        gone = min(self.rows, retention.chunk)
        self.rows -= gone
        return {"pile": gone, "other": 0}


async def test_a_cleanup_pass_that_filled_its_chunk_asks_to_run_again_at_once() -> None:
    pruner = Pruner(rows=7)
    cleanup = Cleanup(pruner.prune, RETENTION, clock=lambda: T0)
    assert [await cleanup.once() for _ in range(4)] == [True, True, False, False]
    assert pruner.rows == 0 and pruner.calls == [T0] * 4


async def test_a_cleanup_in_the_service_loop_deletes_by_itself(engine: Engine) -> None:
    """The loop the services run (``service.every``): nothing to drive but its step."""
    table = keys_table()
    table.create(engine)
    with engine.begin() as conn:
        conn.execute(table.insert(), [{"source": "s", "event_id": f"e{i}", "seen_at": T0 - dt.timedelta(days=500)}
                                      for i in range(7)])

    def prune(retention: Retention, *, now: dt.datetime) -> dict[str, int]:
        where = table.c.seen_at < now - retention.dedup
        return {table.name: delete_chunk(engine, table, where, limit=retention.chunk)}

    cleanup = Cleanup(prune, RETENTION, clock=lambda: T0)
    while await cleanup.once():
        pass
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(table)).scalar_one() == 0
