"""Storage of dossier_tracker: event history, derived state, ended counts.

One transaction per batch holds the deduplication (the event's (source, id)
is the history table's primary key), the history insert, the new dossier
state and the ended-count adjustment, so a crash at any point leaves either
all of it or none. An event whose (source, id) is stored already is a
duplicate whatever it says: delivered again, its dossier's facts are told
again; if it names another dossier than the stored one (a source that used
an id twice), nothing of it is stored or told, and a warning says so (the
dossier it names, if stored, has its unchanged state told again, as any
touched dossier: harmless to readers, who keep the highest revision).

Each dossier row also keeps its :class:`Fold` (the ``fold_*`` columns): a
batch whose events for a dossier all sort after the last one applied is
folded onto the row without reading the history; an event that sorts
earlier, or a row written before the fold columns existed, folds the whole
stored history again.

Sequences (the source's ``sequence``, the stream sequence) are 64-bit
columns; an older PostgreSQL table is widened at start.

Retention (:meth:`TrackerStore.prune`): a dossier that ended, or never
counted, and has not changed for ``history`` is forgotten, its row and its
history together, so no dossier is ever left with part of its history; an
open dossier is kept whatever its age. Its events' (source, id) go with the
history: ``history`` is at least the input streams' retention, so the
stream can no longer deliver them again. An event that arrives later still
for a forgotten dossier starts it afresh. Seen ratings and plan reports are
forgotten after ``dedup``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import BigInteger, Connection, Engine, Index, func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Field, Session, SQLModel

from services.dossier_tracker.domain import FOLD_FIELDS, DossierState, Fold, RecordedEvent, order_events
from shared.calendar import WorkingCalendar
from shared.db import (
    BulkSelect,
    BulkStatement,
    Day,
    StatisticsKeeper,
    UtcDateTime,
    add_missing_columns,
    delete_chunk,
    delete_with_children,
    widen_to_bigint,
)
from shared.retention import Retention
from shared.rules import OpenFacts

log = logging.getLogger(__name__)

# SQLite caps bound parameters; keep IN lists well under it.
CHUNK = 400


class DossierEventRow(SQLModel, table=True):
    __tablename__ = "tracker_dossier_event"
    __table_args__ = (Index("ix_tracker_event_dossier", "dossier_code"),)

    # event_id first: the dedup lookup is `event_id IN (...)` on the key's prefix.
    event_id: str = Field(primary_key=True, max_length=256)
    source: str = Field(primary_key=True, max_length=256)
    dossier_code: str = Field(max_length=64)
    sequence: int | None = Field(default=None, sa_type=BigInteger)
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
    stream_seq: int | None = Field(default=None, sa_type=BigInteger)
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
    generation: int | None = None  # NULL only until create_schema sets 0 in rows stored before the column
    updated_at: dt.datetime = Field(sa_type=UtcDateTime)
    # The rest of the dossier's Fold (NULL fold_by_sequence: fold the history again).
    fold_by_sequence: bool | None = None
    fold_last_sequence: int | None = Field(default=None, sa_type=BigInteger)
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
    if "generation" in add_missing_columns(engine, DossierRow.__table__):
        with engine.begin() as conn:  # no history folded again yet
            conn.execute(DOSSIERS.update().where(DOSSIERS.c.generation.is_(None)).values(generation=0))
    # Databases from before 64-bit sequences (PostgreSQL).
    widen_to_bigint(engine, DossierEventRow.__table__)
    widen_to_bigint(engine, DossierRow.__table__)


@dataclass(frozen=True)
class BatchResult:
    duplicate: list[bool]  # per event, in order
    states: dict[str, DossierState]  # current state of every dossier the batch touched
    #: (state, day, latest occurrence) of a dossier as it stood at the end of a month the batch's events crossed
    month_ends: list[tuple[DossierState, dt.date, dt.datetime]] = field(default_factory=list)
    #: dossier -> the first revision its facts tell again (its history folded again from a late event, or a batch
    #: delivered again): what a consumer holds of that dossier from that revision on, of an earlier generation, is
    #: replaced by what this batch tells
    rewrites: dict[str, int] = field(default_factory=dict)
    #: dossier -> the latest occurrence in its whole history, for those told again (``rewrites``): their current
    #: state's event time, which the batch's own events may not reach (a late event)
    latest: dict[str, dt.datetime] = field(default_factory=dict)


EVENTS = DossierEventRow.__table__
DOSSIERS = DossierRow.__table__
ENDED = EndedCountRow.__table__
SEEN = SeenEventRow.__table__
#: The history row: the event's fields, where it was in its stream, when it was stored.
EVENT_COLUMNS = (*RecordedEvent._fields, "stream_seq", "recorded_at")
#: The dossier row: the state (and is_open), the time, the fold's running values.
FOLD_COLUMNS = {
    "fold_by_sequence": "by_sequence",
    "fold_last_sequence": "last_sequence",
    "fold_last_occurred_at": "last_occurred_at",
    "fold_last_source": "last_source",
    "fold_last_event_id": "last_event_id",
    "fold_paused_working_days": "paused_working_days",
    "fold_duration_value": "duration_value",
    "fold_duration_unit": "duration_unit",
}
DOSSIER_COLUMNS = (*DossierState._fields, "is_open", "updated_at", *FOLD_COLUMNS)


def _dossier_row(state: DossierState, fold: Fold, now: dt.datetime) -> tuple[object, ...]:
    return (*state, state.is_open, now, *(getattr(fold, f) for f in FOLD_COLUMNS.values()))


#: The Fold's values that the state columns of the row already hold under the same name.
_FOLD_IN_STATE = tuple(f for f in FOLD_FIELDS if f in DOSSIER_COLUMNS)


def _fold_of_row(row: dict[str, Any]) -> Fold | None:
    """The dossier's Fold from its row; None for a row written before the fold columns (fold the history)."""
    if row["fold_by_sequence"] is None:
        return None
    running = {f: row[c] for c, f in FOLD_COLUMNS.items()}
    running["paused_working_days"] = running["paused_working_days"] or 0
    return Fold(
        **{f: row[f] for f in _FOLD_IN_STATE},
        **running,
        count=row["revision"],
        source_due_day=row["due_day"] if row["due_from_source"] else None,
    )


