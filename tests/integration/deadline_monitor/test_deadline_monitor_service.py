"""The monitor's service layer and store on a real database (SQLite, and PostgreSQL when TEST_DATABASE_URL is
set), no broker: alert transitions recorded once with their outbox events, restarts, indexed ticks, plan
occurrences. Time is passed in (``now``); the outbox is drained by the shared relay with a delivery that keeps
what it is given."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import Column, Integer, MetaData, String, Table, Text, insert, inspect

from services.deadline_monitor.catalog import PlanLoadError, load_catalog
from services.deadline_monitor.domain import NO_OCCURRENCE, Catalog, Policy, plan_occurrence_specs
from services.deadline_monitor.metrics import MonitorCollector
from services.deadline_monitor.plan import load_agencies
from services.deadline_monitor.service import MonitorService, TickResult
from services.deadline_monitor.store import OUTBOX, MonitorDossierRow, MonitorStore, create_schema
from shared.backoff import Backoff
from shared.calendar import VN_TZ, load_calendar
from shared.consumer import Outcome, Rejected
from shared.db import UtcDateTime, make_engine
from shared.events import DeadLetter, DossierStateChanged, PlanTaskReported, parse_event
from shared.outbox import Delivered, Outbox
from shared.service import utc_now
from shared.testing import drain_outbox, metric_value

CAL = load_calendar()

PLAN_YAML = """\
plan_id: KH-TEST-2026
number: 9/KH-UBND
title: Kế hoạch thử nghiệm của huyện
issued_on: 2025-12-20
issuer: TUY_PHONG
valid_from: 2026-01-01
valid_until: 2026-12-31
tasks:
  - id: T.weekly
    section: A.1
    title: Rà soát hồ sơ trễ hạn hằng tuần
    owner: [PNV]
    due: {every: week, weekday: fri}
  - id: T.monthly
    section: A.2
    title: Báo cáo kết quả cải cách hành chính hằng tháng
    owner: [PTP, XA_CHI_CONG]
    due: {every: month, day: 31}
  - id: T.once
    section: A.3
    title: Xây dựng kế hoạch kiểm tra
    owner: PNV
    due: {date: 2026-11-30}
"""


def at(text: str) -> dt.datetime:
    """A local (Asia/Ho_Chi_Minh) moment."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=VN_TZ)


def make_catalog(tmp_path: Path, text: str = PLAN_YAML) -> Catalog:
    path = tmp_path / "plan.yaml"
    path.write_text(text, encoding="utf-8")
    return load_catalog([path])


def make_service(url: str, catalog: Catalog | None = None, **kw: Any) -> MonitorService:
    """A monitor on the database at ``url`` (a new process each call: the schema is created if missing)."""
    engine = make_engine(url)
    create_schema(engine)
    return MonitorService(
        store=MonitorStore(engine),
        catalog=catalog or Catalog(agencies=load_agencies(), plans={}),
        calendar=CAL,
        policy=kw.pop("policy", Policy()),
        clock=lambda: pytest.fail("the tests pass the time"),  # type: ignore[no-any-return]
        **kw,
    )


def snapshot(code: str, revision: int, due: str | None, **kw: Any) -> DossierStateChanged:
    values: dict[str, Any] = {
        "dossier_code": code,
        "revision": revision,
        "agency_code": "PTP",
        "procedure_code": "1.004227",
        "field_code": "HOTICH",
        "status": 4,
        "counted": True,
        "due_day": dt.date.fromisoformat(due) if due else None,
        "updated_at": at("2026-11-20T08:00"),
    }
    values.update(kw)
    return DossierStateChanged(**values)


async def drain(service: MonitorService) -> list[Any]:
    """Every event waiting in the monitor's outbox, in the order the relay delivers them."""
    return await drain_outbox(service.store.outbox)


async def tick_dossiers(service: MonitorService, now: dt.datetime) -> TickResult:
    """The tick's level steps over the dossiers (not the unsettled ones, not the occurrences)."""
    return await service.run_steps(service.dossier_steps(now))


async def tick_occurrences(service: MonitorService, now: dt.datetime) -> TickResult:
    return await service.run_steps(service.occurrence_steps(now))


async def expire_alerts(service: MonitorService, now: dt.datetime) -> TickResult:
    return await service.run_steps([service.expiry_step(now)])


