"""Operator commands of the deadline monitor: ``parwatch plan validate|copy|report|show``.

* ``parwatch plan validate FILE...`` prints every error of each plan file as
  ``FILE:LINE: field: message`` and exits 1 if there is any.
* ``parwatch plan copy FILE --year Y [--out FILE]`` writes the plan copied to
  year Y, every date moved (:func:`services.deadline_monitor.plan.copy_plan_text`),
  checked by the same validator.
* ``parwatch plan report TASK --agency A [--period P] [--state S] [--done-on D]``
  checks the report against the plans the monitor loads and publishes the
  contract's ``vn.tthc.plan.task_reported`` on ``tthc.plan.events``.
* ``parwatch plan show [--date D] [--agency A] [--plan P] [--from D1 --to D2]``
  prints one row per task occurrence due in a range around the date (30 days
  either side by default) with its state on that date, and the totals of
  every occurrence opened by that date. It reads the monitor's database; when
  the database does not exist or holds no occurrence yet, it computes the
  occurrences from the plan files alone (no report known: nothing is done).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import hashlib
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from pydantic import ValidationError

from services.deadline_monitor.catalog import PlanLoadError, catalog_from_settings, occurrence_specs
from services.deadline_monitor.domain import (
    TASK_STATES,
    Catalog,
    WorkingDays,
    default_window,
    field_values,
    occurrence_state,
    plan_closed,
    plan_closes_on,
    plan_occurrence_specs,
    report_period,
    report_problem,
    vn_date,
)
from services.deadline_monitor.domain import event_id as domain_event_id
from services.deadline_monitor.plan import Plan, PlanCopyError, copy_plan_text, load_agencies, validate_plan_text
from services.deadline_monitor.store import OccurrenceView, occurrence_facts
from shared.agencies import AgencySettings
from shared.calendar import VN_TZ, local_date
from shared.events import PLAN_TYPE, CloudEvent, PlanTaskReported, encode, headers_for, new_event
from shared.streams import PLAN_EVENTS

if TYPE_CHECKING:
    from shared.settings import CommonSettings

NAME = "deadline_monitor"
DEFAULT_SPAN = dt.timedelta(days=30)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    plan = subparsers.add_parser("plan", help="check plan files and show the state of plan tasks")
    actions = plan.add_subparsers(dest="plan_command", metavar="ACTION")
    actions.required = True

    validate = actions.add_parser("validate", help="check plan files; print every error as FILE:LINE: field: message")
    validate.add_argument("files", nargs="+", metavar="FILE", type=Path)
    validate.add_argument("--agencies", type=Path, default=None,
                          help="agencies YAML (default: the agency directory as the services load it)")
    validate.set_defaults(func=_validate)

    copy = actions.add_parser("copy", help="copy a plan to another year, every date moved, checked by the validator")
    copy.add_argument("file", metavar="FILE", type=Path)
    copy.add_argument("--year", type=int, required=True, help="the year of the copy (valid_from's year moves to it)")
    copy.add_argument("--out", type=Path, default=None, help="write the copy there (default: print it)")
    copy.add_argument("--valid-from", type=_date, default=None, help="the copy's valid_from (default: moved)")
    copy.add_argument("--valid-until", type=_date, default=None, help="the copy's valid_until (default: moved)")
    copy.add_argument("--agencies", type=Path, default=None,
                      help="agencies YAML (default: the agency directory as the services load it)")
    copy.set_defaults(func=_copy)

    report = actions.add_parser(
        "report", help="report progress on a plan task: checked against the plans, published as a CloudEvent"
    )
    report.add_argument("task", metavar="TASK", help="the task id, e.g. III.2.2.3-review")
    report.add_argument("--agency", required=True, help="the reporting agency's code (an owner of the task)")
    report.add_argument("--period", default=None,
                        help="the occurrence of a recurring task: 2027-W27, 2027-07 or 2027 (default: today's)")
    report.add_argument("--state", choices=("done", "in_progress", "blocked"), default="done")
    report.add_argument("--done-on", type=_date, default=None,
                        help="the day it was done (default: today); the report is dated that day")
    report.add_argument("--note", default=None, help="a short note (at most 2,000 characters, no personal data)")
    report.add_argument("--plan", default=None, help="the plan id, when the task id is in several plans in force")
    report.set_defaults(func=_report)

    show = actions.add_parser("show", help="print the state of each task occurrence around a date")
    show.add_argument("--date", type=_date, default=None, help="the day the states are taken on (default: today)")
    show.add_argument("--agency", default=None, help="only this agency code")
    show.add_argument("--plan", default=None, help="only this plan id")
    show.add_argument(
        "--from", dest="start", type=_date, default=None, help="first due day shown (default: date - 30 days)"
    )
    show.add_argument("--to", dest="end", type=_date, default=None, help="last due day shown (default: date + 30 days)")
    show.set_defaults(func=_show)


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date written YYYY-MM-DD") from None


# -- validate -------------------------------------------------------------------------------


def validate_files(files: Sequence[Path], *, agencies_file: Path | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    agencies = load_agencies(agencies_file) if agencies_file else AgencySettings().load()
    failed = False
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            print(f"{path}: cannot read the file: {exc.__class__.__name__}: {exc}", file=out)
            failed = True
            continue
        errors = validate_plan_text(text, source=str(path), agencies=agencies)
        for error in errors:
            print(str(error), file=out)
        if errors:
            failed = True
            print(f"{path}: {len(errors)} error(s)", file=out)
        else:
            print(f"{path}: OK", file=out)
    return 1 if failed else 0


def _validate(args: argparse.Namespace) -> int:
    return validate_files(args.files, agencies_file=args.agencies)


# -- copy -------------------------------------------------------------------------------------


def copy_file(
    path: Path,
    *,
    year: int,
    out_path: Path | None = None,
    valid_from: dt.date | None = None,
    valid_until: dt.date | None = None,
    agencies_file: Path | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Copy the plan at ``path`` to ``year``: the copy to ``out_path`` (or ``out``); errors to ``err``, exit 1."""
    out, err = out or sys.stdout, err or sys.stderr
    agencies = load_agencies(agencies_file) if agencies_file else AgencySettings().load()
    try:
        text = path.read_text(encoding="utf-8")
        copied = copy_plan_text(text, year=year, source=str(path), agencies=agencies, valid_from=valid_from,
                                valid_until=valid_until)
    except (OSError, UnicodeDecodeError) as exc:
        print(f"{path}: cannot read the file: {exc.__class__.__name__}: {exc}", file=err)
        return 1
    except PlanCopyError as exc:
        print(str(exc), file=err)
        return 1
    if out_path is None:
        out.write(copied)
        return 0
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(copied, encoding="utf-8")
    print(f"{out_path}: plan copied to {year} from {path}: OK", file=out)
    return 0


