"""A month of Tuy Phong's history replayed into a fresh stack (`parwatch up`, as `make run` starts it): the alerts
fired and the figures served are those a reference computed here from the same events says they must be.

The history is the demo's synthetic district (:class:`parwatch.demo.DistrictFeed`, a fixed seed): the last 30 days
of dossiers of every department and commune (filed online or in person, received, processed, paused for a
supplement or a fee, a second supplement request now and then, withdrawn or stopped, resolved early, on time or
late, the result returned), the applicants' ratings, the plan reports on Plan 146 copied to this year (done before
their due day, some late, a few never) and a few malformed messages. It ends four hours before now (older than
the monitor's backlog lag), so the dossiers received in the last days are open, some of them due soon or overdue.
The working-day calendar is the holiday library's with an override file of the test's own: the shipped
corrections, one extra weekday off and one make-up working Saturday inside the month.

It is published as fast as a publisher can (in two parts, at the previous month's end, see below) into a fresh
stack with the plan copy loaded and the calendar file set. The reference is computed from the published events
alone, with the contract's rules and a working-day calendar built here from the ``holidays`` package and the
override file (never through parwatch's calendar, fold, rules or scoring code):

1. the dossier alerts on ``tthc.alerts`` (``dossier_due_soon``, ``dossier_apology_due``, ``dossier_overdue``) are
   exactly one per dossier due soon or overdue today (rule 6), of the kind docs/deadline_monitor.md gives; every
   one still firing, none resolved (no fire-then-resolve churn from the backlog), and a restart sends none again;
2. scoring's figures (``GET /figures/{agency}?period=..``) for every agency and the district roll-up, for the
   running month, quarter and year and the previous month (judged as of its last day), equal the reference's:
   ended early / on time / late, open and overdue at the period's end, the on-time rate (rule 7), received and the
   shares of online filing, online payment, digitized and synced dossiers, ratings, the satisfaction rate and the
   criteria's means, plan-task occurrences done / done late / overdue / open and the completion ratio, and the
   index points parwatch computes (Decision 766: progress, handling satisfaction, online filing, national sync);
   dossier_tracker's
   ``parwatch_dossiers_ended_total`` and ``parwatch_dossiers_open`` and deadline_monitor's ``parwatch_plan_tasks``
   agree with the same reference;
3. the ``kpi_below_target`` alerts are exactly those whose reference figure of the running month does not meet
   the plan copy's target (``gt``: above it; ``ge``: at least it) with enough records (20 dossiers, 1 occurrence).

The KPI rounds: during the replay scoring evaluates once an hour (so no round sees half a history); the stack is
then stopped (SIGTERM) and started again on the same data with a round every second. That the pipeline is done is
read from positive signals only: every consumer of every stream drained, no dossier left unsettled in the
monitor's database and its outbox empty; for the KPI rounds, three rounds seen in scoring's alert records after
the restart and its outbox empty.

Why two parts: the main test publishes the history up to the previous month's end and lets dossier_tracker
consume it first, then the rest at once, as a replay that catches up in steps does (a test further down publishes
it all at once, where tracker batches straddle the previous month's last midnight and the tracker tells each
dossier's state at that midnight: docs/scoring.md, "Month ends"); the
monitor's ``BACKLOG_IDLE_SECONDS`` is raised to 15 so that the pause between the parts is not taken for the end
of the history (docs/deadline_monitor.md, "Catching up on a backlog"), nor is a tracker batch slow to store on a
loaded machine: the monitor counts the tracker's pending events, not those it has in hand, so with nothing left
pending (the last batches of a replay, up to 6,000 events, in hand) a batch that takes longer than the idle time
lets it settle before the batch's facts arrive, and alerts fire then resolve (seen with the default 2 s and batches
of 5,000 under load; reported, not asserted here: it depends on the machine's speed). The monitor's and scoring's SQLite files are
read (read-only) for those signals alone; everything asserted comes through the contract: ``tthc.alerts``,
``/metrics`` and scoring's query API.

The reference's calendar, due days and plan occurrences are checked by hand first
(:func:`test_the_reference_calendar_and_fold_by_hand`). Two more tests replay the same month as an operator could:
published at a steady pace of a few hundred events a second with the KPI rounds running every second, the
``kpi_below_target`` alerts must be those of the whole history (scoring holds its rounds while the dossier facts'
event time lags now: docs/scoring.md, "Catching up on a backlog"); published at once, the previous month's figures
must still be the reference's. A replay that pauses for longer than ``BACKLOG_IDLE_SECONDS`` between parts is a
quiet district to scoring, whose rounds then judge each pause: that limit is documented there and driven directly in
tests/integration/scoring/test_scoring_backlog_hold.py, not replayed here (whether a pause outlasts 2 s depends on
the machine).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import sqlite3
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import holidays
import httpx
import nats
import pytest
import yaml

import shared
from parwatch.demo import DistrictFeed, FeedMessage, current_plan_copy, load_agencies, plan_occurrences
from parwatch.testing import Ready, Stack
from shared.calendar import load_calendar
from shared.testing import metric_samples

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(480)]

VN = dt.timezone(dt.timedelta(hours=7))
SEED = 146
DOSSIERS_PER_DAY = 120.0
HISTORY_DAYS = 30
#: The history ends this long before now: older than deadline_monitor's BACKLOG_LAG (3 hours), so the whole
#: replay is a backlog (a dossier ending within the lag could be settled before its end arrives: documented).
HISTORY_LAG = dt.timedelta(hours=4)
DATA = Path(shared.__file__).parent / "data"
SHIPPED_PLANS = Path(shared.__file__).resolve().parents[1] / "services" / "deadline_monitor" / "plans"
DISTRICT = "TUY_PHONG"
END_STATUSES = {3, 7, 8, 9, 10}
DOSSIER_KINDS = ("dossier_due_soon", "dossier_apology_due", "dossier_overdue")  # least to most severe
KPI_OF_TARGET = {"on_time_ratio": "on_time", "task_completion": "plan_completion", "national_sync": "national_sync"}
MIN_DOSSIERS = 20  # PARWATCH_SCORING_MIN_DOSSIERS, default
MIN_OCCURRENCES = 1  # PARWATCH_SCORING_MIN_DENOMINATOR, default
PACE = 400  # events a second of the paced replay: a few hundred, which the consumers keep up with
MORNING = (dt.time(7, 0), dt.time(11, 30))
AFTERNOON = (dt.time(13, 30), dt.time(17, 0))


def parse_time(text: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(text)
    assert moment.tzinfo is not None, text
    return moment.astimezone(VN)


# -- the reference's working days (rule 2), from the holiday library and the override file ----------------------


class Days:
    """Working days: Monday to Friday minus VN holidays (``holidays``), plus its weekend workdays, corrected by the
    override file's ``days_off`` and ``working_days``."""

    def __init__(self, overrides: Mapping[str, Sequence[dt.date]], years: Iterable[int]) -> None:
        lib = holidays.country_holidays("VN", years=list(years))
        self.holidays = set(lib)
        self.weekend_workdays = set(getattr(lib, "weekend_workdays", ()))
        self.off = set(overrides.get("days_off") or ())
        self.work = set(overrides.get("working_days") or ())

    def working(self, day: dt.date) -> bool:
        if day in self.work:
            return True
        if day in self.off:
            return False
        if day in self.weekend_workdays:
            return True
        return day.weekday() < 5 and day not in self.holidays

    def next(self, day: dt.date) -> dt.date:
        day += dt.timedelta(days=1)
        while not self.working(day):
            day += dt.timedelta(days=1)
        return day

    def add(self, day: dt.date, n: int) -> dt.date:
        """The ``n``-th working day after ``day`` (``day`` itself for 0)."""
        for _ in range(n):
            day = self.next(day)
        return day

    def between(self, after: dt.date, upto: dt.date) -> int:
        """Working days in (after, upto]."""
        n, day = 0, after + dt.timedelta(days=1)
        while day <= upto:
            n += self.working(day)
            day += dt.timedelta(days=1)
        return n

    def receipt_day(self, received_at: dt.datetime) -> dt.date:
        """Rule 1: the local date; after 17:00 or on a day off, the next working day."""
        local = received_at.astimezone(VN)
        day = local.date()
        if local.time() > AFTERNOON[1] or not self.working(day):
            return self.next(day)
        return day

    def due(self, received_at: dt.datetime, value: float, unit: str) -> dt.date:
        """Rule 3, from ``statutory_duration``, the receipt day not counted."""
        receipt = self.receipt_day(received_at)
        if unit == "working_days":
            assert value == int(value), value
            return self.add(receipt, int(value))
        if unit == "days":
            assert value == int(value), value
            day = receipt + dt.timedelta(days=int(value))
            return day if self.working(day) else self.next(day)
        assert unit == "hours", unit
        return self.after_working_hours(received_at.astimezone(VN), value)

    def after_working_hours(self, start: dt.datetime, hours: float) -> dt.date:
        """The date on which ``hours`` working hours (07:00-11:30, 13:30-17:00) counted from ``start`` run out."""
        left = dt.timedelta(hours=hours)
        day, clock = start.date(), start.time()
        if not self.working(day):
            day, clock = self.next(day), MORNING[0]
        while True:
            for begin, end in (MORNING, AFTERNOON):
                if clock >= end:
                    continue
                frm = max(clock, begin)
                span = dt.datetime.combine(day, end) - dt.datetime.combine(day, frm)
                if left <= span:
                    return day
                left -= span
                clock = end
            day, clock = self.next(day), MORNING[0]


