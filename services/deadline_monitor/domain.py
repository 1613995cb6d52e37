"""Pure alert decisions of the deadline monitor: no I/O, no clock, no environment.

Everything here takes ``today`` (the business day in Asia/Ho_Chi_Minh) or
``now`` as an argument and returns decisions; :mod:`service` applies them and
:mod:`store` records them.

Conditions and transitions
--------------------------
A dossier or a plan-task occurrence has a small ordered set of alert kinds,
from the least to the most severe. At a given day a *condition* holds for
some of them (:func:`dossier_conditions`, :func:`occurrence_conditions`).
The conditions that depend on time only grow as days pass (a dossier due
soon stays due soon when it becomes overdue), so time never resolves an
alert; only a change of the facts does (the dossier ends or is paused before
its due day, a new ``due_at`` moves the due day, the task is reported done).

:func:`transitions` then decides, against the kinds already firing:

* the **most severe** kind that holds fires, if it is not firing yet; a less
  severe kind that holds fires only if it was the most severe one at some
  tick. So a monitor that was down across a due day sends the overdue alert
  alone, not the due-soon and apology alerts that it missed: one alert for
  what came due while it was down, never a burst of stale ones;
* every firing kind whose condition no longer holds resolves.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Literal, Protocol, TypeVar

from services.deadline_monitor.plan import (
    Agencies,
    Continuous,
    Monthly,
    OnDate,
    Plan,
    Task,
    Weekly,
    Yearly,
    occurrences,
    period_key,
    resolve_owners,
)
from shared import rules
from shared.calendar import period_name
from shared.events import Alert, DeadLetter, DossierStateChanged

# -- kinds, severities, levels -------------------------------------------------------

DOSSIER_DUE_SOON = "dossier_due_soon"
DOSSIER_APOLOGY_DUE = "dossier_apology_due"
DOSSIER_OVERDUE = "dossier_overdue"
PLAN_TASK_DUE_SOON = "plan_task_due_soon"
PLAN_TASK_OVERDUE = "plan_task_overdue"
DEADLETTER = "deadletter"
UNKNOWN_AGENCY = "unknown_agency"
#: The one ``unknown_agency`` alert of the monitor: one condition (events for codes outside the directory).
UNKNOWN_AGENCY_KEY = UNKNOWN_AGENCY

#: The two transitions of an alert (its events' types and ids).
FIRING = "firing"
RESOLVED = "resolved"

#: Each family of kinds from the least to the most severe; a kind's bit is 1 << index.
DOSSIER_KINDS: tuple[str, ...] = (DOSSIER_DUE_SOON, DOSSIER_APOLOGY_DUE, DOSSIER_OVERDUE)
PLAN_KINDS: tuple[str, ...] = (PLAN_TASK_DUE_SOON, PLAN_TASK_OVERDUE)

SEVERITY: dict[str, Literal["info", "warning", "critical"]] = {
    DOSSIER_DUE_SOON: "warning",
    DOSSIER_APOLOGY_DUE: "warning",
    DOSSIER_OVERDUE: "critical",
    PLAN_TASK_DUE_SOON: "warning",
    PLAN_TASK_OVERDUE: "critical",
    DEADLETTER: "warning",
    UNKNOWN_AGENCY: "warning",
}

TaskState = Literal["open", "done", "done_late", "overdue"]
TASK_STATES: tuple[TaskState, ...] = ("done", "done_late", "open", "overdue")


class WorkingDays(Protocol):
    """What the decisions need from ``shared.calendar.WorkingCalendar``."""

    def is_working_day(self, day: dt.date) -> bool: ...

    def on_or_after(self, day: dt.date) -> dt.date: ...

    def add_working_days(self, day: dt.date, n: int) -> dt.date: ...


D = TypeVar("D")


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


def from_attributes(cls: type[D], source: object) -> D:
    """The ``cls`` dataclass whose every field is the attribute of that name of ``source`` (a stored row, the
    settings): what is taken is what ``cls`` declares, not a second list of names."""
    return cls(**{name: getattr(source, name) for name in _field_names(cls)})


def field_values(data: object) -> dict[str, object]:
    """The fields of the dataclass ``data`` by name, as they are (``dataclasses.asdict`` copies them)."""
    return {name: getattr(data, name) for name in _field_names(type(data))}


@dataclass(frozen=True)
class Policy:
    """Lead times (working days) and limits; from the settings."""

    due_soon_working_days: int = 1
    apology_working_days: int = 0
    plan_due_soon_working_days: int = 3
    plan_alert_max_age_days: int = 14

    def __post_init__(self) -> None:
        if self.apology_working_days > self.due_soon_working_days:
            raise ValueError("apology_working_days must not exceed due_soon_working_days")


@dataclass(frozen=True)
class Horizons:
    """The last due day for which each lead-time condition holds on ``today``."""

    today: dt.date
    soon: dt.date
    apology: dt.date
    plan_soon: dt.date

    @property
    def yesterday(self) -> dt.date:
        """Due on or before this day: overdue today."""
        return self.today - dt.timedelta(days=1)


def horizons(today: dt.date, *, calendar: WorkingDays, policy: Policy) -> Horizons:
    """The horizons of ``today``.

    * ``soon``: ``due_day <= soon`` is "due today or within N working days"
      (rule 6: N = 1, the next working day).
    * ``apology``: ``due_day <= apology`` is "today is on or after the apology
      day", the apology day being the last working day on or before the due
      day, moved back L working days (L = ``apology_working_days``). With
      L = 0 it is the due day itself when that is a working day; for a due day
      in Tết it is the last working day before Tết, since the letter must go
      out no later than the due day and nobody sends it on a holiday. That is
      ``due_day < add_working_days(today, L + 1)``.
    """
    return Horizons(
        today=today,
        soon=calendar.add_working_days(today, policy.due_soon_working_days),
        apology=calendar.add_working_days(today, policy.apology_working_days + 1) - dt.timedelta(days=1),
        plan_soon=calendar.add_working_days(today, policy.plan_due_soon_working_days),
    )


def kinds_of(bits: int, order: Sequence[str]) -> frozenset[str]:
    return frozenset(k for i, k in enumerate(order) if bits & (1 << i))


def bits_of(kinds: Iterable[str], order: Sequence[str]) -> int:
    return sum(1 << order.index(k) for k in set(kinds))


def level_of(kinds: Iterable[str], order: Sequence[str]) -> int:
    """1 + the index of the most severe kind, 0 for none."""
    return max((order.index(k) + 1 for k in kinds), default=0)


@dataclass(frozen=True)
class Transition:
    fire: str | None
    resolve: tuple[str, ...]

    def __bool__(self) -> bool:
        return self.fire is not None or bool(self.resolve)

    @property
    def kinds(self) -> tuple[str, ...]:
        """The kinds whose alert changes: the one that fires, then those that resolve."""
        return ((self.fire,) if self.fire else ()) + self.resolve


def transitions(
    held: frozenset[str], firing: frozenset[str], *, order: Sequence[str], may_fire: bool = True
) -> Transition:
    """The most severe held kind fires if not firing yet; firing kinds no longer held resolve."""
    top = max(held, key=order.index) if held else None
    fire = top if may_fire and top is not None and top not in firing else None
    resolve = tuple(k for k in order if k in firing and k not in held)
    return Transition(fire=fire, resolve=resolve)


def tick_level(*, watched: bool, firing: Iterable[str], order: Sequence[str]) -> int | None:
    """What the tick must look at next: the firing level, or None when time can change nothing."""
    if not watched:
        return None
    level = level_of(firing, order)
    return None if level >= len(order) else level


@dataclass(frozen=True)
class Settlement:
    """What settling a dossier or an occurrence decided: the transition, then the kinds firing
    (bits) and what the tick must look at next (:func:`tick_level`)."""

    move: Transition
    firing: int
    tick_level: int | None


def _settlement(
    held: frozenset[str], firing_bits: int, *, order: Sequence[str], watched: bool, may_fire: bool = True
) -> Settlement:
    firing = kinds_of(firing_bits, order)
    move = transitions(held, firing, order=order, may_fire=may_fire)
    after = (firing - set(move.resolve)) | ({move.fire} if move.fire else set())
    return Settlement(move, bits_of(after, order), tick_level(watched=watched, firing=after, order=order))


# -- dossiers -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DossierFacts:
    """What the monitor keeps of a dossier's latest snapshot (no personal data: none exists)."""

    dossier_code: str
    agency_code: str
    procedure_code: str
    field_code: str
    is_open: bool
    due_day: dt.date | None
    paused: bool = False
    pause_started_on: dt.date | None = None
    supplement_requests: int = 0


