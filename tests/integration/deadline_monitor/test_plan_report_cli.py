"""Reporting done without writing CloudEvents, against a real nats-server: ``parwatch plan report`` publishes the
contract event once (a deterministic id), refuses what the plans refuse, and the monitor dead-letters a report
that matches no tracked occurrence, with its reason."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from parwatch.cli import main
from services.deadline_monitor.app import create_app
from services.deadline_monitor.domain import NO_OCCURRENCE
from services.deadline_monitor.settings import MonitorSettings
from shared.calendar import VN_TZ
from shared.events import PLAN_TYPE, PlanTaskReported, new_event, parse_event
from shared.settings import CommonSettings
from shared.streams import ACCEPTED_PLAN_REPORTS
from shared.testing import jetstream, publish_event, wait_until

YEAR = dt.datetime.now(VN_TZ).year
MONTH = f"{dt.datetime.now(VN_TZ):%Y-%m}"


@pytest.fixture
def operator_env(monthly_plan: Callable[..., Path]) -> Path:
    return monthly_plan(plan_id=f"KH-REPORT-{YEAR}", task_id="R.monthly", year=YEAR)


async def stored(js: Any, stream: str) -> list[Any]:
    info = await js.stream_info(stream)
    if not info.state.messages:
        return []
    return [parse_event((await js.get_msg(stream, s)).data) for s in range(info.state.first_seq,
                                                                            info.state.last_seq + 1)]


async def test_plan_report_publishes_the_contract_event_once(
    operator_env: Path, own_nats_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["plan", "report", "R.monthly", "--agency", "PTP", "--period", MONTH, "--note", "Đã gửi báo cáo."]
    async with jetstream(own_nats_server.url) as js:  # the streams, as the stack creates them
        assert await _run(args) == 0
        assert await _run(args) == 0  # the same report again: the same id, stored once
        events = await stored(js, "TTHC_PLAN")
    out = capsys.readouterr().out
    assert out.count(f"published {PLAN_TYPE} on tthc.plan.events") == 2
    [event] = events
    assert (event.type, event.source, event.subject) == (PLAN_TYPE, "parwatch/cli", "R.monthly")
    data = event.data
    assert (data.plan_id, data.task_id, data.agency_code, data.state, data.period, data.note) == (
        f"KH-REPORT-{YEAR}", "R.monthly", "PTP", "done", MONTH, "Đã gửi báo cáo."
    )
    assert event.id in out


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["R.monthly", "--agency", "PNV"], "--agency: this agency is not an owner of the task"),
        (["R.nope", "--agency", "PTP"], "no loaded plan has a task 'R.nope'"),
        (["R.monthly", "--agency", "PTP", "--period", f"{YEAR - 3}-10"], "--period: task R.monthly has no occurrence"),
        (["R.monthly", "--agency", "PTP", "--period", f"{YEAR}-W40"], "--period: this task's periods are written"),
        (["R.monthly", "--agency", "PTP", "--done-on", f"{YEAR + 1}-01-02"], "--done-on: a task cannot be done"),
    ],
)
async def test_plan_report_refuses_what_the_plan_refuses_and_publishes_nothing(
    operator_env: Path, own_nats_server: Any, capsys: pytest.CaptureFixture[str], args: list[str], says: str
) -> None:
    async with jetstream(own_nats_server.url) as js:
        assert await _run(["plan", "report", *args]) == 1
        assert await stored(js, "TTHC_PLAN") == []
    err = capsys.readouterr().err
    assert "report refused:" in err and says in err


async def _run(args: list[str]) -> int:
    """The command in a thread: it runs its own event loop, as from a shell."""
    import asyncio

    return await asyncio.to_thread(main, args)


@contextlib.asynccontextmanager
async def running_monitor(nats_url: str, database_url: str, plans: Path, now: dt.datetime) -> AsyncIterator[Any]:
    settings = MonitorSettings(include_shipped_plans=False, plans_dir=plans, tick_interval=0.1, outbox_interval=0.05,
                               port=0)
    service, app = create_app(CommonSettings(nats_url=nats_url, database_url=database_url), settings,
                              clock=lambda: now)
    await service.start()
    try:
        yield app
    finally:
        await service.stop()


def accepted(event_id: str, period: str) -> dict[str, Any]:
    report = PlanTaskReported(plan_id="KH-REPORT-2026", task_id="R.monthly", agency_code="PTP", state="done",
                              reported_at=dt.datetime(2026, 11, 26, 9, tzinfo=VN_TZ), period=period)
    event = new_event(type=PLAN_TYPE, source="xa.test", id=event_id, data=report, time=report.reported_at)
    return event.model_dump(mode="json", exclude_none=True)


async def test_the_monitor_dead_letters_a_report_matching_no_tracked_occurrence(
    own_nats_server: Any, sqlite_url: str, monthly_plan: Callable[..., Path]
) -> None:
    plans = monthly_plan(plan_id="KH-REPORT-2026", task_id="R.monthly", year=2026)
    now = dt.datetime(2026, 11, 26, 10, tzinfo=VN_TZ)
    async with jetstream(own_nats_server.url) as js, running_monitor(own_nats_server.url, sqlite_url, plans, now) as app:
        await publish_event(js, ACCEPTED_PLAN_REPORTS, accepted("r-2023", "2023-10"))  # a 2023 period: not tracked
        await publish_event(js, ACCEPTED_PLAN_REPORTS, accepted("r-ok", "2026-10"))

        async def both_handled() -> bool:
            info = await js.consumer_info("PARWATCH_ACCEPTED", "deadline_monitor_plan")
            return info.num_pending == 0 and info.num_ack_pending == 0

        await wait_until(both_handled, timeout=10)
        await wait_until(lambda: app.state.store.firing_counts().get("deadletter") == 1, timeout=10)
        letters = await stored(js, "TTHC_DEADLETTER")
        row = app.state.store.get_occurrence(("KH-REPORT-2026", "R.monthly", "PTP", "2026-10"))
    [letter] = letters
    assert letter.source == "parwatch/deadline_monitor"
    assert (letter.data.subject, letter.data.reason) == (ACCEPTED_PLAN_REPORTS, NO_OCCURRENCE)
    assert letter.data.stream == "PARWATCH_ACCEPTED"
    assert row is not None and (row.state, row.done_on) == ("done_late", dt.date(2026, 11, 26))  # the other counted
