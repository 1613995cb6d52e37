"""scoring's operator commands (``parwatch report``, ``parwatch rebuild-scores``).

Both use the service's database (``PARWATCH_DATABASE_URL``, else the SQLite
file ``scoring.db`` under ``PARWATCH_DATA_DIR``) and its settings.
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
    report.add_argument("--period", required=True, help="2026-10 (month), 2026-Q4 (quarter) or 2026 (year)")
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


def run_report(args: argparse.Namespace, *, clock=None) -> int:  # type: ignore[no-untyped-def]
    from services.scoring.board import PeriodNotStarted, Scoreboard, load_directory
    from services.scoring.domain import Period, today_in_vietnam
    from services.scoring.report import render

    try:
        period = Period.parse(args.period)
    except ValueError as exc:
        print(f"parwatch report: {exc}", file=sys.stderr)
        return 2
    settings, engine, store = _open_store()
    try:
        directory = load_directory(settings.agencies_file)
        board = Scoreboard(store, config=settings.index_config(), district=directory.district_code)
        now = clock() if clock else dt.datetime.now(dt.timezone.utc)
        try:
            table = board.table(period, today=today_in_vietnam(now))
        except PeriodNotStarted as exc:
            print(f"parwatch report: {exc}", file=sys.stderr)
            return 2
        _, body = render(table, directory, fmt=args.format)
    finally:
        engine.dispose()
    output = args.output
    if output is None and args.format == "xlsx":
        output = Path(f"parwatch-report-{period.key}.xlsx")
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
