"""deadline_monitor against a real nats-server and a real database, with an injected clock."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.deadline_monitor.app import create_app
from services.deadline_monitor.service import MonitorService
from services.deadline_monitor.settings import MonitorSettings
from shared.calendar import VN_TZ
from shared.events import (
    DOSSIER_STATE_TYPE,
    PLAN_TYPE,
    AlertEvent,
    DossierStateChanged,
    PlanTaskReported,
    PlanTaskStateEvent,
    encode,
    headers_for,
    new_event,
    parse_event,
)
from shared.publishing import JetStreamPublisher
from shared.settings import CommonSettings
from shared.streams import ACCEPTED_PLAN_REPORTS, ALERTS, DOSSIER_STATE
from shared.testing import jetstream, metric_value, publish_event, wait_until


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=VN_TZ)


class Clock:
    """The injected clock: tests move it across days."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


FAST = {
    "include_shipped_plans": False,
    "tick_interval": 0.1,
    "outbox_interval": 0.05,
    "retry_first_delay": 0.2,
    "retry_max_delay": 0.5,
    "port": 0,
}


@contextlib.asynccontextmanager
async def running_monitor(nats_url: str, database_url: str, clock: Clock, **overrides: Any) -> AsyncIterator[Any]:
    settings = MonitorSettings(**(FAST | overrides))
    service, app = create_app(CommonSettings(nats_url=nats_url, database_url=database_url), settings, clock=clock)
    await service.start()
    try:
        yield service, app
    finally:
        await service.stop()



async def stored(js: Any, stream: str) -> list[Any]:
    """Every event a stream holds, in order."""
    info = await js.stream_info(stream)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1) if info.state.messages else ():
        out.append(parse_event((await js.get_msg(stream, seq)).data))
    return out


def snapshot(code: str, revision: int, due: str, **kw: Any) -> dict[str, Any]:
    data = DossierStateChanged(
        **{
            "dossier_code": code,
            "revision": revision,
            "agency_code": "PTP",
            "procedure_code": "1.004227",
            "field_code": "HOTICH",
            "status": 4,
            "counted": True,
            "due_day": dt.date.fromisoformat(due),
            "updated_at": at("2026-11-20T08:00"),
        }
        | kw
    )
    event = new_event(
        type=DOSSIER_STATE_TYPE,
        source="parwatch/dossier_tracker",
        id=f"{code}:{revision}",
        subject=code,
        data=data,
        time=at("2026-11-20T08:00"),
    )
    return event.model_dump(mode="json", exclude_none=True)


async def settled(app: Any) -> None:
    """The outbox is empty: everything committed was acked by its stream."""
    await wait_until(lambda: app.state.store.outbox_size() == 0, timeout=10)


async def test_restarted_across_the_due_day_the_monitor_sends_exactly_one_alert(
    own_nats_server, database_url: str
) -> None:
    url = own_nats_server.url
    clock = Clock(at("2026-11-23T08:00"))  # Monday; the dossier is due on Friday 27/11
    async with jetstream(url) as js:
        async with running_monitor(url, database_url, clock) as (_, app):
            await publish_event(js, DOSSIER_STATE, snapshot("H1.2", 1, "2026-11-27"))
            await wait_until(lambda: app.state.store.get_dossier("H1.2") is not None)
            await app.state.monitor.tick()
            await settled(app)
        assert await stored(js, "TTHC_ALERTS") == []

        clock.now = at("2026-11-30T08:00")  # stopped over the due day, started again on Monday
        async with running_monitor(url, database_url, clock) as (_, app):
            await wait_until(lambda: app.state.store.firing_counts().get("dossier_overdue") == 1)
            await settled(app)
            await publish_event(js, DOSSIER_STATE, snapshot("H1.2", 1, "2026-11-27"), msg_id="redelivered")
            await app.state.monitor.tick()
            await settled(app)

        clock.now = at("2026-12-01T08:00")
        async with running_monitor(url, database_url, clock) as (_, app):
            await app.state.monitor.tick()
            await settled(app)
        alerts = await stored(js, "TTHC_ALERTS")
    assert len(alerts) == 1
    alert = alerts[0]
    assert isinstance(alert, AlertEvent) and alert.type == "vn.tthc.alert.firing"
    assert alert.data.kind == "dossier_overdue" and alert.data.alert_key == "dossier_overdue:H1.2"
    assert alert.data.summary.startswith("Hồ sơ H1.2 của Phòng Tư pháp đã quá hạn trả kết quả ngày 27/11/2026")