# -- the reference's dossiers (rules 1, 3-7), folded from their events ------------------------------------------


@dataclass
class Dossier:
    """A dossier's state after the events that had occurred by some day."""

    code: str
    agency: str = ""
    received: bool = False
    receipt_day: dt.date | None = None
    due_day: dt.date | None = None
    end_day: dt.date | None = None
    pause_start: dt.date | None = None  # paused now, since this day
    supplements: int = 0
    flags: dict[str, Any] = field(default_factory=dict)

    @property
    def is_open(self) -> bool:
        return self.received and self.end_day is None

    @property
    def timeliness(self) -> str | None:
        """Rules 4-5 for an ended dossier: early, on_time, late; None without a due day."""
        assert self.end_day is not None
        if self.supplements >= 2:
            return "late"
        if self.due_day is None:
            return None
        if self.end_day < self.due_day:
            return "early"
        return "on_time" if self.end_day == self.due_day else "late"

    def clock_stopped(self) -> bool:
        """Rule 7: paused, the pause begun on or before the due day."""
        return self.pause_start is not None and self.due_day is not None and self.pause_start <= self.due_day

    def overdue(self, day: dt.date) -> bool:
        """Rules 4, 6, 7 for an open dossier at ``day``."""
        if self.supplements >= 2:
            return True
        if self.clock_stopped() or self.due_day is None:
            return False
        return day > self.due_day

    def open_state(self, day: dt.date, days: Days) -> str:
        """Rule 6 at ``day``."""
        if self.overdue(day):
            return "overdue"
        if self.pause_start is not None:
            return "awaiting_supplement"
        if self.due_day is not None and self.due_day <= days.next(day):
            return "due_soon"
        return "in_time"

    def alert_kind(self, day: dt.date, days: Days) -> str | None:
        """The dossier alert firing at ``day`` (docs/deadline_monitor.md, default leads): the most severe of
        due soon (due by the next working day), apology due (due before the next working day, or a second
        supplement request) and overdue (the due day passed), none while its clock is stopped."""
        held: set[str] = set()
        if self.supplements >= 2:
            held.add("dossier_apology_due")
        if self.due_day is not None and not self.clock_stopped():
            soon = days.next(day)
            if self.due_day <= soon:
                held.add("dossier_due_soon")
            if self.due_day < soon:
                held.add("dossier_apology_due")
            if self.due_day < day:
                held.add("dossier_overdue")
        return max(held, key=DOSSIER_KINDS.index) if held else None


def fold(code: str, events: Sequence[Mapping[str, Any]], days: Days) -> Dossier:
    """Rules 1, 3, 4, 5 over ``events`` (data of one dossier's accepted events, in the order of the contract:
    by ``sequence``, else ``occurred_at``)."""
    d = Dossier(code)
    received_at: dt.datetime | None = None
    due_at: dt.datetime | None = None
    duration: Mapping[str, Any] | None = None
    paused_days = 0
    for e in events:
        d.agency = e["agency_code"]
        for flag in ("channel", "online_payment", "digitized", "synced_national"):
            if flag in e:
                d.flags[flag] = e[flag]
        if "due_at" in e:
            due_at = parse_time(e["due_at"])
        if "statutory_duration" in e:
            duration = e["statutory_duration"]
        status, day = e["status"], parse_time(e["occurred_at"]).date()
        if received_at is None:
            if status != 2:
                continue
            received_at = parse_time(e["received_at"])
        if d.end_day is not None:
            continue
        if status in (5, 6):
            d.pause_start = d.pause_start or day
            d.supplements += status == 5
        else:
            if d.pause_start is not None:
                paused_days += days.between(d.pause_start, day)
                d.pause_start = None
            if status in END_STATUSES:
                d.end_day = day
    if received_at is None:
        return d
    d.received, d.receipt_day = True, days.receipt_day(received_at)
    if due_at is not None:
        d.due_day = due_at.date()
    elif duration is not None:
        d.due_day = days.add(days.due(received_at, duration["value"], duration["unit"]), paused_days)
    return d