def kinds(events: list[Any]) -> list[tuple[str, str]]:
    return [(e.type.rsplit(".", 1)[1], e.data.alert_key) for e in events]


# -- dossiers --------------------------------------------------------------------------------------


async def test_the_highest_revision_wins_whatever_the_order(database_url: str) -> None:
    service = make_service(database_url)
    now = at("2026-11-20T08:00")
    assert await service.record_states([snapshot("H1", 3, "2026-12-10"), snapshot("H1", 2, "2026-11-21")], now=now) == [
        False,
        True,
    ]
    assert await service.record_states([snapshot("H1", 1, "2026-11-19")], now=now) == [True]
    assert await service.record_states([snapshot("H1", 3, "2026-11-19")], now=now) == [True]  # a redelivery
    row = service.store.get_dossier("H1")
    assert row is not None and (row.revision, row.due_day) == (3, dt.date(2026, 12, 10))
    assert await drain(service) == []  # due 10/12: nothing to say on 20/11


async def test_an_alert_fires_once_and_survives_a_restart(database_url: str) -> None:
    service = make_service(database_url)
    await service.record_states([snapshot("H1.2", 1, "2026-11-27")], now=at("2026-11-24T08:00"))
    assert await drain(service) == []
    await tick_dossiers(service, at("2026-11-26T07:00"))
    await tick_dossiers(service, at("2026-11-26T07:00:30"))
    events = await drain(service)
    assert kinds(events) == [("firing", "dossier_due_soon:H1.2")]
    assert events[0].id == "dossier_due_soon:H1.2:firing:1"
    assert events[0].data.summary.startswith("Hồ sơ H1.2 của Phòng Tư pháp đến hạn trả kết quả ngày 27/11/2026")

    restarted = make_service(database_url)  # a new process on the same database
    await tick_dossiers(restarted, at("2026-11-26T15:00"))
    assert await drain(restarted) == []
    alert = restarted.store.get_alert("dossier_due_soon:H1.2")
    assert alert is not None and alert.state == "firing" and alert.fired_at == at("2026-11-26T07:00")


async def test_down_across_the_due_day_sends_exactly_one_alert(database_url: str) -> None:
    service = make_service(database_url)
    await service.record_states([snapshot("H7", 1, "2026-11-27")], now=at("2026-11-20T08:00"))
    await tick_dossiers(service, at("2026-11-23T08:00"))
    assert await drain(service) == []
    # stopped from Tuesday 24/11 to Monday 30/11
    back = make_service(database_url)
    result = await tick_dossiers(back, at("2026-11-30T08:00"))
    events = await drain(back)
    assert kinds(events) == [("firing", "dossier_overdue:H7")]
    assert events[0].data.severity == "critical" and result.examined == 1
    await tick_dossiers(back, at("2026-12-01T08:00"))
    assert await drain(back) == []


async def test_day_by_day_each_alert_fires_then_all_resolve_when_the_dossier_ends(database_url: str) -> None:
    service = make_service(database_url)
    await service.record_states([snapshot("H2", 1, "2026-11-27")], now=at("2026-11-20T08:00"))
    sent = []
    for day in ("2026-11-25", "2026-11-26", "2026-11-27", "2026-11-28", "2026-11-30"):
        await tick_dossiers(service, at(f"{day}T00:05"))
        sent += kinds(await drain(service))
    assert sent == [
        ("firing", "dossier_due_soon:H2"),
        ("firing", "dossier_apology_due:H2"),
        ("firing", "dossier_overdue:H2"),
    ]
    ended = snapshot("H2", 2, "2026-11-27", status=10, ended_on=dt.date(2026, 12, 1), timeliness="late")
    await service.record_states([ended], now=at("2026-12-01T10:00"))
    events = await drain(service)
    assert sorted(kinds(events)) == [
        ("resolved", "dossier_apology_due:H2"),
        ("resolved", "dossier_due_soon:H2"),
        ("resolved", "dossier_overdue:H2"),
    ]
    assert all(e.data.ends_at == at("2026-12-01T10:00") for e in events)
    assert all(e.id.endswith(":resolved:1") for e in events)
    await service.record_states([ended], now=at("2026-12-01T10:01"))
    await tick_dossiers(service, at("2026-12-02T08:00"))
    assert await drain(service) == []
    assert service.store.get_dossier("H2").tick_level is None  # type: ignore[union-attr]


