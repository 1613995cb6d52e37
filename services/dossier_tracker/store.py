"""Storage of dossier_tracker: event history, derived state, ended counts.

One transaction per batch holds the deduplication (the event's (source, id)
is the history table's primary key), the history insert, the new dossier
state and the ended-count adjustment, so a crash at any point leaves either
all of it or none.

Each dossier row also keeps its :class:`Fold` (the ``fold_*`` columns): a
batch whose events for a dossier all sort after the last one applied is
folded onto the row without reading the history; an event that sorts
earlier, or a row written before the fold columns existed, folds the whole
stored history again.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import attrgetter

from sqlalchemy import Connection, Engine, Index, func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Field, Session, SQLModel

from services.dossier_tracker.domain import DossierState, Fold, RecordedEvent
from shared.calendar import WorkingCalendar
from shared.db import BulkSelect, BulkStatement, Day, StatisticsKeeper, UtcDateTime, add_missing_columns

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
    receipt_day: dt.date | None = Field(default=None, sa_type=Day)
    due_day: dt.date | None = Field(default=None, sa_type=Day)
    due_from_source: bool = False
    paused: bool = False
    pause_started_on: dt.date | None = Field(default=None, sa_type=Day)
    supplement_requests: int = 0
    ended_on: dt.date | None = Field(default=None, sa_type=Day)
    end_status: int | None = None
    timeliness: str | None = Field(default=None, max_length=16)
    channel: int | None = None
    online_payment: bool | None = None
    digitized: bool | None = None
    synced_national: bool | None = None
    updated_at: dt.datetime = Field(sa_type=UtcDateTime)
    # The rest of the dossier's Fold (NULL fold_by_sequence: fold the history again).
    fold_by_sequence: bool | None = None
    fold_last_sequence: int | None = None
    fold_last_occurred_at: dt.datetime | None = Field(default=None, sa_type=UtcDateTime)
    fold_last_source: str | None = Field(default=None, max_length=256)
    fold_last_event_id: str | None = Field(default=None, max_length=256)
    fold_paused_working_days: int | None = None
    fold_duration_value: float | None = None
    fold_duration_unit: str | None = Field(default=None, max_length=16)


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
    # Databases from before the fold columns: add them (NULL until the dossier's next event).
    add_missing_columns(engine, DossierRow.__table__)


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


EVENT_FIELDS = RecordedEvent._fields
STATE_FIELDS = DossierState._fields
EVENTS = DossierEventRow.__table__
DOSSIERS = DossierRow.__table__
ENDED = EndedCountRow.__table__
EVENT_COLUMNS = tuple(c.name for c in EVENTS.columns)
DOSSIER_COLUMNS = tuple(c.name for c in DOSSIERS.columns)


def _fold_of_row(row: dict[str, object]) -> Fold | None:
    """The dossier's Fold from its row; None for a row written before the fold columns."""
    if row["fold_by_sequence"] is None:
        return None
    return Fold(
        dossier_code=row["dossier_code"],  # type: ignore[arg-type]
        count=row["revision"],  # type: ignore[arg-type]
        by_sequence=row["fold_by_sequence"],  # type: ignore[arg-type]
        last_sequence=row["fold_last_sequence"],  # type: ignore[arg-type]
        last_occurred_at=row["fold_last_occurred_at"],  # type: ignore[arg-type]
        last_source=row["fold_last_source"],  # type: ignore[arg-type]
        last_event_id=row["fold_last_event_id"],  # type: ignore[arg-type]
        agency_code=row["agency_code"],  # type: ignore[arg-type]
        procedure_code=row["procedure_code"],  # type: ignore[arg-type]
        field_code=row["field_code"],  # type: ignore[arg-type]
        status=row["status"],  # type: ignore[arg-type]
        counted=row["counted"],  # type: ignore[arg-type]
        received_at=row["received_at"],  # type: ignore[arg-type]
        paused_working_days=row["fold_paused_working_days"] or 0,  # type: ignore[arg-type]
        pause_started_on=row["pause_started_on"],  # type: ignore[arg-type]
        supplement_requests=row["supplement_requests"],  # type: ignore[arg-type]
        ended_on=row["ended_on"],  # type: ignore[arg-type]
        end_status=row["end_status"],  # type: ignore[arg-type]
        source_due_day=row["due_day"] if row["due_from_source"] else None,  # type: ignore[arg-type]
        duration_value=row["fold_duration_value"],  # type: ignore[arg-type]
        duration_unit=row["fold_duration_unit"],  # type: ignore[arg-type]
        channel=row["channel"],  # type: ignore[arg-type]
        online_payment=row["online_payment"],  # type: ignore[arg-type]
        digitized=row["digitized"],  # type: ignore[arg-type]
        synced_national=row["synced_national"],  # type: ignore[arg-type]
    )