def awaiting_supplement(d: DossierFacts) -> bool:
    """Paused, and the pause began on or before the due day: its clock is stopped (rules 4 and 7, as
    ``shared.rules`` decides it for the tracker's gauge and scoring's on-time rate too)."""
    return rules.pause_stops_clock(d)


def late_by_supplements(d: DossierFacts) -> bool:
    """Rule 4: a second supplement request makes the dossier late, whatever its dates (``shared.rules``).

    ``shared.rules.open_state`` counts such a dossier overdue; the monitor asks for its apology
    (``dossier_apology_due``, reason ``supplements``) rather than saying its due day has passed.
    """
    return rules.late_by_supplements(d)


def dossier_watched(d: DossierFacts) -> bool:
    """True when the passing of days can start a condition for this dossier."""
    return d.is_open and d.due_day is not None and not awaiting_supplement(d)


def dossier_conditions(d: DossierFacts, h: Horizons) -> frozenset[str]:
    """The dossier alert kinds whose condition holds on ``h.today``.

    * ``dossier_due_soon``: open, not awaiting supplement, due on or before
      ``h.soon`` (today or the next working day with the default lead);
    * ``dossier_apology_due``: open and either late by a second supplement
      request, or not awaiting supplement and today on or after its apology
      day (the due day itself with the default lead 0, see :func:`horizons`);
    * ``dossier_overdue``: open, not awaiting supplement, and today is after
      the due day.
    """
    if not d.is_open:
        return frozenset()
    held: set[str] = set()
    if late_by_supplements(d):
        held.add(DOSSIER_APOLOGY_DUE)
    if d.due_day is not None and not awaiting_supplement(d):
        if d.due_day <= h.soon:
            held.add(DOSSIER_DUE_SOON)
        if d.due_day <= h.apology:
            held.add(DOSSIER_APOLOGY_DUE)
        if d.due_day < h.today:
            held.add(DOSSIER_OVERDUE)
    return frozenset(held)