async def test_a_new_due_day_resolves_and_a_later_miss_fires_the_next_generation(database_url: str) -> None:
    service = make_service(database_url)
    await service.record_states([snapshot("H3", 1, "2026-11-27")], now=at("2026-11-30T08:00"))
    assert kinds(await drain(service)) == [("firing", "dossier_overdue:H3")]
    # the apology letter set a new return date: the source sends a new due_at
    await service.record_states([snapshot("H3", 2, "2026-12-04")], now=at("2026-11-30T09:00"))
    assert kinds(await drain(service)) == [("resolved", "dossier_overdue:H3")]
    await tick_dossiers(service, at("2026-12-07T08:00"))
    events = await drain(service)
    assert kinds(events) == [("firing", "dossier_overdue:H3")]
    assert events[0].id == "dossier_overdue:H3:firing:2"


async def test_awaiting_supplement_silences_and_a_second_request_asks_for_the_apology(database_url: str) -> None:
    service = make_service(database_url)
    paused = snapshot(
        "H4", 2, "2026-11-27", status=5, paused=True, pause_started_on=dt.date(2026, 11, 25), supplement_requests=1
    )
    await service.record_states([paused], now=at("2026-11-25T08:00"))
    await tick_dossiers(service, at("2026-11-30T08:00"))
    assert await drain(service) == []
    again = snapshot(
        "H4", 4, "2026-12-15", status=5, paused=True, pause_started_on=dt.date(2026, 12, 1), supplement_requests=2
    )
    await service.record_states([again], now=at("2026-12-01T08:00"))
    events = await drain(service)
    assert kinds(events) == [("firing", "dossier_apology_due:H4")]
    assert "yêu cầu bổ sung giấy tờ 2 lần" in events[0].data.summary


async def test_the_tick_reads_only_the_dossiers_that_change(database_url: str) -> None:
    service = make_service(database_url)
    now = at("2026-11-20T08:00")
    rows = [
        {
            "dossier_code": f"F{i}",
            "revision": 1,
            "agency_code": "PTP",
            "procedure_code": "p",
            "field_code": "f",
            "is_open": True,
            "due_day": dt.date(2027, 1, 4) + dt.timedelta(days=i % 200),
            "paused": False,
            "supplement_requests": 0,
            "firing": 0,
            "tick_level": 0,
            "updated_at": now,
        }
        for i in range(600)
    ]
    with service.store.engine.begin() as conn:
        conn.execute(insert(MonitorDossierRow), rows)
    await service.record_states([snapshot(f"D{i}", 1, "2026-11-27") for i in range(3)], now=now)
    first = await tick_dossiers(service, at("2026-11-26T08:00"))
    assert (first.examined, first.transitions) == (3, 3)
    second = await tick_dossiers(service, at("2026-11-26T08:01"))
    assert (second.examined, second.transitions) == (0, 0)


async def test_a_tick_larger_than_a_chunk_handles_every_row(database_url: str) -> None:
    service = make_service(database_url, tick_chunk=7)
    await service.record_states([snapshot(f"C{i}", 1, "2026-11-27") for i in range(20)], now=at("2026-11-20T08:00"))
    result = await tick_dossiers(service, at("2026-11-30T08:00"))
    assert result.transitions == 20
    assert len(await drain(service)) == 20


# -- plan occurrences ------------------------------------------------------------------------------


def specs_for(catalog: Catalog, **kw: Any) -> list[Any]:
    return [
        s
        for p in catalog.plans.values()
        for s in plan_occurrence_specs(p, agencies=catalog.agencies, calendar=CAL, **kw)
    ]


def report(task: str, agency: str, state: str, when: str, period: str | None = None) -> PlanTaskReported:
    return PlanTaskReported(
        plan_id="KH-TEST-2026",
        task_id=task,
        agency_code=agency,
        state=state,  # type: ignore[arg-type]
        reported_at=at(when),
        period=period,
    )


