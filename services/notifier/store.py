"""Persistence of the notifier (SQLite or PostgreSQL, tables prefixed ``notifier_``).

* ``notifier_seen_event``: processed (source, id) pairs, the consumer's dedup.
* ``notifier_alert``: one row per ``alert_key``, its latest episode.
* ``notifier_assignment``: who should hear of which alert, and what they heard.
* ``notifier_group``: when each (receiver, agency) group last sent.
* ``notifier_outbox``: notices to deliver (the shared outbox, ``shared.outbox``),
  written in the transaction of the decision that made them.
* ``notifier_log``: the notification log: one row per (receiver, channel,
  notice) delivered, written in the transaction that deletes the notice from
  the outbox; checked before every send, so nothing goes out twice.
* ``notifier_failure``: notices given up, with the reason; never taken for
  "already sent".
* ``notifier_silence``, ``notifier_digest``: silences; digests made.
* ``notifier_meta``: when the notifier first ran.
* ``notifier_ack``: acknowledgements of alerts (who, which kind, when, an
  optional note), one row each; the latest of an alert's episode holds.

Retention (:meth:`Store.prune`, :mod:`shared.retention`): seen (source, id)
pairs go after ``dedup``; an alert resolved for ``history``, once every
assignment of it is done, goes with its assignments; the notification log,
failures, digests made and silences ended go after ``log``, and so do
acknowledgements, except one that still covers a firing alert's episode. A notice not
delivered yet is never pruned: the outbox holds only those (a delivered or
given-up notice is deleted at once), and the log of a notice is older than
the notice's delivery. ``notifier_group`` (one row per receiver and agency
of the directory) and ``notifier_meta`` do not grow with traffic.

All methods are synchronous; the service runs them in a worker thread. The
store writes the outbox messages the service layer built; it builds none.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Connection,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    delete,
    exists,
    func,
    insert,
    inspect,
    or_,
    text,
)
from sqlmodel import Field, Session, SQLModel, col, select

from services.notifier.domain.ack import Acknowledgement
from services.notifier.domain.alerts import merge_alert
from services.notifier.domain.dispatch import Plan
from services.notifier.domain.model import AlertRecord, Assignment, GroupState
from services.notifier.domain.silence import Silence
from shared.db import UtcDateTime, delete_chunk, delete_with_children, widen_to_bigint
from shared.events import ALERT_RESOLVED_TYPE, Alert
from shared.outbox import Message, Outbox, outbox_table
from shared.retention import Retention

# SQLite caps bound parameters; keep IN lists well under it.
CHUNK = 400


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


class LogRow(SQLModel, table=True):
    __tablename__ = "notifier_log"
    __table_args__ = (
        UniqueConstraint("receiver_id", "channel", "notice_key", name="uq_notifier_log_notice"),
        Index("ix_notifier_log_alert_key", "alert_key"),
        Index("ix_notifier_log_sent_at", "sent_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    outbox_id: int = Field(sa_type=BigInteger)  # the outbox's ids are 64-bit
    receiver_id: str = Field(max_length=64)
    channel: str = Field(max_length=16)
    agency_code: str = Field(max_length=64)
    alert_key: str = Field(max_length=256)
    state: str = Field(max_length=16)  # firing | resolved | digest
    kind: str = Field(max_length=64)
    severity: str = Field(max_length=16)
    notice_key: str = Field(max_length=400)
    sent_at: dt.datetime = _when()


class FailureRow(SQLModel, table=True):
    """A notice given up (a refused address, a receiver no longer in the directory)."""

    __tablename__ = "notifier_failure"
    __table_args__ = (Index("ix_notifier_failure_failed_at", "failed_at"),)

    id: int | None = Field(default=None, primary_key=True)
    receiver_id: str = Field(max_length=64)
    channel: str = Field(max_length=16)
    agency_code: str = Field(max_length=64)
    kind: str = Field(max_length=16)  # alerts | digest
    notice_keys: list[str] = Field(sa_column=Column(JSON, nullable=False))
    reason: str = Field(max_length=500)
    attempts: int
    created_at: dt.datetime = _when()  # when it was queued
    failed_at: dt.datetime = _when()


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


class AckRow(SQLModel, table=True):
    """An official's acknowledgement of an alert episode (no personal data: an official id of the directory)."""

    __tablename__ = "notifier_ack"
    __table_args__ = (Index("ix_notifier_ack_alert_key", "alert_key"), Index("ix_notifier_ack_acked_at", "acked_at"))

    id: int | None = Field(default=None, primary_key=True)
    alert_key: str = Field(max_length=256)
    episode: dt.datetime = _when()
    severity: str = Field(max_length=16)
    official_id: str = Field(max_length=64)
    kind: str = Field(max_length=32)
    note: str = Field(default="", sa_column=Column(Text, nullable=False))
    via: str = Field(max_length=16)
    acked_at: dt.datetime = _when()

    def domain(self) -> Acknowledgement:
        return Acknowledgement(alert_key=self.alert_key, episode=self.episode, severity=self.severity,
                               official_id=self.official_id, kind=self.kind, acked_at=self.acked_at, via=self.via,
                               note=self.note)