def is_open(state: DossierStateChanged) -> bool:
    """A dossier state counts as open: counted and not ended."""
    return state.counted and state.ended_on is None


def latest_states(states: Iterable[DossierStateChanged]) -> dict[str, DossierStateChanged]:
    """The highest revision of each dossier among ``states`` (the first one of equal revisions). A state at a
    month's end (``period_end``, for closed periods) is not a current state: the monitor ignores it."""
    best: dict[str, DossierStateChanged] = {}
    for state in states:
        if state.period_end is not None:
            continue
        held = best.get(state.dossier_code)
        if held is None or state.revision > held.revision:
            best[state.dossier_code] = state
    return best


def settle_dossier(d: DossierFacts, firing: int, h: Horizons, *, known: bool = True) -> Settlement:
    """A dossier's transition on ``h.today`` against the kinds firing (bits of :data:`DOSSIER_KINDS`).

    A dossier of a unit outside the agency directory (``known=False``) holds
    no condition and is not watched: nobody in the district answers for it,
    so it raises no dossier alert (one that fired before resolves) and the
    tick never reads it; the one ``unknown_agency`` alert speaks for all such
    dossiers (:func:`unknown_agency_alert`).
    """
    if not known:
        return _settlement(frozenset(), firing, order=DOSSIER_KINDS, watched=False)
    return _settlement(dossier_conditions(d, h), firing, order=DOSSIER_KINDS, watched=dossier_watched(d))


def dossier_alert_key(kind: str, dossier_code: str) -> str:
    return f"{kind}:{dossier_code}"


def vn_date(day: dt.date) -> str:
    return day.strftime("%d/%m/%Y")