def _copy(args: argparse.Namespace) -> int:
    return copy_file(args.file, year=args.year, out_path=args.out, valid_from=args.valid_from,
                     valid_until=args.valid_until, agencies_file=args.agencies)


# -- report -----------------------------------------------------------------------------------

#: The ``source`` of the reports this command publishes.
REPORT_SOURCE = "parwatch/cli"


class ReportError(ValueError):
    """A report the plans refuse; the message names the field."""


@dataclasses.dataclass(frozen=True)
class ReportRequest:
    task_id: str
    agency_code: str
    state: str = "done"
    period: str | None = None
    done_on: dt.date | None = None
    note: str | None = None
    plan_id: str | None = None


def report_event(
    request: ReportRequest,
    *,
    catalog: Catalog,
    calendar: WorkingDays,
    now: dt.datetime,
    window: tuple[dt.date | None, dt.date | None] = (None, None),
    source: str = REPORT_SOURCE,
) -> CloudEvent[Any]:
    """The ``vn.tthc.plan.task_reported`` event of ``request``, checked as the monitor checks it: the task is in a
    plan in force, the agency owns it, the period is one of its occurrences. Its id depends on the report and its
    day only, so the same command run twice on a day is one report. ``source``: who publishes it (the command,
    or the officials' web page through the monitor's API)."""
    today = local_date(now)
    reported_on = request.done_on or today
    if reported_on > today:
        raise ReportError("--done-on: a task cannot be done on a day still to come")
    plan = _plan_of(request, catalog=catalog, today=today)
    problem = report_problem(plan_id=plan.plan_id, task_id=request.task_id, agency_code=request.agency_code,
                             period=request.period, catalog=catalog, today=today)
    if problem is not None:
        raise ReportError(_as_options(problem))
    task = plan.task(request.task_id)
    occ = report_period(task, period=request.period, reported_on=reported_on)
    if occ is not None:
        specs = plan_occurrence_specs(plan, agencies=catalog.agencies, calendar=calendar, window_from=window[0],
                                      window_to=window[1])
        if (plan.plan_id, task.id, request.agency_code, occ) not in {s.key for s in specs}:
            raise ReportError(f"--period: task {task.id} has no occurrence {occ or '(one-shot)'} in plan "
                              f"{plan.plan_id} (valid {plan.valid_from}..{plan.valid_until})")
    reported_at = now if reported_on == today else dt.datetime.combine(reported_on, dt.time(17, 0), VN_TZ)
    data = PlanTaskReported(
        plan_id=plan.plan_id, task_id=task.id, agency_code=request.agency_code, state=request.state,
        reported_at=reported_at, period=occ or None, note=request.note,
    )
    digest = hashlib.sha256((request.note or "").encode()).hexdigest()[:12]
    event_id = domain_event_id("report", plan.plan_id, task.id, request.agency_code, occ or "-", request.state,
                               reported_on.isoformat(), digest)
    return new_event(type=PLAN_TYPE, source=source, id=event_id, subject=task.id, data=data, time=now)