def _event_row(item: Incoming, now: dt.datetime) -> tuple[object, ...]:
    """A history row in EVENT_COLUMNS order (checked below)."""
    e = item.event
    return (
        e.event_id, e.source, e.dossier_code, e.sequence, e.status, e.occurred_at, e.agency_code, e.procedure_code,
        e.field_code, e.received_at, e.due_at, e.duration_value, e.duration_unit, e.channel, e.online_payment,
        e.digitized, e.synced_national, item.stream_seq, now,
    )


if EVENT_COLUMNS != ("event_id", "source", *EVENT_FIELDS[2:], "stream_seq", "recorded_at"):
    raise RuntimeError(f"_event_row does not follow the history table's columns {EVENT_COLUMNS}")


_FOLD_COLUMNS = {
    "fold_by_sequence": "by_sequence",
    "fold_last_sequence": "last_sequence",
    "fold_last_occurred_at": "last_occurred_at",
    "fold_last_source": "last_source",
    "fold_last_event_id": "last_event_id",
    "fold_paused_working_days": "paused_working_days",
    "fold_duration_value": "duration_value",
    "fold_duration_unit": "duration_unit",
}
_STATE_COLUMNS = DOSSIER_COLUMNS[: DOSSIER_COLUMNS.index("updated_at")]
if DOSSIER_COLUMNS != (*_STATE_COLUMNS, "updated_at", *_FOLD_COLUMNS) or set(_STATE_COLUMNS) != {
    *STATE_FIELDS,
    "is_open",
}:
    raise RuntimeError(f"_row_of does not follow the dossier table's columns {DOSSIER_COLUMNS}")
_state_values = attrgetter(*_STATE_COLUMNS)  # is_open is DossierState's property
_fold_values = attrgetter(*_FOLD_COLUMNS.values())


