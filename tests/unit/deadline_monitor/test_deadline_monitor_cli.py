"""`parwatch plan validate` and `parwatch plan show` without a database, and the settings.

`parwatch plan show` over the monitor's database: tests/integration/deadline_monitor/test_deadline_monitor_cli.py."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.deadline_monitor import cli
from services.deadline_monitor.settings import MonitorSettings
from shared.plans import SHIPPED_PLANS

PLAN = (Path(__file__).parent / "cli-plan.yaml").read_text(encoding="utf-8")  # also read by the integration tests


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="parwatch")
    sub = parser.add_subparsers(dest="command")
    cli.register(sub)
    args = parser.parse_args(list(argv))
    return int(args.func(args))


def test_validate_reports_every_error_with_file_line_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        PLAN.replace("owner: [PNV]", "owner: [PNV, NOWHERE]")
        .replace("weekday: fri", "weekday: friday")
        .replace("title: Xây dựng", "titel: Xây dựng"),
        encoding="utf-8",
    )
    assert run("plan", "validate", str(bad)) == 1
    out = capsys.readouterr().out.splitlines()
    assert f"{bad}:12: tasks[0].owner[1]: unknown agency code 'NOWHERE' (see shared/data/agencies.yaml)" in out
    assert any(line.startswith(f"{bad}:13: tasks[0].due") for line in out)
    assert any(line.startswith(f"{bad}:16: tasks[1].titel: unknown field") for line in out)
    assert any(line.startswith(f"{bad}:14: tasks[1].title: required field is missing") for line in out)
    assert out[-1] == f"{bad}: 4 error(s)"


def test_validate_accepts_the_shipped_plan_and_a_good_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(PLAN, encoding="utf-8")
    shipped = SHIPPED_PLANS / "plan-146-2023.yaml"
    assert run("plan", "validate", str(good), str(shipped)) == 0
    assert capsys.readouterr().out.splitlines() == [f"{good}: OK", f"{shipped}: OK"]


def test_validate_gives_the_line_of_an_impossible_date(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "feb30.yaml"
    bad.write_text(PLAN.replace("date: 2026-12-15", "date: 2026-02-30"), encoding="utf-8")
    assert run("plan", "validate", str(bad)) == 1
    assert f"{bad}:18: tasks[1].due.date: must be a date written YYYY-MM-DD" in capsys.readouterr().out.splitlines()


def test_validate_of_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("plan", "validate", str(tmp_path / "none.yaml")) == 1
    assert "cannot read the file" in capsys.readouterr().out


@pytest.fixture
def operator_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    plans = tmp_path / "plans"
    plans.mkdir()
    (plans / "cli.yaml").write_text(PLAN, encoding="utf-8")
    for name in ("PARWATCH_DATABASE_URL", "PARWATCH_CALENDAR_OVERRIDES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PARWATCH_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("PARWATCH_MONITOR_INCLUDE_SHIPPED_PLANS", "false")
    monkeypatch.setenv("PARWATCH_MONITOR_PLANS_DIR", str(plans))
    return tmp_path


def test_show_from_the_plan_alone_when_there_is_no_database(
    operator_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        run("plan", "show", "--date", "2026-12-02", "--agency", "PNV", "--from", "2026-11-25", "--to", "2026-12-20")
        == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert (
        out[0]
        == "Plan task occurrences due 25/11/2026..20/12/2026, state on 02/12/2026 (from the plan files alone: no report known)"
    )
    assert out[1].split() == ["DUE", "STATE", "PLAN", "TASK", "PERIOD", "AGENCY", "DONE", "ON", "TITLE"]
    rows = [line.split()[:6] for line in out[2:-1]]
    assert rows == [
        ["27/11/2026", "overdue", "KH-CLI-2026", "C.weekly", "2026-W48", "PNV"],
        ["04/12/2026", "open", "KH-CLI-2026", "C.weekly", "2026-W49", "PNV"],
        ["11/12/2026", "open", "KH-CLI-2026", "C.weekly", "2026-W50", "PNV"],
        ["15/12/2026", "open", "KH-CLI-2026", "C.once", "-", "PNV"],
        ["18/12/2026", "open", "KH-CLI-2026", "C.weekly", "2026-W51", "PNV"],
    ]
    assert "Rà soát hồ sơ trễ hạn hằng tuần" in out[2]
    # 48 weekly reviews opened by 2/12 (week 2 to week 49) and the one-shot plan
    assert out[-1] == "Occurrences opened by 02/12/2026 (agency PNV): 49: done 0, done_late 0, open 2, overdue 47"
    assert not (operator_env / "var" / "deadline_monitor.db").exists()  # showing creates no database


def test_show_outside_the_plan_says_where_the_plan_is(operator_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("plan", "show", "--date", "2028-06-01") == 0
    out = capsys.readouterr().out
    assert "No task occurrence is due in that range." in out
    assert "Plan KH-CLI-2026 (5/KH-UBND) is valid 05/01/2026..31/12/2026" in out
    assert "parwatch plan copy FILE --year YYYY" in out


def test_show_refuses_an_invalid_operator_plan(operator_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (operator_env / "plans" / "cli.yaml").write_text(PLAN.replace("[PNV]", "[NOPE]"), encoding="utf-8")
    assert run("plan", "show") == 1
    assert "unknown agency code 'NOPE'" in capsys.readouterr().err


# -- settings ----------------------------------------------------------------------------------------


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PARWATCH_MONITOR_PLANS_DIR", str(tmp_path))
    monkeypatch.setenv("PARWATCH_MONITOR_PLAN_DUE_SOON_WORKING_DAYS", "5")
    settings = MonitorSettings()
    assert settings.port == 9102 and settings.tick_interval == 30.0
    assert settings.plans_dir == tmp_path and settings.plan_due_soon_working_days == 5
    (tmp_path / "mine.yaml").write_text(PLAN, encoding="utf-8")
    (tmp_path / "notes.txt").write_text("not a plan", encoding="utf-8")
    assert settings.plan_files() == [SHIPPED_PLANS / "plan-146-2023.yaml", tmp_path / "mine.yaml"]


@pytest.mark.parametrize(
    "values",
    [
        {"apology_working_days": 2, "due_soon_working_days": 1},
        {"plans_dir": "/no/such/folder"},
        {"plan_window_from": "2026-02-01", "plan_window_to": "2026-01-01"},
    ],
)
def test_inconsistent_settings_are_refused(values: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        MonitorSettings(**values)  # type: ignore[arg-type]