async def test_plan_sync_publishes_states_and_alerts_only_fresh_overdue_tasks(
    tmp_path: Path, database_url: str
) -> None:
    catalog = make_catalog(tmp_path)
    service = make_service(database_url, catalog)
    specs = specs_for(catalog)
    await service.sync_plans(specs, now=at("2026-11-26T08:00"))
    events = await drain(service)
    facts = [e for e in events if e.type == "vn.parwatch.plan.task_state_changed"]
    alerts = [e for e in events if e.type == "vn.tthc.alert.firing"]
    assert len(facts) == len(specs)
    assert {e.data.state for e in facts} == {"open", "overdue"}
    # overdue for at most 14 days: the weekly reviews of 13/11 and 20/11; due within 3 working days
    # (27/11, 30/11, 1/12): the review of 27/11, November's reports and the plan, all due 30/11.
    # October's report (31/10 is a Saturday: due 2/11) is overdue too long ago to alert.
    assert sorted(e.data.alert_key for e in alerts) == [
        "plan_task_due_soon:KH-TEST-2026:T.monthly:PTP:2026-11",
        "plan_task_due_soon:KH-TEST-2026:T.monthly:XA_CHI_CONG:2026-11",
        "plan_task_due_soon:KH-TEST-2026:T.once:PNV",
        "plan_task_due_soon:KH-TEST-2026:T.weekly:PNV:2026-W48",
        "plan_task_overdue:KH-TEST-2026:T.weekly:PNV:2026-W46",
        "plan_task_overdue:KH-TEST-2026:T.weekly:PNV:2026-W47",
    ]
    # a restart syncs again: nothing new
    await make_service(database_url, catalog).sync_plans(specs, now=at("2026-11-26T09:00"))
    assert await drain(service) == []


async def test_a_done_report_resolves_and_publishes_the_state(tmp_path: Path, database_url: str) -> None:
    catalog = make_catalog(tmp_path)
    service = make_service(database_url, catalog)
    await service.sync_plans(specs_for(catalog), now=at("2026-11-26T08:00"))
    await drain(service)
    dup = await service.record_reports(
        [
            ("tool", "r1", report("T.weekly", "PNV", "done", "2026-11-26T10:00")),  # no period: week 48
            ("tool", "r1", report("T.weekly", "PNV", "done", "2026-11-26T10:00")),
        ],
        now=at("2026-11-26T10:00:01"),
    )
    assert dup == [Outcome.ACCEPTED, Outcome.DUPLICATE]
    events = await drain(service)
    assert [(e.type, e.data.state if "state" in e.type else e.data.alert_key) for e in events] == [
        ("vn.parwatch.plan.task_state_changed", "done"),
        ("vn.tthc.alert.resolved", "plan_task_due_soon:KH-TEST-2026:T.weekly:PNV:2026-W48"),
    ]
    fact = events[0].data
    assert (fact.period, fact.due_day, fact.done_on) == ("2026-W48", dt.date(2026, 11, 27), dt.date(2026, 11, 26))
    # a late report naming its period: done late, the overdue alert resolves
    await service.record_reports(
        [("tool", "r2", report("T.weekly", "PNV", "done", "2026-11-26T11:00", "2026-W47"))], now=at("2026-11-26T11:00")
    )
    events = await drain(service)
    assert [e.data.state for e in events if "state" in e.type] == ["done_late"]
    assert [e.data.alert_key for e in events if "alert" in e.type] == [
        "plan_task_overdue:KH-TEST-2026:T.weekly:PNV:2026-W47"
    ]
    # the same report again under another id changes nothing: done on the first day it was reported
    await service.record_reports(
        [("tool", "r3", report("T.weekly", "PNV", "done", "2026-11-27T09:00"))], now=at("2026-11-27T09:00")
    )
    assert await drain(service) == []

    registry = CollectorRegistry()
    registry.register(MonitorCollector(service.store, clock=lambda: at("2026-11-27T12:00")))
    assert metric_value(registry, "parwatch_plan_tasks", agency="PNV", state="done") == 1
    assert metric_value(registry, "parwatch_plan_tasks", agency="PNV", state="done_late") == 1
    opened_pnv = sum(1 for s in specs_for(catalog) if s.agency_code == "PNV" and s.opens_on <= dt.date(2026, 11, 27))
    total = sum(
        metric_value(registry, "parwatch_plan_tasks", agency="PNV", state=s) or 0
        for s in ("done", "done_late", "open", "overdue")
    )
    assert total == opened_pnv
    assert metric_value(registry, "parwatch_plan_tasks", agency="XA_CHI_CONG", state="open") == 1  # November's report
    assert metric_value(registry, "parwatch_plan_tasks", agency="PVHTT", state="open") is None  # owns nothing