_MATCHER_FIELDS = ("kinds", "severities", "agencies", "refs", "alert_keys", "receivers")
TABLES = (SeenEvent, AlertRow, AssignmentRow, GroupRow, LogRow, FailureRow, SilenceRow, DigestRow, MetaRow, AckRow)
OUTBOX = outbox_table("notifier", SQLModel.metadata)

#: The outbox of notifiers before the shared one (``Outbox.create`` sets it aside under this name): what is read
#: of it to carry its waiting notices over.
_LEGACY = Table(
    f"{OUTBOX.name}_legacy",
    MetaData(),
    Column("id", Integer, primary_key=True),
    Column("channel", String(16)),
    Column("payload", JSON),
    Column("notice_keys", JSON),
    Column("status", String(16)),
)


@dataclass(frozen=True)
class IncomingAlert:
    source: str
    event_id: str
    type: str
    alert: Alert


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
class Failure:
    receiver_id: str
    channel: str
    agency_code: str
    kind: str
    notice_keys: list[str]
    reason: str
    attempts: int
    created_at: dt.datetime


@dataclass(frozen=True)
class LegacyNotice:
    """A notice an older notifier left waiting in its own outbox."""

    id: int
    channel: str
    payload: dict[str, Any]
    notice_keys: list[str]


@dataclass(frozen=True)
class Waiting:
    """A notice in the outbox, as ``parwatch notifications --outbox pending`` shows it."""

    id: int
    channel: str
    payload: str
    attempts: int
    created_at: dt.datetime
    next_attempt_at: dt.datetime
    last_error: str | None


@dataclass(frozen=True)
class DispatchState:
    alerts: dict[str, AlertRecord]
    assignments: list[Assignment]
    groups: dict[tuple[str, str], GroupState]
    silences: list[Silence]
    acks: dict[str, Acknowledgement] = field(default_factory=dict)  # the latest of each alert's current episode


class Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.outbox = Outbox(engine, OUTBOX)

    def create_schema(self) -> None:
        """The tables; the outbox of an older notifier is set aside as ``notifier_outbox_legacy`` (by the shared
        outbox)."""
        self.outbox.create()
        SQLModel.metadata.create_all(self.engine, tables=[t.__table__ for t in TABLES])  # type: ignore[attr-defined]
        widen_to_bigint(self.engine, LogRow.__table__)  # type: ignore[arg-type]

    def legacy_notices(self) -> list[LegacyNotice]:
        """The notices an older notifier left waiting in its own outbox (none once carried over)."""
        if not inspect(self.engine).has_table(_LEGACY.name):
            return []
        t = _LEGACY
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.c.id, t.c.channel, t.c.payload, t.c.notice_keys)
                                .where(t.c.status == "pending").order_by(t.c.id))
            return [LegacyNotice(*row) for row in rows]

    def carry_over(self, legacy: Sequence[LegacyNotice], messages: Sequence[Message], *, now: dt.datetime) -> None:
        """Queue ``messages`` (the ``legacy`` notices) and take those out of the older outbox, in one transaction."""
        with self.engine.begin() as conn:
            self.outbox.add(conn, messages, now=now)
            conn.execute(delete(_LEGACY).where(_LEGACY.c.id.in_([n.id for n in legacy])))

    def ping(self) -> bool:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True

    # -- retention -----------------------------------------------------------------
    def prune(self, retention: Retention, *, now: dt.datetime) -> dict[str, int]:
        """One bounded pass of the retention (module docstring): rows deleted, by table."""
        chunk = retention.chunk
        alerts, assignments = self._forget_alerts(before=now - retention.history, limit=chunk)
        before_log = now - retention.log
        aged = [
            (SeenEvent, col(SeenEvent.received_at) < now - retention.dedup),
            (LogRow, col(LogRow.sent_at) < before_log),
            (FailureRow, col(FailureRow.failed_at) < before_log),
            (DigestRow, col(DigestRow.created_at) < before_log),
            (SilenceRow, col(SilenceRow.ends_at) < before_log),
            (AckRow, (col(AckRow.acked_at) < before_log) & ~_covers_firing()),
        ]
        deleted = {AlertRow.__tablename__: alerts, AssignmentRow.__tablename__: assignments}
        for model, where in aged:
            deleted[model.__tablename__] = delete_chunk(self.engine, model.__table__, where, limit=chunk)  # type: ignore[attr-defined]
        return deleted  # type: ignore[return-value]

    def _forget_alerts(self, *, before: dt.datetime, limit: int) -> tuple[int, int]:
        """Up to ``limit`` alerts resolved before ``before`` whose assignments are all done, with those, in one
        transaction."""
        a, s = AlertRow.__table__, AssignmentRow.__table__  # type: ignore[attr-defined]
        undone = exists().where(s.c.alert_key == a.c.alert_key, s.c.done.is_(False))
        old = (a.c.state == "resolved") & (func.coalesce(a.c.resolved_at, a.c.received_at) < before) & ~undone
        with self.engine.begin() as conn:
            keys = list(conn.execute(select(a.c.alert_key).where(old).limit(limit)).scalars())
            return delete_with_children(conn, a.c.alert_key, old, children=[s.c.alert_key], keys=keys, chunk=CHUNK)

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
                # Locked to the commit: a replica receiving another event of this alert waits and merges into
                # what this one wrote (PostgreSQL; SQLite has one writer).
                row = s.get(AlertRow, a.alert_key, with_for_update=True)
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
        firing = {k: r.starts_at for k, r in records.items() if r.firing}
        acks = {k: a for k, a in self.latest_acks(firing).items() if a.episode == firing[k]}
        return DispatchState(alerts=records, assignments=assignments, groups=groups, silences=silences, acks=acks)

    def apply_plan(self, plan: Plan, messages: Sequence[Message], *, now: dt.datetime) -> None:
        """Assignments, group times and the notices of the plan's flushes, in one transaction."""
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
            self.outbox.add(s.connection(), messages, now=now)
            s.commit()

    # -- digests --------------------------------------------------------------------------
    def installed_at(self, *, now: dt.datetime) -> dt.datetime:
        """When this notifier first ran (recorded on the first call): no digest for earlier periods."""
        with Session(self.engine) as s:
            row = s.get(MetaRow, "installed_at")
            if row is None:
                row = MetaRow(key="installed_at", value=now.astimezone(dt.UTC).isoformat())
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

    def make_digest(self, kind: str, period_key: str, agency_code: str, messages: Sequence[Message], *,
                    now: dt.datetime) -> bool:
        """Record the digest as made and queue its notices, once per (kind, period, agency)."""
        with Session(self.engine) as s:
            if s.get(DigestRow, (kind, period_key, agency_code)) is not None:
                return False
            s.add(DigestRow(kind=kind, period_key=period_key, agency_code=agency_code, created_at=now))
            self.outbox.add(s.connection(), messages, now=now)
            s.commit()
        return True

    # -- delivering ------------------------------------------------------------------------
    def logged_keys(self, *, receiver_id: str, channel: str, keys: Sequence[str]) -> set[str]:
        """The notices among ``keys`` already delivered to this receiver on this channel."""
        with self.engine.connect() as conn:
            return _logged(conn, receiver_id=receiver_id, channel=channel, keys=keys)

    @staticmethod
    def log_sent(conn: Connection, entries: Sequence[LogEntry], *, outbox_id: int, now: dt.datetime) -> None:
        """In the transaction that deletes the delivered notice: its entries of the notification log."""
        if not entries:
            return
        done = _logged(conn, receiver_id=entries[0].receiver_id, channel=entries[0].channel,
                       keys=[e.notice_key for e in entries])
        rows = [{**asdict(e), "outbox_id": outbox_id, "sent_at": now} for e in entries if e.notice_key not in done]
        if rows:
            conn.execute(insert(LogRow), rows)

    @staticmethod
    def log_failure(conn: Connection, failure: Failure, *, now: dt.datetime) -> None:
        """In the transaction that deletes the given-up notice: why it was given up."""
        conn.execute(insert(FailureRow), [{**asdict(failure), "reason": failure.reason[:500], "failed_at": now}])

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

    # -- acknowledgements -------------------------------------------------------------------------
    def add_ack(self, ack: Acknowledgement) -> None:
        with Session(self.engine) as s:
            s.add(AckRow(alert_key=ack.alert_key, episode=ack.episode, severity=ack.severity,
                         official_id=ack.official_id, kind=ack.kind, note=ack.note, via=ack.via, acked_at=ack.acked_at))
            s.commit()

    def latest_acks(self, keys: Iterable[str]) -> dict[str, Acknowledgement]:
        """The latest acknowledgement of each alert key that has one (of whatever episode)."""
        wanted = list(dict.fromkeys(keys))
        out: dict[str, Acknowledgement] = {}
        with Session(self.engine) as s:
            for i in range(0, len(wanted), CHUNK):
                rows = s.exec(select(AckRow).where(col(AckRow.alert_key).in_(wanted[i : i + CHUNK]))
                              .order_by(col(AckRow.acked_at), col(AckRow.id))).all()
                out.update((r.alert_key, r.domain()) for r in rows)
        return out

    def alert(self, alert_key: str) -> AlertRecord | None:
        with Session(self.engine) as s:
            row = s.get(AlertRow, alert_key)
            return row.record() if row else None

    def firing_alerts(self) -> list[AlertRecord]:
        with Session(self.engine) as s:
            rows = s.exec(select(AlertRow).where(col(AlertRow.state) == "firing")
                          .order_by(col(AlertRow.starts_at), col(AlertRow.alert_key))).all()
            return [r.record() for r in rows]

    def receivers_of(self, alert_key: str, episode: dt.datetime) -> set[str]:
        """The official ids assigned to hear of this episode of the alert."""
        with Session(self.engine) as s:
            rows = s.exec(select(AssignmentRow.receiver_id).where(col(AssignmentRow.alert_key) == alert_key,
                                                                  col(AssignmentRow.episode) == episode)).all()
        return set(rows)

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

    def waiting(self, *, limit: int = 50) -> list[Waiting]:
        """Notices in the outbox, the latest first."""
        t = OUTBOX
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.c.id, t.c.topic, t.c.payload, t.c.attempts, t.c.created_at,
                                       t.c.next_attempt_at, t.c.last_error).order_by(t.c.id.desc()).limit(limit))
            return [Waiting(*row) for row in rows]

    def failures(self, *, limit: int = 50) -> list[FailureRow]:
        """Notices given up, the latest first."""
        with Session(self.engine) as s:
            rows = s.exec(select(FailureRow).order_by(col(FailureRow.id).desc()).limit(limit)).all()
            for r in rows:
                s.expunge(r)
            return list(rows)

    def sent(self, *, limit: int = 50) -> list[list[LogRow]]:
        """Notices delivered, the latest first, each as its entries in the notification log."""
        notice = (LogRow.receiver_id, LogRow.channel, LogRow.outbox_id, LogRow.sent_at)
        with Session(self.engine) as s:
            latest = (select(*notice, func.max(LogRow.id).label("last")).group_by(*notice)
                      .order_by(func.max(LogRow.id).desc()).limit(limit).subquery())
            rows = s.exec(select(LogRow, latest.c.last).join(latest, and_(*(c == latest.c[c.key] for c in notice)))
                          .order_by(latest.c.last.desc(), col(LogRow.id))).all()
            out: dict[int, list[LogRow]] = {}
            for row, last in rows:
                s.expunge(row)
                out.setdefault(last, []).append(row)
        return list(out.values())


def _covers_firing() -> Any:
    """An acknowledgement of the episode of an alert still firing: kept whatever its age."""
    a = AlertRow.__table__  # type: ignore[attr-defined]
    return exists().where(a.c.alert_key == AckRow.alert_key, a.c.starts_at == AckRow.episode, a.c.state == "firing")


def _logged(conn: Connection, *, receiver_id: str, channel: str, keys: Sequence[str]) -> set[str]:
    if not keys:
        return set()
    rows = conn.execute(select(LogRow.notice_key).where(
        col(LogRow.receiver_id) == receiver_id, col(LogRow.channel) == channel,
        col(LogRow.notice_key).in_(list(keys))))
    return {key for (key,) in rows}
