"""Persistence of the notifier (SQLite or PostgreSQL, tables prefixed ``notifier_``).

* ``notifier_seen_event``: processed (source, id) pairs, the consumer's dedup.
* ``notifier_alert``: one row per ``alert_key``, its latest episode.
* ``notifier_assignment``: who should hear of which alert, and what they heard.
* ``notifier_group``: when each (receiver, agency) group last sent.
* ``notifier_outbox``: notices to deliver, with attempts and the next try.
* ``notifier_log``: the notification log: one row per (receiver, channel,
  notice) delivered, written in the transaction that marks the outbox row
  sent; checked before every send, so nothing goes out twice.
* ``notifier_silence``, ``notifier_digest``: silences; digests made.
* ``notifier_meta``: when the notifier first ran.

All methods are synchronous; the engine runs them in a worker thread.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Engine,
    Index,
    Text,
    TypeDecorator,
    UniqueConstraint,
    delete,
    func,
    or_,
    text,
)
from sqlmodel import Field, Session, SQLModel, col, select

from services.notifier.domain.alerts import merge_alert
from services.notifier.domain.dispatch import Plan
from services.notifier.domain.model import AlertRecord, Assignment, GroupState
from services.notifier.domain.silence import Silence
from shared.events import ALERT_RESOLVED_TYPE, Alert


class UtcDateTime(TypeDecorator[dt.datetime]):
    """Aware datetimes in, aware UTC datetimes out, on SQLite and PostgreSQL alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: a time needs an offset")
        value = value.astimezone(dt.timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


def _when(nullable: bool = False, **kw: Any) -> Any:
    return Field(sa_type=UtcDateTime, nullable=nullable, **kw)


class SeenEvent(SQLModel, table=True):
    __tablename__ = "notifier_seen_event"

    source: str = Field(primary_key=True, max_length=256)
    event_id: str = Field(primary_key=True, max_length=256)
    received_at: dt.datetime = _when()


class AlertRow(SQLModel, table=True):
    __tablename__ = "notifier_alert"
    __table_args__ = (Index("ix_notifier_alert_state", "state"), Index("ix_notifier_alert_agency", "agency_code"))

    alert_key: str = Field(primary_key=True, max_length=256)
    kind: str = Field(max_length=64)
    severity: str = Field(max_length=16)
    agency_code: str = Field(max_length=64)
    ref: str = Field(max_length=128)
    summary: str = Field(sa_column=Column(Text, nullable=False))
    labels: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    state: str = Field(max_length=16)
    starts_at: dt.datetime = _when()
    ends_at: dt.datetime | None = _when(nullable=True, default=None)
    received_at: dt.datetime = _when()
    resolved_at: dt.datetime | None = _when(nullable=True, default=None)

    def record(self) -> AlertRecord:
        return AlertRecord(alert_key=self.alert_key, kind=self.kind, severity=self.severity,
                           agency_code=self.agency_code, ref=self.ref, summary=self.summary, starts_at=self.starts_at,
                           state="firing" if self.state == "firing" else "resolved", received_at=self.received_at,
                           ends_at=self.ends_at, resolved_at=self.resolved_at, labels=dict(self.labels or {}))

    def set_from(self, r: AlertRecord) -> None:
        for name in ("kind", "severity", "agency_code", "ref", "summary", "state", "starts_at", "ends_at",
                     "received_at", "resolved_at"):
            setattr(self, name, getattr(r, name))
        self.labels = dict(r.labels)


class AssignmentRow(SQLModel, table=True):
    __tablename__ = "notifier_assignment"
    __table_args__ = (Index("ix_notifier_assignment_done", "done"),)

    alert_key: str = Field(primary_key=True, max_length=256)
    receiver_id: str = Field(primary_key=True, max_length=64)
    episode: dt.datetime = _when()
    level: int = 0
    route: str = Field(max_length=64)
    created_at: dt.datetime = _when()
    notified_state: str | None = Field(default=None, max_length=16)
    notified_at: dt.datetime | None = _when(nullable=True, default=None)
    notify_count: int = 0
    suppressed: bool = False
    done: bool = False

    def domain(self) -> Assignment:
        return Assignment(alert_key=self.alert_key, receiver_id=self.receiver_id, episode=self.episode,
                          level=self.level, route=self.route, created_at=self.created_at,
                          notified_state=self.notified_state,  # type: ignore[arg-type]
                          notified_at=self.notified_at, notify_count=self.notify_count, suppressed=self.suppressed,
                          done=self.done)

    def set_from(self, a: Assignment) -> None:
        for name in ("episode", "level", "route", "created_at", "notified_state", "notified_at", "notify_count",
                     "suppressed", "done"):
            setattr(self, name, getattr(a, name))


class GroupRow(SQLModel, table=True):
    __tablename__ = "notifier_group"

    receiver_id: str = Field(primary_key=True, max_length=64)
    agency_code: str = Field(primary_key=True, max_length=64)
    last_flush_at: dt.datetime | None = _when(nullable=True, default=None)


class OutboxRow(SQLModel, table=True):
    __tablename__ = "notifier_outbox"
    __table_args__ = (Index("ix_notifier_outbox_due", "status", "next_attempt_at"),)

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=16)  # alerts | digest
    receiver_id: str = Field(max_length=64)
    channel: str = Field(max_length=16)
    agency_code: str = Field(max_length=64)
    payload: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    notice_keys: list[str] = Field(sa_column=Column(JSON, nullable=False))
    created_at: dt.datetime = _when()
    status: str = Field(default="pending", max_length=16)  # pending | sent | failed | duplicate
    attempts: int = 0
    next_attempt_at: dt.datetime = _when()
    last_error: str | None = Field(default=None, max_length=200)
    finished_at: dt.datetime | None = _when(nullable=True, default=None)


