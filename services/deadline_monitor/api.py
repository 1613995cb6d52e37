"""deadline_monitor's HTTP API for the officials' web page (served by scoring, :mod:`services.scoring.web`).

* ``GET /plan/occurrences?agency=&plan=&from=&to=``: every tracked task occurrence due in the range (default 60
  days either side of today) with its state today and the task's title and section;
* ``POST /plan/report``: ``{"task_id", "agency_code", "period", "state", "note", "plan_id", "done_on"}``: checked
  against the plans exactly as ``parwatch plan report`` checks it (the same code,
  :func:`services.deadline_monitor.cli.report_event`), published as the contract's ``vn.tthc.plan.task_reported``
  on ``tthc.plan.events`` (source ``parwatch/web``, the same deterministic id); 202 with the event id, 422 with
  the reason;
* ``GET /dossiers/open?agency=CODE``: the agency's open dossiers due soon or overdue (code, procedure, field,
  due day, state, days late).

Every route is open only to the web page's back end, as the notifier's JSON API: a caller sending
``Authorization: Bearer <PARWATCH_MONITOR_API_TOKEN>``, or with no token set, a caller on this machine.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.deadline_monitor.cli import ReportError, ReportRequest, report_event
from services.deadline_monitor.domain import Catalog, WorkingDays, occurrence_state
from services.deadline_monitor.store import MonitorStore, occurrence_facts
from shared.calendar import local_date
from shared.events import CloudEvent
from shared.http import refusal
from shared.rules import OpenFacts, open_state

#: The ``source`` of the plan reports officials make on the web page.
WEB_SOURCE = "parwatch/web"
DEFAULT_SPAN = dt.timedelta(days=60)


class ReportBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task_id: str = Field(min_length=1, max_length=64)
    agency_code: str = Field(min_length=1, max_length=64)
    period: str | None = Field(default=None, max_length=16)
    state: Literal["done", "in_progress", "blocked"] = "done"
    note: str | None = Field(default=None, max_length=2000)
    plan_id: str | None = Field(default=None, max_length=64)
    done_on: dt.date | None = None


@dataclass(kw_only=True, eq=False)
class MonitorApi:
    store: MonitorStore
    catalog: Catalog
    calendar: WorkingDays
    clock: Callable[[], dt.datetime]
    publish: Callable[[CloudEvent[Any]], Awaitable[int]]
    window: tuple[dt.date | None, dt.date | None] = (None, None)
    api_token: str | None = None

    def router(self) -> APIRouter:
        r = APIRouter(tags=["officials' web page"])
        r.add_api_route("/plan/occurrences", self.occurrences, methods=["GET"])
        r.add_api_route("/plan/report", self.report, methods=["POST"], status_code=202)
        r.add_api_route("/dossiers/open", self.open_dossiers, methods=["GET"])
        return r

    def _refused(self, request: Request) -> JSONResponse | None:
        return refusal(request, token=self.api_token, setting="PARWATCH_MONITOR_API_TOKEN")

    async def occurrences(
        self, request: Request, agency: str | None = None, plan: str | None = None,
        start: dt.date | None = Query(default=None, alias="from"),  # noqa: B008 - FastAPI's way to name a parameter
        end: dt.date | None = Query(default=None, alias="to"),  # noqa: B008
    ) -> Any:
        if (refused := self._refused(request)) is not None:
            return refused
        today = local_date(self.clock())
        first, last = start or today - DEFAULT_SPAN, end or today + DEFAULT_SPAN
        views = await asyncio.to_thread(self.store.occurrences_between, first, last, agency=agency, plan_id=plan)
        out = []
        for v in views:
            task = self.catalog.task(v.plan_id, v.task_id)
            out.append({
                "plan_id": v.plan_id, "task_id": v.task_id, "agency_code": v.agency_code, "period": v.period,
                "due_day": v.due_day.isoformat(), "opens_on": v.opens_on.isoformat(),
                "done_on": v.done_on.isoformat() if v.done_on else None,
                "state": occurrence_state(occurrence_facts(v), today),
                "title": task.title if task else "", "section": task.section if task else "",
            })
        return {"today": today.isoformat(), "from": first.isoformat(), "to": last.isoformat(), "occurrences": out}

    async def report(self, request: Request, body: ReportBody) -> Any:
        if (refused := self._refused(request)) is not None:
            return refused
        req = ReportRequest(task_id=body.task_id, agency_code=body.agency_code, state=body.state,
                            period=body.period or None, done_on=body.done_on, note=body.note or None,
                            plan_id=body.plan_id or None)
        try:
            event = report_event(req, catalog=self.catalog, calendar=self.calendar, now=self.clock(),
                                 window=self.window, source=WEB_SOURCE)
        except (ReportError, ValidationError) as exc:
            return JSONResponse({"detail": str(exc)}, status_code=422)
        seq = await self.publish(event)
        return {"event_id": event.id, "stream_seq": seq, "task_id": body.task_id, "agency_code": body.agency_code,
                "period": event.data.period}

    async def open_dossiers(self, request: Request, agency: str) -> Any:
        if (refused := self._refused(request)) is not None:
            return refused
        today = local_date(self.clock())
        soon = self.calendar.add_working_days(today, 1)
        rows = await asyncio.to_thread(self.store.open_dossiers_due_by, agency, soon)
        out = []
        for code, procedure, field_code, due_day, paused, pause_started_on, supplements in rows:
            state = open_state(OpenFacts(due_day, paused, pause_started_on, supplements), day=today, soon=soon)
            if state not in ("due_soon", "overdue"):
                continue
            out.append({"dossier_code": code, "procedure_code": procedure, "field_code": field_code,
                        "due_day": due_day.isoformat() if due_day else None, "state": state,
                        "days_late": max(0, (today - due_day).days) if due_day and state == "overdue" else 0})
        return {"today": today.isoformat(), "agency": agency, "dossiers": out}