def _as_options(reason: str) -> str:
    """A dead-letter reason (``data.agency_code: ...``) as the command's own words (``--agency: ...``)."""
    field, _, rest = reason.partition(": ")
    option = {"data.plan_id": "--plan", "data.task_id": "TASK", "data.agency_code": "--agency",
              "data.period": "--period"}.get(field, field)
    return f"{option}: {rest}"


def _plan_of(request: ReportRequest, *, catalog: Catalog, today: dt.date) -> Plan:
    if request.plan_id is not None:
        plan = catalog.plans.get(request.plan_id)
        if plan is None:
            raise ReportError(f"--plan: no plan {request.plan_id!r} is loaded (see PARWATCH_MONITOR_PLANS_DIR)")
        return plan
    having = [p for p in catalog.plans.values() if any(t.id == request.task_id for t in p.tasks)]
    in_force = [p for p in having if not plan_closed(p, today)]
    if len(in_force) == 1:
        return in_force[0]
    if not having:
        raise ReportError(f"TASK: no loaded plan has a task {request.task_id!r}")
    if not in_force:
        closed = ", ".join(f"{p.plan_id} (closed after {plan_closes_on(p)})" for p in having)
        raise ReportError(f"TASK: every plan with task {request.task_id!r} is closed: {closed}; "
                          "copy the plan for this year (parwatch plan copy)")
    raise ReportError(f"--plan: task {request.task_id!r} is in several plans in force: "
                      f"{', '.join(p.plan_id for p in in_force)}; name one")


async def publish_report(event: CloudEvent[Any], *, common: CommonSettings) -> int:
    """Publish ``event`` on ``tthc.plan.events`` with a JetStream ack (as the settings' NATS user, over their
    TLS, when set); its stream sequence."""
    import nats

    nc = await nats.connect(common.nats_servers(), connect_timeout=5, allow_reconnect=False,
                            **common.nats_auth().connect_options())
    try:
        ack = await nc.jetstream(timeout=10).publish(PLAN_EVENTS, encode(event), headers=headers_for(event))
    finally:
        await nc.close()
    return int(ack.seq)


def _loaded() -> tuple[Any, Any, Any] | None:
    """The settings and the plans the monitor loads (None, the errors printed, when a plan does not load)."""
    from services.deadline_monitor.settings import MonitorSettings
    from shared.settings import CommonSettings

    common, settings = CommonSettings(), MonitorSettings()
    try:
        return common, settings, catalog_from_settings(settings)
    except PlanLoadError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return None


def _report(args: argparse.Namespace) -> int:
    from shared.calendar import load_calendar

    if (loaded := _loaded()) is None:
        return 1
    common, settings, catalog = loaded
    request = ReportRequest(task_id=args.task, agency_code=args.agency, state=args.state, period=args.period,
                            done_on=args.done_on, note=args.note, plan_id=args.plan)
    try:
        event = report_event(request, catalog=catalog, calendar=load_calendar(common.calendar_overrides),
                             now=dt.datetime.now(dt.UTC),
                             window=(settings.plan_window_from, settings.plan_window_to))
    except (ReportError, ValidationError) as exc:
        print(f"report refused: {exc}", file=sys.stderr)
        return 1
    try:
        seq = asyncio.run(publish_report(event, common=common))
    except Exception as exc:  # NATS away or the stream missing: said plainly, nothing published
        print(f"report not published: {type(exc).__name__}: {exc} (is the stack running? PARWATCH_NATS_URL)",
              file=sys.stderr)
        return 1
    print(f"published {PLAN_TYPE} on {PLAN_EVENTS} (stream seq {seq}): {encode(event).decode()}")
    return 0


# -- show -------------------------------------------------------------------------------------


