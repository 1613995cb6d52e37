"""Database helpers against real SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import (
    Boolean,
    Column,
    Date,
    DateTime,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    event,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects import sqlite

from shared.db import (
    BulkSelect,
    BulkStatement,
    Day,
    Rows,
    StatisticsKeeper,
    UtcDateTime,
    add_missing_columns,
    make_engine,
)

SQLITE = sqlite.dialect()
CORE_DATETIME = DateTime(timezone=True).dialect_impl(SQLITE)
CORE_DATE = Date().dialect_impl(SQLITE)


@settings(max_examples=300)
@given(day=st.dates(min_value=dt.date(1000, 1, 1)))
def test_sqlite_day_text_is_what_core_writes_and_reads(day: dt.date) -> None:
    stored = Day().bind_processor(SQLITE)(day)
    assert stored == CORE_DATE.bind_processor(SQLITE)(day)
    assert Day().result_processor(SQLITE, None)(stored) == CORE_DATE.result_processor(SQLITE, None)(stored) == day


@settings(max_examples=300)
@given(moment=st.datetimes(min_value=dt.datetime(1000, 1, 2), max_value=dt.datetime(9999, 12, 30),
                           timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=7)),
                                                      dt.timezone(dt.timedelta(hours=-5, minutes=-30))])))
def test_sqlite_text_is_what_core_writes_and_reads(moment: dt.datetime) -> None:
    """UtcDateTime's own SQLite processors against SQLAlchemy's DATETIME ones."""
    ours = UtcDateTime()
    core_bind = CORE_DATETIME.bind_processor(SQLITE)
    core_result = CORE_DATETIME.result_processor(SQLITE, None)
    stored = ours.bind_processor(SQLITE)(moment)
    assert stored == core_bind(moment.astimezone(dt.UTC))
    back = ours.result_processor(SQLITE, None)(stored)
    assert back == moment and back.utcoffset() == dt.timedelta(0)
    assert back == core_result(stored).replace(tzinfo=dt.UTC)


def test_aware_datetimes_round_trip_in_utc(database_url: str) -> None:
    engine = make_engine(database_url)
    meta = MetaData()
    t = Table("t_times", meta, Column("id", Integer, primary_key=True), Column("at", UtcDateTime))
    meta.create_all(engine)
    moment = dt.datetime(2026, 11, 27, 17, 30, tzinfo=dt.timezone(dt.timedelta(hours=7)))
    with engine.begin() as conn:
        conn.execute(t.insert(), [{"id": 1, "at": moment}])
        back = conn.execute(select(t.c.at)).scalar_one()
    assert back == moment and back.utcoffset() == dt.timedelta(0)
    with pytest.raises(Exception, match="naive"), engine.begin() as conn:
        conn.execute(t.insert(), [{"id": 2, "at": dt.datetime(2026, 11, 27, 17, 30)}])
    engine.dispose()


def test_statistics_are_refreshed_as_a_table_doubles(database_url: str) -> None:
    engine = make_engine(database_url)
    meta = MetaData()
    t = Table("t_stats", meta, Column("id", Integer, primary_key=True))
    meta.create_all(engine)
    keeper = StatisticsKeeper(engine, tables=["t_stats"], first_after=100)
    with engine.begin() as conn:
        conn.execute(t.insert(), [{"id": i} for i in range(99)])
    keeper.wrote(99)
    if engine.dialect.name != "postgresql":
        assert not keeper.enabled
        engine.dispose()
        return

    with engine.begin() as conn:
        conn.execute(t.insert(), [{"id": i} for i in range(99, 300)])
    keeper.wrote(201)  # 300 written: the first threshold passed
    assert keeper._threshold == 300  # next refresh once the table has doubled
    keeper.wrote(150)
    # The planner's estimate: -1 (never analyzed) without the keeper, 300 after its ANALYZE.
    with engine.connect() as conn:
        estimate = conn.execute(text("SELECT reltuples FROM pg_class WHERE relname = 't_stats'")).scalar_one()
    assert estimate == 300
    engine.dispose()


def _bulk_table(meta: MetaData, name: str) -> Table:
    return Table(
        name, meta,
        Column("id", Integer, primary_key=True), Column("at", UtcDateTime), Column("day", Day),
        Column("flag", Boolean), Column("share", Float), Column("label", String(20)),
    )


def test_bulk_statement_stores_what_core_stores(database_url: str) -> None:
    engine = make_engine(database_url)
    meta = MetaData()
    core, bulk = _bulk_table(meta, "t_core"), _bulk_table(meta, "t_bulk")
    meta.create_all(engine)
    ict = dt.timezone(dt.timedelta(hours=7))
    rows = [
        (1, dt.datetime(2026, 11, 27, 17, 30, 0, 5, tzinfo=ict), dt.date(2026, 11, 27), True, 0.5, "một"),
        (2, None, None, None, None, None),
        (3, dt.datetime(2026, 1, 1, tzinfo=dt.UTC), dt.date(2025, 12, 31), False, 2.0, "x"),
    ]
    names = [c.name for c in core.columns]
    statement = BulkStatement(bulk.insert(), names, engine.dialect)
    with engine.begin() as conn:
        conn.execute(core.insert(), [dict(zip(names, r, strict=True)) for r in rows])
        statement.execute(conn, rows)
        statement.execute(conn, [])  # nothing to do
    with engine.connect() as conn:
        through_core = conn.execute(select(core).order_by(core.c.id)).all()
        through_bulk = conn.execute(select(bulk).order_by(bulk.c.id)).all()
        assert through_bulk == through_core
        assert [tuple(r) for r in through_bulk][0][1] == rows[0][1]
        raw = "SELECT at, day, flag FROM {} ORDER BY id"
        assert conn.exec_driver_sql(raw.format("t_bulk")).all() == conn.exec_driver_sql(raw.format("t_core")).all()
    engine.dispose()


def test_bulk_select_returns_what_core_returns(database_url: str) -> None:
    engine = make_engine(database_url)
    meta = MetaData()
    table = _bulk_table(meta, "t_select")
    meta.create_all(engine)
    ict = dt.timezone(dt.timedelta(hours=7))
    rows = [
        {"id": i, "at": dt.datetime(2026, 11, 27, 8, i, 0, i, tzinfo=ict) if i % 3 else None,
         "day": dt.date(2026, 11, 1 + i) if i % 2 else None, "flag": [True, False, None][i % 3],
         "share": i / 4 if i % 4 else None, "label": f"nhãn {i}"}
        for i in range(1, 11)
    ]
    with engine.begin() as conn:
        conn.execute(table.insert(), rows)
    columns = [table.c.label, table.c.at, table.c.day, table.c.flag, table.c.share, table.c.id]
    bulk = BulkSelect(columns, table.c.id, engine.dialect, chunk=3)  # several chunks, a padded last one
    keys = [9, 1, 4, 4, 7, 99, 2, 10]  # a repeat and a missing key
    with engine.connect() as conn:
        got = bulk.fetch(conn, keys)
        core = [tuple(r) for r in conn.execute(select(*columns).where(table.c.id.in_(keys)))]
        assert bulk.fetch(conn, []) == []
    assert sorted(got, key=lambda r: r[-1]) == sorted(core, key=lambda r: r[-1])
    assert [r[-1] for r in sorted(got, key=lambda r: r[-1])] == [1, 2, 4, 7, 9, 10]
    at = next(r[1] for r in got if r[-1] == 1)
    assert at == rows[0]["at"] and at.utcoffset() == dt.timedelta(0)
    engine.dispose()


def test_sqlite_datetime_text_is_cores_for_the_same_instant() -> None:
    """Equal aware datetimes (one instant in any offset) give one text, Core's; naive ones fail every time."""
    process = UtcDateTime().bind_processor(SQLITE)
    core_bind = CORE_DATETIME.bind_processor(SQLITE)
    a = dt.datetime(2026, 11, 27, 8, 0, 0, 1, tzinfo=dt.timezone(dt.timedelta(hours=7)))
    same_instant = a.astimezone(dt.UTC)
    b = dt.datetime(2026, 11, 28, 8, 0, tzinfo=dt.UTC)
    values = [a, a, same_instant, b, None, b, a]
    assert [process(v) for v in values] == [None if v is None else core_bind(v.astimezone(dt.UTC))
                                            for v in values]
    assert process(a) == process(same_instant) != process(b)
    for _ in range(2):
        with pytest.raises(ValueError, match="naive"):
            process(dt.datetime(2026, 11, 27))


