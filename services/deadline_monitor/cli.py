"""Operator commands of the deadline monitor: ``parwatch plan validate|show``.

* ``parwatch plan validate FILE...`` prints every error of each plan file as
  ``FILE:LINE: field: message`` and exits 1 if there is any.
* ``parwatch plan show [--date D] [--agency A] [--plan P] [--from D1 --to D2]``
  prints one row per task occurrence due in a range around the date (30 days
  either side by default) with its state on that date, and the totals of
  every occurrence opened by that date. It reads the monitor's database; when
  the database does not exist or holds no occurrence yet, it computes the
  occurrences from the plan files alone (no report known: nothing is done).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from services.deadline_monitor.catalog import PlanLoadError, catalog_from_settings, occurrence_specs
from services.deadline_monitor.domain import (
    TASK_STATES,
    Catalog,
    default_window,
    field_values,
    occurrence_state,
    vn_date,
)
from services.deadline_monitor.plan import load_agencies, validate_plan_text
from services.deadline_monitor.store import OccurrenceView, occurrence_facts
from shared.agencies import AgencySettings

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


# -- show -------------------------------------------------------------------------------------


def _show(args: argparse.Namespace) -> int:
    from services.deadline_monitor.settings import MonitorSettings
    from shared.calendar import load_calendar, local_date
    from shared.settings import CommonSettings

    common = CommonSettings()
    settings = MonitorSettings()
    try:
        catalog = catalog_from_settings(settings)
    except PlanLoadError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return 1
    calendar = load_calendar(common.calendar_overrides)
    day = args.date or local_date(dt.datetime.now(dt.timezone.utc))
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
            "Pick a date in that range (--date, --from, --to), or track the plan's recurring duties longer "
            "(PARWATCH_MONITOR_PLAN_WINDOW_TO with PARWATCH_MONITOR_PLAN_EXTEND_RECURRING=true).",
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
