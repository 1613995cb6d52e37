"""The weekly review on a real database (SQLite, and PostgreSQL when configured): per agency and field, inter-agency
dossiers flagged from their snapshots, through the store, the API (JSON, CSV, XLSX), ``parwatch report --review``,
and a database made before the columns existed."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from openpyxl import load_workbook
from sqlalchemy import text

from services.scoring import cli as scoring_cli
from services.scoring.api import build_api
from services.scoring.board import Directory, Scoreboard
from services.scoring.domain import DossierFacts, IndexConfig
from services.scoring.store import DOSSIER, ScoringStore, create_schema
from shared.agencies import load_agencies
from shared.db import make_engine

UTC = dt.timezone.utc
D = dt.date
NOW = dt.datetime(2026, 11, 27, 3, 0, tzinfo=UTC)  # Friday 27/11/2026 10:00 in Vietnam, week 2026-W48
DIRECTORY = Directory.of(load_agencies())
DISTRICT = DIRECTORY.district_code


def fact(code: str, agency: str = "PTP", *, revision: int = 1, field_code: str = "HOTICH", **kw) -> DossierFacts:
    base = {"dossier_code": code, "revision": revision, "agency_code": agency, "counted": True,
            "receipt_day": D(2026, 11, 2), "due_day": D(2026, 11, 24), "field_code": field_code}
    return DossierFacts(**(base | kw))


def fill(store: ScoringStore) -> None:
    store.apply_states([
        fact("L-1", ended_on=D(2026, 11, 25), timeliness="late"),  # ended late in the week
        fact("E-1", ended_on=D(2026, 11, 24), timeliness="on_time"),
        fact("O-1", field_code="DATDAI"),  # open, overdue now
        fact("O-2", field_code="DATDAI", due_day=D(2026, 12, 10)),  # open, in time
        fact("X-1", agency="XA_PHUOC_THE", ended_on=D(2026, 11, 20), timeliness="late"),  # the week before
        fact("M-1", agency="PTP", field_code="HOTICH"),  # will move to another agency
    ], now=NOW)
    # M-1 goes on at the commune: a later snapshot names another agency; then a stale one arrives (ignored,
    # but the flag stays). M-2 is moved within one batch.
    store.apply_states([fact("M-1", agency="XA_PHUOC_THE", revision=2)], now=NOW)
    store.apply_states([fact("M-1", agency="PTP", revision=1)], now=NOW)
    store.apply_states([fact("M-2", agency="PTP", revision=1, due_day=D(2026, 12, 10)),
                        fact("M-2", agency="XA_PHUOC_THE", revision=2, due_day=D(2026, 12, 10))], now=NOW)
    # N-1: an old snapshot of another agency arrives after the latest one: inter-agency all the same.
    store.apply_states([fact("N-1", agency="PTP", revision=3, due_day=D(2026, 12, 10))], now=NOW)
    store.apply_states([fact("N-1", agency="XA_PHUOC_THE", revision=2, due_day=D(2026, 12, 10))], now=NOW)


def flags(store: ScoringStore) -> dict[str, bool]:
    with store.engine.connect() as conn:
        return {c: f for c, f in conn.execute(text("SELECT dossier_code, inter_agency FROM scoring_dossier"))}


def test_the_store_flags_dossiers_seen_under_two_agencies(store: ScoringStore) -> None:
    fill(store)
    assert flags(store) == {"L-1": False, "E-1": False, "O-1": False, "O-2": False, "X-1": False,
                            "M-1": True, "M-2": True, "N-1": True}
    board = Scoreboard(store, config=IndexConfig(), district=DISTRICT, directory=DIRECTORY)
    from services.scoring.review import Span

    r = board.field_review(Span.parse("2026-W48"), today=D(2026, 11, 27))
    rows = {(f.agency_code, f.field_code): f.figures for f in r.fields}
    assert (rows[("PTP", "HOTICH")].ended, rows[("PTP", "HOTICH")].ended_late) == (2, 1)
    assert (rows[("PTP", "DATDAI")].open, rows[("PTP", "DATDAI")].overdue) == (2, 1)
    commune = rows[("XA_PHUOC_THE", "HOTICH")]
    assert (commune.ended, commune.open, commune.overdue) == (0, 2, 1)  # X-1 ended the week before
    assert (r.inter_agency["XA_PHUOC_THE"].open, r.inter_agency["XA_PHUOC_THE"].overdue) == (2, 1)
    assert r.inter_agency["PTP"].open == 1  # N-1, under its latest agency
    assert r.total[DISTRICT].overdue == 2 and r.current


async def test_the_api_serves_the_review_as_json_csv_and_xlsx(store: ScoringStore) -> None:
    fill(store)
    board = Scoreboard(store, config=IndexConfig(), district=DISTRICT, directory=DIRECTORY)
    app = FastAPI()
    app.include_router(build_api(board=board, directory=DIRECTORY, clock=lambda: NOW))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as client:
        body = (await client.get("/review")).json()  # the running week by default
        assert (body["period"], body["period_kind"], body["current"]) == ("2026-W48", "week", True)
        fields = {(f["agency"], f["field_code"]): f["figures"] for f in body["fields"]}
        assert fields[("PTP", "HOTICH")] == {"ended": 2, "ended_late": 1, "open": 1, "overdue": 0,
                                             "late_ratio": pytest.approx(1 / 3)}  # L-1 late; E-1, N-1 in time
        agencies = {a["agency"]: a for a in body["agencies"]}
        assert agencies["XA_PHUOC_THE"]["inter_agency"]["overdue"] == 1
        assert agencies[DISTRICT]["total"]["overdue"] == 2
        past = (await client.get("/review", params={"period": "2026-W47"})).json()
        assert past["current"] is False and past["as_of"] == "2026-11-22"
        assert {(f["agency"], f["figures"]["ended_late"]) for f in past["fields"]} >= {("XA_PHUOC_THE", 1)}
        assert (await client.get("/review", params={"period": "2026-W53"})).status_code == 422
        assert (await client.get("/review", params={"period": "2026-W50"})).status_code == 422  # not started
        capped = (await client.get("/review", params={"max_fields": 1})).json()
        assert {f["field_code"] for f in capped["fields"] if f["agency"] == "PTP"} == {"HOTICH", "(khác)"}  # tie on late: more dossiers first

        csv_body = (await client.get("/review", params={"period": "2026-W48", "format": "csv"})).content
        rows = list(csv.reader(io.StringIO(csv_body.decode("utf-8-sig"))))
        assert rows[0][:4] == ["Mã đơn vị", "Đơn vị", "Nhóm", "Mã lĩnh vực"]
        assert ["PTP", "Phòng Tư pháp", "Lĩnh vực", "HOTICH", "2", "1", "1", "0", "0.3333"] in rows
        assert any(r[0] == "XA_PHUOC_THE" and r[2] == "Liên thông" and r[7] == "1" for r in rows)
        xlsx = (await client.get("/review", params={"period": "2026-W48", "format": "xlsx"})).content
        ws = load_workbook(io.BytesIO(xlsx)).active
        xrow = next(r for r in ws.iter_rows(values_only=True) if r[0] == "PTP" and r[3] == "DATDAI")
        assert xrow[4:] == (0, 0, 2, 1, 0.5)
        spec = (await client.get("/openapi.json")).json()
        assert "/review" in spec["paths"]


def test_parwatch_report_review_writes_the_same_table(
    database_url: str, store: ScoringStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fill(store)
    monkeypatch.setenv("PARWATCH_DATABASE_URL", database_url)
    out = tmp_path / "review.csv"
    args = argparse.Namespace(period="2026-W48", format="csv", output=out, review=True)
    assert scoring_cli.run_report(args, clock=lambda: NOW) == 0
    lines = out.read_text(encoding="utf-8-sig").splitlines()
    assert "PTP,Phòng Tư pháp,Lĩnh vực,DATDAI,0,0,2,1,0.5000" in lines
    bad = argparse.Namespace(period="2026-W99", format="csv", output=out, review=True)
    assert scoring_cli.run_report(bad, clock=lambda: NOW) == 2


def test_a_database_made_before_the_columns_gets_them_and_its_dossiers_show_an_unknown_field(
    database_url: str,
) -> None:
    engine = make_engine(database_url)
    try:
        create_schema(engine)
        ScoringStore(engine).apply_states([fact("OLD-1", due_day=D(2026, 11, 20))], now=NOW)
        with engine.begin() as conn:  # as an older version left it
            conn.execute(text(f"ALTER TABLE {DOSSIER.name} DROP COLUMN inter_agency"))
            conn.execute(text(f"ALTER TABLE {DOSSIER.name} DROP COLUMN field_code"))
        create_schema(engine)
        store = ScoringStore(engine)
        board = Scoreboard(store, config=IndexConfig(), district=DISTRICT, directory=DIRECTORY)
        from services.scoring.review import UNKNOWN_FIELD, Span

        r = board.field_review(Span.parse("2026-W48"), today=D(2026, 11, 27))
        first = r.fields[0]
        assert (first.agency_code, first.field_code, first.figures.overdue) == ("PTP", UNKNOWN_FIELD, 1)
        store.apply_states([fact("OLD-1", agency="XA_PHUOC_THE", revision=2)], now=NOW)
        assert flags(store) == {"OLD-1": True}
    finally:
        engine.dispose()
