"""scoring's pure rules: periods, per-record contributions, figures, index points.

No I/O, no clock, no environment: ``today`` and every record are passed in.

The figures of an agency for a period are sums of *contributions*: every
dossier, rating and plan-task occurrence contributes counts to a few
(period, agency, figure) cells, and every open dossier to one cell of the
open-dossier table (agency, due day, mode). When a record changes, its old
contribution is subtracted and its new one added, so the stored sums always
equal what a recomputation from the stored records gives (``rebuild``).

Rule 7 (contract): on-time rate = (ended early or on time in the period +
open not overdue at the period's end) / (ended in the period + open at the
period's end); the current period ends now. No dossier, no value.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from shared import rules
from shared.calendar import local_date, period_name
from shared.events import DossierStateChanged, PlanTaskStateChanged, RatingSubmitted
from shared.rules import Clock, OpenFacts

PeriodKind = Literal["month", "quarter", "year"]
PERIOD_KINDS: tuple[PeriodKind, ...] = ("month", "quarter", "year")
KPIS = ("on_time", "plan_completion", "online_filing", "national_sync", "online_service")
Kpi = Literal["on_time", "plan_completion", "online_filing", "national_sync", "online_service"]
CRITERIA = tuple(f"c{i}" for i in range(1, 10))
ONLINE_CHANNEL = 2

_DIGITS = re.compile(r"(\d+)")


# -- periods -------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Period:
    """A month, quarter or year of the calendar in Asia/Ho_Chi_Minh."""

    year: int
    kind: PeriodKind
    number: int = 0  # month 1..12, quarter 1..4, 0 for a year

    def __post_init__(self) -> None:
        limit = {"month": 12, "quarter": 4, "year": 0}[self.kind]
        if not (1 <= self.year <= 9998):
            raise ValueError("year out of range")
        if self.kind == "year" and self.number != 0:
            raise ValueError("a year has no number")
        if self.kind != "year" and not (1 <= self.number <= limit):
            raise ValueError(f"{self.kind} number out of range")

    @classmethod
    def parse(cls, text: str) -> Period:
        """``2026-10`` (month), ``2026-Q4`` (quarter) or ``2026`` (year)."""
        raw = text.strip()
        try:
            if len(raw) == 4 and raw.isdigit():
                return cls(int(raw), "year")
            if len(raw) == 7 and raw[4] == "-" and raw[:4].isdigit():
                tail = raw[5:]
                if tail[0] in "Qq" and tail[1:].isdigit():
                    return cls(int(raw[:4]), "quarter", int(tail[1:]))
                if tail.isdigit():
                    return cls(int(raw[:4]), "month", int(tail))
        except ValueError:
            pass
        raise ValueError(f"period {text[:20]!r} is not YYYY-MM, YYYY-Qn or YYYY (e.g. 2026-10, 2026-Q4, 2026)")

    @classmethod
    def containing(cls, day: dt.date, kind: PeriodKind) -> Period:
        if kind == "month":
            return cls(day.year, "month", day.month)
        if kind == "quarter":
            return cls(day.year, "quarter", (day.month - 1) // 3 + 1)
        return cls(day.year, "year")

    @property
    def key(self) -> str:
        if self.kind == "month":
            return f"{self.year:04d}-{self.number:02d}"
        if self.kind == "quarter":
            return f"{self.year:04d}-Q{self.number}"
        return f"{self.year:04d}"

    @property
    def start(self) -> dt.date:
        if self.kind == "month":
            return dt.date(self.year, self.number, 1)
        if self.kind == "quarter":
            return dt.date(self.year, 3 * self.number - 2, 1)
        return dt.date(self.year, 1, 1)

    @property
    def end(self) -> dt.date:
        """The last day of the period (inclusive)."""
        if self.kind == "month":
            last_month = self.number
        elif self.kind == "quarter":
            last_month = 3 * self.number
        else:
            last_month = 12
        if last_month == 12:
            return dt.date(self.year, 12, 31)
        return dt.date(self.year, last_month + 1, 1) - dt.timedelta(days=1)

    def contains(self, day: dt.date) -> bool:
        return self.start <= day <= self.end

    @property
    def label_vi(self) -> str:
        """``tháng 11/2026``, ``quý IV/2026``, ``năm 2026``."""
        return period_name(self.key)

    def __str__(self) -> str:
        return self.key


@functools.lru_cache(maxsize=8192)
def period_keys(day: dt.date) -> tuple[str, str, str]:
    """The keys of the month, quarter and year that contain ``day`` (memoised: days repeat, dossiers do not)."""
    return tuple(Period.containing(day, k).key for k in PERIOD_KINDS)  # type: ignore[return-value]


def current_periods(today: dt.date) -> dict[PeriodKind, Period]:
    return {k: Period.containing(today, k) for k in PERIOD_KINDS}


def today_in_vietnam(now: dt.datetime) -> dt.date:
    """The business day of an aware instant (midnight is Asia/Ho_Chi_Minh midnight)."""
    return local_date(now)


# -- dossiers ------------------------------------------------------------------------------

#: Open-dossier modes: the dossier's clock (``shared.rules.Clock``: rules 4, 6 and 7 live there, once).
NORMAL = Clock.RUNNING  # overdue when the day is after the due day
NEVER_OVERDUE = Clock.STOPPED  # paused, the pause began on or before the due day
ALWAYS_OVERDUE = Clock.LATE  # a second supplement request: late whatever its dates (rule 4)
#: Stands for "no due day" in the open table (a key column cannot be NULL); never overdue.
NO_DUE_DAY = dt.date(9999, 12, 31)

ENDED_FIGURE = {"early": "ended_early", "on_time": "ended_on_time", "late": "ended_late", None: "ended_unclassified"}


@dataclass(frozen=True)
class DossierFacts:
    """What scoring keeps of a dossier: the fields of its latest state snapshot it uses."""

    dossier_code: str
    revision: int
    agency_code: str
    counted: bool
    receipt_day: dt.date | None = None
    due_day: dt.date | None = None
    paused: bool = False
    pause_started_on: dt.date | None = None
    supplement_requests: int = 0
    ended_on: dt.date | None = None
    timeliness: str | None = None
    channel: int | None = None
    online_payment: bool | None = None
    digitized: bool | None = None
    synced_national: bool | None = None
    field_code: str | None = None  # None: stored before scoring kept it (shown as an unknown field)
    #: Whether the dossier was seen under more than one agency (its snapshots named several agency codes):
    #: set by the store, which alone sees the previous snapshot; None: stored before scoring kept it.
    inter_agency: bool | None = None
    #: The snapshot's event time: the latest ``occurred_at`` of the events of the batch behind it (dossier_tracker).
    #: None: not known (a fact of an older tracker, or stored before scoring kept it).
    occurred_at: dt.datetime | None = None
    #: The tracker's generation of the dossier's history (how many times it folded it again from a late event),
    #: and, on the facts of a batch that told it again, the first revision told (``rewritten``).
    generation: int | None = 0  # None only in a database column added in place, until create_schema sets 0
    rewrites_from: int | None = None

    @classmethod
    def from_state(cls, state: DossierStateChanged) -> DossierFacts:
        names = [n for n in cls.__dataclass_fields__ if n != "inter_agency"]
        return cls(**{name: getattr(state, name) for name in names})

    @property
    def is_open(self) -> bool:
        return self.counted and self.ended_on is None


def open_mode(
    *,
    paused: bool,
    pause_started_on: dt.date | None,
    due_day: dt.date | None,
    supplement_requests: int,
    at: dt.date | None = None,
) -> Clock:
    """How rule 7 treats an open dossier (``shared.rules.clock``); ``at`` is the day it is judged (None: now).

    A second supplement request counts as overdue even while paused; a paused
    dossier is not overdue if its pause began on or before its due day; judged
    at a past day, a pause counts only if it had begun by then.
    """
    return rules.clock(OpenFacts(due_day, paused, pause_started_on, supplement_requests), day=at)


def is_overdue(*, due_day: dt.date | None, mode: int, day: dt.date) -> bool:
    """Whether an open dossier of ``mode`` (an open-table cell) is overdue at ``day`` (``shared.rules.overdue``)."""
    return rules.overdue(Clock(mode), due_day=due_day, day=day)


OpenKey = tuple[str, dt.date, int]  # (agency, due day or NO_DUE_DAY, mode)
CellKey = tuple[str, str, str]  # (period key, agency, figure)


def open_key(f: DossierFacts) -> OpenKey | None:
    """The open-table cell an open dossier counts in now; None when not open."""
    if not f.is_open:
        return None
    mode = open_mode(
        paused=f.paused,
        pause_started_on=f.pause_started_on,
        due_day=f.due_day,
        supplement_requests=f.supplement_requests,
    )
    return (f.agency_code, f.due_day or NO_DUE_DAY, int(mode))  # a plain int in the key column


#: A share over the dossiers whose optional flag is known: (its numerator's figure, its denominator's figure). An
#: event without the flag says nothing of it (contract: optional), so such a dossier is in neither.
FLAG_FIGURES = {
    "channel": ("filed_online", "channel_reported"),
    "online_payment": ("paid_online", "payment_reported"),
    "digitized": ("digitized", "digitized_reported"),
    "synced_national": ("synced", "sync_reported"),
}
#: Bumped when what a record contributes changes: the aggregates are then rebuilt at start (``ScoringStore``).
CONTRIBUTIONS_VERSION = "5"


def known_flags(f: DossierFacts) -> list[str]:
    """The figures a received dossier's optional flags add: each known flag its denominator, a yes its numerator."""
    out: list[str] = []
    for flag, (yes, known) in FLAG_FIGURES.items():
        value = getattr(f, flag)
        if value is None:
            continue
        out.append(known)
        said_yes = value == ONLINE_CHANNEL if flag == "channel" else value is True
        if said_yes:
            out.append(yes)
    return out