def test_bulk_statement_refuses_columns_that_do_not_match() -> None:
    meta = MetaData()
    t = _bulk_table(meta, "t_mismatch")
    with pytest.raises(ValueError, match="are not"):
        BulkStatement(t.insert(), ["label", "id"], SQLITE)


def test_bulk_statement_takes_the_columns_in_any_order(database_url: str) -> None:
    """Rows follow the caller's column order, whatever order the dialect binds them in."""
    engine = make_engine(database_url)
    meta = MetaData()
    t = _bulk_table(meta, "t_order")
    meta.create_all(engine)
    names = [c.name for c in t.columns][::-1]
    row = {"id": 1, "at": None, "day": dt.date(2026, 12, 1), "flag": True, "share": 0.5, "label": "một"}
    with engine.begin() as conn:
        BulkStatement(t.insert(), names, engine.dialect).execute(conn, [tuple(row[n] for n in names)])
        assert dict(conn.execute(select(t)).one()._mapping) == row
    engine.dispose()


def test_missing_nullable_columns_are_added_in_place(database_url: str) -> None:
    engine = make_engine(database_url)
    old = MetaData()
    Table("t_grow", old, Column("id", Integer, primary_key=True), Column("name", String(10)))
    old.create_all(engine)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO t_grow (id, name) VALUES (1, 'a')"))
    new = MetaData()
    grown = Table("t_grow", new, Column("id", Integer, primary_key=True), Column("name", String(10)),
                  Column("at", UtcDateTime), Column("n", Integer))
    assert add_missing_columns(engine, grown) == ["at", "n"]
    assert add_missing_columns(engine, grown) == []  # idempotent
    assert {c["name"] for c in inspect(engine).get_columns("t_grow")} == {"id", "name", "at", "n"}
    with engine.connect() as conn:
        assert conn.execute(select(grown)).one() == (1, "a", None, None)
    strict = Table("t_grow", MetaData(), Column("id", Integer, primary_key=True),
                   Column("must", Integer, nullable=False))
    with pytest.raises(RuntimeError, match="cannot be added"):
        add_missing_columns(engine, strict)
    engine.dispose()