def _told_again(
    code: str, history: Sequence[RecordedEvent], events: Sequence[RecordedEvent], *, rewrites: dict[str, int],
    latest: dict[str, dt.datetime],
) -> None:
    """A dossier whose facts a batch tells again from ``events`` (late ones, or ones delivered again) on: the
    revision of the first of them in the history's order (the lowest, if the batch tells it again twice), and
    the latest occurrence of the whole history (its current state's event time)."""
    keys = {(e.source, e.event_id) for e in events}
    first = next(i for i, e in enumerate(order_events(history), 1) if (e.source, e.event_id) in keys)
    rewrites[code] = min(rewrites.get(code, first), first)
    latest[code] = max(e.occurred_at for e in history)


def _upsert(dialect: str):  # type: ignore[no-untyped-def]
    return pg_insert if dialect == "postgresql" else sqlite_insert


class TrackerStore:
    """The tracker's tables. Batch writes go through SQLAlchemy Core (executemany): the ORM's
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
        self._select_keys = BulkSelect([EVENTS.c.source, EVENTS.c.event_id, EVENTS.c.dossier_code], EVENTS.c.event_id,
                                       engine.dialect)
        self._select_rows = BulkSelect(list(DOSSIERS.columns), DOSSIERS.c.dossier_code, engine.dialect)
        self._select_history = BulkSelect(
            [EVENTS.c[f] for f in RecordedEvent._fields], EVENTS.c.dossier_code, engine.dialect
        )
        count_insert = insert(ENDED)
        self._adjust_count = count_insert.on_conflict_do_update(
            index_elements=["agency_code", "timeliness"],
            set_={"count": ENDED.c["count"] + count_insert.excluded["count"]},
        )

    def apply_batch(
        self, events: Sequence[RecordedEvent], stream_seqs: Sequence[int | None], *, now: dt.datetime
    ) -> BatchResult:
        """Record new events, fold them onto the touched dossiers, adjust ended counts; one transaction."""
        keys = [(e.source, e.event_id) for e in events]
        touched = sorted({e.dossier_code for e in events})
        with self.engine.begin() as conn:
            self._lock_dossiers(conn, touched)
            seen = self._existing_keys(conn, keys)
            duplicate: list[bool] = []
            again: list[bool] = []  # delivered again: a duplicate of its own dossier's stored event
            fresh: list[RecordedEvent] = []
            rows: list[tuple[object, ...]] = []
            for key, event, seq in zip(keys, events, stream_seqs, strict=True):
                stored_under = seen.get(key)
                duplicate.append(stored_under is not None)
                again.append(stored_under == event.dossier_code)
                if stored_under is None:
                    seen[key] = event.dossier_code
                    fresh.append(event)
                    rows.append((*event, seq, now))
                elif stored_under != event.dossier_code:
                    log.warning("event id already used by its source for another dossier: a duplicate,"
                                " nothing of it stored seq=%s", seq)
            self._insert_event.execute(conn, rows)
            stored = self._load_rows(conn, touched)
            rewrites: dict[str, int] = {}
            latest: dict[str, dt.datetime] = {}
            states, month_ends = (self._fold(conn, fresh, stored, now=now, rewrites=rewrites, latest=latest)
                                  if fresh else ({}, []))
            month_ends += self._month_ends_again(conn, events, again, told=month_ends, states=states,
                                                 stored=stored, rewrites=rewrites, latest=latest)
            for code in touched:
                if code not in states and code in stored:  # not stored: its only event's id was another's
                    states[code] = DossierState(*(stored[code][f] for f in DossierState._fields))
        self.statistics.wrote(len(fresh))
        return BatchResult(duplicate=duplicate, states=states, month_ends=month_ends, rewrites=rewrites,
                           latest=latest)

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

    def _existing_keys(self, conn: Connection, keys: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """The keys already stored, each with the dossier its event was stored under."""
        # Looked up by the key's first column (a row-value IN list is not an
        # index lookup on SQLite), the source matched here.
        wanted = set(keys)
        rows = self._select_keys.fetch(conn, [event_id for _, event_id in wanted])
        return {(source, event_id): code for source, event_id, code in rows if (source, event_id) in wanted}

    def _fold(
        self, conn: Connection, fresh: list[RecordedEvent], stored: dict[str, dict[str, Any]], *, now: dt.datetime,
        rewrites: dict[str, int], latest: dict[str, dt.datetime],
    ) -> tuple[dict[str, DossierState], list[tuple[DossierState, dt.date, dt.datetime]]]:
        """The touched dossiers' new states, and their states at the end of each month their new events crossed.

        Events that extend the stored history are folded onto it. A late event that sorts before it folds the
        whole history again, in a new generation: the month ends from the late event's month on are told again,
        and ``rewrites`` gets the first revision that changed (docs/scoring.md, "Month ends")."""
        arrived: dict[str, list[RecordedEvent]] = defaultdict(list)
        for event in fresh:
            arrived[event.dossier_code].append(event)
        folds: dict[str, Fold] = {}
        month_ends: list[tuple[DossierState, dt.date, dt.datetime]] = []
        refold: list[str] = []
        for code, events in arrived.items():
            row = stored.get(code)
            fold = _fold_of_row(row) if row is not None else Fold()
            if fold is not None and fold.accepts(events):
                folds[code], ends = fold.extend_across_months(events, calendar=self.calendar)
                month_ends += [end.told(calendar=self.calendar) for end in ends]
            else:
                refold.append(code)
        if refold:
            for code, history in self._histories(conn, sorted(refold)).items():
                generation = (stored[code]["generation"] or 0) + 1
                folds[code] = Fold.of(history, calendar=self.calendar, generation=generation)
                _told_again(code, history, arrived[code], rewrites=rewrites, latest=latest)
                since = min(e.occurred_at for e in arrived[code])
                month_ends += [end.told(calendar=self.calendar) for end in Fold.month_ends_of(
                    history, calendar=self.calendar, since=since, generation=generation)]
        delta: dict[tuple[str, str], int] = defaultdict(int)
        states: dict[str, DossierState] = {}
        rows = []
        for code in sorted(folds):
            fold = folds[code]
            state = fold.state(calendar=self.calendar)
            states[code] = state
            old = stored.get(code)
            if old is not None and old["agency_code"] and old["timeliness"]:
                delta[(old["agency_code"], old["timeliness"])] -= 1
            if state.counted and state.timeliness:
                delta[(state.agency_code, state.timeliness)] += 1
            rows.append(_dossier_row(state, fold, now))
        self._upsert_dossier.execute(conn, rows)
        changes = [
            {"agency_code": agency, "timeliness": timeliness, "count": n}
            for (agency, timeliness), n in sorted(delta.items())
            if n
        ]
        if changes:
            conn.execute(self._adjust_count, changes)
        return states, month_ends

    def _month_ends_again(
        self, conn: Connection, events: Sequence[RecordedEvent], delivered_again: Sequence[bool],
        *, told: list[tuple[DossierState, dt.date, dt.datetime]], states: dict[str, DossierState],
        stored: dict[str, dict[str, Any]], rewrites: dict[str, int], latest: dict[str, dt.datetime],
    ) -> list[tuple[DossierState, dt.date, dt.datetime]]:
        """The month ends of the dossiers whose events came again (a batch stored, then its facts' publication
        failed or the tracker died: docs/scoring.md, "Month ends"), from their stored histories, but those
        ``told`` already. Telling one twice is harmless: a fact's id is its dossier, revision and generation.
        They are told as a rewrite from the earliest event that came again (``rewrites``): if the batch had
        folded the history again, what a consumer holds of the generation before is replaced."""
        again: dict[str, list[RecordedEvent]] = defaultdict(list)
        for event, repeated in zip(events, delivered_again, strict=True):
            if repeated:
                again[event.dossier_code].append(event)
        if not again:
            return []
        seen = {(state.dossier_code, day) for state, day, _ in told}
        out = []
        for code, history in self._histories(conn, sorted(again)).items():
            _told_again(code, history, again[code], rewrites=rewrites, latest=latest)
            # Its generation as this batch leaves it (a fold in this batch may have begun a new one).
            generation = states[code].generation if code in states else stored[code]["generation"] or 0
            since = min(e.occurred_at for e in again[code])
            for end in Fold.month_ends_of(history, calendar=self.calendar, since=since, generation=generation):
                if (code, end.day) not in seen:
                    out.append(end.told(calendar=self.calendar))
        return out

    def _histories(self, conn: Connection, codes: list[str]) -> dict[str, list[RecordedEvent]]:
        history: dict[str, list[RecordedEvent]] = defaultdict(list)
        for row in self._select_history.fetch(conn, codes):
            event = RecordedEvent(*row)
            history[event.dossier_code].append(event)
        return history

    def _load_rows(self, conn: Connection, codes: list[str]) -> dict[str, dict[str, Any]]:
        names = [c.name for c in DOSSIERS.columns]
        return {row[0]: dict(zip(names, row, strict=True)) for row in self._select_rows.fetch(conn, codes)}

    # -- ratings and plan reports -------------------------------------------------
    def record_seen(self, keys: Sequence[tuple[str, str, str]], *, now: dt.datetime) -> list[bool]:
        """Mark (source, id, stream) as seen; returns per key whether it was a duplicate."""
        with Session(self.engine) as session, session.begin():
            wanted = {(s, i) for s, i, _ in keys}
            seen: set[tuple[str, str]] = set()
            ids = sorted({i for _, i in wanted})
            for part in (ids[i : i + CHUNK] for i in range(0, len(ids), CHUNK)):
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

    # -- retention -----------------------------------------------------------------------
    def prune(self, retention: Retention, *, now: dt.datetime) -> dict[str, int]:
        """One bounded pass of the retention (module docstring): rows deleted, by table."""
        dossiers, events = self._forget_dossiers(before=now - retention.history, limit=retention.chunk)
        seen = delete_chunk(self.engine, SEEN, SEEN.c.recorded_at < now - retention.dedup, limit=retention.chunk)
        return {DOSSIERS.name: dossiers, EVENTS.name: events, SEEN.name: seen}

    def _forget_dossiers(self, *, before: dt.datetime, limit: int) -> tuple[int, int]:
        """Up to ``limit`` dossiers closed and unchanged since ``before``, with their history, in one transaction.

        The dossiers are locked as a batch locks them (PostgreSQL), and checked
        again under the lock: one a batch just changed stays.
        """
        stale = DOSSIERS.c.is_open.is_(False) & (DOSSIERS.c.updated_at < before)
        with self.engine.begin() as conn:
            codes = list(conn.execute(select(DOSSIERS.c.dossier_code).where(stale).limit(limit)).scalars())
            if not codes:
                return 0, 0
            self._lock_dossiers(conn, codes)
            return delete_with_children(conn, DOSSIERS.c.dossier_code, stale, children=[EVENTS.c.dossier_code],
                                        keys=codes, chunk=CHUNK)

    # -- read side (metrics) ------------------------------------------------------------
    def ended_counts(self) -> list[tuple[str, str, int]]:
        with Session(self.engine) as session:
            rows = session.execute(select(EndedCountRow.agency_code, EndedCountRow.timeliness, EndedCountRow.count))
            return [(a, t, c) for a, t, c in rows]

    def open_by_due_day(self) -> list[tuple[str, OpenFacts, int]]:
        """Open dossiers grouped by agency and what rule 6 reads of them (``shared.rules.OpenFacts``): small."""
        group = [DossierRow.agency_code, DossierRow.due_day, DossierRow.paused, DossierRow.pause_started_on,
                 DossierRow.supplement_requests]
        with Session(self.engine) as session:
            stmt = select(*group, func.count()).where(DossierRow.is_open.is_(True)).group_by(*group)
            return [(a, OpenFacts(d, p, s, r), n) for a, d, p, s, r, n in session.execute(stmt)]

    def get_state(self, code: str) -> DossierState | None:
        columns = [DOSSIERS.c[f] for f in DossierState._fields]
        with self.engine.connect() as conn:
            row = conn.execute(select(*columns).where(DOSSIERS.c.dossier_code == code)).first()
        return None if row is None else DossierState(*row)

    def ping(self) -> bool:
        with Session(self.engine) as session:
            session.execute(select(1)).one()
        return True

