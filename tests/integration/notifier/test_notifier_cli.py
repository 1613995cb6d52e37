"""``parwatch silence add|list|expire`` and ``parwatch notifications`` on the notifier's database (SQLite)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

import pytest

from services.notifier import cli
from services.notifier.domain.dispatch import Plan
from services.notifier.service import Notice
from services.notifier.store import Failure, LogEntry, Store
from shared.db import make_engine


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'notifier.db'}"
    monkeypatch.setenv("PARWATCH_DATABASE_URL", url)
    monkeypatch.setenv("PARWATCH_DATA_DIR", str(tmp_path))
    return url


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="parwatch")
    sub = parser.add_subparsers(dest="command")
    cli.register(sub)
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_silence_add_list_expire(env, capsys):
    assert run("silence", "add", "--agency", "PTP", "--kind", "dossier_due_soon", "--duration", "2h",
               "--comment", "Phòng Tư pháp đang chuyển trụ sở", "--json") == 0
    added = json.loads(capsys.readouterr().out)
    assert added["state"] == "active" and added["matchers"] == {"agencies": ["PTP"], "kinds": ["dossier_due_soon"]}
    assert run("silence", "list") == 0
    out = capsys.readouterr().out
    assert added["id"] in out and "active" in out and "agencies=PTP" in out and "chuyển trụ sở" in out
    assert run("silence", "expire", added["id"]) == 0
    capsys.readouterr()
    assert run("silence", "list") == 0
    assert capsys.readouterr().out.strip() == "no silences"
    assert run("silence", "list", "--all", "--json") == 0
    assert json.loads(capsys.readouterr().out)[0]["state"] == "expired"
    assert run("silence", "expire", "nope") == 1


def test_silence_add_refuses_typos_and_silences_that_match_everything(env, capsys):
    assert run("silence", "add", "--agency", "PHONG_TU_PHAP", "--duration", "1h", "--comment", "x") == 2
    assert "unknown agency code 'PHONG_TU_PHAP'" in capsys.readouterr().err
    assert run("silence", "add", "--kind", "overdue", "--duration", "1h", "--comment", "x") == 2
    assert "unknown alert kind" in capsys.readouterr().err
    assert run("silence", "add", "--duration", "1h", "--comment", "x") == 2
    assert "at least one matcher" in capsys.readouterr().err
    assert run("silence", "add", "--agency", "PTP", "--duration", "soon", "--comment", "x") == 2
    assert "--duration" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="offset"):
        run("silence", "add", "--agency", "PTP", "--until", "2026-12-01T17:00", "--comment", "x")


def test_notifications_query_the_log_the_outbox_and_the_failures(env, capsys):
    store = Store(make_engine(env))
    store.create_schema()
    now = dt.datetime.now(dt.timezone.utc)
    sent, waiting = (Notice("smtp", {"type": "alerts", "receiver": "tuphap-motcua", "role": "officer", "agency": "PTP",
                                     "notice_keys": [key], "items": []}) for key in ("k1@x:firing", "k2@x:firing"))
    store.apply_plan(Plan(), [waiting.message()], now=now)
    with store.engine.begin() as conn:
        store.log_sent(conn, [LogEntry(receiver_id="tuphap-motcua", channel="smtp", agency_code="PTP", alert_key="k1",
                                       state="firing", kind="dossier_overdue", severity="warning",
                                       notice_key=sent.notice_keys[0])], outbox_id=7, now=now)
        store.log_failure(conn, Failure(receiver_id="tuphap-lanhdao", channel="webhook", agency_code="PTP",
                                        kind="alerts", notice_keys=["k3@x:firing"], reason="HTTP 400", attempts=1,
                                        created_at=now), now=now)
    assert run("notifications", "--agency", "PTP", "--since", "1d", "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["receiver"], r["alert_key"], r["state"], r["channel"]) for r in rows] == [
        ("tuphap-motcua", "k1", "firing", "smtp")]
    assert run("notifications", "--agency", "PNV") == 0
    assert capsys.readouterr().out.strip() == "no notifications"
    assert run("notifications", "--outbox", "sent") == 0
    out = capsys.readouterr().out
    assert "tuphap-motcua" in out and "sent=" in out and "pending" not in out
    assert run("notifications", "--outbox", "pending") == 0
    [line] = capsys.readouterr().out.splitlines()
    assert "pending" in line and "tuphap-motcua" in line and "attempts=0" in line
    assert run("notifications", "--outbox", "failed") == 0
    [line] = capsys.readouterr().out.splitlines()
    assert "failed" in line and "tuphap-lanhdao" in line and "HTTP 400" in line
    assert run("notifications", "--outbox", "all", "--json") == 0
    shown = {(r["status"], r["receiver"], r["channel"], tuple(r["notices"])) for r in json.loads(
        capsys.readouterr().out)}
    assert shown == {("sent", "tuphap-motcua", "smtp", ("k1@x:firing",)),
                     ("pending", "tuphap-motcua", "smtp", ("k2@x:firing",)),
                     ("failed", "tuphap-lanhdao", "webhook", ("k3@x:firing",))}


def test_registered_in_the_parwatch_command(env, capsys):
    from parwatch.cli import main

    assert main(["silence", "list"]) == 0
    assert "no silences" in capsys.readouterr().out