def test_a_background_checkpoint_copies_the_wal_back_and_no_transaction_does(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import time

    path = tmp_path / "checkpointed.db"
    engine = make_engine(f"sqlite:///{path}", checkpoint_every=0.05)
    meta = MetaData()
    table = Table("t_wal", meta, Column("id", Integer, primary_key=True), Column("label", String(200)))
    meta.create_all(engine)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0  # no transaction checkpoints
    before = path.stat().st_size
    with engine.begin() as conn:
        conn.execute(table.insert(), [{"id": i, "label": "x" * 200} for i in range(2000)])
    deadline = time.monotonic() + 10
    while path.stat().st_size <= before and time.monotonic() < deadline:  # the rows reach the database file
        time.sleep(0.05)
    assert path.stat().st_size > before
    engine.dispose()


@pytest.fixture
def rows_table(database_url: str) -> Iterator[tuple[Engine, Table]]:
    """A fresh table keyed by (a, b) for ``Rows``, and its engine."""
    engine = make_engine(database_url)
    meta = MetaData()
    table = Table(
        "t_rows", meta,
        Column("a", String(8), primary_key=True), Column("b", Integer, primary_key=True),
        Column("n", Integer), Column("at", UtcDateTime),
    )
    meta.drop_all(engine)
    meta.create_all(engine)
    yield engine, table
    engine.dispose()


def test_rows_write_what_changed_added_and_deleted_at_the_flush(rows_table: tuple[Engine, Table]) -> None:
    engine, table = rows_table
    at = dt.datetime(2026, 12, 2, 4, 0, tzinfo=dt.UTC)
    with engine.begin() as conn:
        conn.execute(table.insert(), [{"a": "x", "b": i, "n": i, "at": at} for i in range(4)])

    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2].split()[0].upper()))
    with engine.begin() as conn:
        rows = Rows(table)
        read = rows.load(conn, select(table).where(table.c.b < 3).order_by(table.c.b))
        assert [r.n for r in read] == [0, 1, 2]
        assert rows.load(conn, select(table).where(table.c.b == 1))[0] is read[1]  # one record a row
        assert rows.get(conn, ("x", 2)) is read[2] and rows.get(conn, ("x", 9)) is None
        read[1].n = 10  # changed
        read[2].n = 2  # set to what it was: not written
        rows.delete(read[0])
        new = rows.add({"a": "y", "b": 0, "n": 5, "at": None})
        assert rows.get(conn, ("y", 0)) is new and rows.get(conn, ("x", 0)) is None
        gone = rows.add({"a": "z", "b": 0, "n": 6, "at": None})
        rows.delete(gone)  # added then deleted: never written
        statements.clear()
        assert rows.flush(conn) == 3
        assert sorted(statements) == ["DELETE", "INSERT", "UPDATE"]  # one statement a kind of write
        statements.clear()
        assert rows.flush(conn) == 0 and statements == []  # nothing changed since
        new.n = 7
        assert rows.flush(conn) == 1  # an added row, flushed, is tracked like one read
    with engine.connect() as conn:
        stored = conn.execute(select(table.c.a, table.c.b, table.c.n, table.c.at).order_by(table.c.a, table.c.b)).all()
    assert [tuple(r) for r in stored] == [("x", 1, 10, at), ("x", 2, 2, at), ("x", 3, 3, at), ("y", 0, 7, None)]


def test_rows_a_row_deleted_and_added_again_under_its_key_is_written_as_the_new_one(
    rows_table: tuple[Engine, Table],
) -> None:
    engine, table = rows_table
    with engine.begin() as conn:
        conn.execute(table.insert(), [{"a": "x", "b": 1, "n": 1, "at": None}])
    with engine.begin() as conn:
        rows = Rows(table)
        (old,) = rows.load(conn, select(table))
        rows.delete(old)
        new = rows.add({"a": "x", "b": 1, "n": 2, "at": None})
        assert rows.get(conn, ("x", 1)) is new and rows.load(conn, select(table)) == [new]
        assert rows.flush(conn) == 2  # the old row deleted, then the new one inserted: no key conflict
    with engine.connect() as conn:
        assert [tuple(r) for r in conn.execute(select(table.c.a, table.c.b, table.c.n))] == [("x", 1, 2)]