def dossier_contributions(f: DossierFacts, weight: int = 1) -> Counter[CellKey]:
    """The (period, agency, figure) counts one dossier adds (``weight`` identical dossiers)."""
    out: Counter[CellKey] = Counter()
    if not f.counted:
        return out  # rule 1: never received, counted nowhere
    agency = f.agency_code
    if f.receipt_day is not None:
        figures = ["received", *known_flags(f)]
        for key in period_keys(f.receipt_day):
            for name in figures:
                out[(key, agency, name)] += weight
    if f.ended_on is not None:
        name = ENDED_FIGURE.get(f.timeliness, "ended_unclassified")
        for key in period_keys(f.ended_on):
            out[(key, agency, name)] += weight
    return out



# -- closed periods: a dossier's state at the end of a past day ----------------------------------------

#: ``valid_from`` of a snapshot whose event time is unknown (and of those before it): it stands for any past day.
SINCE_EVER = dt.date.min
#: ``valid_to`` of the latest snapshot: it stands until a later one comes.
FOREVER = dt.date(9999, 12, 31)


@dataclass(frozen=True)
class HistoryEntry:
    """One snapshot of a dossier's history and the days at whose end it was the dossier's state:
    ``valid_from <= day < valid_to`` (an empty span when a later snapshot took effect the same day)."""

    facts: DossierFacts
    valid_from: dt.date
    valid_to: dt.date

    def holds_at(self, day: dt.date) -> bool:
        return self.valid_from <= day < self.valid_to

    @property
    def ever_holds(self) -> bool:
        return self.valid_from < self.valid_to


