"""Storage of scoring: each record's last contribution and the aggregates it feeds.

Tables (all prefixed ``scoring_``):

* ``scoring_dossier``: the latest state snapshot of every dossier (highest
  revision wins), i.e. what it currently contributes;
* ``scoring_dossier_fact``: every snapshot of each dossier (its history, read
  by closed periods);
* ``scoring_rating``: the latest rating of every rated dossier (by
  ``rated_at``, ties by event id), the row a batch locks while it changes
  that dossier's ratings; ``scoring_rating_entry``: every rating (each
  period counts the latest made in it);
* ``scoring_plan_task``: the latest state of every plan-task occurrence;
* ``scoring_period_count``: additive counts per (period, agency, figure), for
  every month, quarter and year;
* ``scoring_open_count``: open dossiers per (agency, due day, mode), the
  small table the current on-time rate is read from;
* ``scoring_alert``: KPI alert state;
* ``scoring_outbox``: the alert events decided and not yet published (the
  shared outbox, :mod:`shared.outbox`), written in the transaction that
  updates the alert records;
* ``scoring_meta``: the first year whose figures the stored rows still hold
  in full (set by the retention), and the version of the contributions the
  aggregates were counted with (a new one rebuilds them at start).

Retention (:meth:`ScoringStore.prune`, :mod:`shared.retention`): the
figures (``scoring_period_count``) are kept; the rows they were counted
from go once they can no longer change a figure of a year still open to
recounting. With ``boundary`` the 1st of January of the year ``history``
ago: a dossier that ended before it (or never counted), and a rating made
before it, go once they have not changed for ``history`` (so their facts
have left the streams). All they contributed was to periods before that
year, whose cells stay as they are; ``rebuild`` recomputes the periods from
the boundary's year on and keeps the earlier ones. What a pruned row gave
that a figure does not keep (the review list of an old period, the open
dossiers at an old day) is no longer available. Alert records of past
periods are forgotten by the alert round itself; the open and task tables
do not grow with traffic.

A batch runs in one transaction: the stored rows it replaces are read with
``SELECT .. FOR UPDATE`` (in key order), the difference between old and new
contributions is applied with ``INSERT .. ON CONFLICT DO UPDATE SET n = n +
delta``, and the rows are written. Two replicas sharing one durable consumer
therefore never lose an update: the second waits for the first's row locks
and then sees its result; two first inserts of one key conflict and the
batch is retried (``is_conflict``). Readers only sum small tables.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import operator
import types
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import MISSING, dataclass, fields, replace
from typing import Any, TypeVar, get_args, get_type_hints

from sqlalchemy import (
    Column,
    Engine,
    Index,
    MetaData,
    String,
    Table,
    and_,
    bindparam,
    delete,
    func,
    insert,
    inspect,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Field, Session, SQLModel

from services.scoring.alerts import AlertRecord, Evaluation, Transition
from services.scoring.domain import (
    CONTRIBUTIONS_VERSION,
    CRITERIA,
    FOREVER,
    NO_DUE_DAY,
    SINCE_EVER,
    CellKey,
    DossierFacts,
    HistoryEntry,
    OpenKey,
    Period,
    RatingFacts,
    TaskFacts,
    dossier_history,
    history_contributions,
    is_overdue,
    open_key,
    open_mode,
    rating_contributions,
    rewritten,
    supersedes,
    task_contributions,
)
from shared.calendar import VN_TZ
from shared.db import BulkStatement, StatisticsKeeper, UtcDateTime, add_missing_columns, delete_chunk
from shared.outbox import Message, Outbox, outbox_table
from shared.retention import Retention

# SQLite caps bound parameters; keep statements well under it.
CHUNK = 400

Record = TypeVar("Record")


def _columns_of(facts: type, *, key: str | tuple[str, ...], lengths: Mapping[str, int]) -> type[SQLModel]:
    """A SQLModel base with one column per field of the dataclass ``facts``: same names, types, defaults, order.

    A table built on it stores the facts as the domain defines them. What a field's type does not say of its
    column: ``key``, the primary key (one column or several); ``lengths``, the string columns' lengths. Every
    instant is a ``UtcDateTime``.
    """
    hints = get_type_hints(facts)
    namespace: dict[str, Any] = {"__module__": __name__, "__annotations__": {}}
    for f in fields(facts):
        hint = namespace["__annotations__"][f.name] = hints[f.name]
        spec: dict[str, Any] = {"primary_key": True} if f.name in ((key,) if isinstance(key, str) else key) else {}
        if f.name in lengths:
            spec["max_length"] = lengths[f.name]
        if dt.datetime in (get_args(hint) or (hint,)):
            spec["sa_type"] = UtcDateTime
        if f.default is not MISSING:
            spec["default"] = f.default
        if f.default_factory is not MISSING:
            spec["default_factory"] = f.default_factory
        if spec:
            namespace[f.name] = Field(**spec)
    return types.new_class(f"{facts.__name__}Columns", (SQLModel,), exec_body=lambda ns: ns.update(namespace))


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


def _from_row(cls: type[Record], row: Any, **given: Any) -> Record:
    """The dataclass ``cls`` of a stored row: each field from the column of its name, but the ``given`` ones."""
    return cls(**{n: getattr(row, n) for n in _field_names(cls) if n not in given}, **given)


def _to_row(facts: Any, *, but: Collection[str] = (), **extra: Any) -> dict[str, object]:
    """The columns of a stored dataclass: each field under its name (but those in ``but``), then ``extra``."""
    return {n: getattr(facts, n) for n in _field_names(type(facts)) if n not in but} | extra


_DOSSIER_LENGTHS = {"dossier_code": 64, "agency_code": 64, "timeliness": 16, "field_code": 64}


class DossierRow(  # type: ignore[misc]
    _columns_of(DossierFacts, key="dossier_code", lengths=_DOSSIER_LENGTHS),
    table=True,
):
    """A dossier's facts (a column per field of DossierFacts) and when they were stored."""

    __tablename__ = "scoring_dossier"
    __table_args__ = (
        Index("ix_scoring_dossier_ended", "ended_on"),
        Index("ix_scoring_dossier_agency_ended", "agency_code", "ended_on"),
    )

    updated_at: dt.datetime = Field(sa_type=UtcDateTime)


