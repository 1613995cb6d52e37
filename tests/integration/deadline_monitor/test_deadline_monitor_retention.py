"""deadline_monitor's retention on SQLite and PostgreSQL, with fixed times: ended dossiers, resolved alerts and plan
reports that no longer decide anything go; what may still fire, decide or be delivered again stays."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import select
from sqlmodel import Session

from services.deadline_monitor import domain
from services.deadline_monitor.domain import FIRING, RESOLVED
from services.deadline_monitor.store import (
    OUTBOX,
    AlertRow,
    MonitorDossierRow,
    MonitorStore,
    PlanReportRow,
    _report_facts,
    create_schema,
)
from shared.calendar import local_date
from shared.db import make_engine
from shared.outbox import Message
from shared.retention import Retention

UTC = dt.UTC
NOW = dt.datetime(2027, 3, 1, 3, 0, tzinfo=UTC)
DAYS = dt.timedelta(days=1)
OLD = NOW - 500 * DAYS
RETENTION = Retention(dedup=400 * DAYS, history=400 * DAYS, log=400 * DAYS, chunk=500)
OCCURRENCE = {"plan_id": "P146", "task_id": "T1", "agency_code": "PTP", "occ_period": "2025-06"}


@pytest.fixture
def store(database_url: str) -> Iterator[MonitorStore]:
    engine = make_engine(database_url)
    create_schema(engine)
    yield MonitorStore(engine, clock=lambda: OLD)
    engine.dispose()


def dossier(code: str, *, is_open: bool, updated_at: dt.datetime, firing: int = 0,
            tick_level: int | None = None) -> MonitorDossierRow:
    return MonitorDossierRow(dossier_code=code, revision=3, agency_code="PTP", procedure_code="1.004227",
                             field_code="HOTICH", is_open=is_open, due_day=dt.date(2025, 9, 1), firing=firing,
                             tick_level=tick_level, ended_on=None if is_open else dt.date(2025, 9, 1),
                             updated_at=updated_at)


def alert(key: str, *, state: str, at: dt.datetime) -> AlertRow:
    return AlertRow(alert_key=key, kind="dossier_overdue", severity="warning", agency_code="PTP", ref=key,
                    summary="Hồ sơ quá hạn", labels="{}", state=state, starts_at=at, fired_at=at,
                    resolved_at=at if state == RESOLVED else None)


def report(event_id: str, state: str, reported_at: dt.datetime, *, recorded_at: dt.datetime = OLD,
           occ_period: str | None = "2025-06") -> PlanReportRow:
    occurrence = OCCURRENCE | {"occ_period": occ_period}
    return PlanReportRow(source="portal.ptp", event_id=event_id, period=None, state=state, reported_at=reported_at,
                         recorded_at=recorded_at, **occurrence)


def add(store: MonitorStore, *rows: object) -> None:
    with Session(store.engine) as session, session.begin():
        session.add_all(rows)


def keys(store: MonitorStore, column) -> list[str]:  # type: ignore[no-untyped-def]
    with store.engine.connect() as conn:
        return sorted(conn.execute(select(column)).scalars())


def test_what_no_longer_matters_goes_and_the_rest_stays(store: MonitorStore) -> None:
    add(
        store,
        dossier("H.ENDED.OLD", is_open=False, updated_at=OLD),
        dossier("H.ENDED.FIRING", is_open=False, updated_at=OLD, firing=1),  # an alert still to resolve
        dossier("H.OPEN.OLD", is_open=True, updated_at=OLD, tick_level=2),
        dossier("H.ENDED.RECENT", is_open=False, updated_at=NOW - 30 * DAYS),
        alert("resolved-old", state=RESOLVED, at=OLD),
        alert("firing-old", state=FIRING, at=OLD),
        alert("resolved-recent", state=RESOLVED, at=NOW - 30 * DAYS),
    )
    june = dt.datetime(2025, 6, 1, 2, tzinfo=UTC)
    reports = [
        report("r1-done", "done", june),  # reopened by r2: decides nothing
        report("r2-reopened", "in_progress", june + 2 * DAYS),
        report("r3-done", "done", june + 5 * DAYS),
        report("r0-young", "done", june - DAYS, recorded_at=NOW - 10 * DAYS),  # superseded, but its key is young
        report("x-nowhere-old", "done", june, occ_period=None),  # matched no task
        report("x-nowhere-young", "done", june, occ_period=None, recorded_at=NOW - 10 * DAYS),
    ]
    everything = [_report_facts(r) for r in reports if r.occ_period]
    add(store, *reports)
    with store.transaction() as work:
        work.send([Message(topic="tthc.alerts", key="k", payload="{}", message_id="old-unsent")])  # never sent

    deleted = store.prune(RETENTION, now=NOW)

    assert deleted == {"monitor_dossier": 1, "monitor_alert": 1, "monitor_plan_report": 2}
    assert keys(store, MonitorDossierRow.dossier_code) == ["H.ENDED.FIRING", "H.ENDED.RECENT", "H.OPEN.OLD"]
    assert keys(store, AlertRow.alert_key) == ["firing-old", "resolved-recent"]
    assert keys(store, PlanReportRow.event_id) == ["r0-young", "r2-reopened", "r3-done", "x-nowhere-young"]
    assert store.outbox_size() == 1 and keys(store, OUTBOX.c.message_id) == ["old-unsent"]
    # The occurrence is done on the same day, from what is left.
    with Session(store.engine) as session:
        left = [_report_facts(r) for r in session.execute(select(PlanReportRow)).scalars() if r.occ_period]
    assert domain.done_on(left, local_date=local_date) == domain.done_on(everything, local_date=local_date)
    assert domain.done_on(left, local_date=local_date) == dt.date(2025, 6, 6)
    # Within the retention a report is still recognised as seen.
    with store.transaction() as work:
        assert work.seen_reports([("portal.ptp", "r0-young"), ("portal.ptp", "r1-done")]) == {
            ("portal.ptp", "r0-young")
        }
    assert store.prune(RETENTION, now=NOW) == {"monitor_dossier": 0, "monitor_alert": 0, "monitor_plan_report": 0}


def test_a_backlog_goes_in_bounded_chunks(store: MonitorStore) -> None:
    add(store, *(alert(f"resolved-{i}", state=RESOLVED, at=OLD) for i in range(5)))
    small = Retention(dedup=400 * DAYS, history=400 * DAYS, log=400 * DAYS, chunk=2)
    assert [store.prune(small, now=NOW)["monitor_alert"] for _ in range(4)] == [2, 2, 1, 0]