def dossier_alert(kind: str, d: DossierFacts, *, agency_name: str, h: Horizons, starts_at: dt.datetime) -> Alert:
    """The firing alert of ``kind`` for a dossier, with its Vietnamese summary."""
    due = vn_date(d.due_day) if d.due_day else None
    who = f"Hồ sơ {d.dossier_code} của {agency_name}"
    labels = {"procedure_code": d.procedure_code, "field_code": d.field_code}
    if d.due_day:
        labels["due_day"] = d.due_day.isoformat()
    if kind == DOSSIER_DUE_SOON:
        summary = (
            f"{who} đến hạn trả kết quả ngày {due}: giải quyết và trả kết quả đúng hạn; nếu không kịp, "
            "gửi phiếu xin lỗi và hẹn lại ngày trả kết quả trước hạn."
        )
    elif kind == DOSSIER_APOLOGY_DUE:
        by_due_day = d.due_day is not None and not awaiting_supplement(d) and d.due_day <= h.apology
        if by_due_day:
            labels["reason"] = "due_day"
            summary = f"{who} sẽ trễ hạn ngày {due}: gửi phiếu xin lỗi và hẹn lại ngày trả kết quả trước hạn."
        else:
            labels["reason"] = "supplements"
            deadline = f" (hạn trả kết quả ngày {due})" if due else ""
            summary = (
                f"{who} đã bị yêu cầu bổ sung giấy tờ {d.supplement_requests} lần nên bị tính trễ hạn{deadline}: "
                "gửi phiếu xin lỗi và hẹn lại ngày trả kết quả."
            )
    elif kind == DOSSIER_OVERDUE:
        summary = (
            f"{who} đã quá hạn trả kết quả ngày {due}: giải quyết ngay; gửi phiếu xin lỗi và hẹn lại "
            "ngày trả kết quả nếu chưa gửi."
        )
    else:
        raise ValueError(f"not a dossier alert kind: {kind}")
    return Alert(
        alert_key=dossier_alert_key(kind, d.dossier_code),
        kind=kind,
        severity=SEVERITY[kind],
        agency_code=d.agency_code,
        ref=d.dossier_code,
        summary=summary,
        starts_at=starts_at,
        labels=labels,
    )


# -- plans: catalog and occurrences -----------------------------------------------------


@dataclass(frozen=True)
class Catalog:
    """The agencies and the loaded plans, by id."""

    agencies: Agencies
    plans: Mapping[str, Plan]

    def agency_name(self, code: str) -> str:
        """The display name; a code outside the directory is never echoed (``shared.agencies.UNKNOWN_NAME``)."""
        return self.agencies.name(code)

    def known(self, code: str) -> bool:
        """A unit of the agency directory, or the district."""
        return self.agencies.known(code)

    def task(self, plan_id: str, task_id: str) -> Task | None:
        plan = self.plans.get(plan_id)
        if plan is None:
            return None
        try:
            return plan.task(task_id)
        except KeyError:
            return None


@dataclass(frozen=True)
class OccurrenceSpec:
    """One occurrence of a task for one owner agency. ``period`` is "" for a one-shot task."""

    plan_id: str
    task_id: str
    agency_code: str
    period: str
    due_day: dt.date
    opens_on: dt.date

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.plan_id, self.task_id, self.agency_code, self.period)


#: How long a plan's figures stay open after its ``valid_until``: its last duties, scheduled on its last days and
#: moved forward off days off (31/12 to 2/1, or past Tết), fall due in it, and late reports on them still count.
CLOSING_MARGIN = dt.timedelta(days=31)


def plan_closes_on(plan: Plan) -> dt.date:
    """The last day a plan's figures can change: ``valid_until`` + :data:`CLOSING_MARGIN`. After it the plan is
    *closed*: its occurrences keep their final state (frozen), raise no alert, accept no report, and leave
    ``parwatch_plan_tasks``, so a 2023 plan is not counted overdue for ever."""
    return plan.valid_until + CLOSING_MARGIN


def plan_closed(plan: Plan, today: dt.date) -> bool:
    return today > plan_closes_on(plan)


def default_window(plan: Plan, *, window_from: dt.date | None, window_to: dt.date | None) -> tuple[dt.date, dt.date]:
    """The due days tracked: the plan's validity, up to its closing day so that a duty scheduled on its last day
    and moved forward off days off (31/12 to 2/1) is still tracked. The settings may narrow it, never widen it:
    nothing outside a plan's validity is tracked (copy the plan for another year: ``parwatch plan copy``)."""
    first, last = plan.valid_from, plan_closes_on(plan)
    return (max(first, window_from) if window_from else first, min(last, window_to) if window_to else last)


def period_start(rule: object, period: str, *, fallback: dt.date) -> dt.date:
    """The first day of an occurrence's period (Monday of the ISO week, 1st of the month, 1 January)."""
    if isinstance(rule, Weekly):
        year, week = period.split("-W")
        return dt.date.fromisocalendar(int(year), int(week), 1)
    if isinstance(rule, Monthly):
        year, month = period.split("-")
        return dt.date(int(year), int(month), 1)
    if isinstance(rule, Yearly):
        return dt.date(int(period), 1, 1)
    return fallback