async def test_an_alert_fires_once_and_resolves_through_the_broker(own_nats_server, sqlite_url: str) -> None:
    url = own_nats_server.url
    clock = Clock(at("2026-11-27T07:30"))  # the due day
    async with jetstream(url) as js, running_monitor(url, sqlite_url, clock) as (service, app):
        await publish_event(js, DOSSIER_STATE, snapshot("H9", 1, "2026-11-27"))
        await wait_until(lambda: app.state.store.firing_counts().get("dossier_apology_due") == 1)
        await settled(app)
        firing = await stored(js, "TTHC_ALERTS")
        assert [(e.type, e.data.kind) for e in firing] == [("vn.tthc.alert.firing", "dossier_apology_due")]
        assert firing[0].data.summary == (
            "Hồ sơ H9 của Phòng Tư pháp sẽ trễ hạn ngày 27/11/2026: gửi phiếu xin lỗi và hẹn lại ngày trả kết quả "
            "trước hạn."
        )
        # A republish of the same transition (a crash between the ack and the outbox delete) is dropped
        # by the stream: the event id is derived from the alert key and the transition.
        await JetStreamPublisher(service.broker).publish(firing[0], subject=ALERTS)
        await app.state.monitor.tick()
        ended = snapshot("H9", 2, "2026-11-27", status=10, ended_on=dt.date(2026, 11, 27), timeliness="on_time")
        await publish_event(js, DOSSIER_STATE, ended)
        await wait_until(lambda: not app.state.store.firing_counts())
        await settled(app)
        events = await stored(js, "TTHC_ALERTS")
    assert [(e.type, e.id) for e in events] == [
        ("vn.tthc.alert.firing", "dossier_apology_due:H9:firing:1"),
        ("vn.tthc.alert.resolved", "dossier_apology_due:H9:resolved:1"),
    ]
    assert events[1].data.ends_at == at("2026-11-27T07:30") and events[1].data.starts_at == events[0].data.starts_at


