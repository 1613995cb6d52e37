"""Storage of the deadline monitor: dossiers, task occurrences, alert state, outbox.

Every alert transition is recorded in ``monitor_alert`` (one row per
``alert_key``: state, generation, fired_at, resolved_at) in the same
transaction as the pending publication of its event in ``monitor_outbox``;
:mod:`outbox` publishes those rows with JetStream acks and deletes them. So an
alert fires once, a restart re-sends nothing already sent (a row published
but not yet deleted is re-sent with the same event id, which the broker's
duplicate window drops), and what came due while the service was down is
recorded and sent at the first tick.

The tick never loads every open dossier. Each dossier row keeps
``tick_level``: the severity level already firing (0 none, 1 due soon,
2 apology due), or NULL when time can change nothing (ended, awaiting
supplement, no due day, already overdue). The tick reads, per level, the
rows of that level whose due day has reached the next kind's horizon
(``tick_level = :level AND due_day <= :horizon``), an index range scan on
``(tick_level, due_day)``: its cost follows the dossiers that change, not the
open ones. Task occurrences work the same way.
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
from types import SimpleNamespace
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Index,
    Integer,
    Text,
    bindparam,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    tuple_,
    update,
)
from sqlmodel import Field, Session, SQLModel

from services.deadline_monitor import domain
from services.deadline_monitor.domain import (
    DOSSIER_KINDS,
    PLAN_KINDS,
    Catalog,
    DossierFacts,
    Horizons,
    OccurrenceFacts,
    OccurrenceSpec,
    Policy,
    ReportFacts,
)
from shared.calendar import WorkingCalendar, local_date
from shared.db import StatisticsKeeper, UtcDateTime
from shared.events import (
    ALERT_FIRING_TYPE,
    ALERT_RESOLVED_TYPE,
    PLAN_TASK_STATE_TYPE,
    Alert,
    CloudEvent,
    DeadLetter,
    DossierStateChanged,
    PlanTaskReported,
    PlanTaskStateChanged,
    encode,
    new_event,
)
from shared.streams import ALERTS, PLAN_TASK_STATE

log = logging.getLogger(__name__)

SOURCE = "parwatch/deadline_monitor"
FIRING = "firing"
RESOLVED = "resolved"
#: ``tick_level`` of a dossier stored while catching up and not settled yet.
UNSETTLED = -1
# SQLite caps bound parameters; keep IN lists well under it.
CHUNK = 400


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


class OutboxRow(SQLModel, table=True):
    """An event committed with the state change it announces, waiting for its JetStream ack."""

    __tablename__ = "monitor_outbox"

    id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    )
    subject: str = Field(max_length=256)
    event_id: str = Field(max_length=256)
    ordering_key: str = Field(max_length=400)
    payload: str = Field(sa_type=Text)
    created_at: dt.datetime = Field(sa_type=UtcDateTime)


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


TABLES = [
    MonitorDossierRow.__table__,
    AlertRow.__table__,
    OutboxRow.__table__,
    OccurrenceRow.__table__,
    PlanReportRow.__table__,
]


def create_schema(engine: Engine) -> None:
    SQLModel.metadata.create_all(engine, tables=TABLES)


def _chunks(items: Sequence[object], size: int = CHUNK) -> Iterable[Sequence[object]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


#: One piece of a tick: given a session and a row budget, (rows examined, transitions, exhausted).
Step = Callable[[Session, int], tuple[int, int, bool]]


@dataclass(frozen=True)
class PendingEvent:
    id: int
    subject: str
    event_id: str
    ordering_key: str
    payload: str


@dataclass(frozen=True)
class TickResult:
    examined: int = 0  # rows the tick read
    transitions: int = 0  # alerts fired or resolved, facts published

    def __add__(self, other: TickResult) -> TickResult:
        return TickResult(self.examined + other.examined, self.transitions + other.transitions)


@dataclass(frozen=True)
class OccurrenceView:
    """An occurrence as `parwatch plan show` prints it."""

    plan_id: str
    task_id: str
    agency_code: str
    period: str
    due_day: dt.date
    opens_on: dt.date
    done_on: dt.date | None


def dossier_facts(row: Any) -> DossierFacts:
    return DossierFacts(
        dossier_code=row.dossier_code,
        agency_code=row.agency_code,
        procedure_code=row.procedure_code,
        field_code=row.field_code,
        is_open=row.is_open,
        due_day=row.due_day,
        paused=row.paused,
        pause_started_on=row.pause_started_on,
        supplement_requests=row.supplement_requests,
    )


def occurrence_facts(row: Any) -> OccurrenceFacts:
    return OccurrenceFacts(
        plan_id=row.plan_id,
        task_id=row.task_id,
        agency_code=row.agency_code,
        period=row.period,
        due_day=row.due_day,
        done_on=row.done_on,
    )


@functools.cache
def _tick_statements(table: type[SQLModel], mutable: tuple[str, ...]) -> tuple[Any, Any, list[str]]:
    """The tick's read and write statements of a table, built once (parameters bound at each run)."""
    columns = table.__table__.c  # type: ignore[attr-defined]
    keys = [c.name for c in table.__table__.primary_key.columns]  # type: ignore[attr-defined]
    read = (
        select(table.__table__)  # type: ignore[attr-defined]
        .where(columns.tick_level == bindparam("level"), columns.due_day <= bindparam("bound"))
        .order_by(columns.due_day)
        .limit(bindparam("budget", type_=Integer))
    )
    write = (
        update(table.__table__)  # type: ignore[attr-defined]
        .where(*(columns[k] == bindparam(f"k_{k}") for k in keys))
        .values({m: bindparam(f"v_{m}") for m in mutable})
    )
    return read, write, keys