def rewritten(facts: DossierFacts, by: Iterable[DossierFacts]) -> bool:
    """Whether a later generation told the dossier again from ``facts``'s revision or before it (a history folded
    again from a late event): ``facts`` follows from a history without that event, and no longer stands."""
    generation = facts.generation or 0
    return any(r.rewrites_from is not None and (r.generation or 0) > generation and facts.revision >= r.rewrites_from
               for r in by)


def dossier_history(snapshots: Iterable[DossierFacts]) -> list[HistoryEntry]:
    """A dossier's snapshots by revision, each with the days it is the dossier's state at.

    Snapshot ``r`` (the fold of the dossier's first ``r`` events) takes effect on the local day of the latest event
    time among snapshots ``2..r``: from then on every event it follows from had occurred. The first snapshot stands
    for every day before the second takes effect: before its own event time the dossier is what its dates say (not
    yet received before its receipt day, open before its end day, not paused before its pause began), since one
    snapshot may fold a dossier's events of several months (a backfill sends them in one batch). A snapshot without
    an event time (an older tracker's, or one stored before scoring kept it) takes effect as early as the one before
    it. The inter-agency flag of each snapshot is recomputed from the agencies named up to it (sticky, as for the
    latest). One snapshot per revision: a second copy of a revision is the same fact delivered again.
    """
    ordered = sorted({f.revision: f for f in snapshots}.values(), key=lambda f: f.revision)
    starts: list[dt.date] = []
    flagged: list[DossierFacts] = []
    running = SINCE_EVER
    agencies: set[str] = set()
    inter = False
    for i, f in enumerate(ordered):
        if f.occurred_at is not None and i > 0:
            running = max(running, local_date(f.occurred_at))
        agencies.add(f.agency_code)
        inter = inter or bool(f.inter_agency) or len(agencies) > 1
        starts.append(running)
        flagged.append(f if f.inter_agency == inter else replace(f, inter_agency=inter))
    ends = [*starts[1:], FOREVER]
    return [HistoryEntry(f, start, end) for f, start, end in zip(flagged, starts, ends, strict=True)]


