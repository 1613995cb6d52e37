"""Database helpers against real SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, select, text

from shared.db import StatisticsKeeper, UtcDateTime, make_engine


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
