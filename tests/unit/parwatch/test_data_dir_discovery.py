"""The operator commands find the demo's data without extra settings, and never over a stack of one's own."""

from __future__ import annotations

from pathlib import Path

import pytest

from parwatch.cli import use_demo_data_if_alone
from parwatch.supervisor import LOG_FILE
from shared.settings import DEMO_DATA_DIR, demo_data_dir_instead, holds_data


def stack_ran_in(folder: Path, *, how: str = "log") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if how == "log":
        (folder / LOG_FILE).write_text("")
    else:
        (folder / "nats").mkdir()


def test_a_folder_holds_data_once_a_stack_ran_on_it(tmp_path: Path) -> None:
    assert not holds_data(tmp_path / "absent")
    (tmp_path / "var" / "demo").mkdir(parents=True)
    assert not holds_data(tmp_path / "var")  # only the demo's folder inside
    (tmp_path / "var" / "notifier.db").write_bytes(b"")  # an operator command ran here before any stack
    assert not holds_data(tmp_path / "var")
    stack_ran_in(tmp_path / "var", how="nats")
    assert holds_data(tmp_path / "var")
    stack_ran_in(tmp_path / "other", how="log")
    assert holds_data(tmp_path / "other")


def test_after_a_demo_the_demo_folder_is_used(tmp_path: Path) -> None:
    stack_ran_in(tmp_path / "var" / "demo")
    assert demo_data_dir_instead({}, cwd=tmp_path) == DEMO_DATA_DIR == Path("var/demo")


@pytest.mark.parametrize("setting", ["PARWATCH_DATA_DIR", "parwatch_data_dir", "PARWATCH_DATABASE_URL"])
def test_a_configured_folder_or_database_wins(tmp_path: Path, setting: str) -> None:
    stack_ran_in(tmp_path / "var" / "demo")
    assert demo_data_dir_instead({setting: "elsewhere"}, cwd=tmp_path) is None


def test_a_stack_of_ones_own_in_var_wins(tmp_path: Path) -> None:
    stack_ran_in(tmp_path / "var" / "demo")
    stack_ran_in(tmp_path / "var")
    assert demo_data_dir_instead({}, cwd=tmp_path) is None


def test_no_demo_no_change(tmp_path: Path) -> None:
    assert demo_data_dir_instead({}, cwd=tmp_path) is None
    (tmp_path / "var" / "demo").mkdir(parents=True)  # an empty folder: no demo ran
    assert demo_data_dir_instead({}, cwd=tmp_path) is None


def test_the_cli_points_its_settings_at_the_demo_and_says_so_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack_ran_in(tmp_path / "var" / "demo")
    environ: dict[str, str] = {}
    assert use_demo_data_if_alone(environ, cwd=tmp_path) == Path("var/demo")
    assert environ == {"PARWATCH_DATA_DIR": "var/demo"}
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "var/demo" in captured.err and "PARWATCH_DATA_DIR" in captured.err


def test_the_cli_says_nothing_when_it_keeps_the_default(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    environ: dict[str, str] = {}
    assert use_demo_data_if_alone(environ, cwd=tmp_path) is None
    assert environ == {}
    assert capsys.readouterr().err == ""


def test_operator_commands_look_for_the_demo_and_stack_commands_do_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from parwatch import cli

    calls: list[str] = []
    monkeypatch.setattr(cli, "use_demo_data_if_alone", lambda: calls.append("looked"))
    monkeypatch.setattr(cli, "_up", lambda args: 0)
    assert cli.main(["up"]) == 0
    assert calls == []
    monkeypatch.chdir(tmp_path)
    assert cli.main(["agencies", "list"]) == 0
    assert calls == ["looked"]