def _row_of(state: DossierState, fold: Fold, now: dt.datetime) -> tuple[object, ...]:
    """A dossier row in DOSSIER_COLUMNS order: the state, the time, the rest of the fold."""
    return (*_state_values(state), now, *_fold_values(fold))


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
        upsert = dossier_insert.on_conflict_do_update(
            index_elements=["dossier_code"],
            set_={c.name: dossier_insert.excluded[c.name] for c in DOSSIERS.columns if c.name != "dossier_code"},
        )
        self._upsert_dossier = BulkStatement(upsert, DOSSIER_COLUMNS, engine.dialect)
        self._insert_event = BulkStatement(EVENTS.insert(), EVENT_COLUMNS, engine.dialect)
        self._select_keys = BulkSelect(
            [EVENTS.c.source, EVENTS.c.event_id], EVENTS.c.event_id, engine.dialect, chunk=CHUNK
        )
        self._select_rows = BulkSelect(list(DOSSIERS.columns), DOSSIERS.c.dossier_code, engine.dialect, chunk=CHUNK)
        self._select_history = BulkSelect(
            [EVENTS.c[f] for f in EVENT_FIELDS], EVENTS.c.dossier_code, engine.dialect, chunk=CHUNK
        )
        count_insert = insert(ENDED)
        self._adjust_count = count_insert.on_conflict_do_update(
            index_elements=["agency_code", "timeliness"],
            set_={"count": ENDED.c["count"] + count_insert.excluded["count"]},
        )

    def apply_batch(self, batch: Sequence[Incoming], *, now: dt.datetime) -> BatchResult:
        """Record new events, fold them onto the touched dossiers, adjust ended counts."""
        keys = [(i.event.source, i.event.event_id) for i in batch]
        touched = sorted({i.event.dossier_code for i in batch})
        with self.engine.begin() as conn:
            self._lock_dossiers(conn, touched)
            seen = self._existing_keys(conn, keys)
            duplicate: list[bool] = []
            fresh: list[Incoming] = []
            for key, item in zip(keys, batch, strict=True):
                dup = key in seen
                duplicate.append(dup)
                if not dup:
                    seen.add(key)
                    fresh.append(item)
            self._insert_event.execute(conn, [_event_row(i, now) for i in fresh])
            stored = self._load_rows(conn, touched)
            states = self._fold(conn, fresh, stored, now=now) if fresh else {}
            for code in touched:
                if code not in states:
                    states[code] = DossierState(**{f: stored[code][f] for f in STATE_FIELDS})
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
        # Looked up by the key's first column (a row-value IN list is not an
        # index lookup on SQLite), the source matched here.
        wanted = set(keys)
        rows = self._select_keys.fetch(conn, sorted({event_id for _, event_id in wanted}))
        return {key for key in rows if key in wanted}

    def _fold(
        self, conn: Connection, fresh: list[Incoming], stored: dict[str, dict[str, object]], *, now: dt.datetime
    ) -> dict[str, DossierState]:
        arrived: dict[str, list[RecordedEvent]] = defaultdict(list)
        for item in fresh:
            arrived[item.event.dossier_code].append(item.event)
        folds: dict[str, Fold] = {}
        refold: list[str] = []
        for code, events in arrived.items():
            row = stored.get(code)
            fold = _fold_of_row(row) if row is not None else Fold()
            if fold is not None and fold.accepts(events):
                folds[code] = fold.extend(events, calendar=self.calendar)
            else:
                refold.append(code)
        if refold:
            for code, history in self._histories(conn, sorted(refold)).items():
                folds[code] = Fold.of(history, calendar=self.calendar)
        delta: dict[tuple[str, str], int] = defaultdict(int)
        states: dict[str, DossierState] = {}
        rows = []
        for code in sorted(folds):
            fold = folds[code]
            state = fold.state(calendar=self.calendar)
            states[code] = state
            old = stored.get(code)
            if old is not None and old["agency_code"] and old["timeliness"]:
                delta[(old["agency_code"], old["timeliness"])] -= 1  # type: ignore[index]
            if state.counted and state.timeliness:
                delta[(state.agency_code, state.timeliness)] += 1
            rows.append(_row_of(state, fold, now))
        self._upsert_dossier.execute(conn, rows)
        changes = [
            {"agency_code": agency, "timeliness": timeliness, "count": n}
            for (agency, timeliness), n in sorted(delta.items())
            if n
        ]
        if changes:
            conn.execute(self._adjust_count, changes)
        return states

    def _histories(self, conn: Connection, codes: list[str]) -> dict[str, list[RecordedEvent]]:
        history: dict[str, list[RecordedEvent]] = defaultdict(list)
        for row in self._select_history.fetch(conn, codes):
            event = RecordedEvent(*row)
            history[event.dossier_code].append(event)
        return history

    def _load_rows(self, conn: Connection, codes: list[str]) -> dict[str, dict[str, object]]:
        return {row[0]: dict(zip(DOSSIER_COLUMNS, row, strict=True)) for row in self._select_rows.fetch(conn, codes)}

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