async def test_reports_arriving_before_their_plan_are_rejected_unstored(tmp_path: Path, database_url: str) -> None:
    """A report that can apply to no tracked occurrence is not stored: its outcome is Rejected with a reason naming
    the field, and the consumer dead-letters it (the sender replays it once the plan is loaded)."""
    service = make_service(database_url)  # no plan loaded yet
    outcome = await service.record_reports(
        [("tool", "early", report("T.monthly", "PTP", "done", "2026-10-30T09:00"))], now=at("2026-10-30T09:00")
    )
    assert outcome == [Rejected("data.plan_id: no plan with this id is loaded by the deadline monitor")]
    catalog = make_catalog(tmp_path)
    loaded = make_service(database_url, catalog)
    await loaded.sync_plans(specs_for(catalog), now=at("2026-11-02T08:00"))
    row = loaded.store.get_occurrence(("KH-TEST-2026", "T.monthly", "PTP", "2026-10"))
    assert row is not None and (row.state, row.done_on) == ("open", None)  # due 2/11: the rejected report was not kept
    again = await loaded.record_reports(
        [("tool", "early", report("T.monthly", "PTP", "done", "2026-10-30T09:00"))], now=at("2026-11-02T09:00")
    )
    assert again == [Outcome.ACCEPTED]  # replayed once the plan is loaded: it counts, done on its own day
    row = loaded.store.get_occurrence(("KH-TEST-2026", "T.monthly", "PTP", "2026-10"))
    assert row is not None and (row.state, row.done_on) == ("done", dt.date(2026, 10, 30))


@pytest.mark.parametrize(
    ("task", "agency", "period", "reason"),
    [
        ("T.nope", "PTP", None, "data.task_id: the plan has no task with this id"),
        ("T.monthly", "PNV", "2026-10", "data.agency_code: this agency is not an owner of the task"),
        ("T.monthly", "PTP", "2026-W40", "data.period: this task's periods are written YYYY-MM"),
        ("T.monthly", "PTP", "2027-01", NO_OCCURRENCE),
        ("T.weekly", "PNV", "2023-W40", NO_OCCURRENCE),
    ],
)
async def test_a_report_matching_no_tracked_occurrence_is_rejected_with_its_reason(
    tmp_path: Path, sqlite_url: str, task: str, agency: str, period: str | None, reason: str
) -> None:
    catalog = make_catalog(tmp_path)
    service = make_service(sqlite_url, catalog)
    await service.sync_plans(specs_for(catalog), now=at("2026-11-26T08:00"))
    await drain(service)
    outcome = await service.record_reports(
        [("tool", "r-x", report(task, agency, "done", "2026-11-26T10:00", period)),
         ("tool", "r-ok", report("T.weekly", "PNV", "done", "2026-11-26T10:00"))],
        now=at("2026-11-26T10:00"),
    )
    assert outcome == [Rejected(reason), Outcome.ACCEPTED]
    with service.store.transaction() as work:
        assert work.seen_reports([("tool", "r-x"), ("tool", "r-ok")]) == {("tool", "r-ok")}  # the rejected one unstored


async def test_the_tick_turns_open_occurrences_overdue_once(tmp_path: Path, database_url: str) -> None:
    catalog = make_catalog(tmp_path)
    service = make_service(database_url, catalog)
    await service.sync_plans(specs_for(catalog), now=at("2026-11-26T08:00"))
    await drain(service)
    await tick_occurrences(service, at("2026-12-01T08:00"))
    events = await drain(service)
    states = sorted(
        (e.data.task_id, e.data.agency_code, e.data.period or "", e.data.state) for e in events if "state" in e.type
    )
    assert states == [
        ("T.monthly", "PTP", "2026-11", "overdue"),
        ("T.monthly", "XA_CHI_CONG", "2026-11", "overdue"),
        ("T.once", "PNV", "", "overdue"),
        ("T.weekly", "PNV", "2026-W48", "overdue"),
    ]
    # the due-soon alerts of those stay firing; the overdue ones fire; week 49 (due 4/12) is now due soon
    alerts = sorted(e.data.alert_key for e in events if "alert" in e.type)
    assert alerts == [
        "plan_task_due_soon:KH-TEST-2026:T.weekly:PNV:2026-W49",
        "plan_task_overdue:KH-TEST-2026:T.monthly:PTP:2026-11",
        "plan_task_overdue:KH-TEST-2026:T.monthly:XA_CHI_CONG:2026-11",
        "plan_task_overdue:KH-TEST-2026:T.once:PNV",
        "plan_task_overdue:KH-TEST-2026:T.weekly:PNV:2026-W48",
    ]
    assert all(e.type == "vn.tthc.alert.firing" for e in events if "alert" in e.type)
    assert (await tick_occurrences(service, at("2026-12-01T08:01"))).transitions == 0


