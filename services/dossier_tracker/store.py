"""Storage of dossier_tracker: event history, derived state, ended counts.

One transaction per batch holds the deduplication (the event's (source, id)
is the history table's primary key), the history insert, the re-derived
dossier state and the ended-count adjustment, so a crash at any point leaves
either all of it or none.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, Index, func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Field, Session, SQLModel

from services.dossier_tracker.domain import DossierState, RecordedEvent, derive_state
from shared.calendar import WorkingCalendar
from shared.db import StatisticsKeeper, UtcDateTime

# SQLite caps bound parameters; keep IN lists well under it.
CHUNK = 400


class DossierEventRow(SQLModel, table=True):
    __tablename__ = "tracker_dossier_event"
    __table_args__ = (Index("ix_tracker_event_dossier", "dossier_code"),)

    # event_id first: the dedup lookup is `event_id IN (...)` on the key's prefix.
    event_id: str = Field(primary_key=True, max_length=256)
    source: str = Field(primary_key=True, max_length=256)
    dossier_code: str = Field(max_length=64)
    sequence: int | None = None
    status: int
    occurred_at: dt.datetime = Field(sa_type=UtcDateTime)
    agency_code: str = Field(max_length=64)
    procedure_code: str = Field(max_length=64)
    field_code: str = Field(max_length=64)
    received_at: dt.datetime | None = Field(default=None, sa_type=UtcDateTime)
    due_at: dt.datetime | None = Field(default=None, sa_type=UtcDateTime)
    duration_value: float | None = None
    duration_unit: str | None = Field(default=None, max_length=16)
    channel: int | None = None
    online_payment: bool | None = None
    digitized: bool | None = None
    synced_national: bool | None = None
    stream_seq: int | None = None
    recorded_at: dt.datetime = Field(sa_type=UtcDateTime)


class DossierRow(SQLModel, table=True):
    __tablename__ = "tracker_dossier"
    __table_args__ = (Index("ix_tracker_dossier_open", "is_open", "agency_code", "due_day"),)

    dossier_code: str = Field(primary_key=True, max_length=64)
    revision: int
    agency_code: str = Field(max_length=64)
    procedure_code: str = Field(max_length=64)
    field_code: str = Field(max_length=64)
    status: int
    counted: bool
    is_open: bool
    received_at: dt.datetime | None = Field(default=None, sa_type=UtcDateTime)
    receipt_day: dt.date | None = None
    due_day: dt.date | None = None
    due_from_source: bool = False
    paused: bool = False
    pause_started_on: dt.date | None = None
    supplement_requests: int = 0
    ended_on: dt.date | None = None
    end_status: int | None = None
    timeliness: str | None = Field(default=None, max_length=16)
    channel: int | None = None
    online_payment: bool | None = None
    digitized: bool | None = None
    synced_national: bool | None = None
    updated_at: dt.datetime = Field(sa_type=UtcDateTime)


class EndedCountRow(SQLModel, table=True):
    __tablename__ = "tracker_ended_count"

    agency_code: str = Field(primary_key=True, max_length=64)
    timeliness: str = Field(primary_key=True, max_length=16)
    count: int = 0


class SeenEventRow(SQLModel, table=True):
    """Ratings and plan reports already accepted (dedup on (source, id))."""

    __tablename__ = "tracker_seen_event"

    event_id: str = Field(primary_key=True, max_length=256)
    source: str = Field(primary_key=True, max_length=256)
    stream: str = Field(max_length=64)
    recorded_at: dt.datetime = Field(sa_type=UtcDateTime)


TABLES = [DossierEventRow.__table__, DossierRow.__table__, EndedCountRow.__table__, SeenEventRow.__table__]


def create_schema(engine: Engine) -> None:
    SQLModel.metadata.create_all(engine, tables=TABLES)


@dataclass(frozen=True)
class Incoming:
    event: RecordedEvent
    stream_seq: int | None


@dataclass(frozen=True)
class BatchResult:
    duplicate: list[bool]  # per incoming event, in order
    states: dict[str, DossierState]  # current state of every dossier the batch touched


def _chunks(items: Sequence[object], size: int = CHUNK) -> Iterable[Sequence[object]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


EVENT_FIELDS = tuple(RecordedEvent.__dataclass_fields__)
STATE_FIELDS = tuple(DossierState.__dataclass_fields__)
EVENTS = DossierEventRow.__table__
DOSSIERS = DossierRow.__table__
ENDED = EndedCountRow.__table__


def _upsert(dialect: str):  # type: ignore[no-untyped-def]
    return pg_insert if dialect == "postgresql" else sqlite_insert


class TrackerStore:
    """Batch writes go through SQLAlchemy Core (executemany): the ORM's
    per-object bookkeeping cost more than the database itself."""

    def __init__(self, engine: Engine, *, calendar: WorkingCalendar) -> None:
        self.engine = engine
        self.calendar = calendar
        self.dialect = engine.dialect.name
        self.statistics = StatisticsKeeper(engine, tables=[EVENTS.name, DOSSIERS.name])
        insert = _upsert(self.dialect)
        dossier_insert = insert(DOSSIERS)
        self._upsert_dossier = dossier_insert.on_conflict_do_update(
            index_elements=["dossier_code"],
            set_={c.name: dossier_insert.excluded[c.name] for c in DOSSIERS.columns if c.name != "dossier_code"},
        )
        count_insert = insert(ENDED)
        self._adjust_count = count_insert.on_conflict_do_update(
            index_elements=["agency_code", "timeliness"],
            set_={"count": ENDED.c["count"] + count_insert.excluded["count"]},
        )

    def apply_batch(self, batch: Sequence[Incoming], *, now: dt.datetime) -> BatchResult:
        """Record new events, re-derive the touched dossiers, adjust ended counts."""
        keys = [(i.event.source, i.event.event_id) for i in batch]
        with self.engine.begin() as conn:
            self._lock_dossiers(conn, sorted({i.event.dossier_code for i in batch}))
            seen = self._existing_keys(conn, keys)
            duplicate: list[bool] = []
            fresh: list[Incoming] = []
            for key, item in zip(keys, batch, strict=True):
                dup = key in seen
                duplicate.append(dup)
                if not dup:
                    seen.add(key)
                    fresh.append(item)
            if fresh:
                conn.execute(
                    EVENTS.insert(),
                    [
                        {f: getattr(i.event, f) for f in EVENT_FIELDS} | {"stream_seq": i.stream_seq, "recorded_at": now}
                        for i in fresh
                    ],
                )
            changed = sorted({i.event.dossier_code for i in fresh})
            states = self._rederive(conn, changed, now=now) if changed else {}
            unchanged = sorted({i.event.dossier_code for i in batch} - set(states))
            states.update(self._load_states(conn, unchanged))
        self.statistics.wrote(len(fresh))
        return BatchResult(duplicate=duplicate, states=states)

    def _lock_dossiers(self, conn: Connection, codes: list[str]) -> None:
        """Serialise work on the same dossier across tracker replicas (PostgreSQL).

        Transaction-scoped advisory locks taken in sorted order (no deadlock);
        after the lock, READ COMMITTED sees every event the previous holder
        committed, so re-deriving from the whole history stays correct. SQLite
        serialises writers by itself.
        """
        if self.dialect != "postgresql" or not codes:
            return
        conn.execute(
            text(
                "SELECT pg_advisory_xact_lock(h) FROM "
                "(SELECT DISTINCT hashtextextended(c, 146) AS h FROM unnest(CAST(:codes AS text[])) AS c ORDER BY h) s"
            ),
            {"codes": codes},
        )

    def _existing_keys(self, conn: Connection, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
        # A row-value IN list is not an index lookup on SQLite (it scans):
        # look up by the key's first column and match the source here.
        wanted = set(keys)
        found: set[tuple[str, str]] = set()
        ids = sorted({event_id for _, event_id in wanted})
        for part in _chunks(ids):
            rows = conn.execute(select(EVENTS.c.source, EVENTS.c.event_id).where(EVENTS.c.event_id.in_(part)))
            found.update(key for key in rows if key in wanted)
        return found

    def _rederive(self, conn: Connection, codes: list[str], *, now: dt.datetime) -> dict[str, DossierState]:
        history: dict[str, list[RecordedEvent]] = defaultdict(list)
        columns = [EVENTS.c[f] for f in EVENT_FIELDS]
        previous: dict[str, tuple[str, str | None]] = {}
        for part in _chunks(codes):
            for row in conn.execute(select(*columns).where(EVENTS.c.dossier_code.in_(part))):
                history[row.dossier_code].append(RecordedEvent(*row))
            stmt = select(DOSSIERS.c.dossier_code, DOSSIERS.c.agency_code, DOSSIERS.c.timeliness).where(
                DOSSIERS.c.dossier_code.in_(part)
            )
            previous.update((code, (agency, timeliness)) for code, agency, timeliness in conn.execute(stmt))
        delta: dict[tuple[str, str], int] = defaultdict(int)
        states: dict[str, DossierState] = {}
        rows = []
        for code in codes:
            state = derive_state(history[code], calendar=self.calendar)
            states[code] = state
            old_agency, old_timeliness = previous.get(code, (None, None))
            if old_agency and old_timeliness:
                delta[(old_agency, old_timeliness)] -= 1
            if state.counted and state.timeliness:
                delta[(state.agency_code, state.timeliness)] += 1
            rows.append({f: getattr(state, f) for f in STATE_FIELDS} | {"is_open": state.is_open, "updated_at": now})
        conn.execute(self._upsert_dossier, rows)
        changes = [
            {"agency_code": agency, "timeliness": timeliness, "count": n}
            for (agency, timeliness), n in sorted(delta.items())
            if n
        ]
        if changes:
            conn.execute(self._adjust_count, changes)
        return states

    def _load_states(self, conn: Connection, codes: list[str]) -> dict[str, DossierState]:
        out: dict[str, DossierState] = {}
        columns = [DOSSIERS.c[f] for f in STATE_FIELDS]
        for part in _chunks(codes):
            for row in conn.execute(select(*columns).where(DOSSIERS.c.dossier_code.in_(part))):
                out[row.dossier_code] = DossierState(*row)
        return out

    # -- ratings and plan reports -------------------------------------------------
    def record_seen(self, keys: Sequence[tuple[str, str, str]], *, now: dt.datetime) -> list[bool]:
        """Mark (source, id, stream) as seen; returns per key whether it was a duplicate."""
        with Session(self.engine) as session, session.begin():
            wanted = {(s, i) for s, i, _ in keys}
            seen: set[tuple[str, str]] = set()
            for part in _chunks(sorted({i for _, i in wanted})):
                rows = session.execute(
                    select(SeenEventRow.source, SeenEventRow.event_id).where(SeenEventRow.event_id.in_(part))
                )
                seen.update(key for key in rows if key in wanted)
            out = []
            for source, event_id, stream in keys:
                dup = (source, event_id) in seen
                out.append(dup)
                if not dup:
                    seen.add((source, event_id))
                    session.add(SeenEventRow(source=source, event_id=event_id, stream=stream, recorded_at=now))
        return out

    # -- read side (metrics) ------------------------------------------------------------
    def ended_counts(self) -> list[tuple[str, str, int]]:
        with Session(self.engine) as session:
            rows = session.execute(select(EndedCountRow.agency_code, EndedCountRow.timeliness, EndedCountRow.count))
            return [(a, t, c) for a, t, c in rows]

    def open_by_due_day(self) -> list[tuple[str, bool, dt.date | None, int]]:
        """Open dossiers grouped by (agency, paused, due day): small, index-backed."""
        with Session(self.engine) as session:
            stmt = (
                select(DossierRow.agency_code, DossierRow.paused, DossierRow.due_day, func.count())
                .where(DossierRow.is_open.is_(True))
                .group_by(DossierRow.agency_code, DossierRow.paused, DossierRow.due_day)
            )
            return [(a, p, d, n) for a, p, d, n in session.execute(stmt)]

    def get_state(self, code: str) -> DossierState | None:
        with self.engine.connect() as conn:
            return self._load_states(conn, [code]).get(code)

    def ping(self) -> bool:
        with Session(self.engine) as session:
            session.execute(select(1)).one()
        return True