def plan_occurrence_specs(
    plan: Plan,
    *,
    agencies: Agencies,
    calendar: WorkingDays,
    window_from: dt.date | None = None,
    window_to: dt.date | None = None,
) -> list[OccurrenceSpec]:
    """Every occurrence of every task of ``plan`` for every owner agency, in the window (:func:`default_window`).

    An occurrence *opens* (counts in ``parwatch_plan_tasks``) on the first day
    of its period, not before the plan's ``valid_from``; a one-shot task opens
    on ``valid_from``. Every scheduled day lies in the plan's validity (the
    validator holds dated rules to it; recurring rules are bound to it).
    """
    start, end = default_window(plan, window_from=window_from, window_to=window_to)
    specs: list[OccurrenceSpec] = []
    for task in plan.tasks:
        if isinstance(task.due, Continuous):
            continue
        owners = resolve_owners(task, agencies)
        for occ in occurrences(task, start=start, end=end, calendar=calendar):
            period = occ.period or ""
            opens = (
                max(period_start(task.due, period, fallback=plan.valid_from), plan.valid_from)
                if period
                else plan.valid_from
            )
            opens = min(opens, occ.due_day)
            specs.extend(
                OccurrenceSpec(
                    plan_id=plan.plan_id,
                    task_id=task.id,
                    agency_code=agency,
                    period=period,
                    due_day=occ.due_day,
                    opens_on=opens,
                )
                for agency in owners
            )
    return specs


# -- plans: reports and states ---------------------------------------------------------------

_PERIOD_FORMS = {
    Weekly: re.compile(r"^\d{4}-W\d{2}$"),
    Monthly: re.compile(r"^\d{4}-\d{2}$"),
    Yearly: re.compile(r"^\d{4}$"),
}


def report_period(task: Task, *, period: str | None, reported_on: dt.date) -> str | None:
    """The occurrence a report applies to: its period key, "" for a one-shot task, None for none.

    * A one-shot task has one occurrence; a ``period`` on its report is ignored.
    * A recurring task: the report's ``period`` when it has the rule's form
      (``2023-W27`` weekly, ``2023-07`` monthly, ``2023`` yearly), else None;
      without ``period``, the period that contains the report's day
      (``reported_at`` in Asia/Ho_Chi_Minh).
    * A continuous task has no occurrence: None.
    """
    rule = task.due
    if isinstance(rule, OnDate):
        return ""
    if isinstance(rule, (Weekly, Monthly, Yearly)):
        if period is None:
            return period_key(rule, reported_on)
        return period if _PERIOD_FORMS[type(rule)].match(period) else None
    return None


def report_problem(
    *, plan_id: str, task_id: str, agency_code: str, period: str | None, catalog: Catalog, today: dt.date
) -> str | None:
    """Why a report can apply to no occurrence, as a dead-letter reason naming the field (never the value: it came
    from outside); None when the plan, the task, the owner and the period's form fit. Whether the period is an
    occurrence of the task is the caller's check (the tracked occurrences)."""
    plan = catalog.plans.get(plan_id)
    if plan is None:
        return "data.plan_id: no plan with this id is loaded by the deadline monitor"
    if plan_closed(plan, today):
        return (f"data.plan_id: the plan closed after {plan_closes_on(plan).isoformat()} (valid until "
                f"{plan.valid_until.isoformat()}); its figures are final and take no report")
    task = catalog.task(plan_id, task_id)
    if task is None:
        return "data.task_id: the plan has no task with this id"
    if agency_code not in resolve_owners(task, catalog.agencies):
        return "data.agency_code: this agency is not an owner of the task"
    rule = task.due
    if period is not None and isinstance(rule, (Weekly, Monthly, Yearly)) and not _PERIOD_FORMS[type(rule)].match(period):
        form = {Weekly: "YYYY-Www (ISO week)", Monthly: "YYYY-MM", Yearly: "YYYY"}[type(rule)]
        return f"data.period: this task's periods are written {form}"
    return None


#: The reason of a report whose period is well formed but names no tracked occurrence.
NO_OCCURRENCE = (
    "data.period: the task has no occurrence for this period within the plan's validity "
    "(a report without a period applies to the period of its reported_at)"
)


@dataclass(frozen=True)
class ReportFacts:
    state: str  # done | in_progress | blocked
    reported_at: dt.datetime
    source: str = ""
    event_id: str = ""


