"""deadline_monitor's API for the officials' web page, on the running service (a real nats-server, SQLite):
occurrences with their state, a duty reported done published as the contract event (the same id as `parwatch plan
report` would give it, source parwatch/web, stored once), refusals with the reason, open dossiers, and the
loopback-or-token rule."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.deadline_monitor.app import create_app
from services.deadline_monitor.settings import MonitorSettings
from shared.calendar import VN_TZ
from shared.events import PLAN_TYPE, parse_event
from shared.settings import CommonSettings
from shared.testing import jetstream, started

YEAR = dt.datetime.now(VN_TZ).year
MONTH = f"{dt.datetime.now(VN_TZ):%Y-%m}"


@pytest.fixture
def env(monthly_plan: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, own_nats_server: Any) -> Any:
    monthly_plan(plan_id=f"KH-WEB-{YEAR}", task_id="W.monthly", year=YEAR)
    monkeypatch.setenv("PARWATCH_MONITOR_PORT", "0")
    return own_nats_server


def client(app: Any, host: str = "127.0.0.1") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(host, 40000)), base_url="http://m.test")


async def test_occurrences_and_a_duty_reported_done(env: Any) -> None:
    service, app = create_app(CommonSettings(), MonitorSettings())
    async with started(service), client(app) as http, jetstream(env.url) as js:
        r = await http.get("/plan/occurrences", params={"agency": "PTP"})
        assert r.status_code == 200
        mine = [o for o in r.json()["occurrences"] if o["period"] == MONTH]
        assert [(o["task_id"], o["agency_code"], o["state"], o["section"]) for o in mine] == [
            ("W.monthly", "PTP", "open", "A.1")]
        assert mine[0]["title"] == "Báo cáo kết quả cải cách hành chính hằng tháng"
        body = {"task_id": "W.monthly", "agency_code": "PTP", "period": MONTH, "note": "Đã gửi Phòng Nội vụ"}
        first = await http.post("/plan/report", json=body)
        again = await http.post("/plan/report", json=body)
        assert first.status_code == again.status_code == 202, first.text
        assert first.json()["event_id"] == again.json()["event_id"]
        info = await js.stream_info("TTHC_PLAN")
        assert info.state.messages == 1  # the same report twice: one event
        event = parse_event((await js.get_msg("TTHC_PLAN", info.state.last_seq)).data)
        assert (event.type, event.source, event.id) == (PLAN_TYPE, "parwatch/web", first.json()["event_id"])
        d = event.data
        assert (d.plan_id, d.task_id, d.agency_code, d.state, d.period, d.note) == (
            f"KH-WEB-{YEAR}", "W.monthly", "PTP", "done", MONTH, "Đã gửi Phòng Nội vụ")


async def test_a_report_the_plans_refuse_says_why_and_publishes_nothing(env: Any) -> None:
    service, app = create_app(CommonSettings(), MonitorSettings())
    async with started(service), client(app) as http, jetstream(env.url) as js:
        r = await http.post("/plan/report", json={"task_id": "W.monthly", "agency_code": "PNV", "period": MONTH})
        assert r.status_code == 422 and "agency" in r.json()["detail"]
        r = await http.post("/plan/report", json={"task_id": "W.nothing", "agency_code": "PTP"})
        assert r.status_code == 422 and "W.nothing" in r.json()["detail"]
        r = await http.post("/plan/report", json={"task_id": "W.monthly", "agency_code": "PTP", "period": "1999-01"})
        assert r.status_code == 422
        assert (await js.stream_info("TTHC_PLAN")).state.messages == 0


async def test_only_this_machine_or_the_token_holder_may_call(env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    service, app = create_app(CommonSettings(), MonitorSettings())
    async with started(service), client(app, host="192.0.2.7") as remote:
        for call in (remote.get("/plan/occurrences"), remote.get("/dossiers/open", params={"agency": "PTP"}),
                     remote.post("/plan/report", json={"task_id": "W.monthly", "agency_code": "PTP"})):
            assert (await call).status_code == 403
    monkeypatch.setenv("PARWATCH_MONITOR_API_TOKEN", "t0ken")
    service, app = create_app(CommonSettings(), MonitorSettings())
    async with started(service), client(app, host="192.0.2.7") as remote:
        assert (await remote.get("/dossiers/open", params={"agency": "PTP"})).status_code == 403
        r = await remote.get("/dossiers/open", params={"agency": "PTP"}, headers={"Authorization": "Bearer t0ken"})
        assert r.status_code == 200 and r.json()["dossiers"] == []
