"""Plans that live in time, on a real database: a fresh monitor on the shipped Plan 146 (2023) today tracks its
occurrences as history, raises no alert and counts none of them overdue; a plan that closes while its alerts fire
resolves them at the next tick and leaves ``parwatch_plan_tasks``; a closed plan takes no report."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from services.deadline_monitor.catalog import load_catalog
from services.deadline_monitor.domain import Catalog, Policy, plan_closes_on, plan_occurrence_specs
from services.deadline_monitor.metrics import MonitorCollector
from services.deadline_monitor.plan import load_agencies
from services.deadline_monitor.service import MonitorService
from services.deadline_monitor.store import MonitorStore, create_schema
from shared.calendar import VN_TZ, load_calendar
from shared.consumer import Rejected
from shared.db import make_engine
from shared.events import PlanTaskReported
from shared.plans import SHIPPED_PLANS
from shared.service import utc_now
from shared.testing import drain_outbox, metric_value

CAL = load_calendar()
PLAN_YAML = """\
plan_id: KH-TEST-2026
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
"""


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=VN_TZ)


def make_catalog(tmp_path: Path) -> Catalog:
    path = tmp_path / "plan.yaml"
    path.write_text(PLAN_YAML, encoding="utf-8")
    return load_catalog([path])


def make_service(url: str, catalog: Catalog) -> MonitorService:
    engine = make_engine(url)
    create_schema(engine)
    return MonitorService(store=MonitorStore(engine), catalog=catalog, calendar=CAL, policy=Policy(),
                          clock=utc_now)


def specs_for(catalog: Catalog) -> list[Any]:
    return [s for p in catalog.plans.values() for s in plan_occurrence_specs(p, agencies=load_agencies(), calendar=CAL)]


async def drain(service: MonitorService) -> list[Any]:
    """Every event waiting in the monitor's outbox, in the order the relay delivers them."""
    return await drain_outbox(service.store.outbox)


STATES = ("done", "done_late", "open", "overdue")


def gauge(service, today: dt.datetime) -> CollectorRegistry:  # type: ignore[no-untyped-def]
    registry = CollectorRegistry()
    registry.register(MonitorCollector(service.store, clock=lambda: today, plans_in_force=service.plans_in_force))
    return registry


async def test_a_fresh_monitor_on_plan_146_today_alerts_nothing_and_counts_no_2023_occurrence(
    database_url: str,
) -> None:
    catalog = load_catalog([SHIPPED_PLANS / "plan-146-2023.yaml"])
    [plan] = catalog.plans.values()
    today = at("2026-12-02T09:00")
    assert plan_closes_on(plan) < today.date()
    service = make_service(database_url, catalog)
    specs = specs_for(catalog)
    assert len(specs) > 1900 and max(s.due_day for s in specs) <= plan_closes_on(plan)
    await service.sync_plans(specs, now=today)
    sent = await drain(service)
    assert [e for e in sent if "alert" in e.type] == []  # not one alert for a closed plan
    assert {e.data.state for e in sent} == {"overdue"}  # its final state, kept as history (no report came)
    await service.tick(today + dt.timedelta(days=1))
    assert await drain(service) == []
    registry = gauge(service, today)
    agencies = {s.agency_code for s in specs}
    for agency in agencies:  # every tracked agency keeps its series, and none counts a 2023 occurrence
        assert [metric_value(registry, "parwatch_plan_tasks", agency=agency, state=s) for s in STATES] == [0] * 4
    # a report on it is refused: its figures are final
    outcome = await service.record_reports(
        [("tool", "late", PlanTaskReported(plan_id=plan.plan_id, task_id="III.2.2.3-review", agency_code="PNV",
                                           state="done", reported_at=today, period="2023-W40"))],
        now=today,
    )
    assert outcome == [Rejected("data.plan_id: the plan closed after 2024-01-31 (valid until 2023-12-31); its figures "
                                "are final and take no report")]


async def test_a_plan_that_closes_resolves_its_alerts_at_the_next_tick_and_leaves_the_gauge(
    tmp_path: Path, database_url: str
) -> None:
    catalog = make_catalog(tmp_path)  # valid 2026-01-01..2026-12-31: closes on 2027-01-31
    service = make_service(database_url, catalog)
    in_force = at("2027-01-05T09:00")
    await service.sync_plans(specs_for(catalog), now=in_force)
    fired = [e.data.alert_key for e in await drain(service) if e.type == "vn.tthc.alert.firing"]
    assert "plan_task_overdue:KH-TEST-2026:T.monthly:PTP:2026-12" in fired  # December's report, late: alerted
    registry = gauge(service, in_force)
    assert (metric_value(registry, "parwatch_plan_tasks", agency="PTP", state="overdue") or 0) > 0

    await service.tick(at("2027-01-31T09:00"))  # its last day: still in force, nothing changes
    assert [e for e in await drain(service) if "alert" in e.type] == []
    await service.tick(at("2027-02-01T09:00"))  # closed
    resolved = sorted(e.data.alert_key for e in await drain(service) if e.type == "vn.tthc.alert.resolved")
    assert resolved == sorted(fired)
    await service.tick(at("2027-02-02T09:00"))
    assert await drain(service) == []  # read once after closing, never again
    registry = gauge(service, at("2027-02-01T09:00"))
    assert metric_value(registry, "parwatch_plan_tasks", agency="PTP", state="overdue") == 0
    row = service.store.get_occurrence(("KH-TEST-2026", "T.monthly", "PTP", "2026-12"))
    assert row is not None and row.state == "overdue" and row.firing == 0 and row.tick_level is None  # frozen
