"""Weekly digests per agency and monthly summaries (Plan 146's weekly review).

The notifier knows the alerts it received, so the digests are built from
them: the agency's dossiers overdue, due for an apology letter or due soon,
dossiers that were overdue and ended during the week (late), and the plan
tasks due or overdue. The monthly summary counts the month's alerts by kind;
the district summary puts every agency side by side for the leadership.
An alert someone acknowledged shows who, which kind and when.

The weekly digest also counts its dossiers per field (lĩnh vực: the
``field_code`` label of a dossier alert), as the seed's weekly review asks:
overdue, due for an apology letter, ended late. It is what the notifier can
compute from the alerts it received, not the rates: the late rate per field
and the inter-agency dossiers are scoring's (``GET /review``), which the
notifier has no link to. At most :data:`MAX_DIGEST_FIELDS` fields are listed,
the others added up in one :data:`OTHER_FIELDS` line.

A digest for a period is due from ``digest_time`` on the first working day
after the period (Monday for a week, the 1st for a month, later when those
are days off); the caller makes each (kind, period, agency) at most once.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from services.notifier.domain.ack import Acknowledgement, holds
from services.notifier.domain.model import AlertRecord
from services.notifier.domain.quiet import WorkingDays
from shared.calendar import to_local
from shared.text import safe_text

WEEKLY, MONTHLY, DISTRICT_MONTHLY = "weekly", "monthly", "district_monthly"

DOSSIER_OPEN_KINDS = ("dossier_overdue", "dossier_apology_due", "dossier_due_soon")
#: Fields listed in a weekly digest; the others are added up in one line.
MAX_DIGEST_FIELDS = 8
OTHER_FIELDS = "(khác)"  # cannot be a contract code
UNKNOWN_FIELD = "(chưa rõ)"  # an alert without the label
TASK_KINDS = ("plan_task_overdue", "plan_task_due_soon")


@dataclass(frozen=True)
class DigestPeriod:
    kind: str  # weekly | monthly
    key: str  # 2026-W47 | 2026-11
    start: dt.date
    end: dt.date  # inclusive


def _first_working_day(start: dt.date, last: dt.date, calendar: WorkingDays) -> dt.date:
    day = start
    while day <= last:
        if calendar.is_working_day(day):
            return day
        day += dt.timedelta(days=1)
    return start


def due_periods(
    now: dt.datetime, *, calendar: WorkingDays, digest_time: dt.time, weekly: bool = True, monthly: bool = True
) -> list[DigestPeriod]:
    """The periods whose digest is due at ``now`` (the last complete week and month)."""
    local = to_local(now)
    today, t = local.date(), local.time().replace(tzinfo=None)
    out: list[DigestPeriod] = []
    if weekly:
        monday = today - dt.timedelta(days=today.weekday())
        send_day = _first_working_day(monday, monday + dt.timedelta(days=6), calendar)
        if today > send_day or (today == send_day and t >= digest_time):
            start = monday - dt.timedelta(days=7)
            year, week, _ = start.isocalendar()
            out.append(DigestPeriod(WEEKLY, f"{year}-W{week:02d}", start, monday - dt.timedelta(days=1)))
    if monthly:
        first = today.replace(day=1)
        next_first = (first + dt.timedelta(days=32)).replace(day=1)
        send_day = _first_working_day(first, next_first - dt.timedelta(days=1), calendar)
        if today > send_day or (today == send_day and t >= digest_time):
            end = first - dt.timedelta(days=1)
            start = end.replace(day=1)
            out.append(DigestPeriod(MONTHLY, f"{start.year}-{start.month:02d}", start, end))
    return out


def covers(period: DigestPeriod, installed_at: dt.datetime) -> bool:
    """Whether the notifier ran during the period (else its digest would report nothing real)."""
    return to_local(installed_at).date() <= period.end


def _within(moment: dt.datetime | None, period: DigestPeriod) -> bool:
    return moment is not None and period.start <= to_local(moment).date() <= period.end


@dataclass(frozen=True)
class DigestEntry:
    """One line of a digest: an alert as it stands."""

    kind: str
    severity: str
    ref: str
    summary: str
    starts_at: dt.datetime
    ends_at: dt.datetime | None
    labels: dict[str, str] = field(default_factory=dict)
    ack: Acknowledgement | None = None  # who answers for it, while the acknowledgement holds

    @classmethod
    def of(cls, a: AlertRecord, ack: Acknowledgement | None = None) -> DigestEntry:
        return cls(kind=a.kind, severity=a.severity, ref=a.ref, summary=a.summary, starts_at=a.starts_at,
                   ends_at=a.ends_at, labels=dict(a.labels), ack=ack if a.firing and holds(ack, a) else None)


@dataclass(frozen=True)
class AgencyCounts:
    agency_code: str
    fired: dict[str, int]
    resolved: dict[str, int]
    open_at_end: dict[str, int]


@dataclass(frozen=True)
class FieldCount:
    """A field's dossiers in a weekly digest."""

    field_code: str  # safe to show; or OTHER_FIELDS, UNKNOWN_FIELD
    overdue: int = 0
    apology_due: int = 0
    ended_late: int = 0

    @property
    def total(self) -> int:
        return self.overdue + self.apology_due + self.ended_late