async def test_a_task_removed_from_the_plan_is_dropped_and_its_alerts_resolve(
    tmp_path: Path, database_url: str
) -> None:
    catalog = make_catalog(tmp_path)
    service = make_service(database_url, catalog)
    await service.sync_plans(specs_for(catalog), now=at("2026-11-26T08:00"))
    await drain(service)
    smaller = make_catalog(tmp_path, PLAN_YAML.split("  - id: T.once")[0])
    service2 = make_service(database_url, smaller)
    await service2.sync_plans(specs_for(smaller), now=at("2026-11-26T09:00"))
    assert kinds(await drain(service2)) == [("resolved", "plan_task_due_soon:KH-TEST-2026:T.once:PNV")]
    assert service2.store.get_occurrence(("KH-TEST-2026", "T.once", "PNV", "")) is None


def test_an_invalid_plan_file_stops_loading_with_every_error(tmp_path: Path) -> None:
    bad = PLAN_YAML.replace("owner: [PNV]", "owner: [NOPE]").replace("day: 31", "day: 32")
    with pytest.raises(PlanLoadError) as err:
        make_catalog(tmp_path, bad)
    lines = err.value.errors
    assert any(":12: tasks[0].owner[0]: unknown agency code 'NOPE'" in line for line in lines)
    assert any(":18: tasks[1].due.day:" in line for line in lines)


# -- dead letters ---------------------------------------------------------------------------------------


async def test_a_dead_letter_alert_fires_once_and_resolves_after_its_time(database_url: str) -> None:
    service = make_service(database_url, deadletter_ttl=dt.timedelta(hours=24))
    letter = DeadLetter(
        stream="TTHC_DOSSIER",
        stream_seq=9,
        subject="tthc.dossier.events",
        reason="data.status: Input should be less than or equal to 10",
        received_at=at("2026-11-26T08:00"),
    )
    assert await service.record_deadletters([letter, letter], now=at("2026-11-26T08:00")) == [
        False,
        True,
    ]
    assert await service.record_deadletters([letter], now=at("2026-11-26T08:05")) == [True]
    events = await drain(service)
    assert kinds(events) == [("firing", "deadletter:TTHC_DOSSIER:9")]
    assert events[0].data.agency_code == "TUY_PHONG" and events[0].data.ref == "TTHC_DOSSIER:9"
    await expire_alerts(service, at("2026-11-27T07:59"))
    assert await drain(service) == []
    await expire_alerts(service, at("2026-11-27T08:00"))
    assert kinds(await drain(service)) == [("resolved", "deadletter:TTHC_DOSSIER:9")]
    await expire_alerts(service, at("2026-11-28T08:00"))
    assert await service.record_deadletters([letter], now=at("2026-11-28T08:00")) == [True]
    assert await drain(service) == []


async def test_the_outbox_keeps_commit_order_under_the_alert_key(database_url: str) -> None:
    service = make_service(database_url)
    await service.record_states([snapshot("O1", 1, "2026-11-27")], now=at("2026-11-30T08:00"))
    await service.record_states(
        [snapshot("O1", 2, "2026-11-27", ended_on=dt.date(2026, 11, 30), status=10)], now=at("2026-11-30T09:00")
    )
    outbox = service.store.outbox
    pending = outbox.due(now=utc_now(), limit=10)
    assert [(p.topic, p.key, p.message_id) for p in pending] == [
        ("tthc.alerts", "dossier_overdue:O1", "dossier_overdue:O1:firing:1"),
        ("tthc.alerts", "dossier_overdue:O1", "dossier_overdue:O1:resolved:1"),
    ]
    assert [parse_event(p.payload).id for p in pending] == [p.message_id for p in pending]
    assert service.store.outbox_size() == 2
    outbox.settle([(pending[0], Delivered())], now=utc_now(), backoff=Backoff())
    assert [p.message_id for p in outbox.due(now=utc_now(), limit=10)] == ["dossier_overdue:O1:resolved:1"]


