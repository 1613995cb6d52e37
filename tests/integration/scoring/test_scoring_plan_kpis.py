"""scoring's KPI rounds on a real database judge only what the plan files set and what is measured: a KPI with no
plan target in force is not judged, one with too few dossiers has no value; aggregates counted by an older
version's contributions are recounted at start."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import update

from services.scoring.alerts import KpiTargets
from services.scoring.board import Directory, Scoreboard
from services.scoring.domain import CONTRIBUTIONS_VERSION, DossierFacts, IndexConfig
from services.scoring.service import ScoringService
from services.scoring.settings import ScoringSettings
from services.scoring.store import CONTRIBUTIONS, META, PERIOD_COUNT, ScoringStore, create_schema
from shared.agencies import load_agencies
from shared.db import make_engine
from shared.plans import PlanTargets, Target

UTC = dt.UTC
D = dt.date
NOW = dt.datetime(2026, 11, 20, 3, 0, tzinfo=UTC)
DIRECTORY = Directory.of(load_agencies())
PLAN = PlanTargets(plan_id="test-plan", valid_from=D(2026, 1, 1), valid_until=D(2026, 12, 31), targets=(
    Target(id="on_time_ratio", title="Tỷ lệ hồ sơ đúng hạn", unit="ratio", op="gt", value=0.98),
    Target(id="national_sync", title="Tỷ lệ hồ sơ đồng bộ", unit="ratio", op="ge", value=1.0),
))


@pytest.fixture
def store(database_url: str) -> Iterator[ScoringStore]:
    engine = make_engine(database_url)
    create_schema(engine)
    yield ScoringStore(engine)
    engine.dispose()


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