def ordered(events: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    if all("sequence" in e for e in events):
        return sorted(events, key=lambda e: e["sequence"])
    return sorted(events, key=lambda e: parse_time(e["occurred_at"]))


# -- periods ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    key: str
    first: dt.date
    last: dt.date

    def holds(self, day: dt.date | None) -> bool:
        return day is not None and self.first <= day <= self.last


def month(day: dt.date) -> Period:
    first = day.replace(day=1)
    nxt = (first + dt.timedelta(days=32)).replace(day=1)
    return Period(f"{day:%Y-%m}", first, nxt - dt.timedelta(days=1))


def quarter(day: dt.date) -> Period:
    q = (day.month - 1) // 3
    first = dt.date(day.year, 3 * q + 1, 1)
    last = month(dt.date(day.year, 3 * q + 3, 1)).last
    return Period(f"{day.year}-Q{q + 1}", first, last)


def year(day: dt.date) -> Period:
    return Period(f"{day.year}", dt.date(day.year, 1, 1), dt.date(day.year, 12, 31))


# -- plan-task occurrences (docs/plan-schema.md), from the plan file ---------------------------------------------


@dataclass(frozen=True)
class Occurrence:
    task_id: str
    agency: str
    period: str  # "" for a one-shot task
    opens: dt.date
    due_day: dt.date


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def owners(owner: Any, directory: Sequence[Mapping[str, str]]) -> list[str]:
    if isinstance(owner, list):
        return list(owner)
    codes = list(owner.get("codes") or ())
    group = owner.get("group")
    kinds = {"all": ("department", "commune"), "departments": ("department",), "communes": ("commune",)}.get(group, ())
    return list(dict.fromkeys(codes + [a["code"] for a in directory if a["kind"] in kinds]))


def occurrences(plan: Mapping[str, Any], directory: Sequence[Mapping[str, str]], days: Days) -> list[Occurrence]:
    """Every occurrence of the plan's tasks for each owner; scheduled days within the rule's bounds (default the
    plan's validity), a due day off moved to the next working day, the period that of the scheduled day."""
    valid_from, valid_until = plan["valid_from"], plan["valid_until"]
    out: list[Occurrence] = []
    for task in plan["tasks"]:
        rule = task["due"]
        if rule.get("continuous"):
            continue
        scheduled: list[tuple[dt.date, str, dt.date]] = []  # (scheduled day, period, opens)
        if "date" in rule:
            scheduled.append((rule["date"], "", valid_from))
        else:
            start, end = rule.get("start", valid_from), rule.get("end", valid_until)
            if rule["every"] == "week":
                day = start + dt.timedelta(days=(WEEKDAYS.index(rule["weekday"]) - start.weekday()) % 7)
                while day <= end:
                    iso = day.isocalendar()
                    monday = day - dt.timedelta(days=day.weekday())
                    scheduled.append((day, f"{iso[0]}-W{iso[1]:02d}", max(monday, valid_from)))
                    day += dt.timedelta(days=7)
            elif rule["every"] == "month":
                first = start.replace(day=1)
                while first <= end:
                    day = min(first + dt.timedelta(days=rule["day"] - 1), month(first).last)
                    if start <= day <= end:
                        scheduled.append((day, f"{day:%Y-%m}", max(first, valid_from)))
                    first = month(first).last + dt.timedelta(days=1)
            else:
                assert rule["every"] == "year", rule
                for y in range(start.year, end.year + 1):
                    day = min(dt.date(y, rule["month"], 1) + dt.timedelta(days=rule["day"] - 1),
                              month(dt.date(y, rule["month"], 1)).last)
                    if start <= day <= end:
                        scheduled.append((day, f"{y}", max(dt.date(y, 1, 1), valid_from)))
        for day, period, opens in scheduled:
            due = day if days.working(day) else days.next(day)
            out += [Occurrence(str(task["id"]), agency, period, opens, due)
                    for agency in owners(task["owner"], directory)]
    return out


# -- the reference --------------------------------------------------------------------------------------------


@dataclass
class Reference:
    today: dt.date
    days: Days
    directory: list[dict[str, str]]
    dossier_events: dict[str, list[Mapping[str, Any]]]
    ratings: dict[str, Mapping[str, Any]]  # dossier code -> its effective rating
    occurrences: list[Occurrence]
    done_on: dict[tuple[str, str, str], dt.date]  # (task, agency, period) -> first done report's day
    targets: list[Mapping[str, Any]]
    plan_period: tuple[dt.date, dt.date]

    @property
    def agencies(self) -> list[str]:
        return [a["code"] for a in self.directory]

    def dossiers(self, *, upto: dt.date | None = None) -> list[Dossier]:
        """Every dossier as it stood at the end of ``upto`` (None: now)."""
        out = []
        for code, events in self.dossier_events.items():
            if upto is not None:
                events = [e for e in events if parse_time(e["occurred_at"]).date() <= upto]
            out.append(fold(code, events, self.days))
        return out

    def task_state(self, o: Occurrence, *, at: dt.date | None = None) -> str:
        """The occurrence's state at the end of ``at`` (a closed period's last day; None: today): done or done late
        if reported done by then, else overdue once its due day has passed, else open."""
        done = self.done_on.get((o.task_id, o.agency, o.period))
        if done is not None and done <= (at or self.today):
            return "done" if done <= o.due_day else "done_late"
        return "overdue" if self.today > o.due_day else "open"

    def alerts(self) -> dict[str, str]:
        """dossier code -> the dossier alert firing today."""
        out = {}
        for d in self.dossiers():
            if d.is_open and (kind := d.alert_kind(self.today, self.days)):
                out[d.code] = kind
        return out

    def figures(self, period: Period) -> dict[str, dict[str, Any]]:
        """agency (and the district) -> the figures of ``period``, judged at its last day or, running, today."""
        running = period.holds(self.today)
        end = self.today if running else period.last
        counts: dict[str, Counter[str]] = defaultdict(Counter)
        criteria: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        for d in self.dossiers(upto=None if running else end):
            if not d.received or d.receipt_day is None or d.receipt_day > end:
                continue
            c = counts[d.agency]
            if period.holds(d.receipt_day):
                c["received"] += 1
                f = d.flags
                c["channel_reported"] += "channel" in f
                c["filed_online"] += f.get("channel") == 2
                c["payment_reported"] += "online_payment" in f
                c["paid_online"] += f.get("online_payment") is True
                c["digitized_reported"] += "digitized" in f
                c["digitized"] += f.get("digitized") is True
                c["sync_reported"] += "synced_national" in f
                c["synced"] += f.get("synced_national") is True
            if d.end_day is not None:
                if period.holds(d.end_day):
                    c[f"ended_{d.timeliness or 'unclassified'}"] += 1
            else:
                c["open"] += 1
                c["overdue"] += d.overdue(end)
        for rating in self.ratings.values():
            if period.holds(parse_time(rating["rated_at"]).date()):
                c = counts[rating["agency_code"]]
                c["rated"] += 1
                c["rated_satisfied"] += rating["overall"] in ("very_satisfied", "satisfied")
                c["rated_unsatisfied"] += rating["overall"] == "unsatisfied"
                for k, v in (rating.get("criteria") or {}).items():
                    criteria[rating["agency_code"]][k].append(v)
                    criteria[DISTRICT][k].append(v)
        for o in self.occurrences:
            if period.holds(o.due_day):
                counts[o.agency][f"tasks_{self.task_state(o, at=end)}"] += 1
        district: Counter[str] = Counter()
        for c in counts.values():
            district.update(c)
        counts[DISTRICT] = district
        return {agency: self._ratios(counts.get(agency, Counter()), criteria.get(agency, {}))
                for agency in [*self.agencies, DISTRICT]}

    @staticmethod
    def _ratios(c: Counter[str], criteria: Mapping[str, list[int]]) -> dict[str, Any]:
        def share(part: float, whole: float) -> float | None:
            return part / whole if whole else None

        names = ("ended_early", "ended_on_time", "ended_late", "ended_unclassified", "open", "overdue", "received",
                 "channel_reported", "filed_online", "paid_online", "payment_reported", "digitized_reported",
                 "digitized", "sync_reported", "synced", "rated", "rated_satisfied", "rated_unsatisfied",
                 "tasks_done", "tasks_done_late", "tasks_overdue", "tasks_open")
        out: dict[str, Any] = {n: c[n] for n in names}
        classified = c["ended_early"] + c["ended_on_time"] + c["ended_late"]
        judged = c["tasks_done"] + c["tasks_done_late"] + c["tasks_overdue"]
        out |= {
            "on_time_ratio": share(c["ended_early"] + c["ended_on_time"] + c["open"] - c["overdue"],
                                   classified + c["open"]),
            "online_filing_ratio": share(c["filed_online"], c["channel_reported"]),
            "online_payment_ratio": share(c["paid_online"], c["payment_reported"]),
            "digitized_ratio": share(c["digitized"], c["digitized_reported"]),
            "national_sync_ratio": share(c["synced"], c["sync_reported"]),
            "satisfaction_ratio": share(c["rated_satisfied"], c["rated"]),
            "plan_completion_ratio": share(c["tasks_done"] + c["tasks_done_late"], judged),
            "criteria": {k: sum(v) / len(v) for k, v in sorted(criteria.items())},
        }
        # The parts of Decision 766's index parwatch computes (docs/scoring.md, "Service-quality index"): 20 × the
        # on-time rate; min(6, 6 r / 0.9), r = 1 - (late rate + unsatisfied rate), never below 0, the unsatisfied
        # rate over rule 7's denominator, at most 1; 6 points at 50 % filed online, linear from 0; 6 × synced share.
        on_time, handled = out["on_time_ratio"], classified + c["open"]
        handling = None
        if on_time is not None:
            r = 1 - ((1 - on_time) + min(1.0, c["rated_unsatisfied"] / handled))
            handling = max(0.0, min(6.0, 6 * r / 0.9))
        online, sync = out["online_filing_ratio"], out["national_sync_ratio"]
        out["_index"] = {
            "progress": None if on_time is None else 20 * on_time,
            "handling_satisfaction": handling,
            "online_filing": None if online is None else 6 * min(1.0, online / 0.5),
            "national_sync": None if sync is None else 6 * min(1.0, sync),
        }
        # what scoring's KPI rounds need of their denominators (contract: min dossiers, min occurrences)
        out["_denominators"] = {"on_time": classified + c["open"], "national_sync": c["sync_reported"],
                                "plan_completion": judged}
        return out

    def kpi_alerts(self, *, min_dossiers: int = MIN_DOSSIERS) -> set[str]:
        """The ``kpi_below_target`` alert keys of the running month: a plan target in force today not met by the
        reference figure, with enough records in its denominator."""
        period = month(self.today)
        figures = self.figures(period)
        expected = set()
        for target in self.targets:
            kpi = KPI_OF_TARGET.get(target["id"])
            if kpi is None or target["unit"] != "ratio":
                continue
            if not (self.plan_period[0] <= self.today <= self.plan_period[1]) or (target.get("by") or
                                                                                   self.today) > self.today:
                continue
            for agency in [*self.agencies, DISTRICT]:
                if target.get("per") == "district" and agency != DISTRICT:
                    continue
                f = figures[agency]
                value = f[f"{kpi}_ratio"]
                minimum = MIN_OCCURRENCES if kpi == "plan_completion" else min_dossiers
                if value is None or f["_denominators"][kpi] < minimum:
                    continue
                meets = value > target["value"] if target["op"] == "gt" else value >= target["value"]
                if not meets:
                    expected.add(f"kpi_below_target:{agency}:{kpi}:{period.key}")
        return expected

    def judged_kpis(self, *, min_dossiers: int = MIN_DOSSIERS) -> int:
        """How many KPIs of the running month have a value a round judges (scoring keeps a record of each)."""
        figures = self.figures(month(self.today))
        return sum(1 for f in figures.values() for kpi, n in f["_denominators"].items()
                   if n >= (MIN_OCCURRENCES if kpi == "plan_completion" else min_dossiers))


def build_reference(messages: Sequence[FeedMessage], *, today: dt.date, days: Days, plan_file: Path) -> Reference:
    dossier_events: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    ratings: dict[str, tuple[dt.datetime, str, Mapping[str, Any]]] = {}
    reports: list[tuple[dt.datetime, str, Mapping[str, Any]]] = []
    for m in messages:
        if m.kind == "malformed":
            continue
        event = json.loads(m.body)
        data = event["data"]
        if m.kind == "dossier":
            dossier_events[data["dossier_code"]].append(data)
        elif m.kind == "rating":
            at = parse_time(data["rated_at"])
            held = ratings.get(data["dossier_code"])
            if held is None or (at, event["id"]) > held[:2]:
                ratings[data["dossier_code"]] = (at, event["id"], data)
        elif m.kind == "plan":
            reports.append((parse_time(data["reported_at"]), event["id"], data))
    plan = yaml.safe_load(plan_file.read_text(encoding="utf-8"))
    directory = yaml.safe_load((DATA / "agencies.yaml").read_text(encoding="utf-8"))["agencies"]
    occs = occurrences(plan, directory, days)
    one_shot = {o.task_id for o in occs if not o.period}
    done_on: dict[tuple[str, str, str], dt.date] = {}
    for at, _, data in sorted(reports, key=lambda r: r[:2]):
        assert data["plan_id"] == plan["plan_id"] and data["state"] == "done"
        key = (data["task_id"], data["agency_code"], "" if data["task_id"] in one_shot else data.get("period", ""))
        done_on.setdefault(key, at.date())
    return Reference(
        today=today, days=days, directory=directory,
        dossier_events={code: ordered(events) for code, events in dossier_events.items()},
        ratings={code: data for code, (_, _, data) in ratings.items()},
        occurrences=occs, done_on=done_on, targets=plan.get("targets") or [],
        plan_period=(plan["valid_from"], plan["valid_until"]),
    )


# -- the stack, from outside ----------------------------------------------------------------------------------


async def publish(url: str, messages: Sequence[FeedMessage], *, window: int = 1000,
                  per_second: int | None = None) -> None:
    """JetStream publish, ``window`` awaiting their acks at once, ``Nats-Msg-Id`` = the event id. At ``per_second``:
    a tenth of a second's worth every tenth of a second, on a schedule kept whatever the pipeline does (a steady
    replay that never waits for the consumers)."""
    if per_second is not None:
        window = max(1, per_second // 10)
    nc = await nats.connect(url)
    try:
        js = nc.jetstream(timeout=60)
        started = time.monotonic()
        for n, i in enumerate(range(0, len(messages), window)):
            await asyncio.gather(*(
                js.publish(m.subject, m.body, headers={"Content-Type": "application/cloudevents+json",
                                                       "Nats-Msg-Id": m.msg_id})
                for m in messages[i : i + window]
            ))
            if per_second is not None:
                await asyncio.sleep(max(0.0, started + (n + 1) / 10 - time.monotonic()))
    finally:
        await nc.close()


async def consumers_drained(jsm: Any, streams: Sequence[str]) -> bool:
    """Every consumer of every stream has taken and acknowledged every message."""
    for stream in streams:
        for info in await jsm.consumers_info(stream):
            if info.num_pending or info.num_ack_pending:
                return False
    return True


def sqlite_count(path: Path, sql: str) -> int:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
        return int(db.execute(sql).fetchone()[0])


def sqlite_rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
        return db.execute(sql).fetchall()


async def wait_for(what: str, predicate: Any, *, timeout: float, interval: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not reached within {timeout:.0f}s")
        await asyncio.sleep(interval)


async def alert_events(url: str) -> list[Mapping[str, Any]]:
    """Every event on ``tthc.alerts`` (the stream's whole content, in order), as JSON."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        total = (await js.stream_info("TTHC_ALERTS")).state.messages
        sub = await js.pull_subscribe("tthc.alerts", durable=None, stream="TTHC_ALERTS")
        out: list[Mapping[str, Any]] = []
        while len(out) < total:
            for msg in await sub.fetch(min(500, total - len(out)), timeout=10):
                out.append(json.loads(msg.data))
                await msg.ack()
        await sub.unsubscribe()
        return out
    finally:
        await nc.close()


def start_stack(tmp_path: Path, name: str, env: Mapping[str, str]) -> tuple[Stack, Ready]:
    stack = Stack(data_dir=tmp_path / "var", log=tmp_path / f"{name}.log", env=env)
    stack.start(cwd=tmp_path)
    try:
        return stack, stack.wait_ready(timeout=120)
    except (RuntimeError, TimeoutError) as exc:
        stack.kill()
        pytest.fail(str(exc))


async def scrape(ready: Ready, service: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    async with httpx.AsyncClient(timeout=30) as client:
        r = await client.get(ready.services[service].metrics)
        r.raise_for_status()
        return metric_samples(r.text)


def base_url(ready: Ready, service: str) -> str:
    return ready.services[service].metrics.removesuffix("/metrics")


def same_day(today: dt.date) -> None:
    if dt.datetime.now(VN).date() != today:
        pytest.skip("the day turned in Vietnam during the run: the reference is for one day (run it again)")


def close_enough(got: Any, want: Any) -> bool:
    if isinstance(want, float) or isinstance(got, float):
        return got is not None and want is not None and math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(want, dict):
        return isinstance(got, dict) and got.keys() == want.keys() and all(
            close_enough(got[k], want[k]) for k in want)
    return got == want


# -- the calendar file -------------------------------------------------------------------------------------------


def calendar_file(folder: Path, *, first: dt.date, last: dt.date) -> tuple[Path, dict[str, list[dt.date]]]:
    """The shipped corrections plus a weekday off and the Saturday after it worked, both inside [first, last]."""
    shipped = yaml.safe_load((DATA / "calendar_overrides.yaml").read_text(encoding="utf-8")) or {}
    plain = Days(shipped, range(first.year - 1, last.year + 2))
    day = first
    while not (plain.working(day) and day.weekday() == 2):  # a working Wednesday
        day += dt.timedelta(days=1)
    saturday = day + dt.timedelta(days=3)
    require(saturday <= last and not plain.working(saturday), "a weekday and a Saturday to swap inside the month")
    overrides = {"days_off": [*shipped.get("days_off", []), day],
                 "working_days": [*shipped.get("working_days", []), saturday]}
    path = folder / "calendar-overrides.yaml"
    path.write_text(yaml.safe_dump({k: [d.isoformat() for d in v] for k, v in overrides.items()}), encoding="utf-8")
    return path, overrides


# -- the reference, checked by hand ------------------------------------------------------------------------------


def test_the_reference_calendar_and_fold_by_hand() -> None:
    """Cases worked out on paper. 24/11/2026 (Tuesday) is the holiday library's Vietnamese Culture Day; the test's
    overrides make Wednesday 11/11/2026 a day off and Saturday 14/11/2026 a working day."""
    days = Days({"days_off": [dt.date(2026, 11, 11)], "working_days": [dt.date(2026, 11, 14)]}, [2026, 2027])
    assert not days.working(dt.date(2026, 11, 24)) and not days.working(dt.date(2026, 11, 11))
    assert days.working(dt.date(2026, 11, 14)) and not days.working(dt.date(2026, 11, 15))
    t = lambda d, h=9, m=0: dt.datetime(2026, 11, d, h, m, tzinfo=VN)
    # Rule 1: after 17:00 or on a day off, the receipt day is the next working day.
    assert days.receipt_day(t(20, 17, 1)) == dt.date(2026, 11, 23)
    assert days.receipt_day(t(20, 17, 0)) == dt.date(2026, 11, 20)
    assert days.receipt_day(t(11)) == dt.date(2026, 11, 12)
    # Rule 3: 3 working days from Friday 20/11: Mon 23, Wed 25, Thu 26 (24 is a holiday).
    assert days.due(t(20), 3, "working_days") == dt.date(2026, 11, 26)
    # 2 working days from Thursday 12/11: Fri 13, Sat 14 (worked).
    assert days.due(t(12), 2, "working_days") == dt.date(2026, 11, 14)
    # 4 calendar days from Friday 20/11 is Tuesday 24/11, a holiday: Wednesday 25/11.
    assert days.due(t(20), 4, "days") == dt.date(2026, 11, 25)
    # 4 working hours from 10:00: 1.5 h to 11:30, 2.5 h from 13:30 -> 16:00 the same day.
    assert days.due(t(20, 10), 4, "hours") == dt.date(2026, 11, 20)
    # 4 working hours from 15:00 Friday 20/11: 2 h to 17:00, then 2 h on Monday 23/11.
    assert days.due(t(20, 15), 4, "hours") == dt.date(2026, 11, 23)
    # exactly at the end of the morning: 4.5 h from 07:00 is 11:30, the same day.
    assert days.due(t(20, 7), 4.5, "hours") == dt.date(2026, 11, 20)

    def ev(status: int, at: dt.datetime, seq: int, **more: Any) -> dict[str, Any]:
        return {"status": status, "occurred_at": at.isoformat(), "agency_code": "PTP", "sequence": seq, **more}

    received = ev(2, t(16), 1, received_at=t(16).isoformat(), statutory_duration={"value": 5, "unit": "working_days"})
    # Received Monday 16/11: due the 5th working day after it, Monday 23/11. Paused Thursday 19/11, resumed
    # Tuesday 24/11 (holiday: the source sends it anyway): paused working days after 19 up to 24: 20, 23 -> 2;
    # two working days after Monday 23/11: Wednesday 25, Thursday 26.
    d = fold("H1", [received, ev(5, t(19), 2), ev(4, t(24, 10), 3), ev(9, t(26), 4)], days)
    assert (d.receipt_day, d.due_day, d.end_day, d.timeliness) == (
        dt.date(2026, 11, 16), dt.date(2026, 11, 26), dt.date(2026, 11, 26), "on_time")
    # Still paused since 19/11 (on or before its due day): not overdue, awaiting supplement.
    d = fold("H2", [received, ev(5, t(19), 2)], days)
    assert d.due_day == dt.date(2026, 11, 23) and not d.overdue(dt.date(2026, 11, 30))
    assert d.open_state(dt.date(2026, 11, 30), days) == "awaiting_supplement"
    assert d.alert_kind(dt.date(2026, 11, 30), days) is None
    # Paused after its due day: overdue all the same.
    d = fold("H3", [received, ev(5, t(25), 2)], days)
    assert d.overdue(dt.date(2026, 11, 26)) and d.alert_kind(dt.date(2026, 11, 26), days) == "dossier_overdue"
    # A second supplement request: late whatever the dates; open, overdue by rule 6, apology due at the monitor.
    d = fold("H4", [received, ev(5, t(17), 2), ev(4, t(18), 3), ev(5, t(18, 15), 4)], days)
    assert d.open_state(dt.date(2026, 11, 19), days) == "overdue"
    assert d.alert_kind(dt.date(2026, 11, 19), days) == "dossier_apology_due"
    # Due Monday 23/11, judged Friday 20/11: due soon (the next working day); on Monday: apology due.
    d = fold("H5", [received], days)
    assert d.open_state(dt.date(2026, 11, 20), days) == "due_soon"
    assert d.alert_kind(dt.date(2026, 11, 20), days) == "dossier_due_soon"
    assert d.alert_kind(dt.date(2026, 11, 23), days) == "dossier_apology_due"
    assert d.alert_kind(dt.date(2026, 11, 19), days) is None
    # The source's due_at wins and is not moved by the pause.
    d = fold("H6", [{**received, "due_at": t(20, 16).isoformat()}, ev(5, t(17), 2), ev(4, t(19), 3),
                    ev(10, t(23), 4)], days)
    assert (d.due_day, d.timeliness) == (dt.date(2026, 11, 20), "late")
    # Never received: not counted.
    assert not fold("H7", [ev(1, t(16), 1), ev(3, t(16, 10), 2)], days).received
    # Occurrences: a monthly day 31 falls on the month's last day; a weekly Friday off moves to Monday.
    plan = {"valid_from": dt.date(2026, 1, 1), "valid_until": dt.date(2026, 12, 31), "tasks": [
        {"id": "m", "owner": ["PTP"], "due": {"every": "month", "day": 31}},
        {"id": "w", "owner": ["PTP"], "due": {"every": "week", "weekday": "fri"}},
        {"id": "y", "owner": {"group": "communes"}, "due": {"every": "year", "month": 11, "day": 15}},
        {"id": "c", "owner": ["PTP"], "due": {"continuous": True}},
    ]}
    directory = [{"code": "PTP", "kind": "department"}, {"code": "XA_A", "kind": "commune"}]
    occs = occurrences(plan, directory, Days({"days_off": [dt.date(2026, 1, 2)]}, [2026, 2027]))
    monthly = [o for o in occs if o.task_id == "m"]
    assert [(o.period, o.due_day) for o in monthly][:3] == [
        ("2026-01", dt.date(2026, 2, 2)), ("2026-02", dt.date(2026, 3, 2)), ("2026-03", dt.date(2026, 3, 31))]
    # 30/4 and 1/5 are holidays, 2-3/5 a weekend: April's falls due on Monday 4/5, in May's periods.
    assert len(monthly) == 12 and (monthly[3].period, monthly[3].due_day) == ("2026-04", dt.date(2026, 5, 4))
    weekly = [o for o in occs if o.task_id == "w"]
    assert (weekly[0].period, weekly[0].opens, weekly[0].due_day) == ("2026-W01", dt.date(2026, 1, 1),
                                                                      dt.date(2026, 1, 5))
    assert len(weekly) == 52
    assert [(o.agency, o.period, o.due_day) for o in occs if o.task_id == "y"] == [
        ("XA_A", "2026", dt.date(2026, 11, 16))]
    assert not [o for o in occs if o.task_id == "c"]


# -- the replay -------------------------------------------------------------------------------------------------


def require(condition: object, what: str) -> None:
    """A precondition of the history or the run: a failure, never the expected failure of an xfail test."""
    if not condition:
        pytest.fail(what)


@dataclass
class History:
    today: dt.date
    start: dt.datetime
    end: dt.datetime
    messages: list[FeedMessage]
    ref: Reference
    env: dict[str, str]

    @property
    def last_month(self) -> Period:
        return month(month(self.today).first - dt.timedelta(days=1))


def make_history(tmp_path: Path) -> History:
    """The demo's district for the last 30 days (up to four hours ago), its reference, the stack's settings."""
    now = dt.datetime.now(VN)
    today = now.date()
    end = now - HISTORY_LAG
    start = end - dt.timedelta(days=HISTORY_DAYS)
    overrides_path, overrides = calendar_file(tmp_path, first=start.date() + dt.timedelta(days=2),
                                              last=today - dt.timedelta(days=3))
    days = Days(overrides, range(start.year - 1, today.year + 2))
    plan_file = current_plan_copy(tmp_path / "plans", year=today.year)
    calendar = load_calendar(overrides_path)  # the generator's (it plans with parwatch's calendar; checked apart)
    feed = DistrictFeed(
        seed=SEED, start=start, run_tag="M146", calendar=calendar, agencies=load_agencies(),
        dossiers_per_day=DOSSIERS_PER_DAY, occurrences=plan_occurrences(plan_file, calendar=calendar),
    )
    messages = feed.advance(end)
    ref = build_reference(messages, today=today, days=days, plan_file=plan_file)

    kinds = Counter(m.kind for m in messages)
    dossiers = ref.dossiers()
    ended = Counter(d.timeliness for d in dossiers if d.received and d.end_day)
    states = Counter(d.open_state(today, days) for d in dossiers if d.is_open)
    alerts = ref.alerts()
    print(f"\nhistory {start:%d/%m %H:%M} - {end:%d/%m %H:%M}: {dict(kinds)}; ended {dict(ended)}; "
          f"open {dict(states)}; dossier alerts {dict(Counter(alerts.values()))}")
    # The history holds what the test is about (else it proves little).
    require(kinds["malformed"] and kinds["rating"] and kinds["plan"], "messages of every kind")
    require(ended["early"] and ended["on_time"] and ended["late"], "dossiers ended early, on time and late")
    require(states["overdue"] and states["due_soon"] and states["in_time"] and states["awaiting_supplement"],
            "open dossiers in every state of rule 6")
    require(any(d.supplements >= 2 for d in dossiers), "a second supplement request")
    require(set(alerts.values()) >= {"dossier_overdue", "dossier_due_soon"}, "dossiers due soon and overdue")
    env = {
        "PARWATCH_CALENDAR_OVERRIDES": str(overrides_path),
        "PARWATCH_MONITOR_PLANS_DIR": str(plan_file.parent),
        # The monitor settles a backlog once nothing has come for this long: longer than the test's pauses in
        # the replay and than a tracker batch on a loaded machine (see the module's docstring).
        "PARWATCH_MONITOR_BACKLOG_IDLE_SECONDS": "15",
    }
    return History(today=today, start=start, end=end, messages=messages, ref=ref, env=env)


async def wait_pipeline_done(ready: Ready, data_dir: Path) -> None:
    """Every consumer of every stream drained, no dossier unsettled in the monitor, its outbox empty."""
    nc = await nats.connect(ready.nats_url)
    try:
        jsm = nc.jsm()
        streams = [s.config.name for s in await jsm.streams_info()]

        async def done() -> bool:
            # In this order: once every consumer has acked everything (after its transaction committed), no fact
            # is on its way; then nothing left unsettled means every dossier was settled on its last fact, and an
            # empty outbox that its alerts are on the stream.
            if not await consumers_drained(jsm, streams):
                return False
            if sqlite_count(data_dir / "deadline_monitor.db",
                            "SELECT count(*) FROM monitor_dossier WHERE tick_level = -1"):
                return False
            metrics = await scrape(ready, "deadline_monitor")
            return metrics.get(("parwatch_monitor_outbox_pending", frozenset())) == 0

        await wait_for("every consumer drained, the monitor settled, its outbox empty", done, timeout=240)
    finally:
        await nc.close()


async def wait_tracker_drained(url: str) -> None:
    nc = await nats.connect(url)
    try:
        jsm = nc.jsm()
        await wait_for("dossier_tracker drained", lambda: consumers_drained(jsm, ["TTHC_DOSSIER"]), timeout=180,
                       interval=0.1)
    finally:
        await nc.close()


def latest_round(scoring_db: Path) -> Any:
    """When scoring's last KPI round judged a KPI (a round writes every record with a value)."""
    return sqlite_rows(scoring_db, "SELECT max(last_evaluated_at) FROM scoring_alert")[0][0]


async def wait_rounds(scoring_db: Path, n: int, *, after: Any) -> None:
    """``n`` KPI rounds seen after the round ``after``, then scoring's outbox empty (their alerts on the stream)."""
    rounds: set[Any] = set()

    def seen() -> bool:
        latest = latest_round(scoring_db)
        if latest is not None and latest != after:
            rounds.add(latest)
        return len(rounds) >= n and sqlite_count(scoring_db, "SELECT count(*) FROM scoring_outbox") == 0

    await wait_for(f"{n} KPI rounds and scoring's outbox empty", seen, timeout=60, interval=0.1)


async def served_figures(ready: Ready, periods: Sequence[Period], agencies: Sequence[str]) -> dict[tuple[str, str],
                                                                                            dict[str, Any]]:
    """scoring's ``GET /figures/{agency}?period=..`` of each agency and period."""
    served = {}
    async with httpx.AsyncClient(base_url=base_url(ready, "scoring"), timeout=30) as client:
        for period in periods:
            for agency in agencies:
                r = await client.get(f"/figures/{agency}", params={"period": period.key})
                require(r.status_code == 200, f"GET /figures/{agency}?period={period.key}: {r.status_code} {r.text}")
                served[period.key, agency] = r.json()
    return served


def figure_mismatches(ref: Reference, served: Mapping[tuple[str, str], Mapping[str, Any]],
                      periods: Sequence[Period]) -> list[str]:
    out = []
    for period in periods:
        want = ref.figures(period)
        for agency in [*ref.agencies, DISTRICT]:
            got = served[period.key, agency]
            for name, value in want[agency].items():
                if not name.startswith("_") and not close_enough(got.get(name), value):
                    out.append(f"{period.key} {agency} {name}: served {got.get(name)!r}, reference {value!r}")
            points = {p["part"]: p["points"] for p in got.get("index") or () if p["part"] in want[agency]["_index"]}
            if not close_enough(points, want[agency]["_index"]):
                out.append(f"{period.key} {agency} index points: served {points}, reference {want[agency]['_index']}")
    return out


def check_dossier_alerts(events: Sequence[Mapping[str, Any]], ref: Reference) -> None:
    """Exactly one dossier alert per dossier due soon or overdue today (rule 6), of the kind the reference gives,
    none resolved."""
    today, days, dossiers, expected_alerts = ref.today, ref.days, ref.dossiers(), ref.alerts()
    dossier_events = [e for e in events if e["data"]["kind"] in DOSSIER_KINDS]
    resolved = [e["data"]["alert_key"] for e in dossier_events if e["type"] == "vn.tthc.alert.resolved"]
    assert resolved == [], f"{len(resolved)} dossier alerts fired and resolved during the replay: {resolved[:10]}"
    fired = Counter(e["data"]["alert_key"] for e in dossier_events)
    assert [k for k, n in fired.items() if n > 1] == []
    got_alerts = {e["data"]["ref"]: e["data"]["kind"] for e in dossier_events}
    due_or_overdue = {d.code for d in dossiers if d.is_open and d.open_state(today, days) in ("overdue", "due_soon")}
    assert (sorted(set(got_alerts) - due_or_overdue)[:10], sorted(due_or_overdue - set(got_alerts))[:10]) == ([], [])
    wrong = {c: (got_alerts.get(c), expected_alerts.get(c)) for c in set(got_alerts) | set(expected_alerts)
             if got_alerts.get(c) != expected_alerts.get(c)}
    assert wrong == {}, f"{len(wrong)} dossiers alerted otherwise (got, expected): {dict(list(wrong.items())[:10])}"
    for e in dossier_events:
        d = next(x for x in dossiers if x.code == e["data"]["ref"])
        assert e["data"]["agency_code"] == d.agency
        assert e["data"]["labels"].get("due_day") == (d.due_day.isoformat() if d.due_day else None)


def check_kpi_alerts(events: Sequence[Mapping[str, Any]], expected: set[str]) -> None:
    kpi_events = [e for e in events if e["data"]["kind"] == "kpi_below_target"]
    resolved = [e["data"]["alert_key"] for e in kpi_events if e["type"] != "vn.tthc.alert.firing"]
    assert resolved == [], f"kpi alerts fired and resolved: {resolved}"
    fired = Counter(e["data"]["alert_key"] for e in kpi_events)
    assert [k for k, n in fired.items() if n > 1] == []
    assert (sorted(set(fired) - expected), sorted(expected - set(fired))) == ([], []), "(fired, not expected), " \
        "(expected, not fired)"
    for e in kpi_events:
        _, agency, kpi, period_key = e["data"]["alert_key"].split(":")
        assert (e["data"]["agency_code"], e["data"]["labels"]) == (agency, {"kpi": kpi, "period": period_key})


async def test_a_replayed_month_fires_exactly_the_alerts_and_figures_of_the_reference(tmp_path: Path) -> None:
    history = make_history(tmp_path)
    today, ref, messages, last_month = history.today, history.ref, history.messages, history.last_month
    days, dossiers = ref.days, ref.dossiers()
    # Split at the end of the month before this one (the replay in steps; all at once is the test further down).
    part_one = [m for m in messages if m.at.astimezone(VN).date() <= last_month.last]
    part_two = [m for m in messages if m.at.astimezone(VN).date() > last_month.last]
    env = history.env | {"PARWATCH_SCORING_EVALUATE_INTERVAL": "3600"}  # no KPI round on half a history
    data_dir = tmp_path / "var"
    scoring_db = data_dir / "scoring.db"
    stack, ready = start_stack(tmp_path, "first", env)
    try:
        started = time.monotonic()
        await publish(ready.nats_url, part_one)
        await wait_tracker_drained(ready.nats_url)
        await publish(ready.nats_url, part_two)
        await wait_pipeline_done(ready, data_dir)
        print(f"replayed {len(messages)} messages in {time.monotonic() - started:.1f}s")

        events = await alert_events(ready.nats_url)
        periods = [month(today), quarter(today), year(today)]
        if history.start.date() <= last_month.last:
            periods.append(last_month)
        served = await served_figures(ready, periods, [*ref.agencies, DISTRICT])
        tracker_metrics = await scrape(ready, "dossier_tracker")
        monitor_metrics = await scrape(ready, "deadline_monitor")
        same_day(today)
        assert stack.stop() == 0
    finally:
        stack.kill()

    # 1. Dossier alerts: exactly one per dossier due soon or overdue today, of its kind, all still firing.
    check_dossier_alerts(events, ref)

    # 2. Figures: scoring's, per agency and period, and the tracker's and monitor's gauges.
    year_figures = ref.figures(year(today))[DISTRICT]
    assert all(year_figures[n] for n in ("ended_early", "ended_on_time", "ended_late", "overdue", "rated_unsatisfied",
                                         "tasks_done", "tasks_done_late", "tasks_overdue", "tasks_open"))
    mismatches = figure_mismatches(ref, served, periods)
    assert mismatches == [], f"{len(mismatches)} figures differ:\n" + "\n".join(mismatches[:40])

    ended_by = Counter((d.agency, d.timeliness) for d in dossiers if d.received and d.end_day and d.timeliness)
    open_by = Counter((d.agency, d.open_state(today, days)) for d in dossiers if d.is_open)
    tasks_by = Counter((o.agency, ref.task_state(o)) for o in ref.occurrences
                       if o.opens <= today or ref.task_state(o) in ("done", "done_late"))
    gauges = []
    for agency in ref.agencies:
        for timeliness in ("early", "on_time", "late"):
            got = tracker_metrics.get(("parwatch_dossiers_ended_total",
                                       frozenset({"agency": agency, "timeliness": timeliness}.items())), 0)
            if got != ended_by[agency, timeliness]:
                gauges.append(f"ended_total {agency} {timeliness}: {got} != {ended_by[agency, timeliness]}")
        for state in ("in_time", "due_soon", "awaiting_supplement", "overdue"):
            got = tracker_metrics.get(("parwatch_dossiers_open", frozenset({"agency": agency, "state": state}.items())),
                                      0)
            if got != open_by[agency, state]:
                gauges.append(f"dossiers_open {agency} {state}: {got} != {open_by[agency, state]}")
        for state in ("done", "done_late", "open", "overdue"):
            got = monitor_metrics.get(("parwatch_plan_tasks", frozenset({"agency": agency, "state": state}.items())),
                                      0)
            if got != tasks_by[agency, state]:
                gauges.append(f"plan_tasks {agency} {state}: {got} != {tasks_by[agency, state]}")
    assert gauges == [], "\n".join(gauges[:40])

    # 3. KPI alerts: a round every second on the whole history, after a restart on the same data.
    expected_kpi = ref.kpi_alerts()
    print(f"kpi_below_target expected ({len(expected_kpi)} of {ref.judged_kpis()} judged): {sorted(expected_kpi)}")
    assert 0 < len(expected_kpi) < ref.judged_kpis()  # both outcomes are on trial
    before = {e["id"] for e in events}
    last_round = latest_round(scoring_db)
    stack, ready = start_stack(tmp_path, "second", env | {"PARWATCH_SCORING_EVALUATE_INTERVAL": "1"})
    try:
        await wait_rounds(scoring_db, 3, after=last_round)
        events = await alert_events(ready.nats_url)
        same_day(today)
        assert stack.stop() == 0
    finally:
        stack.kill()

    again = [e for e in events if e["id"] not in before and e["data"]["kind"] in DOSSIER_KINDS]
    assert again == []  # a restart sends no dossier alert again
    check_kpi_alerts(events, expected_kpi)


async def test_kpi_rounds_during_a_paced_replay_fire_only_what_the_whole_history_says(tmp_path: Path) -> None:
    """As an operator replays a month into a fresh stack with the KPI rounds running (every second here), at a
    steady pace the consumers keep up with (:data:`PACE` events a second, never waiting for the pipeline: nothing
    piles up on any consumer, only event time tells history from the present): scoring holds its rounds while the
    dossier facts it reads lag now (docs/scoring.md, "Catching up on a backlog"), and the ``kpi_below_target``
    alerts are those of the whole history, none fired and resolved on the way. The minimum of dossiers a KPI
    needs is 5, as in the week-by-week test above."""
    history = make_history(tmp_path)
    expected_kpi = history.ref.kpi_alerts(min_dossiers=5)
    require(expected_kpi, "a KPI below its target at the end")
    data_dir = tmp_path / "var"
    scoring_db = data_dir / "scoring.db"
    stack, ready = start_stack(tmp_path, "paced", history.env | {"PARWATCH_SCORING_EVALUATE_INTERVAL": "1",
                                                                 "PARWATCH_SCORING_MIN_DOSSIERS": "5"})
    try:
        started = time.monotonic()
        await publish(ready.nats_url, history.messages, per_second=PACE)
        print(f"published {len(history.messages)} messages in {time.monotonic() - started:.1f}s")
        await wait_pipeline_done(ready, data_dir)
        await wait_rounds(scoring_db, 4, after=latest_round(scoring_db))
        events = await alert_events(ready.nats_url)
        same_day(history.today)
        require(stack.stop() == 0, "the stack stops cleanly")
    finally:
        stack.kill()
    check_kpi_alerts(events, expected_kpi)


async def test_the_previous_month_of_a_replay_published_at_once_is_judged_as_of_its_last_day(tmp_path: Path) -> None:
    """The same month published in one go, as fast as the publisher can: the previous month's figures (a closed
    period) must still be those of each dossier as it stood at the end of its last day (rule 7)."""
    history = make_history(tmp_path)
    if history.start.date() > history.last_month.last:
        pytest.skip("the history does not reach into the previous month today")
    stack, ready = start_stack(tmp_path, "at-once", history.env | {"PARWATCH_SCORING_EVALUATE_INTERVAL": "3600"})
    try:
        await publish(ready.nats_url, history.messages)
        await wait_pipeline_done(ready, tmp_path / "var")
        served = await served_figures(ready, [history.last_month], [*history.ref.agencies, DISTRICT])
        same_day(history.today)
        require(stack.stop() == 0, "the stack stops cleanly")
    finally:
        stack.kill()
    mismatches = figure_mismatches(history.ref, served, [history.last_month])
    assert mismatches == [], f"{len(mismatches)} figures differ:\n" + "\n".join(mismatches[:40])