class DossierFactRow(  # type: ignore[misc]
    _columns_of(DossierFacts, key=("dossier_code", "revision"), lengths=_DOSSIER_LENGTHS),
    table=True,
):
    """One snapshot of a dossier's history (a column per field of DossierFacts) and the days at whose end it was
    the dossier's state, ``valid_from <= day < valid_to`` (``domain.dossier_history``): closed periods read these."""

    __tablename__ = "scoring_dossier_fact"
    __table_args__ = (Index("ix_scoring_dossier_fact_ended", "ended_on"),)

    valid_from: dt.date
    valid_to: dt.date


class _RatingColumns(SQLModel):
    """A rating's columns: its criteria are ``c1`` .. ``c9`` (NULL: not answered)."""

    agency_code: str = Field(max_length=64)
    rated_at: dt.datetime = Field(sa_type=UtcDateTime)
    event_id: str = Field(max_length=256)
    overall: str = Field(max_length=16)
    recorded_at: dt.datetime | None = Field(default=None, sa_type=UtcDateTime)  # when stored (retention)
    c1: int | None = None
    c2: int | None = None
    c3: int | None = None
    c4: int | None = None
    c5: int | None = None
    c6: int | None = None
    c7: int | None = None
    c8: int | None = None
    c9: int | None = None


class RatingRow(_RatingColumns, table=True):
    """Each dossier's latest rating: the row a batch locks while it changes the dossier's ratings."""

    __tablename__ = "scoring_rating"

    dossier_code: str = Field(primary_key=True, max_length=64)


class RatingEntryRow(_RatingColumns, table=True):
    """Every rating of a dossier: each period counts the latest made in it (``domain.rating_contributions``)."""

    __tablename__ = "scoring_rating_entry"

    dossier_code: str = Field(primary_key=True, max_length=64)
    event_id: str = Field(primary_key=True, max_length=256)


class PlanTaskRow(SQLModel, table=True):
    __tablename__ = "scoring_plan_task"

    plan_id: str = Field(primary_key=True, max_length=64)
    task_id: str = Field(primary_key=True, max_length=64)
    agency_code: str = Field(primary_key=True, max_length=64)
    occurrence: str = Field(primary_key=True, max_length=16)
    due_day: dt.date
    state: str = Field(max_length=16)
    updated_at: dt.datetime = Field(sa_type=UtcDateTime)
    event_id: str = Field(max_length=256)
    done_on: dt.date | None = None


class PeriodCountRow(SQLModel, table=True):
    __tablename__ = "scoring_period_count"

    period: str = Field(primary_key=True, max_length=8)
    agency_code: str = Field(primary_key=True, max_length=64)
    figure: str = Field(primary_key=True, max_length=32)
    n: int = 0


class OpenCountRow(SQLModel, table=True):
    __tablename__ = "scoring_open_count"

    agency_code: str = Field(primary_key=True, max_length=64)
    due_day: dt.date = Field(primary_key=True)
    mode: int = Field(primary_key=True)
    n: int = 0


class MetaRow(SQLModel, table=True):
    __tablename__ = "scoring_meta"

    key: str = Field(primary_key=True, max_length=64)
    value: str = Field(max_length=256)


#: ``scoring_meta`` key: the first year whose periods the stored rows still hold in full (retention).
PRUNED_BEFORE = "pruned_before_year"
#: ``scoring_meta`` key: the ``CONTRIBUTIONS_VERSION`` the aggregates were counted with.
CONTRIBUTIONS = "contributions_version"


class AlertRow(  # type: ignore[misc]
    _columns_of(AlertRecord, key="alert_key", lengths={"alert_key": 256, "agency_code": 64, "kpi": 32, "period": 8}),
    table=True,
):
    """An alert record: a column per field of AlertRecord."""

    __tablename__ = "scoring_alert"


def _t(model: type[SQLModel]) -> Table:
    return model.__table__  # type: ignore[attr-defined,return-value]


DOSSIER = _t(DossierRow)
FACT = _t(DossierFactRow)
RATING = _t(RatingRow)
RATING_ENTRY = _t(RatingEntryRow)
TASK = _t(PlanTaskRow)
PERIOD_COUNT = _t(PeriodCountRow)
OPEN_COUNT = _t(OpenCountRow)
ALERT = _t(AlertRow)
META = _t(MetaRow)
TABLES = [DOSSIER, FACT, RATING, RATING_ENTRY, TASK, PERIOD_COUNT, OPEN_COUNT, ALERT, META]
AGGREGATES = [PERIOD_COUNT, OPEN_COUNT]
OUTBOX = outbox_table("scoring", SQLModel.metadata)

#: ``scoring_alert`` as versions before the shared outbox left it: a record kept its undelivered event.
_LEGACY_ALERT = Table(
    "scoring_alert",
    MetaData(),
    Column("alert_key", String(256), primary_key=True),
    Column("pending_type", String(64)),
    Column("pending_id", String(256)),
    Column("pending_summary", String(1000)),
    Column("pending_at", UtcDateTime),
)

#: One alert round's decision, taken on the locked records: what changes, and the messages to send.
Decide = Callable[[dict[str, AlertRecord]], tuple[Evaluation, Sequence[Message]]]


def create_schema(engine: Engine, *, now: dt.datetime | None = None) -> None:
    SQLModel.metadata.create_all(engine, tables=TABLES)
    # field_code, inter_agency, occurred_at: NULL (not known) in rows stored before; generation: 0 there
    for table in (DOSSIER, FACT):
        if "generation" in add_missing_columns(engine, table):
            with engine.begin() as conn:
                conn.execute(update(table).where(table.c.generation.is_(None)).values(generation=0))
    add_missing_columns(engine, TASK)  # done_on: NULL (a done state stands for every day) in rows stored before
    if "recorded_at" in add_missing_columns(engine, RATING):
        # Ratings stored before the column: stored by now at the latest, which is all the retention needs.
        with engine.begin() as conn:
            conn.execute(update(RATING).where(RATING.c.recorded_at.is_(None)).values(recorded_at=now or _wall_clock()))
    Outbox(engine, OUTBOX).create()
    ScoringStore(engine).recount_if_outdated()


