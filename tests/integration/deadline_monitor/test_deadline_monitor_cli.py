"""`parwatch plan show` over the monitor's database (SQLite, and PostgreSQL when TEST_DATABASE_URL is set),
filled by the monitor's service layer as the running service would."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from parwatch.cli import main as parwatch
from services.deadline_monitor.app import policy_from
from services.deadline_monitor.catalog import catalog_from_settings, occurrence_specs
from services.deadline_monitor.service import MonitorService
from services.deadline_monitor.settings import MonitorSettings
from services.deadline_monitor.store import MonitorStore, create_schema
from shared.calendar import VN_TZ, load_calendar
from shared.db import make_engine
from shared.events import PlanTaskReported

#: The plan of the unit tests of the CLI (tests/unit/deadline_monitor/test_deadline_monitor_cli.py).
PLAN = Path(__file__).parents[2] / "unit" / "deadline_monitor" / "cli-plan.yaml"


async def test_show_reads_the_monitor_database(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    plans = tmp_path / "plans"
    plans.mkdir()
    (plans / "cli.yaml").write_text(PLAN.read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.delenv("PARWATCH_CALENDAR_OVERRIDES", raising=False)
    if database_url.startswith("sqlite"):  # the monitor's file in the data folder, found without a URL
        monkeypatch.delenv("PARWATCH_DATABASE_URL", raising=False)
        monkeypatch.setenv("PARWATCH_DATA_DIR", str(tmp_path / "var"))
        (tmp_path / "var").mkdir()
        database_url = f"sqlite:///{tmp_path / 'var' / 'deadline_monitor.db'}"
    else:
        monkeypatch.setenv("PARWATCH_DATABASE_URL", database_url)
    monkeypatch.setenv("PARWATCH_MONITOR_INCLUDE_SHIPPED_PLANS", "false")
    monkeypatch.setenv("PARWATCH_MONITOR_PLANS_DIR", str(plans))
    settings = MonitorSettings()
    catalog = catalog_from_settings(settings)
    calendar = load_calendar()
    engine = make_engine(database_url)
    create_schema(engine)
    now = dt.datetime(2026, 12, 2, 9, 0, tzinfo=VN_TZ)
    service = MonitorService(
        store=MonitorStore(engine), catalog=catalog, calendar=calendar, policy=policy_from(settings), clock=lambda: now
    )
    await service.sync_plans(occurrence_specs(catalog, calendar=calendar, settings=settings))
    done = PlanTaskReported(
        plan_id="KH-CLI-2026", task_id="C.weekly", agency_code="PNV", state="done", reported_at=now, period="2026-W48"
    )
    await service.record_reports([("tool", "r1", done)])
    engine.dispose()

    show = ["plan", "show", "--date", "2026-12-02", "--agency", "PNV", "--from", "2026-11-27", "--to", "2026-12-04"]
    assert parwatch(show) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("(from the monitor database)")
    assert [line.split()[:7] for line in out[2:-1]] == [
        ["27/11/2026", "done_late", "KH-CLI-2026", "C.weekly", "2026-W48", "PNV", "02/12/2026"],
        ["04/12/2026", "open", "KH-CLI-2026", "C.weekly", "2026-W49", "PNV", "-"],
    ]
    assert out[-1] == "Occurrences opened by 02/12/2026 (agency PNV): 49: done 0, done_late 1, open 2, overdue 46"