async def test_task_states_are_ordered_by_their_occurrence(tmp_path: Path, database_url: str) -> None:
    catalog = make_catalog(tmp_path)
    service = make_service(database_url, catalog)
    await service.sync_plans(specs_for(catalog), now=at("2026-11-26T08:00"))
    facts = [p for p in service.store.outbox.due(now=utc_now(), limit=1000) if p.topic == "parwatch.plan.task_state"]
    once = [p for p in facts if ":T.once:" in p.message_id]
    assert [(p.key, p.message_id) for p in once] == [("KH-TEST-2026:T.once:PNV:-", "KH-TEST-2026:T.once:PNV:-:1")]


async def test_the_relay_is_woken_after_a_commit_that_sent_something(database_url: str) -> None:
    wakes: list[int] = []
    service = make_service(database_url, wake=lambda: wakes.append(1))
    await service.record_states([snapshot("W1", 1, "2026-12-31")], now=at("2026-11-30T08:00"))
    assert wakes == []  # stored, nothing to say: no outbox message
    await service.record_states([snapshot("W2", 1, "2026-11-27")], now=at("2026-11-30T08:00"))
    assert wakes == [1]  # overdue on arrival: the alert went into the outbox
    assert kinds(await drain(service)) == [("firing", "dossier_overdue:W2")]


async def test_snapshots_stored_while_catching_up_alert_only_once_settled(database_url: str) -> None:
    service = make_service(database_url)
    now = at("2026-11-30T08:00")
    # a backlog: older revisions first, the dossier H.END ended further down the stream
    await service.record_states(
        [snapshot("H.END", 1, "2026-11-20"), snapshot("H.OPEN", 1, "2026-11-20")], now=now, settle=False
    )
    assert await drain(service) == []
    assert (await tick_dossiers(service, now)).transitions == 0  # the level steps leave unsettled rows alone
    await service.record_states(
        [snapshot("H.END", 2, "2026-11-20", status=10, ended_on=dt.date(2026, 11, 27))], now=now, settle=False
    )
    result = await service.settle_unsettled(now)
    assert (result.examined, result.transitions) == (2, 1)
    assert kinds(await drain(service)) == [("firing", "dossier_overdue:H.OPEN")]
    assert (await service.settle_unsettled(now)).examined == 0
    assert service.store.get_dossier("H.OPEN").tick_level is None  # type: ignore[union-attr]


async def test_states_settled_on_arrival_settle_those_stored_while_catching_up(database_url: str) -> None:
    service = make_service(database_url)
    now = at("2026-11-30T08:00")
    await service.record_states([snapshot("U1", 1, "2026-11-20")], now=now, settle=False)
    assert await drain(service) == []
    # the backlog is read: the next state is settled on arrival, and the one stored before with it
    await service.record_states([snapshot("U2", 1, "2026-12-31")], now=now)
    assert kinds(await drain(service)) == [("firing", "dossier_overdue:U1")]


# -- the schema ---------------------------------------------------------------------------------------


def test_events_left_in_the_older_outbox_table_move_to_the_shared_one(database_url: str) -> None:
    engine = make_engine(database_url)
    older = Table(  # the outbox table of an older monitor, with two events not yet published
        "monitor_outbox",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("subject", String(256)),
        Column("event_id", String(256)),
        Column("ordering_key", String(400)),
        Column("payload", Text),
        Column("created_at", UtcDateTime),
    )
    older.create(engine)
    with engine.begin() as conn:
        conn.execute(
            older.insert(),
            [
                {"id": i, "subject": "tthc.alerts", "event_id": event_id, "ordering_key": "dossier_overdue:X",
                 "payload": "{}", "created_at": at("2026-11-30T08:00")}
                for i, event_id in ((1, "dossier_overdue:X:firing:1"), (2, "dossier_overdue:X:resolved:1"))
            ],
        )
    create_schema(engine)
    create_schema(engine)  # and again at the next start: nothing moves twice
    pending = Outbox(engine, OUTBOX).due(now=utc_now(), limit=10)
    assert [(p.topic, p.key, p.message_id, p.created_at) for p in pending] == [
        ("tthc.alerts", "dossier_overdue:X", "dossier_overdue:X:firing:1", at("2026-11-30T08:00")),
        ("tthc.alerts", "dossier_overdue:X", "dossier_overdue:X:resolved:1", at("2026-11-30T08:00")),
    ]
    assert not inspect(engine).has_table("monitor_outbox_legacy")
    engine.dispose()