def _wall_clock() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _chunks(items: Sequence[object], size: int = CHUNK) -> Iterator[Sequence[object]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@dataclass(frozen=True)
class DossierRef:
    """A dossier in the weekly review list: late (ended) or overdue (open)."""

    dossier_code: str
    agency_code: str
    receipt_day: dt.date | None
    due_day: dt.date | None
    ended_on: dt.date | None


#: A cell of the weekly review: (agency, field code or None, inter-agency, figure).
ReviewKey = tuple[str, str | None, bool, str]


@dataclass(frozen=True)
class RebuildResult:
    dossiers: int
    ratings: int
    tasks: int
    period_cells: int
    open_cells: int


class ScoringStore:
    """``clock`` stamps when a rating was stored (the retention's measure): the wall clock unless a test says."""

    def __init__(self, engine: Engine, *, clock: Callable[[], dt.datetime] = _wall_clock) -> None:
        self.engine = engine
        self.clock = clock
        self.dialect = engine.dialect.name
        self.statistics = StatisticsKeeper(
            engine, tables=["scoring_dossier", "scoring_rating_entry", "scoring_period_count", "scoring_open_count"]
        )
        self._bumps: dict[str, BulkStatement] = {}
        self.outbox = Outbox(engine, OUTBOX)

    # -- write side ----------------------------------------------------------------------
    def apply_states(self, states: Sequence[DossierFacts], *, now: dt.datetime) -> list[bool]:
        """Keep each dossier's highest revision, and every snapshot in its history; returns per item whether it
        changed the store (the latest state, or the state at the end of some past day)."""
        agencies: dict[str, set[str]] = defaultdict(set)  # every agency a dossier's snapshots named
        given: dict[str, dict[int, DossierFacts]] = defaultdict(dict)  # each dossier's snapshots, one per revision
        for f in states:
            agencies[f.dossier_code].add(f.agency_code)
            held = given[f.dossier_code].get(f.revision)
            if held is None or (f.generation or 0) > (held.generation or 0):  # told again in a later generation
                given[f.dossier_code][f.revision] = f
        best: dict[str, DossierFacts] = {}
        changed: set[str] = set()
        new_snapshots: set[tuple[str, int]] = set()  # (code, revision) of a snapshot that is a state at some day
        flagged: list[dict[str, object]] = []  # older snapshots that only tell of another agency
        with Session(self.engine) as session, session.begin():
            codes = sorted(given)
            old = {r.dossier_code: r for r in self._locked(session, DOSSIER, [DOSSIER.c.dossier_code], codes)}
            stored = self._histories(session, codes)
            cells: Counter[CellKey] = Counter()
            opens: Counter[OpenKey] = Counter()
            inserts: list[dict[str, object]] = []
            updates: list[dict[str, object]] = []
            fact_inserts: list[dict[str, object]] = []
            fact_updates: list[dict[str, object]] = []
            fact_deletes: list[tuple[str, int]] = []
            for code in codes:
                prev_row = old.get(code)
                history = stored.get(code, [])
                if not history and prev_row is not None:  # stored before scoring kept histories: its latest
                    history = [HistoryEntry(_from_row(DossierFacts, prev_row), SINCE_EVER, FOREVER)]
                    fact_inserts.append(_fact_row(history[0]))
                incoming = given[code]
                rewrites = [f for f in (*(e.facts for e in history), *incoming.values()) if f.rewrites_from]
                if rewrites:  # a history folded again: what follows from the one before it no longer stands
                    incoming = {r: f for r, f in incoming.items() if not rewritten(f, rewrites)}
                    if not incoming:
                        continue
                stored_at = {e.facts.revision: e for e in history}
                kept = [e for e in history if not rewritten(e.facts, rewrites)]
                known = {e.facts.revision: e for e in kept}
                fresh = [f for r, f in sorted(incoming.items()) if r not in known]
                if fresh or len(kept) < len(history):
                    grown = dossier_history([*(e.facts for e in kept), *fresh])
                    cells.subtract(history_contributions(history))
                    cells.update(history_contributions(grown))
                    for entry in grown:
                        was = stored_at.get(entry.facts.revision)
                        if was is None:
                            fact_inserts.append(_fact_row(entry))
                        elif was != entry:
                            fact_updates.append(_fact_row(entry))
                        if entry.facts.revision not in known and entry.ever_holds:
                            new_snapshots.add((code, entry.facts.revision))
                    told = {e.facts.revision for e in grown}
                    fact_deletes += [(code, r) for r in stored_at if r not in told]
                best[code] = max(incoming.values(), key=operator.attrgetter("revision"))
                new = _with_inter_agency(best[code], prev_row, agencies[code])
                if prev_row is not None and prev_row.revision >= new.revision:
                    if new.inter_agency and not prev_row.inter_agency:
                        flagged.append({"dossier_code": code, "inter_agency": True})
                    continue
                if prev_row is not None and (k := open_key(_from_row(DossierFacts, prev_row))) is not None:
                    opens[k] -= 1
                if (k := open_key(new)) is not None:
                    opens[k] += 1
                (inserts if prev_row is None else updates).append(_to_row(new, updated_at=now))
                changed.add(code)
            self._write_rows(session, DOSSIER, inserts=inserts, updates=updates, key=["dossier_code"])
            self._write_rows(session, DOSSIER, inserts=[], updates=flagged, key=["dossier_code"])
            self._write_rows(session, FACT, inserts=fact_inserts, updates=fact_updates,
                             key=["dossier_code", "revision"])
            if fact_deletes:
                cond = and_(FACT.c.dossier_code == bindparam("b_code"), FACT.c.revision == bindparam("b_revision"))
                session.execute(delete(FACT).where(cond), [{"b_code": c, "b_revision": r} for c, r in fact_deletes])
            self._bump(session, PERIOD_COUNT, cells, key=["period", "agency_code", "figure"])
            self._bump(session, OPEN_COUNT, opens, key=["agency_code", "due_day", "mode"])
        self.statistics.wrote(len(changed))
        seen: set[tuple[str, int]] = set()
        out: list[bool] = []
        for f in states:
            first = (f.dossier_code, f.revision) not in seen and given[f.dossier_code][f.revision] is f
            seen.add((f.dossier_code, f.revision))
            latest = f.dossier_code in changed and best.get(f.dossier_code) is f
            out.append(first and (latest or (f.dossier_code, f.revision) in new_snapshots))
        return out

    def _histories(self, session: Session, codes: Sequence[str]) -> dict[str, list[HistoryEntry]]:
        """The stored histories of ``codes`` (read under the lock their dossier rows hold), each by revision."""
        out: dict[str, list[HistoryEntry]] = defaultdict(list)
        for part in _chunks(list(codes)):
            stmt = select(FACT).where(FACT.c.dossier_code.in_(part)).order_by(FACT.c.dossier_code, FACT.c.revision)
            for row in session.execute(stmt):
                out[row.dossier_code].append(_history_entry(row))
        return out

    def apply_ratings(self, ratings: Sequence[RatingFacts]) -> list[bool]:
        """Keep every rating of each dossier, and its latest; returns per item whether it was new to the store."""
        now = self.clock()
        given: dict[str, dict[str, RatingFacts]] = defaultdict(dict)  # each dossier's ratings, one per event id
        for r in ratings:
            given[r.dossier_code].setdefault(r.event_id, r)
        new: set[tuple[str, str]] = set()
        with Session(self.engine) as session, session.begin():
            codes = sorted(given)
            latest = {r.dossier_code: r for r in self._locked(session, RATING, [RATING.c.dossier_code], codes)}
            stored = self._rating_histories(session, codes)
            cells: Counter[CellKey] = Counter()
            entries: list[dict[str, object]] = []
            inserts: list[dict[str, object]] = []
            updates: list[dict[str, object]] = []
            for code in codes:
                history = stored.get(code, [])
                known = {r.event_id for r in history}
                fresh = [r for event_id, r in given[code].items() if event_id not in known]
                if not fresh:
                    continue
                grown = [*history, *fresh]
                cells.subtract(rating_contributions(history))
                cells.update(rating_contributions(grown))
                entries += [_rating_row(r, now=now) for r in fresh]
                new.update((code, r.event_id) for r in fresh)
                best = max(grown, key=operator.attrgetter("order"))
                prev = latest.get(code)
                if prev is None:
                    inserts.append(_rating_row(best, now=now))
                elif best.event_id != prev.event_id:
                    updates.append(_rating_row(best, now=now))
            self._write_rows(session, RATING_ENTRY, inserts=entries, updates=[], key=["dossier_code", "event_id"])
            self._write_rows(session, RATING, inserts=inserts, updates=updates, key=["dossier_code"])
            self._bump(session, PERIOD_COUNT, cells, key=["period", "agency_code", "figure"])
        seen: set[tuple[str, str]] = set()
        out: list[bool] = []
        for r in ratings:
            key = (r.dossier_code, r.event_id)
            out.append(key in new and key not in seen)
            seen.add(key)
        return out

    def _rating_histories(self, session: Session, codes: Sequence[str]) -> dict[str, list[RatingFacts]]:
        """Every stored rating of ``codes`` (read under the lock their latest rating's rows hold)."""
        out: dict[str, list[RatingFacts]] = defaultdict(list)
        for part in _chunks(list(codes)):
            for row in session.execute(select(RATING_ENTRY).where(RATING_ENTRY.c.dossier_code.in_(part))):
                out[row.dossier_code].append(_rating_facts(row))
        return out

    def apply_tasks(self, tasks: Sequence[TaskFacts]) -> list[bool]:
        """Keep each plan-task occurrence's latest state (``supersedes``), and the counts it contributes; returns
        per item whether it changed the store."""
        key = ["plan_id", "task_id", "agency_code", "occurrence"]
        key_of = operator.attrgetter(*key)  # of a record or a row
        best: dict[Any, TaskFacts] = {}
        for task in tasks:
            if supersedes(task, best.get(key_of(task))):
                best[key_of(task)] = task
        changed: set[Any] = set()
        with Session(self.engine) as session, session.begin():
            keys = sorted(best)
            old = {key_of(r): r for r in self._locked(session, TASK, [TASK.c[k] for k in key], keys)}
            cells: Counter[CellKey] = Counter()
            inserts: list[dict[str, object]] = []
            updates: list[dict[str, object]] = []
            for k in keys:
                new = best[k]
                prev_row = old.get(k)
                prev = _from_row(TaskFacts, prev_row) if prev_row is not None else None
                if not supersedes(new, prev):
                    continue
                if prev is not None:
                    cells.subtract(task_contributions(prev))
                cells.update(task_contributions(new))
                (inserts if prev_row is None else updates).append(_to_row(new))
                changed.add(k)
            self._write_rows(session, TASK, inserts=inserts, updates=updates, key=key)
            self._bump(session, PERIOD_COUNT, cells, key=["period", "agency_code", "figure"])
        return [key_of(task) in changed and best[key_of(task)] is task for task in tasks]

    def _locked(self, session: Session, table: Table, key_cols: list, keys: Sequence[object]) -> list:
        """The stored rows of ``keys``, locked for this transaction (PostgreSQL), in key order."""
        rows: list = []
        col = key_cols[0] if len(key_cols) == 1 else tuple_(*key_cols)
        for part in _chunks(list(keys)):
            stmt = select(table).where(col.in_(part)).order_by(*key_cols).with_for_update()
            rows.extend(session.execute(stmt))
        return rows

    def _write_rows(
        self, session: Session, table: Table, *, inserts: list[dict[str, object]], updates: list[dict[str, object]],
        key: list[str],
    ) -> None:
        """Insert the new rows; update the stored ones, each found by its ``key`` columns."""
        for part in _chunks(inserts, 100):
            session.execute(insert(table), list(part))
        if updates:
            cond = and_(*(table.c[k] == bindparam(f"b_{k}") for k in key))
            found = [row | {f"b_{k}": row[k] for k in key} for row in updates]
            for part in _chunks(found, 100):
                session.execute(update(table).where(cond), list(part))

    def _insert(self):  # type: ignore[no-untyped-def]
        return pg_insert if self.dialect == "postgresql" else sqlite_insert

    def _bump(self, session: Session, table: Table, delta: Mapping[tuple, int], *, key: list[str]) -> None:
        """Add ``delta`` to the counts (atomic upserts, in key order), then drop cells that reached 0.

        One statement, compiled once per table, run through the driver's
        executemany: a multi-row VALUES statement was compiled again for
        every batch, half of what applying a batch of snapshots cost.
        """
        items = sorted((k, n) for k, n in delta.items() if n)
        if not items:
            return
        conn = session.connection()
        self._bump_statement(table, key).execute(conn, [(*k, n) for k, n in items])
        negatives = [dict(zip([f"k_{c}" for c in key], k, strict=True)) for k, n in items if n < 0]
        if negatives:
            cond = and_(*(table.c[c] == bindparam(f"k_{c}") for c in key), table.c.n == 0)
            for part in _chunks(negatives, 200):
                session.execute(delete(table).where(cond), list(part))

    def _bump_statement(self, table: Table, key: list[str]) -> BulkStatement:
        statement = self._bumps.get(table.name)
        if statement is None:
            upsert = self._insert()(table)
            upsert = upsert.on_conflict_do_update(index_elements=key, set_={"n": table.c.n + upsert.excluded.n})
            statement = self._bumps[table.name] = BulkStatement(upsert, [*key, "n"], self.engine.dialect)
        return statement

    # -- rebuild ---------------------------------------------------------------------------
    def rebuild(self) -> RebuildResult:
        """Recompute every aggregate from the stored dossiers (their histories), ratings and task states."""
        self.seed_histories()
        self.seed_rating_entries()
        with Session(self.engine) as session, session.begin():
            if self.dialect == "postgresql":
                session.execute(text("LOCK TABLE scoring_dossier, scoring_dossier_fact, scoring_rating_entry,"
                                     " scoring_plan_task IN SHARE MODE"))
                session.execute(text("LOCK TABLE scoring_period_count, scoring_open_count IN EXCLUSIVE MODE"))
            # Delete first: on SQLite this takes the write lock before anything is read. Periods before the
            # retention's boundary stay: the rows they were counted from are gone (module docstring).
            keep_before = self._pruned_before(session)
            if keep_before is None:
                session.execute(delete(PERIOD_COUNT))
            else:
                session.execute(delete(PERIOD_COUNT).where(PERIOD_COUNT.c.period >= keep_before))
            session.execute(delete(OPEN_COUNT))
            cells, opens, dossiers = self._recompute_dossiers(session)
            ratings = tasks = 0
            stmt = select(RATING_ENTRY).order_by(RATING_ENTRY.c.dossier_code).execution_options(yield_per=2000)
            for _, rows in itertools.groupby(session.execute(stmt), key=operator.attrgetter("dossier_code")):
                history = [_rating_facts(row) for row in rows]
                cells.update(rating_contributions(history))
                ratings += len(history)
            for row in session.execute(select(TASK)):
                cells.update(task_contributions(_from_row(TaskFacts, row)))
                tasks += 1
            period_rows = [
                {"period": p, "agency_code": a, "figure": f, "n": n}
                for (p, a, f), n in sorted(cells.items())
                if n and (keep_before is None or p >= keep_before)
            ]
            open_rows = [
                {"agency_code": a, "due_day": d, "mode": m, "n": n} for (a, d, m), n in sorted(opens.items()) if n
            ]
            for part in _chunks(period_rows, 2000):
                session.execute(insert(PERIOD_COUNT), list(part))
            for part in _chunks(open_rows, 2000):
                session.execute(insert(OPEN_COUNT), list(part))
        return RebuildResult(dossiers, ratings, tasks, len(period_rows), len(open_rows))

    def recount_if_outdated(self) -> RebuildResult | None:
        """At start: aggregates an older version counted with other contributions (``CONTRIBUTIONS_VERSION``)
        are rebuilt from the stored records, so a record's old contribution is never subtracted as its new one."""
        with self.engine.connect() as conn:
            found = conn.execute(select(META.c.value).where(META.c.key == CONTRIBUTIONS)).scalar_one_or_none()
        if found == CONTRIBUTIONS_VERSION:
            return None
        result = self.rebuild()
        with Session(self.engine) as session, session.begin():
            upsert = self._insert()(META).values(key=CONTRIBUTIONS, value=CONTRIBUTIONS_VERSION)
            session.execute(upsert.on_conflict_do_update(index_elements=["key"], set_={"value": CONTRIBUTIONS_VERSION}))
        return result

    def seed_histories(self) -> int:
        """Dossiers stored before scoring kept histories get one: their latest snapshot, standing for any past
        day (their closed periods count as before, from the latest state, until a new snapshot comes)."""
        names = [c.name for c in FACT.columns if c.name not in ("valid_from", "valid_to")]
        source = select(
            *(DOSSIER.c[n] for n in names),
            bindparam("since", SINCE_EVER, type_=FACT.c.valid_from.type),
            bindparam("until", FOREVER, type_=FACT.c.valid_to.type),
        ).where(~select(FACT.c.dossier_code).where(FACT.c.dossier_code == DOSSIER.c.dossier_code).exists())
        with self.engine.begin() as conn:
            return int(conn.execute(insert(FACT).from_select([*names, "valid_from", "valid_to"], source)).rowcount)

    def seed_rating_entries(self) -> int:
        """Ratings stored before scoring kept every rating: each dossier's latest becomes its first entry."""
        names = [c.name for c in RATING_ENTRY.columns]
        source = select(*(RATING.c[n] for n in names)).where(
            ~select(RATING_ENTRY.c.dossier_code).where(RATING_ENTRY.c.dossier_code == RATING.c.dossier_code).exists()
        )
        with self.engine.begin() as conn:
            return int(conn.execute(insert(RATING_ENTRY).from_select(names, source)).rowcount)

    @staticmethod
    def _pruned_before(session: Session) -> str | None:
        """The first period key (a year, ``"2026"``) the stored rows still count in full, if the retention ran."""
        found = session.execute(select(META.c.value).where(META.c.key == PRUNED_BEFORE)).scalar_one_or_none()
        return None if found is None else f"{int(found):04d}"

    # -- retention -------------------------------------------------------------------------
    def prune(self, retention: Retention, *, now: dt.datetime) -> dict[str, int]:
        """One bounded pass of the retention (module docstring): rows deleted, by table."""
        quiet_since = now - retention.history
        boundary = _year_start(quiet_since)
        midnight = dt.datetime.combine(boundary, dt.time(0), tzinfo=VN_TZ)
        counted_before = DOSSIER.c.counted.is_(True) & (DOSSIER.c.ended_on < boundary)
        old_dossier = (DOSSIER.c.updated_at < quiet_since) & (DOSSIER.c.counted.is_(False) | counted_before)
        old_rating = (RATING_ENTRY.c.recorded_at < quiet_since) & (RATING_ENTRY.c.rated_at < midnight)
        old_latest = (RATING.c.recorded_at < quiet_since) & (RATING.c.rated_at < midnight)  # its entries are older
        self._mark_pruned_before(boundary.year, dossiers=(DOSSIER.c.updated_at < quiet_since) & counted_before,
                                 ratings=old_rating)
        deleted = {DOSSIER.name: delete_chunk(self.engine, DOSSIER, old_dossier, limit=retention.chunk)}
        # A dossier's history goes with its row (those of dossiers pruned in an earlier pass too).
        orphan = ~select(DOSSIER.c.dossier_code).where(DOSSIER.c.dossier_code == FACT.c.dossier_code).exists()
        deleted[FACT.name] = delete_chunk(self.engine, FACT, orphan, limit=retention.chunk)
        deleted[RATING_ENTRY.name] = delete_chunk(self.engine, RATING_ENTRY, old_rating, limit=retention.chunk)
        deleted[RATING.name] = delete_chunk(self.engine, RATING, old_latest, limit=retention.chunk)
        return deleted

    def _mark_pruned_before(self, year: int, *, dossiers: Any, ratings: Any) -> None:
        """Before a row counted in a figure goes: from then on, ``rebuild`` leaves the periods before ``year``."""
        with Session(self.engine) as session, session.begin():
            known = self._pruned_before(session)
            if known is not None and int(known) >= year:
                return
            doomed = [select(DOSSIER.c.dossier_code).where(dossiers),
                      select(RATING_ENTRY.c.dossier_code).where(ratings)]
            if all(session.execute(q.limit(1)).first() is None for q in doomed):
                return
            upsert = self._insert()(META).values(key=PRUNED_BEFORE, value=str(year))
            session.execute(upsert.on_conflict_do_update(index_elements=["key"], set_={"value": str(year)}))

    def _recompute_dossiers(self, session: Session) -> tuple[Counter[CellKey], Counter[OpenKey], int]:
        """Dossiers grouped by everything their contribution depends on, so Python sees few rows."""
        cells: Counter[CellKey] = Counter()
        opens: Counter[OpenKey] = Counter()
        sig = [
            FACT.c.agency_code, FACT.c.counted, FACT.c.receipt_day, FACT.c.ended_on, FACT.c.timeliness,
            FACT.c.channel, FACT.c.online_payment, FACT.c.digitized, FACT.c.synced_national,
        ]
        # Dossiers whose history is one snapshot: grouped by what their contribution depends on (with the day the
        # snapshot took effect: a closed period before it does not count the dossier), so Python sees few rows.
        alone = (
            select(FACT.c.dossier_code).group_by(FACT.c.dossier_code).having(func.count() == 1).scalar_subquery()
        )
        total = 0
        stmt = select(*sig, FACT.c.valid_from, func.count()).where(FACT.c.dossier_code.in_(alone))
        for row in session.execute(stmt.group_by(*sig, FACT.c.valid_from)):
            *values, valid_from, n = row
            f = DossierFacts(dossier_code="", revision=0, **dict(zip([c.name for c in sig], values, strict=True)))
            cells.update(history_contributions([HistoryEntry(f, valid_from, FOREVER)], n))
            total += n
        # The others by their history: each period counts the dossier as it stood at the period's end.
        several = select(FACT.c.dossier_code).group_by(FACT.c.dossier_code).having(func.count() > 1).subquery()
        stmt = select(FACT).join(several, FACT.c.dossier_code == several.c.dossier_code).order_by(
            FACT.c.dossier_code, FACT.c.revision)
        history: list[HistoryEntry] = []
        for row in session.execute(stmt.execution_options(yield_per=2000)):
            if history and history[-1].facts.dossier_code != row.dossier_code:
                cells.update(history_contributions(history))
                total += 1
                history = []
            history.append(_history_entry(row))
        if history:
            cells.update(history_contributions(history))
            total += 1
        open_sig = [
            DOSSIER.c.agency_code, DOSSIER.c.due_day, DOSSIER.c.paused, DOSSIER.c.pause_started_on,
            DOSSIER.c.supplement_requests,
        ]
        stmt = (
            select(*open_sig, func.count())
            .where(DOSSIER.c.counted.is_(True), DOSSIER.c.ended_on.is_(None))
            .group_by(*open_sig)
        )
        for agency, due_day, paused, pause_started_on, supplements, n in session.execute(stmt):
            f = DossierFacts(
                dossier_code="", revision=0, agency_code=agency, counted=True, due_day=due_day, paused=paused,
                pause_started_on=pause_started_on, supplement_requests=supplements,
            )
            key = open_key(f)
            assert key is not None
            opens[key] += n
        return cells, opens, total

    # -- read side -------------------------------------------------------------------------
    def period_counts(self, periods: Iterable[str]) -> dict[str, dict[str, Counter[str]]]:
        """period key -> agency -> figure -> count (non-zero cells only)."""
        keys = sorted(set(periods))
        out: dict[str, dict[str, Counter[str]]] = {k: defaultdict(Counter) for k in keys}
        stmt = select(PERIOD_COUNT.c.period, PERIOD_COUNT.c.agency_code, PERIOD_COUNT.c.figure, PERIOD_COUNT.c.n).where(
            PERIOD_COUNT.c.period.in_(keys), PERIOD_COUNT.c.n != 0
        )
        with self.engine.connect() as conn:
            for period, agency, figure, n in conn.execute(stmt):
                out[period][agency][figure] = n
        return out

    def open_now(self, today: dt.date) -> dict[str, tuple[int, int]]:
        """agency -> (open dossiers, overdue among them) now: a sum over the small open table."""
        out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        stmt = select(OPEN_COUNT.c.agency_code, OPEN_COUNT.c.due_day, OPEN_COUNT.c.mode, OPEN_COUNT.c.n)
        with self.engine.connect() as conn:
            for agency, due_day, mode, n in conn.execute(stmt):
                out[agency][0] += n
                if is_overdue(due_day=None if due_day == NO_DUE_DAY else due_day, mode=mode, day=today):
                    out[agency][1] += n
        return {a: (n, o) for a, (n, o) in out.items() if n}

    def _open_at_rows(self, conn, day: dt.date, agencies: Sequence[str] | None, *, columns: list) -> Iterator:  # type: ignore[no-untyped-def]
        """Dossiers open at the end of ``day`` as they stood then: received by then, not ended by then."""
        base = [*_as_of(day), FACT.c.counted.is_(True), FACT.c.receipt_day <= day]
        if agencies is not None:
            base.append(FACT.c.agency_code.in_(agencies))
        for cond in (FACT.c.ended_on.is_(None), FACT.c.ended_on > day):
            yield from conn.execute(select(*columns).where(cond, *base))

    def open_at(self, day: dt.date) -> dict[str, tuple[int, int]]:
        """agency -> (open, overdue) at the end of a past ``day``, each dossier as it stood then (its history)."""
        cols = [
            FACT.c.agency_code, FACT.c.due_day, FACT.c.paused, FACT.c.pause_started_on,
            FACT.c.supplement_requests,
        ]
        out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        base = [*_as_of(day), FACT.c.counted.is_(True), FACT.c.receipt_day <= day]
        with self.engine.connect() as conn:
            for cond in (FACT.c.ended_on.is_(None), FACT.c.ended_on > day):
                stmt = select(*cols, func.count()).where(cond, *base).group_by(*cols)
                for agency, due_day, paused, pause_started_on, supplements, n in conn.execute(stmt):
                    mode = open_mode(paused=paused, pause_started_on=pause_started_on, due_day=due_day,
                                     supplement_requests=supplements, at=day)
                    out[agency][0] += n
                    if is_overdue(due_day=due_day, mode=mode, day=day):
                        out[agency][1] += n
        return {a: (v[0], v[1]) for a, v in out.items()}

    def review_list(
        self, *, agencies: Sequence[str] | None, period: Period, day: dt.date, current: bool, limit: int
    ) -> tuple[list[DossierRef], list[DossierRef]]:
        """Dossiers that ended late in ``period`` and those overdue at its end (``day``); a past period's as they
        stood at its end (their histories)."""
        t = DOSSIER if current else FACT
        cols = [t.c.dossier_code, t.c.agency_code, t.c.receipt_day, t.c.due_day, t.c.ended_on]
        late_stmt = (
            select(*cols)
            .where(
                t.c.ended_on >= period.start,
                t.c.ended_on <= min(period.end, day),
                t.c.timeliness == "late",
                t.c.counted.is_(True),
                *([] if current else _as_of(day)),
            )
            .order_by(t.c.ended_on, t.c.dossier_code)
            .limit(limit)
        )
        if agencies is not None:
            late_stmt = late_stmt.where(t.c.agency_code.in_(agencies))
        open_cols = [*cols, t.c.paused, t.c.pause_started_on, t.c.supplement_requests]
        overdue: list[DossierRef] = []
        with self.engine.connect() as conn:
            late = [DossierRef(*row) for row in conn.execute(late_stmt)]
            if current:
                cond = [DOSSIER.c.counted.is_(True), DOSSIER.c.ended_on.is_(None)]
                if agencies is not None:
                    cond.append(DOSSIER.c.agency_code.in_(agencies))
                rows: Iterable = conn.execute(select(*open_cols).where(*cond))
            else:
                rows = self._open_at_rows(conn, day, agencies, columns=open_cols)
            for code, agency, receipt_day, due_day, ended_on, paused, pause_started_on, supplements in rows:
                mode = open_mode(paused=paused, pause_started_on=pause_started_on, due_day=due_day,
                                 supplement_requests=supplements, at=None if current else day)
                if is_overdue(due_day=due_day, mode=mode, day=day):
                    overdue.append(DossierRef(code, agency, receipt_day, due_day, None if current else ended_on))
        overdue.sort(key=lambda r: (r.due_day or dt.date.max, r.dossier_code))
        return late, overdue[:limit]

    def review_counts(self, *, start: dt.date, end: dt.date, day: dt.date, current: bool) -> Counter[ReviewKey]:
        """(agency, field, inter-agency, figure) -> dossiers, for the review of ``start``..``end`` judged at
        ``day``: ``ended`` (with a due day) and ``ended_late`` in the span, ``open`` and ``overdue`` at ``day``.

        Grouped in the database, so Python sees one row per distinct combination, not per dossier. A past span's
        dossiers as they stood at its end (their histories).
        """
        out: Counter[ReviewKey] = Counter()
        t = DOSSIER if current else FACT
        as_of = [] if current else _as_of(day)
        who = [t.c.agency_code, t.c.field_code, t.c.inter_agency]
        ended = (
            select(*who, t.c.timeliness, func.count())
            .where(t.c.counted.is_(True), t.c.ended_on >= start, t.c.ended_on <= min(end, day),
                   t.c.timeliness.is_not(None), *as_of)
            .group_by(*who, t.c.timeliness)
        )
        clock = [t.c.due_day, t.c.paused, t.c.pause_started_on, t.c.supplement_requests]
        base = [t.c.counted.is_(True), *as_of] + ([] if current else [t.c.receipt_day <= day])
        open_conds = [t.c.ended_on.is_(None)] if current else [t.c.ended_on.is_(None), t.c.ended_on > day]
        with self.engine.connect() as conn:
            for agency, field_code, inter, timeliness, n in conn.execute(ended):
                out[(agency, field_code, bool(inter), "ended")] += n
                if timeliness == "late":
                    out[(agency, field_code, bool(inter), "ended_late")] += n
            for cond in open_conds:
                stmt = select(*who, *clock, func.count()).where(cond, *base).group_by(*who, *clock)
                for agency, field_code, inter, due_day, paused, pause_started_on, supplements, n in conn.execute(stmt):
                    mode = open_mode(paused=paused, pause_started_on=pause_started_on, due_day=due_day,
                                     supplement_requests=supplements, at=None if current else day)
                    out[(agency, field_code, bool(inter), "open")] += n
                    if is_overdue(due_day=due_day, mode=mode, day=day):
                        out[(agency, field_code, bool(inter), "overdue")] += n
        return out

    def known_agencies(self) -> set[str]:
        with self.engine.connect() as conn:
            found = set(conn.execute(select(PERIOD_COUNT.c.agency_code).distinct()).scalars())
            found |= set(conn.execute(select(OPEN_COUNT.c.agency_code).distinct()).scalars())
        return found

    def aggregates(self) -> tuple[dict[CellKey, int], dict[OpenKey, int]]:
        """Every non-zero aggregate cell (tests and rebuild checks)."""
        with self.engine.connect() as conn:
            cells = {(p, a, f): n for p, a, f, n in conn.execute(select(PERIOD_COUNT)) if n}
            opens = {(a, d, m): n for a, d, m, n in conn.execute(select(OPEN_COUNT)) if n}
        return cells, opens

    def ping(self) -> bool:
        with self.engine.connect() as conn:
            conn.execute(select(1)).one()
        return True

    # -- alerts ----------------------------------------------------------------------------
    def evaluate_alerts(self, decide: Decide, *, now: dt.datetime) -> Evaluation:
        """Run one alert round on the stored records, locked; store its result and its messages (outbox)."""
        with Session(self.engine) as session, session.begin():
            rows = session.execute(select(ALERT).order_by(ALERT.c.alert_key).with_for_update())
            records = {r.alert_key: _from_row(AlertRecord, r) for r in rows}
            result, messages = decide(records)
            for record in result.upserts:
                values = _to_row(record)
                if record.alert_key in records:
                    session.execute(update(ALERT).where(ALERT.c.alert_key == record.alert_key).values(values))
                else:
                    session.execute(insert(ALERT).values(values))
            if result.deletes:
                session.execute(delete(ALERT).where(ALERT.c.alert_key.in_(result.deletes)))
            self.outbox.add(session.connection(), messages, now=now)
        return result

    def alert_records(self) -> dict[str, AlertRecord]:
        with self.engine.connect() as conn:
            return {r.alert_key: _from_row(AlertRecord, r) for r in conn.execute(select(ALERT))}

    def adopt_legacy_pending(
        self, messages: Callable[[list[Transition]], Sequence[Message]], *, now: dt.datetime
    ) -> int:
        """Move the alert events an older version left undelivered in ``scoring_alert`` into the outbox.

        Before the shared outbox, each alert record kept its own undelivered
        event (``pending_*`` columns): those go to the outbox as they were
        decided (same event id), so an upgrade loses none. The columns stay,
        unused, in such databases.
        """
        if "pending_id" not in {c["name"] for c in inspect(self.engine).get_columns(ALERT.name)}:
            return 0
        legacy = _LEGACY_ALERT
        with Session(self.engine) as session, session.begin():
            stmt = select(legacy).where(legacy.c.pending_id.is_not(None)).order_by(legacy.c.alert_key)
            pending = session.execute(stmt.with_for_update()).all()
            keys = [r.alert_key for r in pending]
            if not keys:
                return 0
            rows = session.execute(select(ALERT).where(ALERT.c.alert_key.in_(keys)))
            records = {r.alert_key: _from_row(AlertRecord, r) for r in rows}
            found = [
                Transition(type=p.pending_type, event_id=p.pending_id, summary=p.pending_summary, at=p.pending_at,
                           record=records[p.alert_key])
                for p in pending
            ]
            self.outbox.add(session.connection(), messages(found), now=now)
            cleared = dict.fromkeys(["pending_type", "pending_id", "pending_summary", "pending_at"])
            session.execute(update(legacy).where(legacy.c.alert_key.in_(keys)).values(cleared))
        return len(keys)


def _with_inter_agency(new: DossierFacts, prev_row: Any, seen: set[str]) -> DossierFacts:
    """``new`` with its inter-agency flag: once set it stays; set when the stored snapshot or the batch's
    snapshots of the dossier named another agency than ``new`` does."""
    named = set(seen) | {new.agency_code}
    if prev_row is not None:
        named.add(prev_row.agency_code)
    return replace(new, inter_agency=bool(prev_row is not None and prev_row.inter_agency) or len(named) > 1)


def _as_of(day: dt.date) -> list[Any]:
    """The snapshots that were their dossier's state at the end of ``day`` (one per dossier at most)."""
    return [FACT.c.valid_from <= day, FACT.c.valid_to > day]


def _history_entry(row: Any) -> HistoryEntry:
    return HistoryEntry(_from_row(DossierFacts, row), row.valid_from, row.valid_to)


def _fact_row(entry: HistoryEntry) -> dict[str, object]:
    return _to_row(entry.facts, valid_from=entry.valid_from, valid_to=entry.valid_to)


def _rating_facts(row: Any) -> RatingFacts:
    """A stored rating: its criteria are columns ``c1`` .. ``c9`` (NULL: not answered)."""
    criteria = {cid: getattr(row, cid) for cid in CRITERIA if getattr(row, cid) is not None}
    return _from_row(RatingFacts, row, criteria=criteria)


def _rating_row(r: RatingFacts, *, now: dt.datetime) -> dict[str, object]:
    return _to_row(r, but={"criteria"}, recorded_at=now, **{cid: r.criteria.get(cid) for cid in CRITERIA})


def _year_start(moment: dt.datetime) -> dt.date:
    """The 1st of January, in Asia/Ho_Chi_Minh, of the year ``moment`` falls in there."""
    return dt.date(moment.astimezone(VN_TZ).year, 1, 1)