def done_on(reports: Iterable[ReportFacts], *, local_date: Callable[[dt.datetime], dt.date]) -> dt.date | None:
    """The day the occurrence was done, from its reports in order of ``reported_at``.

    A ``done`` report sets the day (a repeated ``done`` keeps the first one);
    a later ``in_progress`` or ``blocked`` report reopens the occurrence. The
    order does not depend on arrival: ties break on (source, id).
    """
    found: dt.date | None = None
    for r in sorted(reports, key=lambda r: (r.reported_at, r.source, r.event_id)):
        if r.state == "done":
            if found is None:
                found = local_date(r.reported_at)
        else:
            found = None
    return found


@dataclass(frozen=True)
class OccurrenceFacts:
    plan_id: str
    task_id: str
    agency_code: str
    period: str  # "" for a one-shot task
    due_day: dt.date
    done_on: dt.date | None = None


def occurrence_state(o: OccurrenceFacts, today: dt.date) -> TaskState:
    if o.done_on is not None:
        return "done" if o.done_on <= o.due_day else "done_late"
    return "overdue" if today > o.due_day else "open"


def occurrence_conditions(o: OccurrenceFacts, h: Horizons) -> frozenset[str]:
    """``plan_task_due_soon``: not done and due on or before ``h.plan_soon``;
    ``plan_task_overdue``: not done and today is after the due day."""
    if o.done_on is not None:
        return frozenset()
    held = set()
    if o.due_day <= h.plan_soon:
        held.add(PLAN_TASK_DUE_SOON)
    if o.due_day < h.today:
        held.add(PLAN_TASK_OVERDUE)
    return frozenset(held)


def occurrence_may_raise(o: OccurrenceFacts, h: Horizons, policy: Policy) -> bool:
    """No new alert for an occurrence overdue by more than the policy's maximum age
    (a 2023 plan loaded in 2026 must not raise hundreds of stale alerts)."""
    return (h.today - o.due_day).days <= policy.plan_alert_max_age_days


def occurrence_watched(o: OccurrenceFacts, *, state: str | None) -> bool:
    """Time can still change it: not done and its overdue state not yet recorded."""
    return o.done_on is None and state != "overdue"


def settle_occurrence(
    o: OccurrenceFacts, firing: int, h: Horizons, policy: Policy, *, closed: bool = False
) -> tuple[TaskState, Settlement]:
    """An occurrence's state on ``h.today`` and its transition against the kinds firing (bits of
    :data:`PLAN_KINDS`). The occurrence of a closed plan (:func:`plan_closes_on`) keeps its final state,
    holds no condition (an alert still firing resolves) and is no longer watched."""
    state = occurrence_state(o, h.today)
    if closed:
        return state, _settlement(frozenset(), firing, order=PLAN_KINDS, watched=False)
    settled = _settlement(
        occurrence_conditions(o, h),
        firing,
        order=PLAN_KINDS,
        watched=occurrence_watched(o, state=state),
        may_fire=occurrence_may_raise(o, h, policy),
    )
    return state, settled


def occurrence_key(o: OccurrenceFacts) -> str:
    """An occurrence's ordering key and the stem of its state facts' ids."""
    return event_id(o.plan_id, o.task_id, o.agency_code, o.period or "-")


def plan_alert_key(kind: str, o: OccurrenceFacts) -> str:
    key = f"{kind}:{o.plan_id}:{o.task_id}:{o.agency_code}"
    return f"{key}:{o.period}" if o.period else key


def occurrence_alert(
    kind: str, o: OccurrenceFacts, *, task: Task | None, plan: Plan | None, agency_name: str, starts_at: dt.datetime
) -> Alert:
    title = f" «{task.title}»" if task is not None else ""
    plan_name = f" của Kế hoạch {plan.number or plan.plan_id}" if plan is not None else f" của kế hoạch {o.plan_id}"
    period = f", kỳ {period_name(o.period)}" if o.period else ""
    who = f"Nhiệm vụ {o.task_id}{title}{plan_name}{period}, giao {agency_name},"
    if kind == PLAN_TASK_DUE_SOON:
        summary = f"{who} đến hạn ngày {vn_date(o.due_day)}: hoàn thành và báo cáo kết quả trước hạn."
    elif kind == PLAN_TASK_OVERDUE:
        summary = f"{who} đã quá hạn ngày {vn_date(o.due_day)}: hoàn thành ngay và báo cáo kết quả."
    else:
        raise ValueError(f"not a plan alert kind: {kind}")
    labels = {"due_day": o.due_day.isoformat(), "plan_id": o.plan_id, "task_id": o.task_id}
    if o.period:
        labels["period"] = o.period
    if task is not None:
        labels["section"] = task.section
    return Alert(
        alert_key=plan_alert_key(kind, o),
        kind=kind,
        severity=SEVERITY[kind],
        agency_code=o.agency_code,
        ref=o.task_id,
        summary=summary[:1000],
        starts_at=starts_at,
        labels=labels,
    )