def state_at(history: Sequence[HistoryEntry], day: dt.date) -> DossierFacts | None:
    """The dossier's state at the end of ``day``: the snapshot of the events that had occurred by then, or the
    first snapshot (whose dates say what of it had happened by then). None only for an empty history."""
    for entry in reversed(history):
        if entry.holds_at(day):
            return entry.facts
    return None


def history_contributions(history: Sequence[HistoryEntry], weight: int = 1) -> Counter[CellKey]:
    """The (period, agency, figure) counts of a dossier with a history: each period counts the dossier as it
    stood at the period's last day (received there, ended there, flags as known then).

    A period whose last day is at or after the latest snapshot's day (every running period) counts the latest
    snapshot, as :func:`dossier_contributions` does; a closed period counts the snapshot of the events that occurred
    by its end, so an event that occurred after it cannot change it. A period counts only what falls in it (received
    or ended there), so a snapshot's later dates never count in an earlier period.
    """
    if not history:
        return Counter()
    latest = history[-1]
    periods: set[Period] = set()
    for entry in history:
        if entry.ever_holds:
            for day in (entry.facts.receipt_day, entry.facts.ended_on):
                if day is not None:
                    periods.update(Period.containing(day, kind) for kind in PERIOD_KINDS)
    if all(latest.valid_from <= p.end for p in periods):
        return dossier_contributions(latest.facts, weight)  # every period ends after the latest snapshot
    out: Counter[CellKey] = Counter()
    for p in periods:
        state = state_at(history, p.end)
        if state is None:
            continue
        for cell, n in dossier_contributions(state, weight).items():
            if cell[0] == p.key:
                out[cell] += n
    return out


# -- ratings -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RatingFacts:
    dossier_code: str
    agency_code: str
    rated_at: dt.datetime
    event_id: str
    overall: str
    criteria: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_event(cls, data: RatingSubmitted, *, event_id: str) -> RatingFacts:
        return cls(
            dossier_code=data.dossier_code,
            agency_code=data.agency_code,
            rated_at=data.rated_at,
            event_id=event_id,
            overall=data.overall,
            criteria=dict(data.criteria or {}),
        )

    @property
    def order(self) -> tuple[dt.datetime, tuple]:
        return (self.rated_at, natural_key(self.event_id))


def natural_key(text: str) -> tuple:
    """Event ids in natural order: ``x:10`` after ``x:9`` (deadline_monitor's ids end in a version)."""
    return tuple((int(part), part) if part.isdigit() else (-1, part) for part in _DIGITS.split(text))


def supersedes(new: RatingFacts | TaskFacts, old: RatingFacts | TaskFacts | None) -> bool:
    """The later record wins (by its time, ties by event id); the same record does not."""
    return old is None or new.order > old.order


def rating_contributions(ratings: Iterable[RatingFacts]) -> Counter[CellKey]:
    """Counts a dossier's ratings add: each period (month, quarter, year) counts the latest rating made in it.

    A later rating replaces an earlier one (contract) in every period both fall in; a closed period keeps the
    rating made in it, so a dossier rated again next month leaves last month's figure as it was (a month is
    judged as of its last day)."""
    latest: dict[str, RatingFacts] = {}
    for r in ratings:
        for key in period_keys(local_date(r.rated_at)):
            if supersedes(r, latest.get(key)):
                latest[key] = r
    out: Counter[CellKey] = Counter()
    for key, r in latest.items():
        for name, n in _rating_figures(r):
            out[(key, r.agency_code, name)] += n
    return out


