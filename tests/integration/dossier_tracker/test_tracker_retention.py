"""The tracker's store on SQLite and PostgreSQL: 64-bit sequences (older tables widened at start) and the retention,
driven with fixed times."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import BigInteger, Engine, func, inspect, select, text

from services.dossier_tracker.domain import RecordedEvent
from services.dossier_tracker.store import DOSSIERS, EVENTS, SEEN, TrackerStore, create_schema
from shared.calendar import load_calendar
from shared.db import make_engine
from shared.retention import Retention

UTC = dt.timezone.utc
NOW = dt.datetime(2027, 3, 1, 3, 0, tzinfo=UTC)
DAYS = dt.timedelta(days=1)
RETENTION = Retention(dedup=400 * DAYS, history=400 * DAYS, log=400 * DAYS, chunk=500)
CAL = load_calendar()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    create_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def store(engine: Engine) -> TrackerStore:
    return TrackerStore(engine, calendar=CAL)


def event(code: str, status: int, seq: int, at: dt.datetime, *, source: str = "motcua.test") -> RecordedEvent:
    return RecordedEvent(
        source=source, event_id=f"{code}-{seq}", dossier_code=code, sequence=seq, status=status, occurred_at=at,
        agency_code="PTP", procedure_code="1.004227", field_code="HOTICH",
        received_at=at if status == 2 else None, due_at=at + 10 * DAYS if status == 2 else None,
    )


def store_lifecycle(store: TrackerStore, code: str, statuses: list[int], *, at: dt.datetime) -> list[RecordedEvent]:
    """The dossier's events, stored when they happened (``at``, an hour apart)."""
    events = [event(code, status, i + 1, at + dt.timedelta(hours=i)) for i, status in enumerate(statuses)]
    for e in events:
        store.apply_batch([e], [None], now=e.occurred_at)
    return events


def count(engine: Engine, table, **where: str) -> int:  # type: ignore[no-untyped-def]
    stmt = select(func.count()).select_from(table)
    for column, value in where.items():
        stmt = stmt.where(table.c[column] == value)
    with engine.connect() as conn:
        return int(conn.execute(stmt).scalar_one())


def test_a_sequence_of_2_pow_53_and_a_stream_sequence_as_large_are_stored(store: TrackerStore, engine: Engine) -> None:
    big = 2**53
    first = event("H.BIG", 2, big - 1, NOW)
    second = event("H.BIG", 4, big, NOW + dt.timedelta(hours=1))
    result = store.apply_batch([first, second], [big - 1, big], now=NOW)
    assert result.duplicate == [False, False] and result.states["H.BIG"].status == 4
    with engine.connect() as conn:
        stored = conn.execute(select(EVENTS.c.sequence, EVENTS.c.stream_seq).order_by(EVENTS.c.sequence)).all()
        fold_last = conn.execute(select(DOSSIERS.c.fold_last_sequence)).scalar_one()
    assert [tuple(r) for r in stored] == [(big - 1, big - 1), (big, big)]
    assert fold_last == big
    assert store.apply_batch([second], [big], now=NOW).duplicate == [True]


def test_an_older_postgresql_table_of_32_bit_sequences_is_widened_at_start(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite's integers are 64-bit whatever the declared type")
    with engine.begin() as conn:  # the layout of an older parwatch
        for table, column in ((EVENTS, "sequence"), (EVENTS, "stream_seq"), (DOSSIERS, "fold_last_sequence")):
            conn.execute(text(f"ALTER TABLE {table.name} ALTER COLUMN {column} TYPE INTEGER"))
    create_schema(engine)  # the next start
    for table, column in ((EVENTS, "sequence"), (EVENTS, "stream_seq"), (DOSSIERS, "fold_last_sequence")):
        types = {c["name"]: c["type"] for c in inspect(engine).get_columns(table.name)}
        assert isinstance(types[column], BigInteger), (table.name, column)
    store = TrackerStore(engine, calendar=CAL)
    assert store.apply_batch([event("H.BIG", 2, 2**53, NOW)], [2**53], now=NOW).duplicate == [False]


def test_closed_dossiers_quiet_for_the_retention_are_forgotten_whole_and_the_rest_stays(
    store: TrackerStore, engine: Engine
) -> None:
    long_ago = NOW - 500 * DAYS
    store_lifecycle(store, "H.ENDED.OLD", [2, 4, 10], at=long_ago)
    store_lifecycle(store, "H.NEVER.RECEIVED", [1], at=long_ago)  # never counted: not open either
    store_lifecycle(store, "H.OPEN.OLD", [2, 4], at=long_ago)  # open: kept whatever its age
    recent = store_lifecycle(store, "H.ENDED.RECENT", [2, 10], at=NOW - 100 * DAYS)
    edge = store_lifecycle(store, "H.ENDED.EDGE", [2, 10], at=NOW - 400 * DAYS - dt.timedelta(hours=1))
    ended_before = sorted(store.ended_counts())

    assert store.prune(RETENTION, now=NOW) == {DOSSIERS.name: 2, EVENTS.name: 4, SEEN.name: 0}

    assert store.get_state("H.ENDED.OLD") is None and store.get_state("H.NEVER.RECEIVED") is None
    assert count(engine, EVENTS, dossier_code="H.ENDED.OLD") == 0
    assert store.get_state("H.OPEN.OLD") is not None and count(engine, EVENTS, dossier_code="H.OPEN.OLD") == 2
    assert count(engine, EVENTS, dossier_code="H.ENDED.RECENT") == 2
    assert count(engine, EVENTS, dossier_code="H.ENDED.EDGE") == 2  # last changed exactly 400 days ago: kept
    assert sorted(store.ended_counts()) == ended_before  # the counters count what happened, forgotten or not
    # Within the retention a duplicate is still recognised.
    assert store.apply_batch(recent, [None] * len(recent), now=NOW).duplicate == [True, True]
    assert store.apply_batch(edge[:1], [None], now=NOW).duplicate == [True]
    assert store.prune(RETENTION, now=NOW) == {DOSSIERS.name: 0, EVENTS.name: 0, SEEN.name: 0}


def test_a_large_backlog_goes_in_bounded_chunks(store: TrackerStore, engine: Engine) -> None:
    for i in range(5):
        store_lifecycle(store, f"H.OLD.{i}", [2, 10], at=NOW - 600 * DAYS)
    small = Retention(dedup=400 * DAYS, history=400 * DAYS, log=400 * DAYS, chunk=2)
    passes = [store.prune(small, now=NOW)[DOSSIERS.name] for _ in range(4)]
    assert passes == [2, 2, 1, 0]
    assert count(engine, DOSSIERS) == 0 and count(engine, EVENTS) == 0


def test_seen_ratings_and_plan_reports_are_forgotten_after_the_dedup_retention(store: TrackerStore) -> None:
    old = [("kiosk.a", "r-1", "TTHC_RATING"), ("portal.b", "p-1", "TTHC_PLAN")]
    young = [("kiosk.a", "r-2", "TTHC_RATING")]
    assert store.record_seen(old, now=NOW - 401 * DAYS) == [False, False]
    assert store.record_seen(young, now=NOW - 399 * DAYS) == [False]

    assert store.prune(RETENTION, now=NOW)[SEEN.name] == 2

    assert store.record_seen(young, now=NOW) == [True]  # still a duplicate within the retention
    assert store.record_seen(old[:1], now=NOW) == [False]  # beyond it: the input stream no longer holds it either