def count_fields(
    *, overdue: Iterable[DigestEntry], apology_due: Iterable[DigestEntry], ended_late: Iterable[DigestEntry],
    limit: int = MAX_DIGEST_FIELDS,
) -> tuple[FieldCount, ...]:
    """The digest's dossiers per field, most first (then by code); beyond ``limit`` fields, one line for the rest."""
    counts: dict[str, Counter[str]] = {}
    for name, entries in (("overdue", overdue), ("apology_due", apology_due), ("ended_late", ended_late)):
        for e in entries:
            raw = e.labels.get("field_code")
            code = safe_text(raw, limit=64) if raw else UNKNOWN_FIELD
            counts.setdefault(code, Counter())[name] += 1
    ranked = sorted((FieldCount(code, **c) for code, c in counts.items()), key=lambda f: (-f.total, f.field_code))
    shown, rest = ranked[:limit], ranked[limit:]
    if rest:
        shown.append(FieldCount(OTHER_FIELDS, overdue=sum(f.overdue for f in rest),
                                apology_due=sum(f.apology_due for f in rest),
                                ended_late=sum(f.ended_late for f in rest)))
    return tuple(shown)


@dataclass(frozen=True)
class Digest:
    kind: str
    period: DigestPeriod
    agency_code: str
    overdue: tuple[DigestEntry, ...] = ()
    apology_due: tuple[DigestEntry, ...] = ()
    due_soon: tuple[DigestEntry, ...] = ()
    ended_late: tuple[DigestEntry, ...] = ()
    tasks: tuple[DigestEntry, ...] = ()
    kpis: tuple[DigestEntry, ...] = ()
    counts: tuple[AgencyCounts, ...] = ()
    by_field: tuple[FieldCount, ...] = ()  # weekly: the dossiers above per field

    @property
    def empty(self) -> bool:
        return not (self.overdue or self.apology_due or self.due_soon or self.ended_late or self.tasks or self.kpis
                    or any(sum(c.fired.values()) or sum(c.open_at_end.values()) for c in self.counts))


Acks = Mapping[str, Acknowledgement]


def _sorted(entries: Iterable[AlertRecord], acks: Acks | None = None) -> tuple[DigestEntry, ...]:
    acks = acks or {}
    return tuple(DigestEntry.of(a, acks.get(a.alert_key)) for a in sorted(entries, key=lambda a: (a.starts_at, a.ref)))


def build_weekly(agency_code: str, period: DigestPeriod, alerts: Iterable[AlertRecord],
                 acks: Acks | None = None) -> Digest:
    """What an agency reviews each week: open problems now, and late endings of the week."""
    mine = [a for a in alerts if a.agency_code == agency_code]
    firing = [a for a in mine if a.firing]
    overdue = _sorted((a for a in firing if a.kind == "dossier_overdue"), acks)
    apology_due = _sorted((a for a in firing if a.kind == "dossier_apology_due"), acks)
    ended_late = _sorted(
        a for a in mine if a.kind == "dossier_overdue" and not a.firing and _within(a.ends_at, period)
    )
    return Digest(
        kind=WEEKLY,
        period=period,
        agency_code=agency_code,
        overdue=overdue,
        apology_due=apology_due,
        due_soon=_sorted((a for a in firing if a.kind == "dossier_due_soon"), acks),
        ended_late=ended_late,
        tasks=_sorted((a for a in firing if a.kind in TASK_KINDS), acks),
        kpis=_sorted((a for a in firing if a.kind == "kpi_below_target"), acks),
        by_field=count_fields(overdue=overdue, apology_due=apology_due, ended_late=ended_late),
    )


def count_period(agency_code: str, period: DigestPeriod, alerts: Iterable[AlertRecord]) -> AgencyCounts:
    fired: Counter[str] = Counter()
    resolved: Counter[str] = Counter()
    open_at_end: Counter[str] = Counter()
    for a in alerts:
        if a.agency_code != agency_code:
            continue
        if _within(a.starts_at, period):
            fired[a.kind] += 1
        if not a.firing and _within(a.ends_at, period):
            resolved[a.kind] += 1
        started_before_end = to_local(a.starts_at).date() <= period.end
        ended_after = a.firing or (a.ends_at is not None and to_local(a.ends_at).date() > period.end)
        if started_before_end and ended_after:
            open_at_end[a.kind] += 1
    return AgencyCounts(agency_code, dict(fired), dict(resolved), dict(open_at_end))


def build_monthly(agency_code: str, period: DigestPeriod, alerts: Iterable[AlertRecord],
                  acks: Acks | None = None) -> Digest:
    alerts = list(alerts)
    mine = [a for a in alerts if a.agency_code == agency_code]
    return Digest(
        kind=MONTHLY,
        period=period,
        agency_code=agency_code,
        overdue=_sorted((a for a in mine if a.firing and a.kind == "dossier_overdue"), acks),
        tasks=_sorted((a for a in mine if a.firing and a.kind in TASK_KINDS), acks),
        kpis=_sorted((a for a in mine if a.firing and a.kind == "kpi_below_target"), acks),
        counts=(count_period(agency_code, period, mine),),
    )


def build_district_monthly(
    district_code: str, period: DigestPeriod, alerts: Iterable[AlertRecord], agencies: Iterable[str],
    acks: Acks | None = None,
) -> Digest:
    alerts = list(alerts)
    codes = sorted(set(agencies) | {a.agency_code for a in alerts})
    counts = tuple(count_period(code, period, alerts) for code in codes)
    return Digest(
        kind=DISTRICT_MONTHLY,
        period=period,
        agency_code=district_code,
        kpis=_sorted((a for a in alerts if a.firing and a.kind == "kpi_below_target"), acks),
        counts=tuple(c for c in counts if any((c.fired, c.resolved, c.open_at_end))),
    )