def _rating_figures(r: RatingFacts) -> list[tuple[str, int]]:
    figures: list[tuple[str, int]] = [("rated", 1)]
    figures.append(("rated_satisfied", 1) if r.overall in ("very_satisfied", "satisfied") else ("rated_unsatisfied", 1))
    for cid, score in sorted(r.criteria.items()):
        figures.append((f"criterion_n_{cid}", 1))
        if score:
            figures.append((f"criterion_sum_{cid}", score))
    return figures


# -- plan tasks ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskFacts:
    plan_id: str
    task_id: str
    occurrence: str  # the recurring task's period, "" for a one-off task
    agency_code: str
    due_day: dt.date
    state: str
    updated_at: dt.datetime
    event_id: str
    done_on: dt.date | None = None  # the day it was done (None: not done, or a record from before the field)

    @classmethod
    def from_event(cls, data: PlanTaskStateChanged, *, event_id: str) -> TaskFacts:
        return cls(
            plan_id=data.plan_id,
            task_id=data.task_id,
            occurrence=data.period or "",
            agency_code=data.agency_code,
            due_day=data.due_day,
            state=data.state,
            updated_at=data.updated_at,
            event_id=event_id,
            done_on=data.done_on,
        )

    def state_at(self, day: dt.date) -> str:
        """Its state at the end of ``day`` (a day on or after its due day), read from this (its latest) record:
        done or done late from its done day on, overdue before it (its due day had passed unmet); otherwise the
        record's state. A done record without a done day stands for every day."""
        if self.state in ("done", "done_late") and self.done_on is not None and self.done_on > day:
            return "overdue"
        return self.state

    @property
    def key(self) -> tuple[str, str, str, str]:
        """One occurrence: a task assigned to every agency has one per agency (deadline_monitor)."""
        return (self.plan_id, self.task_id, self.agency_code, self.occurrence)

    @property
    def order(self) -> tuple[dt.datetime, tuple]:
        return (self.updated_at, natural_key(self.event_id))


def task_contributions(t: TaskFacts) -> Counter[CellKey]:
    """A task occurrence counts in the periods of its due day, by its state at each period's last day: a month
    that closed with the duty not done (its due day in the month) keeps it overdue when it is done late the
    month after; its quarter and year count it done late."""
    out: Counter[CellKey] = Counter()
    for kind in PERIOD_KINDS:
        period = Period.containing(t.due_day, kind)
        out[(period.key, t.agency_code, f"task_{t.state_at(period.end)}")] += 1
    return out


# -- figures -------------------------------------------------------------------------------


def ratio(numerator: float, denominator: float) -> float | None:
    """A share; None (no series, never 0 or 1) when the denominator is empty."""
    if denominator <= 0:
        return None
    return numerator / denominator


@dataclass(frozen=True)
class IndexConfig:
    """Points of the Decision 766 parts parwatch computes (configurable, see docs/scoring.md)."""

    progress_points: float = 20.0
    handling_points: float = 6.0
    handling_full_at: float = 0.9
    online_filing_points: float = 6.0
    online_filing_full_at: float = 0.5
    sync_points: float = 6.0
    sync_full_at: float = 1.0
    # Group sizes of the Decision (100 points in all).
    publicity_group: float = 18.0
    online_group: float = 22.0
    digitization_group: float = 22.0
    satisfaction_group: float = 18.0


@dataclass(frozen=True)
class IndexPart:
    part: str
    group: str
    max_points: float
    points: float | None  # None: not computable (no series, never 0)
    computable: bool
    note: str


NOT_COMPUTABLE_NOTES = {
    "publicity_other": "publication of procedures and results on time (no event carries it)",
    "online_service_other": (
        "share of procedures offered online and online payment of fees (events carry a dossier's "
        "online_payment but not which procedures or dossiers owe a fee)"
    ),
    "digitization": (
        "the Decision scores digitized components, digitized results and reuse of digitized data; events "
        "carry only a dossier's digitized flag (its share is reported as a figure, not as points)"
    ),
    "satisfaction_other": "handling of feedback and complaints (phản ánh, kiến nghị): no event carries it",
}


