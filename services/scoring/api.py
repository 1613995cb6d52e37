"""scoring's query API (FastAPI router; OpenAPI at ``/openapi.json``).

* ``GET /agencies``: the district's units and the roll-up code;
* ``GET /figures/{agency}?period=2026-10``: every figure of an agency (or
  the district code for the roll-up) for a period (``YYYY-MM``, ``YYYY-Qn``,
  ``YYYY``; default the running month);
* ``GET /dossiers/{agency}/late?period=..``: codes of dossiers that ended
  late in the period and of those overdue at its end (the weekly review);
* ``GET /report?period=..&format=csv|xlsx``: the monthly report table.

A value that cannot be computed (no dossier, or an index part parwatch has no
events for) is ``null``, never 0.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import asdict
from typing import Literal

from fastapi import APIRouter, HTTPException, Query, Response
from pydantic import BaseModel, Field

from services.scoring.board import Directory, PeriodNotStarted, PeriodTable, Scoreboard
from services.scoring.domain import Figures, Period, compute_figures, today_in_vietnam
from services.scoring.report import render

PERIOD_HELP = "YYYY-MM (month), YYYY-Qn (quarter) or YYYY (year) in Asia/Ho_Chi_Minh; default: the running month"


class AgencyOut(BaseModel):
    code: str
    name: str
    kind: str = Field(description="department, commune, district (the roll-up of every agency) or unknown")


class IndexPartOut(BaseModel):
    part: str
    group: str = Field(description="Decision 766 group: publicity_transparency, progress, online_service, ...")
    max_points: float
    points: float | None = Field(description="null when not computable from parwatch's events")
    computable: bool
    note: str


class FiguresOut(BaseModel):
    agency: str
    agency_name: str
    period: str
    period_kind: str
    period_start: dt.date
    period_end: dt.date
    current: bool = Field(description="true: the period is running and its figures end now")
    as_of: dt.date = Field(description="the day open dossiers are judged at (today, or the period's last day)")
    ended_early: int
    ended_on_time: int
    ended_late: int
    ended_unclassified: int = Field(description="ended without a due day: in neither part of the on-time rate")
    open: int
    overdue: int
    on_time_ratio: float | None = Field(description="contract rule 7; null without dossiers")
    received: int
    filed_online: int
    paid_online: int
    payment_reported: int
    digitized: int
    synced: int
    online_filing_ratio: float | None
    online_payment_ratio: float | None
    digitized_ratio: float | None
    national_sync_ratio: float | None
    rated: int
    rated_satisfied: int
    rated_unsatisfied: int
    satisfaction_ratio: float | None
    criteria: dict[str, float] = Field(description="mean score 0..2 of each criterion c1..c9 that was answered")
    tasks_done: int
    tasks_done_late: int
    tasks_overdue: int
    tasks_open: int
    plan_completion_ratio: float | None
    index: list[IndexPartOut]
    index_points_computed: float | None = Field(description="sum of the computable parts' points")
    index_max_points_computed: float = Field(description="the most those computable parts can give")
    not_computable: list[str] = Field(description="index parts parwatch cannot compute from its events")


class DossierRefOut(BaseModel):
    dossier_code: str
    agency_code: str
    receipt_day: dt.date | None
    due_day: dt.date | None
    ended_on: dt.date | None


class ReviewOut(BaseModel):
    agency: str
    period: str
    current: bool
    as_of: dt.date
    late: list[DossierRefOut] = Field(description="ended late in the period")
    overdue: list[DossierRefOut] = Field(description="open and overdue at the period's end (now if running)")


def figures_out(*, agency: str, name: str, table: PeriodTable, figures: Figures) -> FiguresOut:
    parts = [IndexPartOut(**asdict(p)) for p in figures.index]
    computed = [p for p in parts if p.points is not None]
    data = {k: v for k, v in asdict(figures).items() if k != "index"}
    return FiguresOut(
        agency=agency,
        agency_name=name,
        period=table.period.key,
        period_kind=table.period.kind,
        period_start=table.period.start,
        period_end=table.period.end,
        current=table.current,
        as_of=table.as_of,
        index=parts,
        index_points_computed=sum(p.points for p in computed) if computed else None,  # type: ignore[misc]
        index_max_points_computed=sum(p.max_points for p in computed),
        not_computable=[p.part for p in parts if not p.computable],
        **data,
    )


def build_api(*, board: Scoreboard, directory: Directory, clock: Callable[[], dt.datetime]) -> APIRouter:
    router = APIRouter(tags=["scoring"])

    def today() -> dt.date:
        return today_in_vietnam(clock())

    def parse_period(text: str | None, day: dt.date) -> Period:
        if text is None:
            return Period.containing(day, "month")
        try:
            return Period.parse(text)
        except ValueError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None

    def load_table(period: Period, day: dt.date) -> PeriodTable:
        try:
            return board.table(period, today=day)
        except PeriodNotStarted as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None

    def check_agency(agency: str) -> None:
        if not directory.known(agency) and agency not in board.store.known_agencies():
            raise HTTPException(status_code=404, detail=f"unknown agency {agency[:64]!r}")

    @router.get("/agencies", response_model=list[AgencyOut], summary="Agencies and the district roll-up")
    def agencies() -> list[AgencyOut]:
        out = [AgencyOut(code=a.code, name=a.name, kind=a.kind) for a in directory.agencies]
        listed = {a.code for a in directory.agencies} | {directory.district_code}
        out += [AgencyOut(code=c, name=c, kind="unknown") for c in sorted(board.store.known_agencies() - listed)]
        out.append(AgencyOut(code=directory.district_code, name=directory.district.name, kind="district"))
        return out

    @router.get("/figures/{agency}", response_model=FiguresOut, summary="Figures of an agency for a period")
    def figures(agency: str, period: str | None = Query(default=None, description=PERIOD_HELP)) -> FiguresOut:
        day = today()
        p = parse_period(period, day)
        check_agency(agency)
        table = load_table(p, day)
        found = table.figures.get(agency) or compute_figures({}, config=board.config)
        return figures_out(agency=agency, name=directory.name(agency), table=table, figures=found)

    @router.get(
        "/dossiers/{agency}/late", response_model=ReviewOut, summary="Late and overdue dossier codes (weekly review)"
    )
    def late_dossiers(
        agency: str,
        period: str | None = Query(default=None, description=PERIOD_HELP),
        limit: int = Query(default=1000, ge=1, le=10000, description="most codes in each list"),
    ) -> ReviewOut:
        day = today()
        p = parse_period(period, day)
        check_agency(agency)
        try:
            current, late, overdue = board.review(agency, p, today=day, limit=limit)
        except PeriodNotStarted as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None
        return ReviewOut(
            agency=agency,
            period=p.key,
            current=current,
            as_of=day if current else p.end,
            late=[DossierRefOut(**asdict(r)) for r in late],
            overdue=[DossierRefOut(**asdict(r)) for r in overdue],
        )

    @router.get(
        "/report",
        summary="The period's table of every agency, as CSV or XLSX",
        responses={200: {"content": {"text/csv": {}, "application/vnd.openxmlformats-officedocument.spreadsheetml"
                                                                ".sheet": {}}}},
        response_class=Response,
    )
    def report(
        period: str | None = Query(default=None, description=PERIOD_HELP),
        format: Literal["csv", "xlsx"] = Query(default="csv"),  # noqa: A002 - the public parameter name
    ) -> Response:
        day = today()
        p = parse_period(period, day)
        media, body = render(load_table(p, day), directory, fmt=format)
        filename = f"parwatch-report-{p.key}.{format}"
        return Response(body, media_type=media, headers={"Content-Disposition": f'attachment; filename="{filename}"'})

    return router