class _Writes:
    """Rows a transaction inserts, written with one executemany each just before the commit
    (building ORM objects for thousands of alerts and events costs more than the SQL)."""

    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []
        self.outbox: list[dict[str, Any]] = []

    def flush(self, session: Session) -> None:
        if self.alerts:
            session.execute(insert(AlertRow.__table__), self.alerts)
        if self.outbox:
            session.execute(insert(OutboxRow.__table__), self.outbox)
        self.alerts, self.outbox = [], []


class MonitorStore:
    def __init__(
        self,
        engine: Engine,
        *,
        calendar: WorkingCalendar,
        policy: Policy,
        catalog: Catalog,
        deadletter_ttl: dt.timedelta | None = dt.timedelta(hours=24),
        chunk: int = 1000,
    ) -> None:
        self.engine = engine
        self.calendar = calendar
        self.policy = policy
        self.catalog = catalog
        self.deadletter_ttl = deadletter_ttl
        self.chunk = chunk
        self.statistics = StatisticsKeeper(engine, tables=["monitor_dossier", "monitor_alert", "monitor_outbox"])

    def horizons(self, now: dt.datetime) -> Horizons:
        return domain.horizons(local_date(now), calendar=self.calendar, policy=self.policy)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Session]:
        """One transaction; the buffered inserts are written before it commits."""
        with Session(self.engine) as session, session.begin():
            writes = _Writes()
            session.info["writes"] = writes
            yield session
            session.flush()
            writes.flush(session)

    # -- alert state and outbox (inside a transaction) ---------------------------------------
    def _emit(self, session: Session, event: CloudEvent, *, subject: str, ordering_key: str, now: dt.datetime) -> None:
        session.info["writes"].outbox.append(
            {
                "subject": subject,
                "event_id": event.id,
                "ordering_key": ordering_key,
                "payload": encode(event).decode(),
                "created_at": now,
            }
        )

    def _alert_rows(self, session: Session, keys: Iterable[str]) -> dict[str, AlertRow]:
        found: dict[str, AlertRow] = {}
        for part in _chunks(sorted(set(keys))):
            for row in session.execute(select(AlertRow).where(AlertRow.alert_key.in_(part))).scalars():
                found[row.alert_key] = row
        return found

    def _fire(
        self,
        session: Session,
        alert: Alert,
        existing: AlertRow | None,
        *,
        now: dt.datetime,
        expires_at: dt.datetime | None = None,
    ) -> bool:
        """Record a firing transition and its event; False if the alert was firing already."""
        if existing is not None and existing.state == FIRING:
            return False
        values = {
            "kind": alert.kind,
            "severity": alert.severity,
            "agency_code": alert.agency_code,
            "ref": alert.ref,
            "summary": alert.summary,
            "labels": json.dumps(alert.labels, ensure_ascii=False, sort_keys=True),
            "state": FIRING,
            "starts_at": alert.starts_at,
            "fired_at": now,
            "resolved_at": None,
            "expires_at": expires_at,
        }
        if existing is None:
            generation = 1
            session.info["writes"].alerts.append({"alert_key": alert.alert_key, "generation": 1, **values})
        else:
            for k, v in values.items():
                setattr(existing, k, v)
            existing.generation += 1
            generation = existing.generation
        event = new_event(
            type=ALERT_FIRING_TYPE,
            source=SOURCE,
            id=domain.alert_event_id(alert.alert_key, FIRING, generation),
            subject=alert.alert_key,
            data=alert,
            time=now,
        )
        self._emit(session, event, subject=ALERTS, ordering_key=alert.alert_key, now=now)
        return True

    def _resolve(self, session: Session, row: AlertRow | None, *, now: dt.datetime) -> bool:
        if row is None or row.state != FIRING:
            return False
        row.state = RESOLVED
        row.resolved_at = now
        row.expires_at = None
        alert = Alert(
            alert_key=row.alert_key,
            kind=row.kind,
            severity=row.severity,  # type: ignore[arg-type]
            agency_code=row.agency_code,
            ref=row.ref,
            summary=row.summary,
            starts_at=row.starts_at,
            ends_at=now,
            labels=json.loads(row.labels),
        )
        event = new_event(
            type=ALERT_RESOLVED_TYPE,
            source=SOURCE,
            id=domain.alert_event_id(row.alert_key, RESOLVED, row.generation),
            subject=row.alert_key,
            data=alert,
            time=now,
        )
        self._emit(session, event, subject=ALERTS, ordering_key=row.alert_key, now=now)
        return True

    # -- dossiers ------------------------------------------------------------------------------
    def apply_snapshots(
        self, snapshots: Sequence[DossierStateChanged], *, now: dt.datetime, settle: bool = True
    ) -> list[bool]:
        """Keep each dossier's highest revision and settle its alerts; per snapshot: True if ignored
        (a duplicate or an older revision).

        With ``settle=False`` (the consumer is catching up on a backlog, and a
        later revision of the dossier may be further down the stream) the state
        is stored and the dossier marked *unsettled* (``tick_level = -1``): no
        alert yet; :meth:`settle_unsettled` settles it once the backlog is read.
        """
        h = self.horizons(now)
        best: dict[str, DossierStateChanged] = {}
        for snap in snapshots:
            held = best.get(snap.dossier_code)
            if held is None or snap.revision > held.revision:
                best[snap.dossier_code] = snap
        with self._transaction() as session:
            rows: dict[str, MonitorDossierRow] = {}
            for part in _chunks(sorted(best)):
                stmt = select(MonitorDossierRow).where(MonitorDossierRow.dossier_code.in_(part))
                rows.update((r.dossier_code, r) for r in session.execute(stmt).scalars())
            applied: set[tuple[str, int]] = set()
            changed: list[MonitorDossierRow] = []
            for code, snap in best.items():
                row = rows.get(code)
                if row is not None and snap.revision <= row.revision:
                    continue
                values = {
                    "revision": snap.revision,
                    "agency_code": snap.agency_code,
                    "procedure_code": snap.procedure_code,
                    "field_code": snap.field_code,
                    "is_open": snap.counted and snap.ended_on is None,
                    "due_day": snap.due_day,
                    "paused": snap.paused,
                    "pause_started_on": snap.pause_started_on,
                    "supplement_requests": snap.supplement_requests,
                    "ended_on": snap.ended_on,
                    "updated_at": now,
                }
                if row is None:
                    row = MonitorDossierRow(dossier_code=code, firing=0, tick_level=None, **values)
                    session.add(row)
                else:
                    for k, v in values.items():
                        setattr(row, k, v)
                changed.append(row)
                applied.add((code, snap.revision))
            if settle:
                self._settle_dossiers(session, changed, h=h, now=now)
            else:
                for row in changed:
                    row.tick_level = UNSETTLED
        self.statistics.wrote(len(changed))
        return [(s.dossier_code, s.revision) not in applied for s in snapshots]

    def settle_unsettled(self, *, now: dt.datetime) -> TickResult:
        """Settle every dossier stored while catching up (one empty index lookup when there is none)."""
        return self._run_steps([self._unsettled_step(self.horizons(now), now)])

    def _unsettled_step(self, h: Horizons, now: dt.datetime) -> Step:
        table = MonitorDossierRow.__table__
        mutable = ("firing", "tick_level")
        _, write, keys = _tick_statements(MonitorDossierRow, mutable)
        read = select(table).where(table.c.tick_level == UNSETTLED).limit(bindparam("budget", type_=Integer))

        def step(session: Session, budget: int) -> tuple[int, int, bool]:
            rows = [SimpleNamespace(**m) for m in session.execute(read, {"budget": budget}).mappings()]
            if not rows:
                return 0, 0, True
            moved = self._settle_dossiers(session, rows, h=h, now=now)
            session.execute(
                write,
                [{f"k_{k}": getattr(r, k) for k in keys} | {f"v_{m}": getattr(r, m) for m in mutable} for r in rows],
            )
            return len(rows), moved, len(rows) < budget

        return step

    def _settle_dossiers(self, session: Session, rows: Sequence[Any], *, h: Horizons, now: dt.datetime) -> int:
        plans: list[tuple[MonitorDossierRow, DossierFacts, domain.Transition]] = []
        keys: list[str] = []
        for row in rows:
            facts = dossier_facts(row)
            firing = domain.kinds_of(row.firing, DOSSIER_KINDS)
            move = domain.transitions(domain.dossier_conditions(facts, h), firing, order=DOSSIER_KINDS)
            plans.append((row, facts, move))
            keys += [domain.dossier_alert_key(k, row.dossier_code) for k in ([move.fire] if move.fire else [])]
            keys += [domain.dossier_alert_key(k, row.dossier_code) for k in move.resolve]
        existing = self._alert_rows(session, keys) if keys else {}
        count = 0
        for row, facts, move in plans:
            firing = set(domain.kinds_of(row.firing, DOSSIER_KINDS))
            for kind in move.resolve:
                count += self._resolve(session, existing.get(domain.dossier_alert_key(kind, row.dossier_code)), now=now)
                firing.discard(kind)
            if move.fire:
                alert = domain.dossier_alert(
                    move.fire, facts, agency_name=self.catalog.agency_name(facts.agency_code), h=h, starts_at=now
                )
                self._fire(session, alert, existing.get(alert.alert_key), now=now)
                firing.add(move.fire)
                count += 1
            row.firing = domain.bits_of(firing, DOSSIER_KINDS)
            row.tick_level = domain.tick_level(
                watched=domain.dossier_watched(facts), firing=firing, order=DOSSIER_KINDS
            )
        return count

    # -- the tick ------------------------------------------------------------------------------------------
    def tick(self, *, now: dt.datetime) -> TickResult:
        """Everything time changes at ``now``: dossiers, task occurrences, expired alerts.

        With nothing to do it is one transaction of seven index range scans that
        return no row.
        """
        return self._run_steps(self.tick_steps(now=now))

    def tick_steps(self, *, now: dt.datetime, dossiers: bool = True) -> list[Step]:
        """The tick as steps, for a caller that runs one transaction at a time (:meth:`run_transaction`).

        ``dossiers=False`` (the snapshot consumer is catching up) leaves the
        dossiers alone: their stored state may be older than the stream's.
        """
        h = self.horizons(now)
        steps: list[Step] = [self._unsettled_step(h, now), *self._dossier_steps(h, now)] if dossiers else []
        return [*steps, *self._occurrence_steps(h, now), self._expiry_step(now)]

    def tick_dossiers(self, *, now: dt.datetime) -> TickResult:
        return self._run_steps(self._dossier_steps(self.horizons(now), now))

    def tick_occurrences(self, *, now: dt.datetime) -> TickResult:
        return self._run_steps(self._occurrence_steps(self.horizons(now), now))

    def expire_alerts(self, *, now: dt.datetime) -> TickResult:
        """Resolve firing alerts whose time is up (dead letters after their TTL)."""
        return self._run_steps([self._expiry_step(now)])

    def _dossier_steps(self, h: Horizons, now: dt.datetime) -> list[Step]:
        # A dossier at level L waits for a kind above L: due soon, apology due, overdue. Each bound is
        # the largest horizon among those kinds (a due day on a day off can be in the apology
        # horizon and not yet in the due-soon one when both leads are equal).
        bounds = ((0, max(h.soon, h.apology, h.yesterday)), (1, max(h.apology, h.yesterday)), (2, h.yesterday))
        mutable = ("firing", "tick_level")
        return [
            self._level_step(
                MonitorDossierRow, level, bound, settle=self._settle_dossiers, mutable=mutable, h=h, now=now
            )
            for level, bound in bounds
        ]

    def _occurrence_steps(self, h: Horizons, now: dt.datetime) -> list[Step]:
        bounds = ((0, h.plan_soon), (1, h.yesterday))
        mutable = ("state", "fact_version", "updated_at", "firing", "tick_level")
        return [
            self._level_step(
                OccurrenceRow, level, bound, settle=self._settle_occurrences, mutable=mutable, h=h, now=now
            )
            for level, bound in bounds
        ]

    def _level_step(
        self,
        table,
        level: int,
        bound: dt.date,
        *,
        settle,
        mutable: tuple[str, ...],
        h: Horizons,  # type: ignore[no-untyped-def]
        now: dt.datetime,
    ) -> Step:
        """Settle up to ``budget`` rows at ``level`` whose due day reached ``bound``.

        Rows are read and written with plain SQL (one executemany UPDATE of the
        ``mutable`` columns): building ORM objects would cost more than the SQL.
        """
        read, write, keys = _tick_statements(table, mutable)

        def step(session: Session, budget: int) -> tuple[int, int, bool]:
            found = session.execute(read, {"level": level, "bound": bound, "budget": budget})
            rows = [SimpleNamespace(**m) for m in found.mappings()]
            if not rows:
                return 0, 0, True
            moved = settle(session, rows, h=h, now=now)
            session.execute(
                write,
                [{f"k_{k}": getattr(r, k) for k in keys} | {f"v_{m}": getattr(r, m) for m in mutable} for r in rows],
            )
            if all(r.tick_level == level for r in rows):  # nothing moved on: never loop on the same rows
                log.error("tick made no progress table=%s level=%d rows=%d", table.__tablename__, level, len(rows))
                return len(rows), moved, True
            return len(rows), moved, len(rows) < budget

        return step

    def _expiry_step(self, now: dt.datetime) -> Step:
        def step(session: Session, budget: int) -> tuple[int, int, bool]:
            stmt = select(AlertRow).where(AlertRow.expires_at <= now).order_by(AlertRow.expires_at).limit(budget)
            rows = list(session.execute(stmt).scalars())
            moved = 0
            for row in rows:
                if row.state == FIRING:
                    moved += self._resolve(session, row, now=now)
                row.expires_at = None
            return len(rows), moved, len(rows) < budget

        return step

    def run_transaction(self, steps: Sequence[Step]) -> tuple[TickResult, list[Step]]:
        """Run steps in order in one transaction of at most ``chunk`` rows; returns the steps left."""
        todo = list(steps)
        result = TickResult()
        with self._transaction() as session:
            budget = self.chunk
            while todo and budget > 0:
                examined, moved, exhausted = todo[0](session, budget)
                result += TickResult(examined=examined, transitions=moved)
                budget -= examined
                if exhausted:
                    todo.pop(0)
        return result, todo

    def _run_steps(self, steps: Sequence[Step]) -> TickResult:
        todo = list(steps)
        result = TickResult()
        while todo:
            part, todo = self.run_transaction(todo)
            result += part
        return result

    def get_dossier(self, code: str) -> MonitorDossierRow | None:
        with Session(self.engine) as session:
            row = session.get(MonitorDossierRow, code)
            if row is not None:
                session.expunge(row)
            return row

    # -- plan occurrences --------------------------------------------------------------------------
    def sync_occurrences(self, specs: Sequence[OccurrenceSpec], *, now: dt.datetime) -> TickResult:
        """Make the stored occurrences those of the loaded plans; re-derive their states from the reports.

        Occurrences no longer generated (a task removed or re-dated, a plan file
        removed, a narrower window) are deleted after their alerts resolve.
        """
        h = self.horizons(now)
        wanted = {s.key: s for s in specs}
        with self._transaction() as session:
            rows = {
                (r.plan_id, r.task_id, r.agency_code, r.period): r
                for r in session.execute(select(OccurrenceRow)).scalars()
            }
            gone = [r for k, r in rows.items() if k not in wanted]
            resolved = 0
            if gone:
                keys = [domain.plan_alert_key(kind, occurrence_facts(r)) for r in gone for kind in PLAN_KINDS]
                existing = self._alert_rows(session, keys)
                for key in keys:
                    resolved += self._resolve(session, existing.get(key), now=now)
                for r in gone:
                    session.delete(r)
                log.info("plan occurrences removed count=%d", len(gone))
            for key, spec in wanted.items():
                row = rows.get(key)
                if row is None:
                    session.add(
                        OccurrenceRow(
                            plan_id=spec.plan_id,
                            task_id=spec.task_id,
                            agency_code=spec.agency_code,
                            period=spec.period,
                            due_day=spec.due_day,
                            opens_on=spec.opens_on,
                            tick_level=0,
                            updated_at=now,
                        )
                    )
                elif (row.due_day, row.opens_on) != (spec.due_day, spec.opens_on):
                    row.due_day, row.opens_on, row.updated_at = spec.due_day, spec.opens_on, now
                    row.tick_level = 0 if row.done_on is None else None
            session.flush()
            self._rematch_reports(session, plan_ids={s.plan_id for s in specs})
            live = [r for k, r in rows.items() if k in wanted]
            fresh = list(session.execute(select(OccurrenceRow).where(OccurrenceRow.state.is_(None))).scalars())
            todo = {(r.plan_id, r.task_id, r.agency_code, r.period): r for r in live + fresh}
            done_days = self._done_days(session, plan_ids={s.plan_id for s in specs})
            for key, row in todo.items():
                row.done_on = done_days.get(key)
            moved = self._settle_occurrences(session, list(todo.values()), h=h, now=now)
        return TickResult(examined=len(todo), transitions=moved + resolved)

    def _rematch_reports(self, session: Session, *, plan_ids: set[str]) -> None:
        """Point every stored report at its occurrence under the plans as loaded now."""
        for part in _chunks(sorted(plan_ids)):
            for report in session.execute(select(PlanReportRow).where(PlanReportRow.plan_id.in_(part))).scalars():
                occ = self._report_period(report.plan_id, report.task_id, report.period, report.reported_at)
                if occ != report.occ_period:
                    report.occ_period = occ

    def _report_period(self, plan_id: str, task_id: str, period: str | None, reported_at: dt.datetime) -> str | None:
        task = self.catalog.task(plan_id, task_id)
        if task is None:
            return None
        return domain.report_period(task, period=period, reported_on=local_date(reported_at))

    def _done_days(self, session: Session, *, plan_ids: set[str]) -> dict[tuple[str, str, str, str], dt.date]:
        reports: dict[tuple[str, str, str, str], list[ReportFacts]] = defaultdict(list)
        for part in _chunks(sorted(plan_ids)):
            stmt = select(PlanReportRow).where(PlanReportRow.plan_id.in_(part), PlanReportRow.occ_period.is_not(None))
            for r in session.execute(stmt).scalars():
                reports[(r.plan_id, r.task_id, r.agency_code, r.occ_period)].append(  # type: ignore[index]
                    ReportFacts(state=r.state, reported_at=r.reported_at, source=r.source, event_id=r.event_id)
                )
        out: dict[tuple[str, str, str, str], dt.date] = {}
        for key, items in reports.items():
            day = domain.done_on(items, local_date=local_date)
            if day is not None:
                out[key] = day
        return out

    def apply_reports(self, reports: Sequence[tuple[str, str, PlanTaskReported]], *, now: dt.datetime) -> list[bool]:
        """Store (source, id, report) once each and settle the occurrences they name; True = duplicate."""
        h = self.horizons(now)
        keys = [(source, event_id) for source, event_id, _ in reports]
        with self._transaction() as session:
            seen: set[tuple[str, str]] = set()
            cols = tuple_(PlanReportRow.source, PlanReportRow.event_id)
            for part in _chunks(sorted(set(keys))):
                seen.update(session.execute(select(PlanReportRow.source, PlanReportRow.event_id).where(cols.in_(part))))
            duplicate: list[bool] = []
            touched: set[tuple[str, str, str, str]] = set()
            for source, event_id, report in reports:
                dup = (source, event_id) in seen
                duplicate.append(dup)
                if dup:
                    continue
                seen.add((source, event_id))
                occ = self._report_period(report.plan_id, report.task_id, report.period, report.reported_at)
                session.add(
                    PlanReportRow(
                        source=source,
                        event_id=event_id,
                        plan_id=report.plan_id,
                        task_id=report.task_id,
                        agency_code=report.agency_code,
                        period=report.period,
                        occ_period=occ,
                        state=report.state,
                        reported_at=report.reported_at,
                        recorded_at=now,
                    )
                )
                if occ is None:
                    log.warning(
                        "plan report matches no task occurrence plan=%s task=%s agency=%s period=%s",
                        report.plan_id,
                        report.task_id,
                        report.agency_code,
                        report.period,
                    )
                else:
                    touched.add((report.plan_id, report.task_id, report.agency_code, occ))
            session.flush()
            rows = []
            for key in sorted(touched):
                row = session.get(OccurrenceRow, key)
                if row is None:
                    log.warning("plan report for an occurrence not tracked plan=%s task=%s agency=%s period=%s", *key)
                    continue
                stmt = select(PlanReportRow).where(
                    PlanReportRow.plan_id == key[0],
                    PlanReportRow.task_id == key[1],
                    PlanReportRow.agency_code == key[2],
                    PlanReportRow.occ_period == key[3],
                )
                items = [
                    ReportFacts(state=r.state, reported_at=r.reported_at, source=r.source, event_id=r.event_id)
                    for r in session.execute(stmt).scalars()
                ]
                row.done_on = domain.done_on(items, local_date=local_date)
                rows.append(row)
            self._settle_occurrences(session, rows, h=h, now=now)
        return duplicate

    def _settle_occurrences(self, session: Session, rows: Sequence[Any], *, h: Horizons, now: dt.datetime) -> int:
        plans: list[tuple[OccurrenceRow, OccurrenceFacts, domain.Transition]] = []
        keys: list[str] = []
        for row in rows:
            facts = occurrence_facts(row)
            firing = domain.kinds_of(row.firing, PLAN_KINDS)
            move = domain.transitions(
                domain.occurrence_conditions(facts, h),
                firing,
                order=PLAN_KINDS,
                may_fire=domain.occurrence_may_raise(facts, h, self.policy),
            )
            plans.append((row, facts, move))
            keys += [domain.plan_alert_key(k, facts) for k in ([move.fire] if move.fire else [])]
            keys += [domain.plan_alert_key(k, facts) for k in move.resolve]
        existing = self._alert_rows(session, keys) if keys else {}
        count = 0
        for row, facts, move in plans:
            state = domain.occurrence_state(facts, h.today)
            if state != row.state:
                row.state = state
                row.fact_version += 1
                row.updated_at = now
                self._emit_task_state(session, facts, state=state, version=row.fact_version, now=now)
                count += 1
            firing = set(domain.kinds_of(row.firing, PLAN_KINDS))
            for kind in move.resolve:
                count += self._resolve(session, existing.get(domain.plan_alert_key(kind, facts)), now=now)
                firing.discard(kind)
            if move.fire:
                plan = self.catalog.plans.get(facts.plan_id)
                alert = domain.occurrence_alert(
                    move.fire,
                    facts,
                    task=self.catalog.task(facts.plan_id, facts.task_id),
                    plan=plan,
                    agency_name=self.catalog.agency_name(facts.agency_code),
                    starts_at=now,
                )
                self._fire(session, alert, existing.get(alert.alert_key), now=now)
                firing.add(move.fire)
                count += 1
            row.firing = domain.bits_of(firing, PLAN_KINDS)
            row.tick_level = domain.tick_level(
                watched=domain.occurrence_watched(facts, state=state), firing=firing, order=PLAN_KINDS
            )
        return count

    def _emit_task_state(
        self, session: Session, o: OccurrenceFacts, *, state: str, version: int, now: dt.datetime
    ) -> None:
        fact = PlanTaskStateChanged(
            plan_id=o.plan_id,
            task_id=o.task_id,
            agency_code=o.agency_code,
            period=o.period or None,
            due_day=o.due_day,
            state=state,  # type: ignore[arg-type]
            done_on=o.done_on,
            updated_at=now,
        )
        key = domain.event_id(o.plan_id, o.task_id, o.agency_code, o.period or "-")
        event = new_event(
            type=PLAN_TASK_STATE_TYPE,
            source=SOURCE,
            id=domain.event_id(key, version),
            subject=f"{o.plan_id}:{o.task_id}",
            data=fact,
            time=now,
        )
        self._emit(session, event, subject=PLAN_TASK_STATE, ordering_key=key, now=now)

    # -- dead letters ---------------------------------------------------------------------------------
    def record_deadletters(self, letters: Sequence[DeadLetter], *, district_code: str, now: dt.datetime) -> list[bool]:
        """Raise one ``deadletter`` alert per rejected message, ever; True = already raised."""
        expires = now + self.deadletter_ttl if self.deadletter_ttl else None
        with self._transaction() as session:
            known = set(
                self._alert_rows(session, [domain.deadletter_alert_key(d.stream, d.stream_seq) for d in letters])
            )
            out = []
            for letter in letters:
                key = domain.deadletter_alert_key(letter.stream, letter.stream_seq)
                if key in known:
                    out.append(True)
                    continue
                known.add(key)
                alert = domain.deadletter_alert(letter, district_code=district_code, starts_at=now)
                self._fire(session, alert, None, now=now, expires_at=expires)
                out.append(False)
        return out

    def get_alert(self, key: str) -> AlertRow | None:
        with Session(self.engine) as session:
            row = session.get(AlertRow, key)
            if row is not None:
                session.expunge(row)
            return row

    # -- outbox -----------------------------------------------------------------------------------------
    def pending(self, limit: int) -> list[PendingEvent]:
        with Session(self.engine) as session:
            stmt = select(
                OutboxRow.id, OutboxRow.subject, OutboxRow.event_id, OutboxRow.ordering_key, OutboxRow.payload
            )
            rows = session.execute(stmt.order_by(OutboxRow.id).limit(limit))
            return [PendingEvent(*r) for r in rows]

    def delete_published(self, ids: Sequence[int]) -> None:
        with Session(self.engine) as session, session.begin():
            for part in _chunks(list(ids)):
                session.execute(delete(OutboxRow).where(OutboxRow.id.in_(part)))

    def outbox_size(self) -> int:
        with Session(self.engine) as session:
            return int(session.execute(select(func.count()).select_from(OutboxRow)).scalar_one())

    # -- read side (metrics, CLI) --------------------------------------------------------------------------
    def plan_task_counts(self, today: dt.date) -> list[tuple[str, str, int]]:
        """(agency, state, count) of the occurrences open on ``today`` or done, states as of ``today``."""
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

    def occurrence_count(self) -> int:
        with Session(self.engine) as session:
            return int(session.execute(select(func.count()).select_from(OccurrenceRow)).scalar_one())

    def get_occurrence(self, key: tuple[str, str, str, str]) -> OccurrenceRow | None:
        with Session(self.engine) as session:
            row = session.get(OccurrenceRow, key)
            if row is not None:
                session.expunge(row)
            return row

    def ping(self) -> bool:
        with Session(self.engine) as session:
            session.execute(select(1)).one()
        return True