def _show(args: argparse.Namespace) -> int:
    from shared.calendar import load_calendar

    if (loaded := _loaded()) is None:
        return 1
    common, settings, catalog = loaded
    calendar = load_calendar(common.calendar_overrides)
    day = args.date or local_date(dt.datetime.now(dt.UTC))
    start = args.start or day - DEFAULT_SPAN
    end = args.end or day + DEFAULT_SPAN
    url = _database_url(common)
    views = _from_database(url) if url else None
    if views is None:
        specs = occurrence_specs(catalog, calendar=calendar, settings=settings)
        views = [OccurrenceView(**field_values(s), done_on=None) for s in specs]
        origin = "from the plan files alone: no report known"
    else:
        origin = "from the monitor database"
    print_status(
        views,
        catalog=catalog,
        day=day,
        start=start,
        end=end,
        agency=args.agency,
        plan_id=args.plan,
        origin=origin,
        settings_window=(settings.plan_window_from, settings.plan_window_to),
    )
    return 0


def _database_url(common: object) -> str | None:
    """The monitor's database URL, or None when its SQLite file does not exist (nothing to read)."""
    url = getattr(common, "database_url", None)
    if url:
        return url
    path = Path(common.data_dir) / f"{NAME}.db"
    return f"sqlite:///{path.resolve()}" if path.is_file() else None


def _from_database(url: str) -> list[OccurrenceView] | None:
    """The occurrences the monitor's database holds, or None when it holds none (or no table yet)."""
    from sqlalchemy import inspect

    from services.deadline_monitor.store import MonitorStore, OccurrenceRow
    from shared.db import make_engine

    engine = make_engine(url)
    try:
        if not inspect(engine).has_table(OccurrenceRow.__tablename__):
            return None
        store = MonitorStore(engine)
        if store.occurrence_count() == 0:
            return None
        return store.occurrences_between(dt.date.min, dt.date.max)
    finally:
        engine.dispose()


def print_status(
    views: Sequence[OccurrenceView],
    *,
    catalog: Catalog,
    day: dt.date,
    start: dt.date,
    end: dt.date,
    agency: str | None = None,
    plan_id: str | None = None,
    origin: str = "",
    settings_window: tuple[dt.date | None, dt.date | None] = (None, None),
    out: TextIO | None = None,
) -> None:
    """The status table: one row per occurrence due in [start, end], states on ``day``, then totals."""
    out = out or sys.stdout
    chosen = [
        v for v in views if (agency is None or v.agency_code == agency) and (plan_id is None or v.plan_id == plan_id)
    ]
    shown = sorted(
        (v for v in chosen if start <= v.due_day <= end), key=lambda v: (v.due_day, v.plan_id, v.task_id, v.agency_code)
    )
    print(f"Plan task occurrences due {vn_date(start)}..{vn_date(end)}, state on {vn_date(day)} ({origin})", file=out)
    if shown:
        header = ("DUE", "STATE", "PLAN", "TASK", "PERIOD", "AGENCY", "DONE ON", "TITLE")
        rows = [header] + [_row(v, catalog=catalog, day=day) for v in shown]
        widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
        for r in rows:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1], file=out)
    else:
        print("No task occurrence is due in that range.", file=out)
        for plan in catalog.plans.values():
            if plan_id is not None and plan.plan_id != plan_id:
                continue
            first, last = default_window(plan, window_from=settings_window[0], window_to=settings_window[1])
            print(
                f"Plan {plan.plan_id} ({plan.number or plan.title[:40]}) is valid {vn_date(plan.valid_from)}.."
                f"{vn_date(plan.valid_until)}; its occurrences are tracked for due days {vn_date(first)}..{vn_date(last)}.",
                file=out,
            )
        print(
            "Pick a date in that range (--date, --from, --to), or copy the plan to this year "
            "(parwatch plan copy FILE --year YYYY --out PLANS_DIR/FILE).",
            file=out,
        )
    opened = [v for v in chosen if v.opens_on <= day or v.done_on is not None]
    totals = Counter(_state(v, day) for v in opened)
    parts = ", ".join(f"{state} {totals.get(state, 0)}" for state in TASK_STATES)
    scope = f"agency {agency}" if agency else "all agencies"
    print(f"Occurrences opened by {vn_date(day)} ({scope}): {len(opened)}: {parts}", file=out)


def _state(v: OccurrenceView, day: dt.date) -> str:
    return occurrence_state(occurrence_facts(v), day)


def _row(v: OccurrenceView, *, catalog: Catalog, day: dt.date) -> tuple[str, ...]:
    task = catalog.task(v.plan_id, v.task_id)
    title = task.title if task else ""
    if len(title) > 70:
        title = title[:69] + "…"
    return (
        vn_date(v.due_day),
        _state(v, day),
        v.plan_id,
        v.task_id,
        v.period or "-",
        v.agency_code,
        vn_date(v.done_on) if v.done_on else "-",
        title,
    )