# -- dead letters ----------------------------------------------------------------------------------


def deadletter_alert_key(stream: str, seq: int) -> str:
    return f"{DEADLETTER}:{stream}:{seq}"


def deadletter_alert(letter: DeadLetter, *, district_code: str, starts_at: dt.datetime) -> Alert:
    """A ``deadletter`` alert (warning) for the district: operators hear of every rejected message."""
    reason = letter.reason.strip().rstrip(".")
    if len(reason) > 600:
        reason = reason[:597] + "..."
    summary = (
        f"Tin nhắn số {letter.stream_seq} của luồng {letter.stream} (subject {letter.subject or '-'}) "
        f"bị từ chối và không được xử lý: {reason}. Kiểm tra hệ thống gửi tin và gửi lại bản đúng hợp đồng sự kiện."
    )
    return Alert(
        alert_key=deadletter_alert_key(letter.stream, letter.stream_seq),
        kind=DEADLETTER,
        severity=SEVERITY[DEADLETTER],
        agency_code=district_code,
        ref=f"{letter.stream}:{letter.stream_seq}",
        summary=summary,
        starts_at=starts_at,
        labels={"stream": letter.stream, "subject": letter.subject[:256]},
    )


# -- agencies outside the directory ---------------------------------------------------------------


@dataclass(frozen=True)
class UnknownSeen:
    """How many new facts of one transaction named an agency code outside the directory."""

    dossiers: int = 0
    plan_reports: int = 0

    def __bool__(self) -> bool:
        return bool(self.dossiers or self.plan_reports)


def unknown_agency_alert(seen: UnknownSeen, *, district_code: str, starts_at: dt.datetime) -> Alert:
    """The one ``unknown_agency`` alert (warning), for the district's technical desk.

    It names no code, in its summary, ref or labels: the codes came from
    outside and may be hostile (a code can read like an instruction to pay).
    It says how many dossiers and plan reports the events that raised it
    carried, and the command that lists the codes, escaped.
    """
    parts = []
    if seen.dossiers:
        parts.append(f"{seen.dossiers} hồ sơ")
    if seen.plan_reports:
        parts.append(f"{seen.plan_reports} báo cáo nhiệm vụ")
    summary = (
        f"Hệ thống nhận được dữ liệu mang mã đơn vị không có trong danh mục đơn vị ({' và '.join(parts)} "
        "trong lần nhận đầu tiên). Dữ liệu vẫn được lưu và tính chung dưới nhãn «unknown»; cảnh báo của các hồ sơ "
        "này không gửi đến đơn vị hay lãnh đạo nào. Kiểm tra mã đơn vị trong hệ thống gửi dữ liệu, hoặc bổ sung "
        "đơn vị vào danh mục (tệp PARWATCH_AGENCIES_EXTRA); xem danh sách mã bằng lệnh: parwatch agencies unknown."
    )
    return Alert(
        alert_key=UNKNOWN_AGENCY_KEY,
        kind=UNKNOWN_AGENCY,
        severity=SEVERITY[UNKNOWN_AGENCY],
        agency_code=district_code,
        ref="agency_directory",
        summary=summary,
        starts_at=starts_at,
        labels={"dossiers": str(seen.dossiers), "plan_reports": str(seen.plan_reports)},
    )


# -- event ids -------------------------------------------------------------------------------------


def event_id(*parts: object) -> str:
    """A stable CloudEvents id from its parts; hashed if longer than the contract's 256 characters."""
    raw = ":".join(str(p) for p in parts)
    if len(raw) <= 256:
        return raw
    return "h:" + hashlib.sha256(raw.encode()).hexdigest()


def alert_event_id(alert_key: str, transition: str, generation: int) -> str:
    """``{alert_key}:{firing|resolved}:{generation}``: a republish is the same id (broker dedup);
    an alert that fires again after resolving gets the next generation."""
    return event_id(alert_key, transition, generation)
