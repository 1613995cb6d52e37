"""scoring's operator commands (``parwatch report``, ``parwatch rebuild-scores``, ``parwatch agencies``).

* ``parwatch agencies list`` prints the agency directory as the services load
  it (``PARWATCH_AGENCIES_FILE``, ``PARWATCH_AGENCIES_EXTRA``);
* ``parwatch agencies unknown`` prints the agency codes scoring holds figures
  for that are outside the directory (the ones metrics show as ``unknown``
  and the ``unknown_agency`` alert speaks of), with their open and overdue
  dossiers now. Each code is printed escaped (``shared.text.escape_text``:
  control and bidirectional characters as ``\\u202e``): it came from outside.

All but ``agencies list`` use the service's database (``PARWATCH_DATABASE_URL``,
else the SQLite file ``scoring.db`` under ``PARWATCH_DATA_DIR``) and its
settings.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    report = subparsers.add_parser(
        "report",
        help="write a period's figures table of every agency (CSV or XLSX), as GET /report does",
    )
    report.add_argument(
        "--period", required=True,
        help="2026-10 (month), 2026-Q4 (quarter) or 2026 (year); with --review also 2026-W48 (ISO week)",
    )
    report.add_argument(
        "--review", action="store_true",
        help="the weekly review instead: late and overdue dossiers per agency and field, and inter-agency dossiers,"
             " as GET /review does",
    )
    report.add_argument("--format", choices=("csv", "xlsx"), default="csv", help="file format (default csv)")
    report.add_argument(
        "--output", type=Path, default=None,
        help="file to write (default: stdout for CSV, parwatch-report-PERIOD.xlsx for XLSX)",
    )
    report.set_defaults(func=run_report)

    rebuild = subparsers.add_parser(
        "rebuild-scores",
        help="recompute every scoring aggregate from the stored dossier states, ratings and task states",
    )
    rebuild.set_defaults(func=run_rebuild)

    agencies = subparsers.add_parser("agencies", help="the agency directory, and the codes seen outside it")
    web = subparsers.add_parser("web", help="the officials' web page (/web/ on scoring): sign-in passwords")
    web_actions = web.add_subparsers(dest="web_command", metavar="ACTION")
    web_actions.required = True
    password = web_actions.add_parser(
        "password", help="set (or --remove) an official's password for the web page; kept as an Argon2id hash")
    password.add_argument("official", metavar="OFFICIAL", help="the official's id in the notifier's directory")
    password.add_argument("--remove", action="store_true", help="remove the password: the official cannot sign in"
                          " and every session of the official ends")
    password.add_argument("--stdin", action="store_true",
                          help="read the password from the first line of standard input (scripts) instead of asking")
    password.set_defaults(func=run_web_password)

    actions = agencies.add_subparsers(dest="agencies_command", metavar="ACTION")
    actions.required = True
    actions.add_parser("list", help="print the agency directory as the services load it").set_defaults(
        func=run_agencies_list
    )
    actions.add_parser(
        "unknown", help="print the agency codes of stored events that are outside the directory (escaped)"
    ).set_defaults(func=run_agencies_unknown)


def _open_store():  # type: ignore[no-untyped-def]
    from services.scoring.settings import ScoringSettings
    from services.scoring.store import ScoringStore, create_schema
    from shared.db import make_engine
    from shared.settings import CommonSettings

    common = CommonSettings()
    settings = ScoringSettings()
    engine = make_engine(common.database_url_for("scoring"))
    create_schema(engine)
    return settings, engine, ScoringStore(engine)


def _directory(settings):  # type: ignore[no-untyped-def]
    from services.scoring.board import Directory
    from shared.agencies import AgencySettings

    return Directory.of(AgencySettings().load(override=settings.agencies_file))


def run_report(args: argparse.Namespace, *, clock=None) -> int:  # type: ignore[no-untyped-def]
    from services.scoring.board import PeriodNotStarted, Scoreboard
    from services.scoring.catalog import load_procedure_catalog
    from services.scoring.domain import Period, today_in_vietnam
    from services.scoring.report import render, render_review
    from services.scoring.review import Span

    review = getattr(args, "review", False)
    try:
        period = Span.parse(args.period) if review else Period.parse(args.period)
    except ValueError as exc:
        print(f"parwatch report: {exc}", file=sys.stderr)
        return 2
    settings, engine, store = _open_store()
    try:
        directory = _directory(settings)
        procedures = () if settings.procedure_catalog is None else load_procedure_catalog(
            settings.procedure_catalog, agencies={a.code for a in directory.agencies})
        board = Scoreboard(store, config=settings.index_config(), district=directory.district_code,
                           directory=directory, procedures=procedures)
        now = clock() if clock else dt.datetime.now(dt.timezone.utc)
        try:
            if review:
                _, body = render_review(board.field_review(period, today=today_in_vietnam(now)), directory,
                                        fmt=args.format)
            else:
                _, body = render(board.table(period, today=today_in_vietnam(now)), directory, fmt=args.format)
        except PeriodNotStarted as exc:
            print(f"parwatch report: {exc}", file=sys.stderr)
            return 2
    finally:
        engine.dispose()
    output = args.output
    if output is None and args.format == "xlsx":
        output = Path(f"parwatch-{'review' if review else 'report'}-{period.key}.xlsx")
    if output is None:
        sys.stdout.buffer.write(body)
        sys.stdout.flush()
    else:
        output.write_bytes(body)
        print(f"report {period.key} written to {output}", file=sys.stderr)
    return 0


def run_rebuild(args: argparse.Namespace) -> int:
    _, engine, store = _open_store()
    try:
        result = store.rebuild()
    finally:
        engine.dispose()
    print(
        f"rebuilt scoring aggregates from {result.dossiers} dossiers, {result.ratings} ratings, "
        f"{result.tasks} plan-task occurrences: {result.period_cells} period cells, {result.open_cells} open cells"
    )
    return 0


def run_agencies_list(args: argparse.Namespace) -> int:
    from services.scoring.settings import ScoringSettings

    directory = _directory(ScoringSettings())
    for a in directory.agencies:
        print(f"{a.code:<16} {a.kind:<10} {a.name}")
    print(f"{directory.district_code:<16} {'district':<10} {directory.district.name}")
    return 0


def run_agencies_unknown(args: argparse.Namespace, *, clock=None) -> int:  # type: ignore[no-untyped-def]
    from services.scoring.domain import today_in_vietnam
    from shared.text import escape_text

    settings, engine, store = _open_store()
    try:
        directory = _directory(settings)
        codes = sorted(c for c in store.known_agencies() if not directory.known(c))
        now = clock() if clock else dt.datetime.now(dt.timezone.utc)
        opens = store.open_now(today_in_vietnam(now))
    finally:
        engine.dispose()
    if not codes:
        print("no agency code outside the directory")
        return 0
    print(f"{len(codes)} agency code(s) outside the directory, counted under 'unknown' (open and overdue dossiers now):")
    for code in codes:
        n_open, n_overdue = opens.get(code, (0, 0))
        print(f"  {escape_text(code, limit=200):<40} open={n_open} overdue={n_overdue}")
    return 0


def run_web_password(args: argparse.Namespace) -> int:
    """Set or remove an official's password (never printed, never logged; only its Argon2id hash is stored)."""
    import getpass

    from services.scoring.web.auth import hash_password
    from services.scoring.web.store import WebStore

    _, engine, _ = _open_store()
    try:
        store = WebStore(engine)
        store.create_schema()
        if args.remove:
            removed = store.remove_password(args.official)
            print(f"password of {args.official} removed" if removed else f"{args.official} had no password")
            return 0
        if args.stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = getpass.getpass(f"new password for {args.official}: ")
            if getpass.getpass("again: ") != password:
                print("the two passwords differ; nothing changed", file=sys.stderr)
                return 1
        try:
            hashed = hash_password(password)
        except ValueError as exc:
            print(f"password refused: {exc}", file=sys.stderr)
            return 1
        store.set_password_hash(args.official, hashed, now=dt.datetime.now(dt.UTC))
        print(f"password of {args.official} set; signing in also needs {args.official} in the notifier's directory")
        return 0
    finally:
        engine.dispose()
