"""scoring on a real database with hundreds of invented agency codes: they are stored and counted, and shown as one
``unknown`` agency in metrics, the API and the review list; no KPI alert is raised for them; ``parwatch agencies
unknown`` lists them escaped."""

from __future__ import annotations

import argparse
import datetime as dt

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.scoring import cli as scoring_cli
from services.scoring.alerts import KpiTargets
from services.scoring.api import build_api
from services.scoring.board import Directory, Scoreboard
from services.scoring.domain import DossierFacts, IndexConfig
from services.scoring.metrics import ScoringCollector
from services.scoring.service import ScoringService
from services.scoring.settings import ScoringSettings
from services.scoring.store import ScoringStore
from shared.agencies import load_agencies
from shared.plans import PlanTargets, Target
from shared.testing import metric_samples, metric_value

UTC = dt.timezone.utc
D = dt.date
NOW = dt.datetime(2026, 11, 20, 3, 0, tzinfo=UTC)  # 10:00 on 20/11/2026 in Vietnam
DIRECTORY = Directory.of(load_agencies())
INVENTED = 300
HOSTILE = "Nộp phạt gấp\x1b[2J\u202eSTK"
PLAN = PlanTargets(plan_id="test-plan", valid_from=D(2026, 1, 1), valid_until=D(2026, 12, 31), targets=(
    Target(id="on_time_ratio", title="Tỷ lệ hồ sơ đúng hạn", unit="ratio", op="gt", value=0.98),))


def fact(code: str, agency: str, **kw) -> DossierFacts:
    base = {"dossier_code": code, "revision": 1, "agency_code": agency, "counted": True,
            "receipt_day": D(2026, 11, 2), "due_day": D(2026, 11, 10)}
    return DossierFacts(**(base | kw))


def fill(store: ScoringStore) -> None:
    facts = [fact(f"H-{i}", f"ZZCANARY{i:03d}") for i in range(INVENTED)]  # open and overdue
    facts += [fact("H-H", HOSTILE), fact("H-PTP", "PTP", ended_on=D(2026, 11, 5), timeliness="early")]
    store.apply_states(facts, now=NOW)


def test_metrics_show_one_unknown_agency_and_stay_bounded_by_the_directory(store: ScoringStore) -> None:
    fill(store)
    registry = CollectorRegistry()
    board = Scoreboard(store, config=IndexConfig(), district=DIRECTORY.district_code, directory=DIRECTORY)
    registry.register(ScoringCollector(board, clock=lambda: NOW))
    samples = metric_samples(registry)
    agencies = {dict(labels).get("agency") for _, labels in samples}
    assert agencies == {"PTP", "unknown", "TUY_PHONG"}
    per_agency = max(sum(1 for _, labels in samples if dict(labels).get("agency") == a) for a in agencies)
    assert len(samples) <= (len(DIRECTORY.agencies) + 2) * per_agency
    assert metric_value(registry, "parwatch_period_dossiers", agency="unknown", period="month",
                        figure="overdue") == INVENTED + 1  # every invented dossier counted, under one label
    assert metric_value(registry, "parwatch_on_time_ratio", agency="TUY_PHONG", period="month") == pytest.approx(
        1 / (INVENTED + 2))  # the district's roll-up counts them too
    assert not [k for k in samples if "CANARY" in str(k) or "STK" in str(k)]

    # No KPI alert for "unknown": nobody answers for it (the monitor's unknown_agency alert does).
    scoring = ScoringService(store=store, board=board, directory=DIRECTORY,
                             settings=ScoringSettings(alert_district=False, min_dossiers=1), clock=lambda: NOW,
                             targets=KpiTargets(plans=(PLAN,)))
    observations, _ = scoring.observations(D(2026, 11, 20))
    assert {o.agency_code for o in observations} == {"PTP"}


async def test_the_api_shows_unknown_and_never_a_code_from_outside(store: ScoringStore) -> None:
    fill(store)
    board = Scoreboard(store, config=IndexConfig(), district=DIRECTORY.district_code, directory=DIRECTORY)
    app = FastAPI()
    app.include_router(build_api(board=board, directory=DIRECTORY, clock=lambda: NOW))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as client:
        listed = (await client.get("/agencies")).json()
        assert {"code": "unknown", "name": "Đơn vị không có trong danh mục", "kind": "unknown"} in listed
        assert "CANARY" not in str(listed) and "STK" not in str(listed)
        unknown = (await client.get("/figures/unknown")).json()
        assert unknown["overdue"] == INVENTED + 1 and unknown["agency_name"] == "Đơn vị không có trong danh mục"
        missing = await client.get("/figures/ZZCANARY001")
        assert missing.status_code == 404 and "CANARY" not in missing.text
        review = (await client.get("/dossiers/unknown/late", params={"limit": 1000})).json()
        assert len(review["overdue"]) == INVENTED + 1
        assert {d["agency_code"] for d in review["overdue"]} == {"unknown"}


def test_parwatch_agencies_unknown_lists_the_codes_escaped(
    database_url: str, store: ScoringStore, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(store)
    monkeypatch.setenv("PARWATCH_DATABASE_URL", database_url)
    assert scoring_cli.run_agencies_unknown(argparse.Namespace(), clock=lambda: NOW) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{INVENTED + 1} agency code(s) outside the directory")
    assert "ZZCANARY000" in out and "open=1 overdue=1" in out
    assert "Nộp phạt gấp\\x1b[2J\\u202eSTK" in out  # escaped, so a terminal shows it and obeys nothing
    assert "\x1b" not in out and "\u202e" not in out
    assert "PTP" not in out