async def test_a_state_of_a_dossier_already_overdue_alerts_on_arrival(
    own_nats_server, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticks: list[bool] = []
    ticked = asyncio.Event()
    tick = MonitorService.tick

    async def counted_tick(self: MonitorService, now: dt.datetime | None = None) -> bool:
        more = await tick(self, now)
        ticks.append(more)
        ticked.set()
        return more

    monkeypatch.setattr(MonitorService, "tick", counted_tick)
    url = own_nats_server.url
    clock = Clock(at("2026-11-30T08:00"))  # Monday; the dossier was due on Friday 27/11
    async with jetstream(url) as js, running_monitor(url, sqlite_url, clock, tick_interval=3600) as (_, app):
        await asyncio.wait_for(ticked.wait(), timeout=10)  # the tick at start, before the state exists
        await publish_event(js, DOSSIER_STATE, snapshot("LATE.1", 1, "2026-11-27"))

        async def alerted() -> bool:
            return bool(await stored(js, "TTHC_ALERTS"))

        await wait_until(alerted, timeout=10)
        alerts = await stored(js, "TTHC_ALERTS")
        assert len(ticks) == 1  # the next tick is an hour away: the state's arrival raised the alert
    assert [(e.type, e.data.alert_key) for e in alerts] == [("vn.tthc.alert.firing", "dossier_overdue:LATE.1")]


PLAN = """\
plan_id: KH-IT-2026
number: 7/KH-UBND
title: Kế hoạch kiểm thử tích hợp
issued_on: 2026-01-05
issuer: TUY_PHONG
valid_from: 2026-01-05
valid_until: 2026-12-31
tasks:
  - id: R.monthly
    section: A.1
    title: Báo cáo kết quả cải cách hành chính hằng tháng
    owner: [PNV, XA_VINH_HAO]
    due: {every: month, day: 31}
"""


async def test_a_plan_report_becomes_a_task_state_fact_and_a_metric(
    own_nats_server, sqlite_url: str, tmp_path: Path
) -> None:
    plans = tmp_path / "plans"
    plans.mkdir()
    (plans / "it.yaml").write_text(PLAN, encoding="utf-8")
    url = own_nats_server.url
    clock = Clock(at("2026-11-26T08:00"))
    async with jetstream(url) as js, running_monitor(url, sqlite_url, clock, plans_dir=plans) as (_, app):
        await settled(app)
        initial = [e for e in await stored(js, "PARWATCH_PLAN_STATE")]
        assert len(initial) == 2 * 12 and all(isinstance(e, PlanTaskStateEvent) for e in initial)
        report = PlanTaskReported(
            plan_id="KH-IT-2026",
            task_id="R.monthly",
            agency_code="XA_VINH_HAO",
            state="done",
            reported_at=at("2026-11-26T09:15"),
        )
        event = new_event(type=PLAN_TYPE, source="xa.vinhhao", id="report-1", data=report, time=report.reported_at)
        await publish_event(js, ACCEPTED_PLAN_REPORTS, event.model_dump(mode="json", exclude_none=True))
        await publish_event(js, ACCEPTED_PLAN_REPORTS, event.model_dump(mode="json", exclude_none=True), msg_id="again")

        async def done_fact() -> bool:
            return any(e.data.state == "done" for e in await stored(js, "PARWATCH_PLAN_STATE"))

        await wait_until(done_fact)
        await settled(app)
        facts = [e.data for e in await stored(js, "PARWATCH_PLAN_STATE")][len(initial) :]
        assert [(f.agency_code, f.period, f.state, f.done_on) for f in facts] == [
            ("XA_VINH_HAO", "2026-11", "done", dt.date(2026, 11, 26))
        ]
        alerts = await stored(js, "TTHC_ALERTS")
        assert [(e.type, e.data.alert_key) for e in alerts][-1] == (
            "vn.tthc.alert.resolved",
            "plan_task_due_soon:KH-IT-2026:R.monthly:XA_VINH_HAO:2026-11",
        )
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://monitor") as client:
            text = (await client.get("/metrics")).text
    # on 26/11: January to November have opened; October's report is overdue, November's done for one
    assert metric_value(text, "parwatch_plan_tasks", agency="XA_VINH_HAO", state="done") == 1
    assert metric_value(text, "parwatch_plan_tasks", agency="XA_VINH_HAO", state="overdue") == 10
    assert metric_value(text, "parwatch_plan_tasks", agency="PNV", state="open") == 1
    assert metric_value(text, "parwatch_plan_tasks", agency="PNV", state="done_late") == 0


async def test_a_rejected_message_raises_a_deadletter_alert(own_nats_server, sqlite_url: str) -> None:
    url = own_nats_server.url
    clock = Clock(at("2026-11-26T08:00"))
    async with jetstream(url) as js, running_monitor(url, sqlite_url, clock) as (_, app):
        await publish_event(js, DOSSIER_STATE, b'{"specversion": "1.0", "id": ', msg_id="broken")
        await wait_until(lambda: app.state.store.firing_counts().get("deadletter") == 1)
        await settled(app)
        alerts = await stored(js, "TTHC_ALERTS")
    assert len(alerts) == 1
    data = alerts[0].data
    assert (data.kind, data.severity, data.agency_code, data.ref) == (
        "deadletter",
        "warning",
        "TUY_PHONG",
        "PARWATCH_DOSSIER_STATE:1",
    )
    assert "bị từ chối" in data.summary and "not valid JSON" in data.summary


async def test_alerts_committed_while_nats_is_down_are_sent_when_it_is_back(own_nats_server, sqlite_url: str) -> None:
    url = own_nats_server.url
    clock = Clock(at("2026-11-23T08:00"))
    async with running_monitor(url, sqlite_url, clock) as (_, app):
        async with jetstream(url) as js:
            await publish_event(js, DOSSIER_STATE, snapshot("H5", 1, "2026-11-27"))
            await wait_until(lambda: app.state.store.get_dossier("H5") is not None)
        own_nats_server.stop()
        clock.now = at("2026-11-30T08:00")
        await app.state.monitor.tick()
        assert app.state.store.outbox_size() == 1  # committed, not yet acked
        own_nats_server.start()
        await settled(app)
        async with jetstream(url) as js:
            alerts = await stored(js, "TTHC_ALERTS")
    assert [(e.type, e.data.alert_key) for e in alerts] == [("vn.tthc.alert.firing", "dossier_overdue:H5")]


async def test_a_backlog_read_after_a_stop_alerts_only_for_what_is_still_late(own_nats_server, sqlite_url: str) -> None:
    url = own_nats_server.url
    clock = Clock(at("2026-11-23T08:00"))
    catch_up = {"batch_size": 2, "catch_up_threshold": 3}
    async with jetstream(url) as js:
        async with running_monitor(url, sqlite_url, clock, **catch_up):
            pass  # the first start creates the durable consumer
        # While the monitor is stopped, the tracker publishes a backlog: four dossiers fall late,
        # three of them end later the same week, and unrelated dossiers follow.
        for code in ("L1", "L2", "L3", "L4"):
            await publish_event(js, DOSSIER_STATE, snapshot(code, 1, "2026-11-24"))
        for code in ("L1", "L2", "L3"):
            ended = snapshot(code, 2, "2026-11-24", status=10, ended_on=dt.date(2026, 11, 27), timeliness="late")
            await publish_event(js, DOSSIER_STATE, ended)
        for i in range(6):
            await publish_event(js, DOSSIER_STATE, snapshot(f"LATER{i}", 1, "2026-12-31"))
        clock.now = at("2026-11-30T08:00")
        async with running_monitor(url, sqlite_url, clock, **catch_up) as (_, app):
            await wait_until(lambda: app.state.store.get_dossier("LATER5") is not None)
            await app.state.monitor.tick()
            await settled(app)
            alerts = await stored(js, "TTHC_ALERTS")
    # Settled as each arrived, L1-L3 would have fired and resolved; read as a backlog, only L4 alerts.
    assert [(e.type, e.data.alert_key) for e in alerts] == [("vn.tthc.alert.firing", "dossier_overdue:L4")]


def test_invalid_plan_files_stop_the_start_with_every_error(tmp_path: Path) -> None:
    plans = tmp_path / "plans"
    plans.mkdir()
    (plans / "bad.yaml").write_text(
        PLAN.replace("[PNV, XA_VINH_HAO]", "[PNV, NOWHERE]").replace("A.1", "[A"), encoding="utf-8"
    )
    from services.deadline_monitor.catalog import PlanLoadError

    with pytest.raises(PlanLoadError) as err:
        create_app(CommonSettings(data_dir=tmp_path), MonitorSettings(include_shipped_plans=False, plans_dir=plans))
    assert all(line.startswith(str(plans / "bad.yaml")) for line in err.value.errors)
    assert err.value.errors and ":" in err.value.errors[0]


def test_the_shipped_plan_loads_and_encode_is_what_the_broker_gets() -> None:
    # The wiring loads the shipped Plan 146 file without error (any error would raise here).
    service, app = create_app(CommonSettings(), MonitorSettings())
    assert "KH-146-2023-TP" in app.state.monitor.catalog.plans
    assert service.port == 9102
    event = new_event(
        type=DOSSIER_STATE_TYPE,
        source="s",
        id="x:1",
        data=DossierStateChanged(
            dossier_code="x",
            revision=1,
            agency_code="A",
            procedure_code="p",
            field_code="f",
            status=2,
            counted=True,
            updated_at=at("2026-11-20T08:00"),
        ),
    )
    assert parse_event(encode(event)) == event and headers_for(event)["Nats-Msg-Id"] == "x:1"


async def test_no_dossier_alert_while_dossier_tracker_is_behind(own_nats_server, sqlite_url: str) -> None:
    from nats.js.api import ConsumerConfig

    from shared.streams import DOSSIER_EVENTS
    from shared.testing import dossier_event

    url = own_nats_server.url
    clock = Clock(at("2026-11-30T08:00"))
    async with jetstream(url) as js:
        # dossier_tracker's consumer with unread history: what the monitor knows may be stale.
        await js.add_consumer("TTHC_DOSSIER", ConsumerConfig(durable_name="dossier_tracker"))
        for i in range(5):
            await publish_event(js, DOSSIER_EVENTS, dossier_event(f"B{i}", 4, "2026-11-23T09:00:00+07:00", seq=2))
        async with running_monitor(url, sqlite_url, clock, catch_up_threshold=3) as (_, app):
            await publish_event(js, DOSSIER_STATE, snapshot("LATE", 1, "2026-11-24"))
            await wait_until(lambda: app.state.store.get_dossier("LATE") is not None)
            await app.state.monitor.tick()
            await settled(app)
            assert await stored(js, "TTHC_ALERTS") == []
            # The tracker catches up (here: its consumer is gone): the late dossier alerts.
            await js.delete_consumer("TTHC_DOSSIER", "dossier_tracker")
            await app.state.monitor.tick()
            await settled(app)
            alerts = await stored(js, "TTHC_ALERTS")
    assert [(e.type, e.data.alert_key) for e in alerts] == [("vn.tthc.alert.firing", "dossier_overdue:LATE")]
