"""scoring's KPI rounds on a real database judge only what the plan files set and what is measured: a KPI with no
plan target in force is not judged, one with too few dossiers has no value; aggregates counted by an older
version's contributions are recounted at start."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import update

from services.scoring.alerts import KpiTargets
from services.scoring.board import Directory, Scoreboard
from services.scoring.catalog import parse_procedure_catalog
from services.scoring.domain import CONTRIBUTIONS_VERSION, DossierFacts, IndexConfig
from services.scoring.service import ScoringService
from services.scoring.settings import ScoringSettings
from services.scoring.store import CONTRIBUTIONS, META, PERIOD_COUNT, ScoringStore, create_schema
from shared.agencies import load_agencies
from shared.plans import PlanTargets, Target

UTC = dt.UTC
D = dt.date
NOW = dt.datetime(2026, 11, 20, 3, 0, tzinfo=UTC)
DIRECTORY = Directory.of(load_agencies())
PLAN = PlanTargets(plan_id="test-plan", valid_from=D(2026, 1, 1), valid_until=D(2026, 12, 31), targets=(
    Target(id="on_time_ratio", title="Tỷ lệ hồ sơ đúng hạn", unit="ratio", op="gt", value=0.98),
    Target(id="national_sync", title="Tỷ lệ hồ sơ đồng bộ", unit="ratio", op="ge", value=1.0),
))


def overdue(code: str, **kw: object) -> DossierFacts:
    return DossierFacts(dossier_code=code, revision=1, agency_code="PTP", counted=True, receipt_day=D(2026, 11, 2),
                        due_day=D(2026, 11, 10), **kw)  # type: ignore[arg-type]


def observed(store: ScoringStore, **settings: object) -> dict[str, float | None]:
    board = Scoreboard(store, config=IndexConfig(), district=DIRECTORY.district_code, directory=DIRECTORY)
    scoring = ScoringService(store=store, board=board, directory=DIRECTORY,
                             settings=ScoringSettings(alert_district=False, **settings),  # type: ignore[arg-type]
                             clock=lambda: NOW, targets=KpiTargets(plans=(PLAN,)))
    observations, _ = scoring.observations(D(2026, 11, 20))
    return {o.kpi: o.value for o in observations if o.agency_code == "PTP"}


def test_a_kpi_needs_its_minimum_of_dossiers_and_a_plan_target(store: ScoringStore) -> None:
    store.apply_states([overdue(f"H-{i}") for i in range(19)], now=NOW)
    # 19 dossiers, none with a sync flag: no value yet; online_filing and plan_completion have no plan target.
    assert observed(store) == {"on_time": None, "national_sync": None}
    store.apply_states([overdue("H-19", synced_national=False)], now=NOW)
    assert observed(store) == {"on_time": 0.0, "national_sync": None}  # 20 dossiers, 1 whose sync is known
    assert observed(store, min_dossiers=1) == {"on_time": 0.0, "national_sync": 0.0}


def test_aggregates_of_older_contributions_are_recounted_at_start(store: ScoringStore) -> None:
    store.apply_states([overdue("A", channel=2, synced_national=True), overdue("B")], now=NOW)
    assert store.recount_if_outdated() is None  # counted with the current contributions already
    expected = store.aggregates()
    with store.engine.begin() as conn:  # as an older version left them: no "known" denominators, an older version
        conn.execute(update(PERIOD_COUNT).where(PERIOD_COUNT.c.figure == "channel_reported").values(n=0))
        conn.execute(update(META).where(META.c.key == CONTRIBUTIONS).values(value="1"))
    assert store.aggregates() != expected
    create_schema(store.engine)  # a start
    assert store.aggregates() == expected
    with store.engine.connect() as conn:
        assert conn.execute(META.select().where(META.c.key == CONTRIBUTIONS)).one().value == CONTRIBUTIONS_VERSION


def test_the_online_service_target_is_judged_on_the_procedure_catalog(store: ScoringStore) -> None:
    """Plan 146's "100% of eligible procedures offered as full online public services" (target online_procedures)
    is judged on the catalog's share, not on the share of dossiers filed online."""
    plan = PlanTargets(plan_id="online", valid_from=D(2026, 1, 1), valid_until=D(2026, 12, 31), targets=(
        Target(id="online_procedures", title="Tỷ lệ TTHC cung cấp DVC trực tuyến toàn trình", unit="ratio", op="ge",
               value=1.0),
    ))
    procedures = parse_procedure_catalog([
        "code,name,field,agency,level,eligible_full_online,offered_full_online",
        "1.001,Cấp bản sao trích lục hộ tịch,HT,PTP,district,yes,yes",
        "1.002,Thay đổi hộ tịch,HT,PTP,district,yes,no",
        "1.003,Đăng ký hộ kinh doanh,KD,PTCKH,district,yes,yes",
    ], source="catalog.csv", agencies={a.code for a in DIRECTORY.agencies})
    # Every dossier of PTP filed online: the online-filing share is 1, yet half its eligible procedures are offline.
    store.apply_states([overdue(f"H-{i}", channel=2) for i in range(20)], now=NOW)
    board = Scoreboard(store, config=IndexConfig(), district=DIRECTORY.district_code, directory=DIRECTORY,
                       procedures=procedures)
    settings = ScoringSettings(alert_district=False, alert_kpis=["online_service", "online_filing"])
    scoring = ScoringService(store=store, board=board, directory=DIRECTORY, settings=settings, clock=lambda: NOW,
                             targets=KpiTargets(plans=(plan,)))
    observations, _ = scoring.observations(D(2026, 11, 20))
    assert {(o.agency_code, o.kpi): o.value for o in observations} == {("PTP", "online_service"): 0.5,
                                                                      ("PTCKH", "online_service"): 1.0}
    assert board.current_tables(D(2026, 11, 20))["month"].figures["PTP"].online_filing_ratio == 1.0

    scoring._evaluate(NOW)
    fired = scoring._evaluate(NOW + dt.timedelta(hours=1)).transitions
    assert [(t.record.agency_code, t.record.kpi, t.type) for t in fired] == [
        ("PTP", "online_service", "vn.tthc.alert.firing")]
    assert fired[0].summary == (
        "Tỷ lệ thủ tục hành chính đủ điều kiện được cung cấp dịch vụ công trực tuyến toàn trình của Phòng Tư pháp"
        " tháng 11/2026 là 50%, dưới mục tiêu 100%"
    )
