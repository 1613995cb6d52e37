"""The monitor and its store on a real database: codes outside the agency directory raise one ``unknown_agency``
alert, which resolves after a quiet period, and never a dossier alert. Time is passed in (``now``)."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from services.deadline_monitor.domain import Catalog, Policy
from services.deadline_monitor.metrics import MonitorCollector
from services.deadline_monitor.plan import load_agencies
from services.deadline_monitor.service import MonitorService
from services.deadline_monitor.store import MonitorStore, create_schema
from shared.calendar import VN_TZ, load_calendar
from shared.db import make_engine
from shared.events import DossierStateChanged, PlanTaskReported
from shared.testing import drain_outbox, metric_value

AGENCIES = load_agencies()


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=VN_TZ)


def make_service(url: str) -> MonitorService:
    engine = make_engine(url)
    create_schema(engine)
    return MonitorService(store=MonitorStore(engine), catalog=Catalog(agencies=AGENCIES, plans={}),
                          calendar=load_calendar(), policy=Policy(),
                          clock=lambda: pytest.fail("the tests pass the time"),  # type: ignore[no-any-return]
                          unknown_agency_quiet=dt.timedelta(hours=24))


def overdue(code: str, agency: str, revision: int = 1) -> DossierStateChanged:
    return DossierStateChanged(dossier_code=code, revision=revision, agency_code=agency, procedure_code="1.004227",
                               field_code="HOTICH", status=4, counted=True, due_day=dt.date(2026, 11, 20),
                               updated_at=at("2026-11-20T08:00"))


async def drain(service: MonitorService) -> list[Any]:
    return await drain_outbox(service.store.outbox)


def keys(events: list[Any]) -> list[tuple[str, str]]:
    return [(e.type.rsplit(".", 1)[1], e.data.alert_key) for e in events]


async def test_invented_codes_raise_one_alert_for_the_district_and_no_dossier_alert(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    service = make_service(database_url)
    now = at("2026-11-25T09:00")
    caplog.set_level(logging.INFO)
    states = [overdue(f"H-{i}", f"ZZCANARY{i:03d}") for i in range(120)] + [overdue("H-PTP", "PTP")]
    await service.record_states(states, now=now)
    sent = await drain(service)
    assert sorted(keys(sent)) == [("firing", "dossier_overdue:H-PTP"), ("firing", "unknown_agency")]
    [unknown] = [e for e in sent if e.data.kind == "unknown_agency"]
    assert unknown.data.agency_code == "TUY_PHONG" and unknown.data.severity == "warning"
    assert unknown.data.labels == {"dossiers": "120", "plan_reports": "0"}
    assert "CANARY" not in unknown.model_dump_json() and "CANARY" not in caplog.text
    # Days pass: nothing more for the unknown units (the tick never reads them).
    later = at("2026-12-02T09:00")
    result = await service.run_steps([service.unsettled_step(later), *service.dossier_steps(later)])
    assert result.examined == 0 and await drain(service) == []

    registry = CollectorRegistry()
    registry.register(MonitorCollector(service.store, clock=lambda: now, label=AGENCIES.label))
    assert metric_value(registry, "parwatch_monitor_alerts_firing", kind="unknown_agency") == 1


async def test_the_alert_resolves_after_a_quiet_period_and_fires_again_when_codes_come_back(database_url: str) -> None:
    service = make_service(database_url)
    t0 = at("2026-11-25T09:00")
    await service.record_states([overdue("H-1", "ZZCANARY001")], now=t0)
    # Two hours later, more of them: the alert is firing already; its quiet period starts again.
    report = PlanTaskReported(plan_id="KH-X", task_id="T-1", agency_code="ZZCANARY002", state="done",
                              reported_at=t0)
    await service.record_reports([("src", "r-1", report)], now=t0 + dt.timedelta(hours=2))
    await service.record_states([overdue("H-1", "ZZCANARY001", revision=2)], now=t0 + dt.timedelta(hours=2))
    assert keys(await drain(service)) == [("firing", "unknown_agency")]
    await service.run_steps([service.expiry_step(t0 + dt.timedelta(hours=25))])
    assert await drain(service) == []  # 23 hours after the last one: still firing
    await service.run_steps([service.expiry_step(t0 + dt.timedelta(hours=26))])
    resolved = await drain(service)
    assert keys(resolved) == [("resolved", "unknown_agency")] and resolved[0].data.ends_at is not None
    # A duplicate changes nothing; a new one fires the alert again (its next generation).
    await service.record_states([overdue("H-1", "ZZCANARY001", revision=2)], now=t0 + dt.timedelta(hours=30))
    assert await drain(service) == []
    await service.record_reports([("src", "r-2", report)], now=t0 + dt.timedelta(hours=30))
    again = await drain(service)
    assert keys(again) == [("firing", "unknown_agency")] and again[0].id == "unknown_agency:firing:2"
    assert again[0].data.labels == {"dossiers": "0", "plan_reports": "1"}
