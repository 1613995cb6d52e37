"""The notifier's HTTP API for the officials' web page (served by scoring, :mod:`services.scoring.web`).

* ``GET /officials/{id}``: who an official is as the directory says (agency, role, post, the agencies the
  official may act for); never an address;
* ``GET /silences?all=1``: silences (active and pending; ``all``: expired too);
* ``POST /silences``: ``{"agencies": [...], "kinds": [...], "severities": [...], "refs": [...], "alert_keys":
  [...], "hours": 24, "comment": "..."}``, checked as ``parwatch silence add`` checks it; 201 with the silence;
* ``POST /silences/{id}/expire``: ends it now.

Open only to the web page's back end, as ``POST /alerts/{key}/ack``: ``Authorization: Bearer
<PARWATCH_NOTIFIER_API_TOKEN>``, or with no token set, a caller on this machine. The page decides who may act for
which agency (:mod:`services.scoring.web.auth`) and records who did what.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from services.notifier.domain.model import Directory
from services.notifier.domain.silence import Silence, check_new_silence
from services.notifier.service import Clock
from services.notifier.store import Store
from shared.events import ALERT_KINDS
from shared.http import refusal

MATCHERS = ("kinds", "severities", "agencies", "refs", "alert_keys", "receivers")


class SilenceBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kinds: list[str] = Field(default_factory=list, max_length=20)
    severities: list[str] = Field(default_factory=list, max_length=3)
    agencies: list[str] = Field(default_factory=list, max_length=100)
    refs: list[str] = Field(default_factory=list, max_length=100)
    alert_keys: list[str] = Field(default_factory=list, max_length=100)
    hours: float = Field(gt=0, le=24 * 90)
    comment: str = Field(min_length=1, max_length=500)


def silence_json(s: Silence, now: dt.datetime) -> dict[str, Any]:
    return {"id": s.id, "state": s.state(now), "starts_at": s.starts_at.isoformat(), "ends_at": s.ends_at.isoformat(),
            "created_at": s.created_at.isoformat(), "comment": s.comment,
            "matchers": {k: sorted(getattr(s, k)) for k in MATCHERS if getattr(s, k)}}


def scope_of(directory: Directory, official_id: str) -> list[str]:
    """The agencies an official may act for on the web page: the district leadership and the district's own
    officials, every agency; anyone else, the official's own agency."""
    o = directory.officials[official_id]
    if o.role == "district_leadership" or o.agency_code == directory.district_code:
        return ["*"]
    return [o.agency_code]


@dataclass(kw_only=True, eq=False)
class WebApi:
    store: Store
    directory: Directory
    clock: Clock
    api_token: str | None = None

    def router(self) -> APIRouter:
        r = APIRouter(tags=["officials' web page"])
        r.add_api_route("/officials/{official_id}", self.official, methods=["GET"])
        r.add_api_route("/silences", self.list_silences, methods=["GET"])
        r.add_api_route("/silences", self.add_silence, methods=["POST"], status_code=201)
        r.add_api_route("/silences/{silence_id}/expire", self.expire_silence, methods=["POST"])
        return r

    def _refused(self, request: Request) -> JSONResponse | None:
        return refusal(request, token=self.api_token, setting="PARWATCH_NOTIFIER_API_TOKEN")

    async def official(self, official_id: str, request: Request) -> Any:
        if (refused := self._refused(request)) is not None:
            return refused
        o = self.directory.officials.get(official_id)
        if o is None:
            return JSONResponse({"detail": "no such official in the directory"}, status_code=404)
        return {"id": o.id, "agency_code": o.agency_code, "role": o.role, "title": o.title,
                "agency_name": self.directory.agency_names.get(o.agency_code, self.directory.district_name),
                "scope": scope_of(self.directory, o.id)}

    async def list_silences(self, request: Request, all: bool = False) -> Any:
        if (refused := self._refused(request)) is not None:
            return refused
        now = self.clock()
        silences = await asyncio.to_thread(self.store.silences, now=now, include_expired=all)
        return {"silences": [silence_json(s, now) for s in silences]}

    async def add_silence(self, body: SilenceBody, request: Request) -> Any:
        if (refused := self._refused(request)) is not None:
            return refused
        problems = [f"kinds: unknown alert kind {k!r}" for k in body.kinds if k not in ALERT_KINDS]
        problems += [f"severities: unknown severity {s!r}" for s in body.severities
                     if s not in ("info", "warning", "critical")]
        problems += ["agencies: an agency code outside the directory" for a in body.agencies
                     if a not in self.directory.agency_names and a != self.directory.district_code]
        now = self.clock()
        silence = Silence(id="", starts_at=now, ends_at=now + dt.timedelta(hours=body.hours),
                          comment=body.comment.strip(), created_at=now, kinds=frozenset(body.kinds),
                          severities=frozenset(body.severities), agencies=frozenset(body.agencies),
                          refs=frozenset(body.refs), alert_keys=frozenset(body.alert_keys))
        if not problems:
            try:
                check_new_silence(silence)
            except ValueError as exc:
                problems.append(str(exc))
        if problems:
            return JSONResponse({"detail": "; ".join(problems)}, status_code=422)
        saved = await asyncio.to_thread(self.store.add_silence, silence)
        return silence_json(saved, now)

    async def expire_silence(self, silence_id: str, request: Request) -> Any:
        if (refused := self._refused(request)) is not None:
            return refused
        now = self.clock()
        ended = await asyncio.to_thread(self.store.expire_silence, silence_id, now=now)
        if ended is None:
            return JSONResponse({"detail": "no such silence"}, status_code=404)
        return silence_json(ended, now)
