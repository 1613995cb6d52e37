"""The notifier's HTTP API for acknowledgements: the e-mail's one-click link and the JSON the web page uses.

* ``GET /ack/{token}``: a small page in Vietnamese with a button. It changes
  nothing, so a mail scanner that fetches every link acknowledges nothing.
* ``POST /ack/{token}``: records the acknowledgement the token names (for the
  receiver it was signed for), with the note typed on the page.
* ``GET /alerts``: firing alerts, each with its acknowledgement (who, which
  kind, when) when one holds; ``?agency=CODE`` for one agency. Alerts of
  codes outside the agency directory are the technical desk's, not listed.
* ``POST /alerts/{key}/ack``: ``{"official": id, "kind": "apology_sent" |
  "handling", "note": "..."}``; 201 with the acknowledgement, else 403, 404,
  409 or 422 with ``detail``.

The JSON API trusts its caller to say who the official is, so its write is
open only to the web page's back end: a caller that sends ``Authorization:
Bearer <PARWATCH_NOTIFIER_API_TOKEN>``, or, with no token set, a caller on this
machine (loopback); anyone else gets 403. The link pages carry their own proof.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import BaseModel, ConfigDict, Field

from services.notifier.ack import AckRefused, acknowledge
from services.notifier.domain.ack import ACK_KINDS, NOTE_MAX, Acknowledgement, LinkError, holds, verify_link
from services.notifier.domain.model import AlertRecord, Directory
from services.notifier.domain.routing import restricted
from services.notifier.render import TEMPLATES, fmt_time, kind_text, scrub
from services.notifier.service import Clock
from services.notifier.store import Store
from shared.http import refusal

LINK_ERRORS = {
    "malformed": (400, "Đường dẫn không hợp lệ."),
    "signature": (403, "Đường dẫn không hợp lệ hoặc đã bị sửa đổi."),
    "expired": (410, "Đường dẫn đã hết hạn; xác nhận trên trang web parwatch hoặc bằng lệnh parwatch alerts ack."),
}


class AckBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    official: str = Field(min_length=1, max_length=64)
    kind: str
    note: str = Field(default="", max_length=NOTE_MAX)


def ack_json(ack: Acknowledgement | None) -> dict[str, Any] | None:
    if ack is None:
        return None
    return {"official": ack.official_id, "kind": ack.kind, "kind_text": ack.kind_text, "note": ack.note,
            "at": ack.acked_at.isoformat(), "via": ack.via}


def alert_json(alert: AlertRecord, ack: Acknowledgement | None) -> dict[str, Any]:
    return {"alert_key": alert.alert_key, "kind": alert.kind, "severity": alert.severity,
            "agency_code": alert.agency_code, "ref": alert.ref, "summary": alert.summary,
            "starts_at": alert.starts_at.isoformat(), "acknowledged": ack_json(ack if holds(ack, alert) else None)}


@dataclass(kw_only=True, eq=False)
class AckApi:
    store: Store
    directory: Directory
    secret: bytes
    clock: Clock
    api_token: str | None = None

    def __post_init__(self) -> None:
        self._pages = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True))

    def router(self) -> APIRouter:
        r = APIRouter(tags=["acknowledgements"])
        r.add_api_route("/alerts", self.list_alerts, methods=["GET"])
        r.add_api_route("/alerts/{alert_key:path}/ack", self.post_ack, methods=["POST"], status_code=201)
        r.add_api_route("/ack/{token}", self.link_page, methods=["GET"], response_class=HTMLResponse)
        r.add_api_route("/ack/{token}", self.link_ack, methods=["POST"], response_class=HTMLResponse)
        return r

    # -- JSON ---------------------------------------------------------------------------------
    async def list_alerts(self, agency: str | None = None) -> dict[str, Any]:
        alerts = [a for a in await asyncio.to_thread(self.store.firing_alerts)
                  if not restricted(self.directory, a) and (agency is None or a.agency_code == agency)]
        acks = await asyncio.to_thread(self.store.latest_acks, [a.alert_key for a in alerts])
        return {"alerts": [alert_json(a, acks.get(a.alert_key)) for a in alerts]}

    async def post_ack(self, alert_key: str, body: AckBody, request: Request) -> Any:
        if (refused := refusal(request, token=self.api_token, setting="PARWATCH_NOTIFIER_API_TOKEN")) is not None:
            return refused
        try:
            ack = await asyncio.to_thread(self._record, alert_key, body.official, body.kind, body.note, "api")
        except AckRefused as exc:
            return JSONResponse({"detail": str(exc)}, status_code=exc.status)
        return {"alert_key": alert_key, "acknowledged": ack_json(ack)}

    def _record(self, alert_key: str, official: str, kind: str, note: str, via: str) -> Acknowledgement:
        return acknowledge(self.store, self.directory, alert_key=alert_key, official_id=official, kind=kind,
                           note=note, via=via, now=self.clock())

    # -- the e-mail's link ------------------------------------------------------------------------
    async def link_page(self, token: str) -> HTMLResponse:
        """The confirmation page: shows what would be acknowledged, changes nothing."""
        try:
            claim = verify_link(self.secret, token, now=self.clock())
        except LinkError as exc:
            return self._error(exc.reason)
        alert = await asyncio.to_thread(self.store.alert, claim.alert_key)
        if alert is None or not alert.firing:
            return self._page(409, error="Cảnh báo này đã kết thúc; không cần xác nhận nữa.")
        title, summary = self._shown(alert)
        return self._page(200, title=title, summary=summary, kind_text=ACK_KINDS[claim.kind], note_max=NOTE_MAX)

    async def link_ack(self, token: str, request: Request) -> HTMLResponse:
        try:
            claim = verify_link(self.secret, token, now=self.clock())
        except LinkError as exc:
            return self._error(exc.reason)
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        note = (form.get("note") or [""])[0][:NOTE_MAX]
        try:
            ack = await asyncio.to_thread(self._record, claim.alert_key, claim.receiver_id, claim.kind, note, "link")
        except AckRefused as exc:
            message = ("Cảnh báo này đã kết thúc; không cần xác nhận nữa." if exc.status in (404, 409)
                       else "Tài khoản nhận thư này không được xác nhận cảnh báo này.")
            return self._page(exc.status, error=message)
        alert = await asyncio.to_thread(self.store.alert, claim.alert_key)
        title, _ = self._shown(alert) if alert else ("", "")
        return self._page(200, done=True, title=title, kind_text=ack.kind_text, acked_at=fmt_time(ack.acked_at))

    def _shown(self, alert: AlertRecord) -> tuple[str, str]:
        """The alert's title and summary as a message would show them (an outside code never echoed)."""
        shown = scrub({"agency_code": alert.agency_code, "summary": alert.summary, "ref": alert.ref,
                       "alert_key": alert.alert_key}, self.directory)
        return kind_text(alert.kind).title.format(ref=shown["ref"]), shown["summary"]

    def _error(self, reason: str) -> HTMLResponse:
        status, message = LINK_ERRORS.get(reason, LINK_ERRORS["malformed"])
        return self._page(status, error=message)

    def _page(self, status: int, **view: Any) -> HTMLResponse:
        view.setdefault("error", "")
        view.setdefault("done", False)
        html = self._pages.get_template("ack_page.html.j2").render(view)
        return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store",
                                                              "Referrer-Policy": "no-referrer"})

