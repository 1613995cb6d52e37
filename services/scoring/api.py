"""scoring's query API (FastAPI router; OpenAPI at ``/openapi.json``).

* ``GET /agencies``: the district's units, ``unknown`` when figures exist for
  codes outside the agency directory (added up under that one code), and the
  roll-up code;
* ``GET /figures/{agency}?period=2026-10``: every figure of an agency (or
  the district code for the roll-up) for a period (``YYYY-MM``, ``YYYY-Qn``,
  ``YYYY``; default the running month);
* ``GET /dossiers/{agency}/late?period=..``: codes of dossiers that ended
  late in the period and of those overdue at its end (the weekly review);
* ``GET /report?period=..&format=csv|xlsx``: the monthly report table;
* ``GET /review?period=2026-W48&format=json|csv|xlsx``: the weekly review per
  agency and field (late and overdue dossiers, late rate) and of inter-agency
  dossiers (:mod:`services.scoring.review`); ``period`` also takes a week.

A value that cannot be computed (no dossier, or an index part parwatch has no
events for) is ``null``, never 0.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import asdict, fields
from typing import Any, Literal, get_type_hints

from fastapi import APIRouter, HTTPException, Query, Response
from pydantic import BaseModel, Field, create_model

from services.scoring.board import Directory, PeriodNotStarted, PeriodTable, Scoreboard
from services.scoring.domain import Figures, IndexPart, Period, compute_figures, today_in_vietnam
from services.scoring.report import render, render_review
from services.scoring.review import DEFAULT_MAX_FIELDS, Review, ReviewFigures, Span
from services.scoring.store import DossierRef
from shared.agencies import UNKNOWN

PERIOD_HELP = "YYYY-MM (month), YYYY-Qn (quarter) or YYYY (year) in Asia/Ho_Chi_Minh; default: the running month"


class AgencyOut(BaseModel):
    code: str
    name: str
    kind: str = Field(
        description="department, commune, district (the roll-up of every agency) or unknown (every code outside the"
        " agency directory, added up)"
    )


def model_of(
    cls: type, name: str, *, notes: Mapping[str, str] | None = None, base: type[BaseModel] = BaseModel, **types: Any
) -> type[BaseModel]:
    """The response model of a domain dataclass: its fields, names, types and order (one definition of the data).

    ``notes``: a field's description in the OpenAPI output; ``types``: a field served as another type (a nested
    dataclass as its own response model). ``base``: fields that come first.
    """
    hints = get_type_hints(cls)
    notes = notes or {}
    served: dict[str, Any] = {
        f.name: (types.get(f.name, hints[f.name]), Field(description=notes.get(f.name))) for f in fields(cls)
    }
    return create_model(name, __base__=base, **served)


IndexPartOut = model_of(
    IndexPart,
    "IndexPartOut",
    notes={
        "group": "Decision 766 group: publicity_transparency, progress, online_service, ...",
        "points": "null when not computable from parwatch's events",
    },
)


class _FiguresHead(BaseModel):
    """What a set of figures is of: the agency and the period."""

    agency: str
    agency_name: str
    period: str
    period_kind: str
    period_start: dt.date
    period_end: dt.date
    current: bool = Field(description="true: the period is running and its figures end now")
    as_of: dt.date = Field(description="the day open dossiers are judged at (today, or the period's last day)")


FIGURE_NOTES = {
    "ended_unclassified": "ended without a due day: in neither part of the on-time rate",
    "on_time_ratio": "contract rule 7; null without dossiers",
    "criteria": "mean score 0..2 of each criterion c1..c9 that was answered",
    "channel_reported": "received dossiers whose channel is known: the online filing share's denominator",
    "digitized_reported": "received dossiers whose digitization is known: the digitized share's denominator",
    "sync_reported": "received dossiers whose national sync is known: the sync share's denominator",
    "online_filing_ratio": "filed online / channel known; null when no channel is known",
    "national_sync_ratio": "synced / sync known; null when no sync is known",
    "online_service_ratio": "eligible procedures offered as full online public services / eligible procedures, from"
    " the procedure catalog in force (running periods); null without a catalog or an eligible procedure",
}


_FiguresFields = model_of(Figures, "FiguresFields", notes=FIGURE_NOTES, base=_FiguresHead, index=list[IndexPartOut])


# The agency and period, every field of Figures (its index parts as IndexPartOut), then the index totals.
class FiguresOut(_FiguresFields):  # type: ignore[misc,valid-type]
    index_points_computed: float | None = Field(description="sum of the computable parts' points")
    index_max_points_computed: float = Field(description="the most those computable parts can give")
    not_computable: list[str] = Field(description="index parts parwatch cannot compute from its events")


DossierRefOut = model_of(DossierRef, "DossierRefOut")


class ReviewOut(BaseModel):
    agency: str
    period: str
    current: bool
    as_of: dt.date
    late: list[DossierRefOut] = Field(description="ended late in the period")
    overdue: list[DossierRefOut] = Field(description="open and overdue at the period's end (now if running)")


REVIEW_PERIOD_HELP = "YYYY-Www (ISO week), YYYY-MM, YYYY-Qn or YYYY in Asia/Ho_Chi_Minh; default: the running week"


class ReviewFiguresOut(BaseModel):
    ended: int = Field(description="ended in the period with a due day (early, on time or late)")
    ended_late: int
    open: int = Field(description="open at the period's end (now if running)")
    overdue: int
    late_ratio: float | None = Field(description="(ended late + overdue) / (ended + open); null without dossiers")

    @classmethod
    def of(cls, f: ReviewFigures) -> ReviewFiguresOut:
        return cls(ended=f.ended, ended_late=f.ended_late, open=f.open, overdue=f.overdue, late_ratio=f.late_ratio)


class FieldReviewOut(BaseModel):
    agency: str
    field_code: str = Field(description="the field's code (safe to show), '(khác)' for the fields beyond max_fields"
                                        " added up, '(chưa rõ)' for dossiers stored before scoring kept the field")
    figures: ReviewFiguresOut


class AgencyReviewOut(BaseModel):
    agency: str
    agency_name: str
    total: ReviewFiguresOut
    inter_agency: ReviewFiguresOut = Field(description="its dossiers whose history named more than one agency")


class WeeklyReviewOut(BaseModel):
    period: str
    period_kind: str
    period_start: dt.date
    period_end: dt.date
    current: bool
    as_of: dt.date
    agencies: list[AgencyReviewOut]
    fields: list[FieldReviewOut]


def review_out(review: Review, directory: Directory) -> WeeklyReviewOut:
    empty = ReviewFigures()
    return WeeklyReviewOut(
        period=review.span.key, period_kind=review.span.kind, period_start=review.span.start,
        period_end=review.span.end, current=review.current, as_of=review.as_of,
        agencies=[
            AgencyReviewOut(agency=a, agency_name=directory.name(a), total=ReviewFiguresOut.of(total),
                            inter_agency=ReviewFiguresOut.of(review.inter_agency.get(a, empty)))
            for a, total in review.total.items()
        ],
        fields=[FieldReviewOut(agency=r.agency_code, field_code=r.field_code, figures=ReviewFiguresOut.of(r.figures))
                for r in review.fields],
    )


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
        """A directory code, the district's, or ``unknown`` (every other code, added up): never echoed back."""
        if not directory.known(agency) and agency != UNKNOWN:
            raise HTTPException(status_code=404, detail="no such agency in the directory (others: 'unknown')")

    @router.get("/agencies", response_model=list[AgencyOut], summary="Agencies and the district roll-up")
    def agencies() -> list[AgencyOut]:
        out = [AgencyOut(code=a.code, name=a.name, kind=a.kind) for a in directory.agencies]
        if any(not directory.known(c) for c in board.store.known_agencies()):
            out.append(AgencyOut(code=UNKNOWN, name=directory.name(UNKNOWN), kind="unknown"))
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
            late=[DossierRefOut(**(asdict(r) | {"agency_code": directory.label(r.agency_code)})) for r in late],
            overdue=[DossierRefOut(**(asdict(r) | {"agency_code": directory.label(r.agency_code)})) for r in overdue],
        )

    @router.get(
        "/review",
        response_model=WeeklyReviewOut,
        summary="The weekly review: late and overdue dossiers per agency and field, and inter-agency dossiers",
        responses={200: {"content": {"text/csv": {}, "application/vnd.openxmlformats-officedocument.spreadsheetml"
                                                                ".sheet": {}}}},
    )
    def weekly_review(
        period: str | None = Query(default=None, description=REVIEW_PERIOD_HELP),
        format: Literal["json", "csv", "xlsx"] = Query(default="json"),  # noqa: A002 - the public parameter name
        max_fields: int = Query(default=DEFAULT_MAX_FIELDS, ge=1, le=100,
                                description="fields shown per agency; the others are added up in one row"),
    ) -> Any:
        day = today()
        try:
            span = Span.week_of(day) if period is None else Span.parse(period)
            review = board.field_review(span, today=day, max_fields=max_fields)
        except ValueError as exc:  # a malformed period, or one not started (PeriodNotStarted)
            raise HTTPException(status_code=422, detail=str(exc)) from None
        if format == "json":
            return review_out(review, directory)
        media, body = render_review(review, directory, fmt=format)
        filename = f"parwatch-review-{span.key}.{format}"
        return Response(body, media_type=media, headers={"Content-Disposition": f'attachment; filename="{filename}"'})

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