@dataclass(frozen=True)
class Figures:
    """The figures of one agency (or the district) for one period."""

    ended_early: int
    ended_on_time: int
    ended_late: int
    ended_unclassified: int
    open: int
    overdue: int
    on_time_ratio: float | None
    received: int
    channel_reported: int
    filed_online: int
    paid_online: int
    payment_reported: int
    digitized_reported: int
    digitized: int
    sync_reported: int
    synced: int
    online_filing_ratio: float | None
    online_payment_ratio: float | None
    digitized_ratio: float | None
    national_sync_ratio: float | None
    rated: int
    rated_satisfied: int
    rated_unsatisfied: int
    satisfaction_ratio: float | None
    criteria: dict[str, float]
    tasks_done: int
    tasks_done_late: int
    tasks_overdue: int
    tasks_open: int
    plan_completion_ratio: float | None
    index: tuple[IndexPart, ...]
    #: The procedure catalog (running periods only: the catalog in force now): eligible procedures, those offered
    #: as full online public services, and the share (Plan 146's online target).
    procedures_eligible: int = 0
    procedures_online: int = 0
    online_service_ratio: float | None = None

    @property
    def ended(self) -> int:
        return self.ended_early + self.ended_on_time + self.ended_late

    @property
    def handled(self) -> int:
        """Rule 7's denominator: classified ended dossiers and open ones."""
        return self.ended + self.open

    @property
    def has_data(self) -> bool:
        return bool(self.handled or self.ended_unclassified or self.received or self.rated or self.tasks_total
                    or self.procedures_eligible)

    @property
    def tasks_total(self) -> int:
        return self.tasks_done + self.tasks_done_late + self.tasks_overdue + self.tasks_open

    def kpi(self, name: str) -> float | None:
        return {
            "on_time": self.on_time_ratio,
            "plan_completion": self.plan_completion_ratio,
            "online_filing": self.online_filing_ratio,
            "national_sync": self.national_sync_ratio,
            "online_service": self.online_service_ratio,
        }[name]

    def kpi_denominator(self, name: str) -> int:
        return {
            "on_time": self.handled,
            "plan_completion": self.tasks_done + self.tasks_done_late + self.tasks_overdue,
            "online_filing": self.channel_reported,
            "national_sync": self.sync_reported,
            "online_service": self.procedures_eligible,
        }[name]


def on_time_ratio(*, early: int, on_time: int, late: int, open_total: int, overdue: int) -> float | None:
    """Rule 7. Ended dossiers with no due day (unclassified) are in neither part."""
    return ratio(early + on_time + (open_total - overdue), early + on_time + late + open_total)


def handling_satisfaction_points(
    *, on_time: float | None, unsatisfied: int, handled: int, config: IndexConfig
) -> float | None:
    """min(6, 6 × r / 0.9), r = 1 − (late rate + rate of dossiers rated unsatisfied).

    The late rate is 1 − the on-time rate (rule 7, so it includes open overdue
    dossiers); the unsatisfied rate is dossiers whose effective rating is
    "unsatisfied" over the same handled dossiers.
    """
    if on_time is None or handled <= 0:
        return None
    r = 1.0 - ((1.0 - on_time) + min(1.0, unsatisfied / handled))
    return max(0.0, min(config.handling_points, config.handling_points * r / config.handling_full_at))


def scaled_points(share: float | None, *, points: float, full_at: float) -> float | None:
    """Linear from 0 points at 0% to full points at ``full_at`` and above."""
    if share is None:
        return None
    return points * min(1.0, share / full_at)


