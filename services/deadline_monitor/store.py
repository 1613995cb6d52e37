"""Storage of the deadline monitor: dossiers, task occurrences, alert state, and its outbox.

All the monitor's SQL is here; no decision is taken and no CloudEvent built.
The service layer works through :meth:`MonitorStore.transaction`, a unit of
work (:class:`Work`): it reads rows, decides with :mod:`domain`, and hands back
what to write and the messages to send, which go into the shared outbox
(``monitor_outbox``, :mod:`shared.outbox`) in the same transaction. So an alert
row's transition and the event that announces it commit together or not at
all.

The tick never loads every open dossier. Each dossier row keeps
``tick_level``: the severity level already firing (0 none, 1 due soon,
2 apology due), or NULL when time can change nothing (ended, awaiting
supplement, no due day, already overdue). The tick reads, per level, the
rows of that level whose due day has reached the next kind's horizon
(``tick_level = :level AND due_day <= :horizon``, :meth:`Work.at_level`), an
index range scan on ``(tick_level, due_day)``: its cost follows the dossiers
that change, not the open ones. Task occurrences work the same way.

Retention (:meth:`MonitorStore.prune`, :mod:`shared.retention`): a dossier
that ended (or never counted) with no alert firing and unchanged for
``history`` is forgotten; a resolved alert goes ``max(dedup, history)``
after it resolved (its key dedups dead letters and its generation numbers
the events the notifier recognises); a plan report goes after the same
time once it no longer decides anything: it matched no occurrence, or a
later report that is not ``done`` reopened its occurrence after it
(:func:`~services.deadline_monitor.domain.done_on` ignores it). Task
occurrences are not pruned: they are as many as the plans make them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Index,
    Integer,
    Table,
    Text,
    bindparam,
    case,
    exists,
    func,
    inspect,
    or_,
    select,
    text,
    tuple_,
)
from sqlmodel import Field, Session, SQLModel

from services.deadline_monitor.domain import (
    FIRING,
    RESOLVED,
    DossierFacts,
    OccurrenceFacts,
    OccurrenceSpec,
    ReportFacts,
    field_values,
    from_attributes,
)
from shared.db import Record, Rows, StatisticsKeeper, UtcDateTime, delete_chunk
from shared.events import Alert, DossierStateChanged, PlanTaskReported
from shared.outbox import Message, Outbox, outbox_table
from shared.retention import Retention

log = logging.getLogger(__name__)

#: ``tick_level`` of a dossier stored while catching up and not settled yet.
UNSETTLED = -1
# SQLite caps bound parameters; keep IN lists well under it.
CHUNK = 400

OccurrenceKey = tuple[str, str, str, str]  # plan_id, task_id, agency_code, period


class MonitorDossierRow(SQLModel, table=True):
    """The latest snapshot of a dossier (highest revision) and its alert bookkeeping."""

    __tablename__ = "monitor_dossier"
    __table_args__ = (
        Index("ix_monitor_dossier_tick", "tick_level", "due_day"),
        Index("ix_monitor_dossier_open_due", "is_open", "due_day"),
    )

    dossier_code: str = Field(primary_key=True, max_length=64)
    revision: int
    agency_code: str = Field(max_length=64)
    procedure_code: str = Field(max_length=64)
    field_code: str = Field(max_length=64)
    is_open: bool
    due_day: dt.date | None = None
    paused: bool = False
    pause_started_on: dt.date | None = None
    supplement_requests: int = 0
    ended_on: dt.date | None = None
    firing: int = 0  # bits of DOSSIER_KINDS firing now
    tick_level: int | None = None  # UNSETTLED (-1) while catching up
    updated_at: dt.datetime = Field(sa_type=UtcDateTime)


class AlertRow(SQLModel, table=True):
    """One alert condition: fired once, resolved once per generation."""

    __tablename__ = "monitor_alert"
    __table_args__ = (
        Index("ix_monitor_alert_state_kind", "state", "kind"),
        Index("ix_monitor_alert_expires", "expires_at"),
    )

    alert_key: str = Field(primary_key=True, max_length=256)
    kind: str = Field(max_length=64)
    severity: str = Field(max_length=16)
    agency_code: str = Field(max_length=64)
    ref: str = Field(max_length=128)
    summary: str = Field(sa_type=Text)
    labels: str = Field(sa_type=Text)  # JSON object
    state: str = Field(max_length=16)
    generation: int = 1
    starts_at: dt.datetime = Field(sa_type=UtcDateTime)
    fired_at: dt.datetime = Field(sa_type=UtcDateTime)
    resolved_at: dt.datetime | None = Field(default=None, sa_type=UtcDateTime)
    expires_at: dt.datetime | None = Field(default=None, sa_type=UtcDateTime)


class OccurrenceRow(SQLModel, table=True):
    """One occurrence of a plan task for one owner agency. ``period`` is "" for a one-shot task."""

    __tablename__ = "monitor_occurrence"
    __table_args__ = (
        Index("ix_monitor_occurrence_tick", "tick_level", "due_day"),
        Index("ix_monitor_occurrence_due", "due_day"),
    )

    plan_id: str = Field(primary_key=True, max_length=64)
    task_id: str = Field(primary_key=True, max_length=64)
    agency_code: str = Field(primary_key=True, max_length=64)
    period: str = Field(primary_key=True, max_length=16)
    due_day: dt.date
    opens_on: dt.date
    done_on: dt.date | None = None
    state: str | None = Field(default=None, max_length=16)  # last published state
    fact_version: int = 0
    firing: int = 0  # bits of PLAN_KINDS firing now
    tick_level: int | None = 0
    updated_at: dt.datetime = Field(sa_type=UtcDateTime)


class PlanReportRow(SQLModel, table=True):
    """Every accepted plan report (dedup on (source, id)); ``occ_period`` is the occurrence it applies to."""

    __tablename__ = "monitor_plan_report"
    __table_args__ = (Index("ix_monitor_report_occurrence", "plan_id", "task_id", "agency_code", "occ_period"),)

    source: str = Field(primary_key=True, max_length=256)
    event_id: str = Field(primary_key=True, max_length=256)
    plan_id: str = Field(max_length=64)
    task_id: str = Field(max_length=64)
    agency_code: str = Field(max_length=64)
    period: str | None = Field(default=None, max_length=16)
    occ_period: str | None = Field(default=None, max_length=16)
    state: str = Field(max_length=16)
    reported_at: dt.datetime = Field(sa_type=UtcDateTime)
    recorded_at: dt.datetime = Field(sa_type=UtcDateTime)


#: The events committed with the transitions they announce (the one outbox, :mod:`shared.outbox`).
OUTBOX = outbox_table("monitor", SQLModel.metadata)

TABLES = [
    MonitorDossierRow.__table__,
    AlertRow.__table__,
    OccurrenceRow.__table__,
    PlanReportRow.__table__,
]


def create_schema(engine: Engine) -> None:
    """The tables; the events an older monitor left in its own outbox table move to the shared one."""
    Outbox(engine, OUTBOX).create()  # first: sets an older ``monitor_outbox`` aside as ``monitor_outbox_legacy``
    SQLModel.metadata.create_all(engine, tables=TABLES)
    _move_legacy_outbox(engine)


def _move_legacy_outbox(engine: Engine) -> None:
    """Events committed and not yet published by a monitor of the older layout: sent by the shared relay, in
    their order, with their ids (so none is lost and none is doubled by the upgrade)."""
    legacy = f"{OUTBOX.name}_legacy"
    if not inspect(engine).has_table(legacy):
        return
    with engine.begin() as conn:
        moved = conn.execute(
            text(
                f"INSERT INTO {OUTBOX.name} (topic, key, payload, message_id, created_at, attempts, next_attempt_at) "
                f"SELECT subject, ordering_key, payload, event_id, created_at, 0, created_at FROM {legacy} ORDER BY id"
            )
        ).rowcount
        conn.execute(text(f"DROP TABLE {legacy}"))
    log.warning("events of the older outbox table moved count=%d", moved)


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _wall_clock() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class OccurrenceView(OccurrenceSpec):
    """An occurrence as `parwatch plan show` prints it: as tracked, and the day it was done."""

    done_on: dt.date | None


def dossier_facts(row: Any) -> DossierFacts:
    return from_attributes(DossierFacts, row)


def occurrence_facts(row: Any) -> OccurrenceFacts:
    return from_attributes(OccurrenceFacts, row)


def occurrence_key_of(row: Any) -> OccurrenceKey:
    return (row.plan_id, row.task_id, row.agency_code, row.period)


def stored_alert(row: Any, *, ends_at: dt.datetime | None = None) -> Alert:
    """The alert an alert row holds (as it fired), ended at ``ends_at``."""
    return Alert(
        alert_key=row.alert_key,
        kind=row.kind,
        severity=row.severity,  # type: ignore[arg-type]
        agency_code=row.agency_code,
        ref=row.ref,
        summary=row.summary,
        starts_at=row.starts_at,
        ends_at=ends_at,
        labels=json.loads(row.labels),
    )


@dataclass(frozen=True)
class Ticked:
    """A table the tick reads by ``(tick_level, due_day)``, earliest due first."""

    table: Table

    @functools.cached_property
    def read(self) -> Any:
        c = self.table.c
        return (
            select(self.table)
            .where(c.tick_level == bindparam("level"), c.due_day <= bindparam("bound"))
            .order_by(c.due_day)
            .limit(bindparam("budget", type_=Integer))
            .with_for_update(skip_locked=True)
        )


DOSSIERS = Ticked(MonitorDossierRow.__table__)  # type: ignore[arg-type]
OCCURRENCES = Ticked(OccurrenceRow.__table__)  # type: ignore[arg-type]


class Work:
    """One transaction of the service layer: the rows it reads and writes, the messages it sends.

    Rows handed out are :class:`~shared.db.Record` objects, one per row in the
    transaction (:class:`~shared.db.Rows`): what the service layer sets on them
    is written at :meth:`flush` or at the commit, each table with one
    executemany per kind of write. A query does not see changes not flushed
    yet: the service layer flushes before one that must (a tick step, before
    the next step reads).

    Replicas (PostgreSQL): every row read to be changed is locked until the
    commit (``SELECT ... FOR UPDATE``, in key order, so two transactions
    wanting the same rows take them one after the other and the second reads
    what the first wrote); the tick's reads skip rows another replica holds
    (``SKIP LOCKED``), so two ticks share the work instead of doing it twice.
    A new row both insert is a unique-key conflict: the loser's transaction
    is retried (``shared.db.is_conflict``) and finds the row. SQLite has one
    writer (``shared.service.SingleWriter``) and ignores the clauses.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.dossier_rows = Rows(MonitorDossierRow.__table__)  # type: ignore[arg-type]
        self.alert_rows = Rows(AlertRow.__table__)  # type: ignore[arg-type]
        self.occurrence_rows = Rows(OccurrenceRow.__table__)  # type: ignore[arg-type]
        self.report_rows = Rows(PlanReportRow.__table__)  # type: ignore[arg-type]
        self.messages: list[Message] = []
        self.dossiers_written = 0

    @property
    def sent(self) -> int:
        return len(self.messages)

    def send(self, messages: Iterable[Message]) -> None:
        """Messages for the outbox, committed with this transaction."""
        self.messages.extend(messages)

    def flush(self) -> None:
        """Write the rows changed so far (the queries after it see them)."""
        for rows in (self.dossier_rows, self.alert_rows, self.occurrence_rows, self.report_rows):
            rows.flush(self.conn)

    def _load(self, rows: Rows, stmt: Any, params: dict[str, Any] | None = None) -> list[Record]:
        return rows.load(self.conn, stmt, params)

    def _by_keys(self, rows: Rows, column: Any, keys: Iterable[Any]) -> list[Record]:
        found: list[Record] = []
        for part in _chunks(sorted(set(keys))):
            found += self._load(rows, select(rows.table).where(column.in_(part)).order_by(column).with_for_update())
        return found

    # -- dossiers -----------------------------------------------------------------------------------
    def dossiers(self, codes: Iterable[str]) -> dict[str, Record]:
        table = DOSSIERS.table
        return {r.dossier_code: r for r in self._by_keys(self.dossier_rows, table.c.dossier_code, codes)}

    def save_dossier(self, state: DossierStateChanged, row: Record | None, *, is_open: bool, now: dt.datetime) -> Record:
        """A dossier's row with ``state`` (new, or ``row`` updated); its alert bookkeeping is the caller's."""
        values = {
            "revision": state.revision,
            "agency_code": state.agency_code,
            "procedure_code": state.procedure_code,
            "field_code": state.field_code,
            "is_open": is_open,
            "due_day": state.due_day,
            "paused": state.paused,
            "pause_started_on": state.pause_started_on,
            "supplement_requests": state.supplement_requests,
            "ended_on": state.ended_on,
            "updated_at": now,
        }
        self.dossiers_written += 1
        if row is None:
            return self.dossier_rows.add(
                {"dossier_code": state.dossier_code, "firing": 0, "tick_level": None, **values}
            )
        vars(row).update(values)
        return row

    # -- what the tick reads ----------------------------------------------------------------------------
    def at_level(self, ticked: Ticked, *, level: int, bound: dt.date, limit: int) -> list[Record]:
        """Up to ``limit`` rows at ``level`` whose due day reached ``bound``, earliest due first."""
        rows = self.dossier_rows if ticked is DOSSIERS else self.occurrence_rows
        return self._load(rows, ticked.read, {"level": level, "bound": bound, "budget": limit})

    def unsettled(self, *, limit: int) -> list[Record]:
        """Up to ``limit`` dossiers stored while catching up and not settled yet."""
        table = DOSSIERS.table
        stmt = select(table).where(table.c.tick_level == UNSETTLED).limit(limit).with_for_update(skip_locked=True)
        return self._load(self.dossier_rows, stmt)

    def any_unsettled(self) -> bool:
        """Whether a dossier stored while catching up waits to be settled (whoever holds it)."""
        table = DOSSIERS.table
        stmt = select(table.c.dossier_code).where(table.c.tick_level == UNSETTLED).limit(1)
        return self.conn.execute(stmt).first() is not None

    def live_occurrences(self, plan_ids: Sequence[str], *, limit: int) -> list[Record]:
        """Up to ``limit`` occurrences of these plans still firing or watched (the closing plans' last settling)."""
        c = OCCURRENCES.table.c
        stmt = (
            select(OCCURRENCES.table)
            .where(c.plan_id.in_(list(plan_ids)), or_(c.firing != 0, c.tick_level.is_not(None)))
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return self._load(self.occurrence_rows, stmt)

    # -- alerts -------------------------------------------------------------------------------------
    def alerts(self, keys: Iterable[str]) -> dict[str, Record]:
        table = AlertRow.__table__
        return {r.alert_key: r for r in self._by_keys(self.alert_rows, table.c.alert_key, keys)}  # type: ignore[attr-defined]

    def save_firing(
        self,
        alert: Alert,
        row: Record | None,
        *,
        generation: int,
        now: dt.datetime,
        expires_at: dt.datetime | None = None,
    ) -> None:
        """``alert`` firing from ``now`` in its ``generation`` (a new row, or ``row`` fired again)."""
        values = {
            "kind": alert.kind,
            "severity": alert.severity,
            "agency_code": alert.agency_code,
            "ref": alert.ref,
            "summary": alert.summary,
            "labels": json.dumps(alert.labels, ensure_ascii=False, sort_keys=True),
            "state": FIRING,
            "generation": generation,
            "starts_at": alert.starts_at,
            "fired_at": now,
            "resolved_at": None,
            "expires_at": expires_at,
        }
        if row is None:
            self.alert_rows.add({"alert_key": alert.alert_key, **values})
        else:
            vars(row).update(values)

    def save_resolved(self, row: Record, *, now: dt.datetime) -> None:
        row.state = RESOLVED
        row.resolved_at = now
        row.expires_at = None

    def expiring(self, *, now: dt.datetime, limit: int) -> list[Record]:
        """Up to ``limit`` alerts whose ``expires_at`` has come, earliest first."""
        a = AlertRow.__table__.c  # type: ignore[attr-defined]
        stmt = (
            select(AlertRow.__table__)
            .where(a.expires_at <= now)
            .order_by(a.expires_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return self._load(self.alert_rows, stmt)

    # -- plan occurrences -----------------------------------------------------------------------------
    def occurrences(self) -> dict[OccurrenceKey, Record]:
        table = OCCURRENCES.table
        stmt = select(table).order_by(*table.primary_key.columns).with_for_update()
        return {occurrence_key_of(r): r for r in self._load(self.occurrence_rows, stmt)}

    def occurrence(self, key: OccurrenceKey) -> Record | None:
        return self.occurrence_rows.get(self.conn, key, for_update=True)

    def unpublished_occurrences(self) -> list[Record]:
        """Occurrences whose state was never published (tracked since the last commit)."""
        table = OCCURRENCES.table
        return self._load(self.occurrence_rows, select(table).where(table.c.state.is_(None)).with_for_update())

    def add_occurrence(self, spec: OccurrenceSpec, *, now: dt.datetime) -> None:
        self.occurrence_rows.add(OccurrenceRow(**field_values(spec), tick_level=0, updated_at=now).model_dump())

    def delete_occurrences(self, rows: Iterable[Record]) -> None:
        for row in rows:
            self.occurrence_rows.delete(row)

    # -- plan reports -------------------------------------------------------------------------------------
    def seen_reports(self, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """The (source, id) among ``keys`` already stored."""
        seen: set[tuple[str, str]] = set()
        cols = tuple_(PlanReportRow.source, PlanReportRow.event_id)
        for part in _chunks(sorted(set(keys))):
            stmt = select(PlanReportRow.source, PlanReportRow.event_id).where(cols.in_(part))
            seen.update((s, i) for s, i in self.conn.execute(stmt))
        return seen

    def add_report(
        self, source: str, event_id: str, report: PlanTaskReported, *, occ_period: str | None, now: dt.datetime
    ) -> None:
        self.report_rows.add(
            {
                "source": source,
                "event_id": event_id,
                "plan_id": report.plan_id,
                "task_id": report.task_id,
                "agency_code": report.agency_code,
                "period": report.period,
                "occ_period": occ_period,
                "state": report.state,
                "reported_at": report.reported_at,
                "recorded_at": now,
            }
        )

    def reports_of(self, key: OccurrenceKey) -> list[ReportFacts]:
        """The reports that apply to one occurrence (as flushed)."""
        r = PlanReportRow
        plan_id, task_id, agency_code, period = key
        stmt = select(PlanReportRow.__table__).where(
            r.plan_id == plan_id, r.task_id == task_id, r.agency_code == agency_code, r.occ_period == period
        )
        return [_report_facts(row) for row in self._load(self.report_rows, stmt)]

    def plan_reports(self, plan_ids: Iterable[str]) -> list[Record]:
        """Every stored report of these plans (records: a changed ``occ_period`` is written at the commit)."""
        table = PlanReportRow.__table__
        return self._by_keys(self.report_rows, table.c.plan_id, plan_ids)  # type: ignore[attr-defined]

    def reports_by_occurrence(self, plan_ids: Iterable[str]) -> dict[OccurrenceKey, list[ReportFacts]]:
        """The reports of these plans that apply to an occurrence, by occurrence (as flushed)."""
        out: dict[OccurrenceKey, list[ReportFacts]] = defaultdict(list)
        for r in self.plan_reports(plan_ids):
            if r.occ_period is not None:
                out[(r.plan_id, r.task_id, r.agency_code, r.occ_period)].append(_report_facts(r))
        return out

    # -- at the commit ------------------------------------------------------------------------------------
    def _write_buffers(self, outbox: Outbox, *, now: dt.datetime) -> None:
        self.flush()
        outbox.add(self.conn, self.messages, now=now)


def _reopened_after(report: Table) -> ColumnElement[bool]:
    """A report of the same occurrence, not ``done``, made strictly later: it decides, the earlier one no longer."""
    later = report.alias("later")
    c = report.c
    return exists().where(
        later.c.plan_id == c.plan_id,
        later.c.task_id == c.task_id,
        later.c.agency_code == c.agency_code,
        later.c.occ_period == c.occ_period,
        later.c.state != "done",
        later.c.reported_at > c.reported_at,
    )


def _report_facts(row: Any) -> ReportFacts:
    return from_attributes(ReportFacts, row)


class MonitorStore:
    """The monitor's database. ``clock`` times the outbox's bookkeeping (when a message was written and is
    due): the wall clock, whatever clock the service layer decides with, so that a retry waits real seconds."""

    def __init__(self, engine: Engine, *, clock: Callable[[], dt.datetime] = _wall_clock) -> None:
        self.engine = engine
        self.clock = clock
        self.outbox = Outbox(engine, OUTBOX)
        self.statistics = StatisticsKeeper(engine, tables=["monitor_dossier", "monitor_alert", OUTBOX.name])

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Work]:
        """One transaction: what the block did through the :class:`Work`, with its messages, commits at its end."""
        with self.engine.begin() as conn:
            work = Work(conn)
            yield work
            work._write_buffers(self.outbox, now=self.clock())
        self.statistics.wrote(work.dossiers_written)

    # -- read side (metrics, CLI, tests) ----------------------------------------------------------------
    def _get(self, model: type[SQLModel], key: Any) -> Any:
        with Session(self.engine) as session:
            row = session.get(model, key)
            if row is not None:
                session.expunge(row)
            return row

    def get_dossier(self, code: str) -> MonitorDossierRow | None:
        return self._get(MonitorDossierRow, code)

    def get_alert(self, key: str) -> AlertRow | None:
        return self._get(AlertRow, key)

    def get_occurrence(self, key: OccurrenceKey) -> OccurrenceRow | None:
        return self._get(OccurrenceRow, key)

    def outbox_size(self) -> int:
        return self.outbox.size()

    # -- retention -------------------------------------------------------------------------------------------------
    def prune(self, retention: Retention, *, now: dt.datetime) -> dict[str, int]:
        """One bounded pass of the retention (module docstring): rows deleted, by table."""
        d, a, r = MonitorDossierRow.__table__, AlertRow.__table__, PlanReportRow.__table__
        forgotten_dossier = (
            d.c.is_open.is_(False) & (d.c.firing == 0) & d.c.tick_level.is_(None)
            & (d.c.updated_at < now - retention.history)
        )
        old_alert = (a.c.state == RESOLVED) & (a.c.resolved_at < now - retention.keys)
        old_report = (r.c.recorded_at < now - retention.keys) & (r.c.occ_period.is_(None) | _reopened_after(r))
        return {
            table.name: delete_chunk(self.engine, table, where, limit=retention.chunk)  # type: ignore[arg-type]
            for table, where in ((d, forgotten_dossier), (a, old_alert), (r, old_report))
        }

    def plan_task_counts(
        self, today: dt.date, *, plan_ids: Sequence[str] | None = None
    ) -> list[tuple[str, str, int]]:
        """(agency, state, count) of the occurrences open on ``today`` or done, states as of ``today``; only those
        of ``plan_ids`` when given (the plans in force: a closed plan's occurrences are left out)."""
        o = OccurrenceRow
        state = case(
            (o.done_on.is_not(None) & (o.done_on <= o.due_day), "done"),
            (o.done_on.is_not(None), "done_late"),
            (o.due_day < today, "overdue"),
            else_="open",
        ).label("state")
        stmt = (
            select(o.agency_code, state, func.count())
            .where(or_(o.opens_on <= today, o.done_on.is_not(None)))
            .group_by(o.agency_code, state)
        )
        if plan_ids is not None:
            stmt = stmt.where(o.plan_id.in_(list(plan_ids)))
        with Session(self.engine) as session:
            return [(a, s, int(n)) for a, s, n in session.execute(stmt)]

    def tracked_agencies(self) -> list[str]:
        with Session(self.engine) as session:
            return list(session.execute(select(OccurrenceRow.agency_code).distinct()).scalars())

    def firing_counts(self) -> dict[str, int]:
        stmt = select(AlertRow.kind, func.count()).where(AlertRow.state == FIRING).group_by(AlertRow.kind)
        with Session(self.engine) as session:
            return {k: int(n) for k, n in session.execute(stmt)}

    def occurrences_between(
        self, start: dt.date, end: dt.date, *, agency: str | None = None, plan_id: str | None = None
    ) -> list[OccurrenceView]:
        o = OccurrenceRow
        stmt = select(o.plan_id, o.task_id, o.agency_code, o.period, o.due_day, o.opens_on, o.done_on).where(
            o.due_day >= start, o.due_day <= end
        )
        if agency:
            stmt = stmt.where(o.agency_code == agency)
        if plan_id:
            stmt = stmt.where(o.plan_id == plan_id)
        with Session(self.engine) as session:
            return [OccurrenceView(*r) for r in session.execute(stmt.order_by(o.due_day, o.plan_id, o.task_id))]

    def open_dossiers_due_by(self, agency: str, due_by: dt.date, *, limit: int = 500) -> list[Any]:
        """The agency's open dossiers due on or before ``due_by``, or late by a second supplement request, in due
        order (the officials' page: due soon and overdue)."""
        d = MonitorDossierRow
        stmt = (
            select(d.dossier_code, d.procedure_code, d.field_code, d.due_day, d.paused, d.pause_started_on,
                   d.supplement_requests)
            .where(d.is_open.is_(True), d.agency_code == agency,
                   or_(d.due_day <= due_by, d.supplement_requests >= 2))
            .order_by(d.due_day, d.dossier_code)
            .limit(limit)
        )
        with Session(self.engine) as session:
            return list(session.execute(stmt))

    def occurrence_count(self) -> int:
        with Session(self.engine) as session:
            return int(session.execute(select(func.count()).select_from(OccurrenceRow)).scalar_one())

    def ping(self) -> bool:
        with Session(self.engine) as session:
            session.execute(select(1)).one()
        return True