class LogRow(SQLModel, table=True):
    __tablename__ = "notifier_log"
    __table_args__ = (
        UniqueConstraint("receiver_id", "channel", "notice_key", name="uq_notifier_log_notice"),
        Index("ix_notifier_log_alert_key", "alert_key"),
        Index("ix_notifier_log_sent_at", "sent_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    outbox_id: int
    receiver_id: str = Field(max_length=64)
    channel: str = Field(max_length=16)
    agency_code: str = Field(max_length=64)
    alert_key: str = Field(max_length=256)
    state: str = Field(max_length=16)  # firing | resolved | digest
    kind: str = Field(max_length=64)
    severity: str = Field(max_length=16)
    notice_key: str = Field(max_length=400)
    sent_at: dt.datetime = _when()


class SilenceRow(SQLModel, table=True):
    __tablename__ = "notifier_silence"

    id: str = Field(primary_key=True, max_length=32)
    matchers: dict[str, list[str]] = Field(sa_column=Column(JSON, nullable=False))
    starts_at: dt.datetime = _when()
    ends_at: dt.datetime = _when()
    comment: str = Field(max_length=500)
    created_at: dt.datetime = _when()

    def domain(self) -> Silence:
        m = self.matchers or {}
        return Silence(id=self.id, starts_at=self.starts_at, ends_at=self.ends_at, comment=self.comment,
                       created_at=self.created_at, **{k: frozenset(m.get(k, ())) for k in _MATCHER_FIELDS})


class DigestRow(SQLModel, table=True):
    __tablename__ = "notifier_digest"

    kind: str = Field(primary_key=True, max_length=32)
    period_key: str = Field(primary_key=True, max_length=16)
    agency_code: str = Field(primary_key=True, max_length=64)
    created_at: dt.datetime = _when()


class MetaRow(SQLModel, table=True):
    __tablename__ = "notifier_meta"

    key: str = Field(primary_key=True, max_length=64)
    value: str = Field(max_length=256)


_MATCHER_FIELDS = ("kinds", "severities", "agencies", "refs", "alert_keys", "receivers")
TABLES = (SeenEvent, AlertRow, AssignmentRow, GroupRow, OutboxRow, LogRow, SilenceRow, DigestRow, MetaRow)


@dataclass(frozen=True)
class IncomingAlert:
    source: str
    event_id: str
    type: str
    alert: Alert


@dataclass(frozen=True)
class NewOutbox:
    kind: str
    receiver_id: str
    channel: str
    agency_code: str
    payload: dict[str, Any]
    notice_keys: list[str]


@dataclass(frozen=True)
class LogEntry:
    receiver_id: str
    channel: str
    agency_code: str
    alert_key: str
    state: str
    kind: str
    severity: str
    notice_key: str


@dataclass(frozen=True)
class DispatchState:
    alerts: dict[str, AlertRecord]
    assignments: list[Assignment]
    groups: dict[tuple[str, str], GroupState]
    silences: list[Silence]


class Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create_schema(self) -> None:
        SQLModel.metadata.create_all(self.engine, tables=[t.__table__ for t in TABLES])  # type: ignore[attr-defined]

    def ping(self) -> bool:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True

    # -- receiving ------------------------------------------------------------------
    def record_alerts(self, events: Sequence[IncomingAlert], *, now: dt.datetime) -> list[bool]:
        """Store each event unless its (source, id) was seen; True for the new ones."""
        out: list[bool] = []
        with Session(self.engine) as s:
            for ev in events:
                if s.get(SeenEvent, (ev.source, ev.event_id)) is not None:
                    out.append(False)
                    continue
                s.add(SeenEvent(source=ev.source, event_id=ev.event_id, received_at=now))
                s.flush()
                a = ev.alert
                incoming = AlertRecord(
                    alert_key=a.alert_key, kind=a.kind, severity=a.severity, agency_code=a.agency_code, ref=a.ref,
                    summary=a.summary, starts_at=a.starts_at, received_at=now, ends_at=a.ends_at,
                    state="resolved" if ev.type == ALERT_RESOLVED_TYPE else "firing", labels=dict(a.labels),
                )
                row = s.get(AlertRow, a.alert_key)
                merged = merge_alert(row.record() if row else None, incoming, now=now)
                if merged is not None:
                    if row is None:
                        row = AlertRow(alert_key=a.alert_key, kind=merged.kind, severity=merged.severity,
                                       agency_code=merged.agency_code, ref=merged.ref, summary=merged.summary,
                                       state=merged.state, starts_at=merged.starts_at, received_at=merged.received_at)
                    row.set_from(merged)
                    s.add(row)
                    s.flush()
                out.append(True)
            s.commit()
        return out

    # -- dispatching ----------------------------------------------------------------
    def load_dispatch_state(self, *, now: dt.datetime) -> DispatchState:
        with Session(self.engine) as s:
            undone = select(AssignmentRow.alert_key).where(col(AssignmentRow.done).is_(False))
            alerts = s.exec(
                select(AlertRow).where(or_(col(AlertRow.state) == "firing", col(AlertRow.alert_key).in_(undone)))
            ).all()
            records = {r.alert_key: r.record() for r in alerts}
            assignments: list[Assignment] = []
            keys = list(records)
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                rows = s.exec(select(AssignmentRow).where(col(AssignmentRow.alert_key).in_(chunk))).all()
                assignments += [r.domain() for r in rows]
            groups = {
                (g.receiver_id, g.agency_code): GroupState(g.receiver_id, g.agency_code, g.last_flush_at)
                for g in s.exec(select(GroupRow)).all()
            }
            silences = [r.domain() for r in s.exec(select(SilenceRow).where(col(SilenceRow.ends_at) > now)).all()]
        return DispatchState(alerts=records, assignments=assignments, groups=groups, silences=silences)

    def apply_plan(self, plan: Plan, outbox: Sequence[NewOutbox], *, now: dt.datetime) -> None:
        """Assignments, group times and the plan's outbox rows, in one transaction."""
        with Session(self.engine) as s:
            for a in plan.removed:
                s.exec(delete(AssignmentRow).where(  # type: ignore[call-overload]
                    col(AssignmentRow.alert_key) == a.alert_key, col(AssignmentRow.receiver_id) == a.receiver_id))
            s.flush()
            for a in [*plan.created, *plan.updated]:
                row = s.get(AssignmentRow, (a.alert_key, a.receiver_id))
                if row is None:
                    row = AssignmentRow(alert_key=a.alert_key, receiver_id=a.receiver_id, episode=a.episode,
                                        route=a.route, created_at=a.created_at)
                row.set_from(a)
                s.add(row)
            for g in plan.groups:
                grow = s.get(GroupRow, (g.receiver_id, g.agency_code)) or GroupRow(
                    receiver_id=g.receiver_id, agency_code=g.agency_code)
                grow.last_flush_at = g.last_flush_at
                s.add(grow)
            self._add_outbox(s, outbox, now=now)
            s.commit()

    @staticmethod
    def _add_outbox(s: Session, outbox: Iterable[NewOutbox], *, now: dt.datetime) -> None:
        for o in outbox:
            s.add(OutboxRow(kind=o.kind, receiver_id=o.receiver_id, channel=o.channel, agency_code=o.agency_code,
                            payload=o.payload, notice_keys=o.notice_keys, created_at=now, next_attempt_at=now))

    # -- digests --------------------------------------------------------------------------
    def installed_at(self, *, now: dt.datetime) -> dt.datetime:
        """When this notifier first ran (recorded on the first call): no digest for earlier periods."""
        with Session(self.engine) as s:
            row = s.get(MetaRow, "installed_at")
            if row is None:
                row = MetaRow(key="installed_at", value=now.astimezone(dt.timezone.utc).isoformat())
                s.add(row)
                s.commit()
            return dt.datetime.fromisoformat(row.value)

    def digests_made(self, kind: str, period_key: str) -> set[str]:
        with Session(self.engine) as s:
            rows = s.exec(select(DigestRow.agency_code).where(col(DigestRow.kind) == kind,
                                                             col(DigestRow.period_key) == period_key)).all()
        return set(rows)

    def alerts_since(self, since: dt.datetime) -> list[AlertRecord]:
        """Alerts firing now, or that started or ended since ``since`` (digest material)."""
        with Session(self.engine) as s:
            rows = s.exec(select(AlertRow).where(or_(
                col(AlertRow.state) == "firing", col(AlertRow.starts_at) >= since, col(AlertRow.ends_at) >= since,
            ))).all()
            return [r.record() for r in rows]

    def make_digest(self, kind: str, period_key: str, agency_code: str, outbox: Sequence[NewOutbox], *,
                    now: dt.datetime) -> bool:
        with Session(self.engine) as s:
            if s.get(DigestRow, (kind, period_key, agency_code)) is not None:
                return False
            s.add(DigestRow(kind=kind, period_key=period_key, agency_code=agency_code, created_at=now))
            self._add_outbox(s, outbox, now=now)
            s.commit()
        return True

    # -- delivering ------------------------------------------------------------------------
    def due_outbox(self, *, now: dt.datetime, limit: int) -> list[OutboxRow]:
        with Session(self.engine) as s:
            rows = s.exec(select(OutboxRow).where(col(OutboxRow.status) == "pending",
                                                  col(OutboxRow.next_attempt_at) <= now)
                          .order_by(col(OutboxRow.id)).limit(limit)).all()
            for r in rows:
                s.expunge(r)
            return list(rows)

    def logged_keys(self, *, receiver_id: str, channel: str, keys: Sequence[str]) -> set[str]:
        if not keys:
            return set()
        with Session(self.engine) as s:
            rows = s.exec(select(LogRow.notice_key).where(
                col(LogRow.receiver_id) == receiver_id, col(LogRow.channel) == channel,
                col(LogRow.notice_key).in_(list(keys)))).all()
        return set(rows)

    def mark_sent(self, outbox_id: int, entries: Sequence[LogEntry], *, now: dt.datetime) -> None:
        """Log every notice of the row and mark it sent, in one transaction."""
        with Session(self.engine) as s:
            row = s.get(OutboxRow, outbox_id)
            assert row is not None
            for e in entries:
                exists = s.exec(select(LogRow.id).where(col(LogRow.receiver_id) == e.receiver_id,
                                                        col(LogRow.channel) == e.channel,
                                                        col(LogRow.notice_key) == e.notice_key)).first()
                if exists is None:
                    s.add(LogRow(outbox_id=outbox_id, receiver_id=e.receiver_id, channel=e.channel,
                                 agency_code=e.agency_code, alert_key=e.alert_key, state=e.state, kind=e.kind,
                                 severity=e.severity, notice_key=e.notice_key, sent_at=now))
            row.status, row.finished_at, row.attempts, row.last_error = "sent", now, row.attempts + 1, None
            s.add(row)
            s.commit()

    def mark_retry(self, outbox_id: int, *, attempts: int, next_attempt_at: dt.datetime, error: str) -> None:
        with Session(self.engine) as s:
            row = s.get(OutboxRow, outbox_id)
            assert row is not None
            row.attempts, row.next_attempt_at, row.last_error = attempts, next_attempt_at, error[:200]
            s.add(row)
            s.commit()

    def mark_finished(self, outbox_id: int, *, status: str, now: dt.datetime, error: str | None = None,
                      attempts: int | None = None) -> None:
        with Session(self.engine) as s:
            row = s.get(OutboxRow, outbox_id)
            assert row is not None
            row.status, row.finished_at = status, now
            if error is not None:
                row.last_error = error[:200]
            if attempts is not None:
                row.attempts = attempts
            s.add(row)
            s.commit()

    def pending_counts(self) -> dict[str, int]:
        with Session(self.engine) as s:
            rows = s.exec(select(OutboxRow.channel, func.count()).where(col(OutboxRow.status) == "pending")
                          .group_by(col(OutboxRow.channel))).all()
        return {channel: int(n) for channel, n in rows}

    # -- silences ------------------------------------------------------------------------------
    def add_silence(self, silence: Silence) -> Silence:
        sid = silence.id or uuid.uuid4().hex[:12]
        matchers = {k: sorted(getattr(silence, k)) for k in _MATCHER_FIELDS if getattr(silence, k)}
        with Session(self.engine) as s:
            row = SilenceRow(id=sid, matchers=matchers, starts_at=silence.starts_at, ends_at=silence.ends_at,
                             comment=silence.comment, created_at=silence.created_at)
            s.add(row)
            s.commit()
            return row.domain()

    def silences(self, *, now: dt.datetime, include_expired: bool = False) -> list[Silence]:
        with Session(self.engine) as s:
            q = select(SilenceRow).order_by(col(SilenceRow.created_at))
            if not include_expired:
                q = q.where(col(SilenceRow.ends_at) > now)
            return [r.domain() for r in s.exec(q).all()]

    def expire_silence(self, silence_id: str, *, now: dt.datetime) -> Silence | None:
        with Session(self.engine) as s:
            row = s.get(SilenceRow, silence_id)
            if row is None:
                return None
            if row.ends_at > now:
                row.ends_at = max(now, row.starts_at)
                s.add(row)
                s.commit()
                s.refresh(row)
            return row.domain()

    # -- queries (CLI) ---------------------------------------------------------------------------
    def query_log(self, *, receiver_id: str | None = None, agency_code: str | None = None,
                  alert_key: str | None = None, since: dt.datetime | None = None, limit: int = 50) -> list[LogRow]:
        with Session(self.engine) as s:
            q = select(LogRow)
            if receiver_id:
                q = q.where(col(LogRow.receiver_id) == receiver_id)
            if agency_code:
                q = q.where(col(LogRow.agency_code) == agency_code)
            if alert_key:
                q = q.where(col(LogRow.alert_key) == alert_key)
            if since:
                q = q.where(col(LogRow.sent_at) >= since)
            rows = s.exec(q.order_by(col(LogRow.id).desc()).limit(limit)).all()
            for r in rows:
                s.expunge(r)
            return list(rows)

    def query_outbox(self, *, status: str | None = None, limit: int = 50) -> list[OutboxRow]:
        with Session(self.engine) as s:
            q = select(OutboxRow)
            if status:
                q = q.where(col(OutboxRow.status) == status)
            rows = s.exec(q.order_by(col(OutboxRow.id).desc()).limit(limit)).all()
            for r in rows:
                s.expunge(r)
            return list(rows)