def index_parts(
    *,
    on_time: float | None,
    unsatisfied: int,
    handled: int,
    online_share: float | None,
    sync_share: float | None,
    config: IndexConfig,
) -> tuple[IndexPart, ...]:
    c = config
    progress = None if on_time is None else c.progress_points * on_time
    handling = handling_satisfaction_points(on_time=on_time, unsatisfied=unsatisfied, handled=handled, config=c)
    online = scaled_points(online_share, points=c.online_filing_points, full_at=c.online_filing_full_at)
    sync = scaled_points(sync_share, points=c.sync_points, full_at=c.sync_full_at)

    def part(name: str, group: str, max_points: float, points: float | None, note: str) -> IndexPart:
        return IndexPart(name, group, max_points, points, points is not None, note)

    def missing(name: str, group: str, max_points: float) -> IndexPart:
        note = "not computable: " + NOT_COMPUTABLE_NOTES[name]
        return IndexPart(name, group, max(0.0, max_points), None, False, note)

    return (
        part("progress", "progress", c.progress_points, progress, "20 × on-time rate (rule 7)"),
        part(
            "handling_satisfaction",
            "satisfaction",
            c.handling_points,
            handling,
            "min(6, 6 × r / 0.9), r = 1 − (late rate + share of dossiers rated unsatisfied)",
        ),
        part(
            "online_filing",
            "online_service",
            c.online_filing_points,
            online,
            f"share of received dossiers filed online (among those whose channel is known), full points at"
            f" ≥ {c.online_filing_full_at:.0%}",
        ),
        part(
            "national_sync",
            "publicity_transparency",
            c.sync_points,
            sync,
            f"share of received dossiers synced to the national portal (among those whose sync is known), full"
            f" points at {c.sync_full_at:.0%}",
        ),
        missing("publicity_other", "publicity_transparency", c.publicity_group - c.sync_points),
        missing("online_service_other", "online_service", c.online_group - c.online_filing_points),
        missing("digitization", "digitization", c.digitization_group),
        missing("satisfaction_other", "satisfaction", c.satisfaction_group - c.handling_points),
    )


def compute_figures(counts: Mapping[str, int], *, config: IndexConfig) -> Figures:
    """Every figure of one (agency, period) from its summed counts.

    ``counts`` holds the additive cells (``ended_early``, ``received``,
    ``rated``, ``task_done``, ...) plus ``open`` and ``overdue`` at the
    period's end.
    """
    g = lambda name: int(counts.get(name, 0))  # noqa: E731 - local shorthand
    early, on_time, late = g("ended_early"), g("ended_on_time"), g("ended_late")
    open_total, overdue = g("open"), g("overdue")
    received = g("received")
    on_time_value = on_time_ratio(early=early, on_time=on_time, late=late, open_total=open_total, overdue=overdue)
    online_share = ratio(g("filed_online"), g("channel_reported"))
    sync_share = ratio(g("synced"), g("sync_reported"))
    criteria = {
        cid: g(f"criterion_sum_{cid}") / g(f"criterion_n_{cid}") for cid in CRITERIA if g(f"criterion_n_{cid}") > 0
    }
    done, done_late, task_overdue = g("task_done"), g("task_done_late"), g("task_overdue")
    handled = early + on_time + late + open_total
    return Figures(
        ended_early=early,
        ended_on_time=on_time,
        ended_late=late,
        ended_unclassified=g("ended_unclassified"),
        open=open_total,
        overdue=overdue,
        on_time_ratio=on_time_value,
        received=received,
        channel_reported=g("channel_reported"),
        filed_online=g("filed_online"),
        paid_online=g("paid_online"),
        payment_reported=g("payment_reported"),
        digitized_reported=g("digitized_reported"),
        digitized=g("digitized"),
        sync_reported=g("sync_reported"),
        synced=g("synced"),
        online_filing_ratio=online_share,
        online_payment_ratio=ratio(g("paid_online"), g("payment_reported")),
        digitized_ratio=ratio(g("digitized"), g("digitized_reported")),
        national_sync_ratio=sync_share,
        rated=g("rated"),
        rated_satisfied=g("rated_satisfied"),
        rated_unsatisfied=g("rated_unsatisfied"),
        satisfaction_ratio=ratio(g("rated_satisfied"), g("rated")),
        criteria=criteria,
        tasks_done=done,
        tasks_done_late=done_late,
        tasks_overdue=task_overdue,
        tasks_open=g("task_open"),
        plan_completion_ratio=ratio(done + done_late, done + done_late + task_overdue),
        index=index_parts(
            on_time=on_time_value,
            unsatisfied=g("rated_unsatisfied"),
            handled=handled,
            online_share=online_share,
            sync_share=sync_share,
            config=config,
        ),
        procedures_eligible=g("procedures_eligible"),
        procedures_online=g("procedures_online"),
        online_service_ratio=ratio(g("procedures_online"), g("procedures_eligible")),
    )


def roll_up(per_agency: Iterable[Mapping[str, int]]) -> Counter[str]:
    """The district's counts: the sum of its agencies' (ratios are recomputed from sums)."""
    total: Counter[str] = Counter()
    for counts in per_agency:
        total.update(counts)
    return total
