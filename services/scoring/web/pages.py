"""The officials' web page (``/web/``): server-rendered Jinja2, Vietnamese, no script, no outside address.

Pages: the district overview, an agency, the plan's duties, the alerts and silences, the monthly report. Figures
come from scoring's own read model (:class:`~services.scoring.board.Scoreboard`, the same the query API serves);
plan duties and open dossiers from deadline_monitor's API, alerts, silences and officials from the notifier's
(:mod:`services.scoring.web.peers`). Reading is open to this machine (loopback) unless configured otherwise, and
to a signed-in official; every write needs a session, its CSRF token and the agency in the official's scope
(:mod:`services.scoring.web.auth`), and is recorded with who and when (:mod:`services.scoring.web.store`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from services.scoring.board import Directory, PeriodNotStarted, Scoreboard
from services.scoring.domain import Period, today_in_vietnam
from services.scoring.report import COLUMNS, report_rows
from services.scoring.review import Span
from services.scoring.web import charts, fmt
from services.scoring.web.auth import COOKIE, Session, Sessions, csrf_ok, fingerprint, verify_password
from services.scoring.web.peers import PeerDown, Peers
from services.scoring.web.store import AuditEntry, WebStore
from shared.calendar import VN_TZ
from shared.http import is_loopback

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
#: Plan 146's targets the page draws its lines at.
ON_TIME_TARGET = 0.98
PLAN_TARGET = 0.95
FORM_MAX = 16_384  # bytes of a form body
PREFIX = "/web"

OK_TEXT = {
    "report": "Đã gửi báo cáo. Trạng thái nhiệm vụ được cập nhật sau vài giây.",
    "ack": "Đã ghi nhận xác nhận cảnh báo.",
    "silence": "Đã tạo lệnh tạm dừng thông báo.",
    "expire": "Đã kết thúc lệnh tạm dừng thông báo.",
    "signout": "Đã đăng xuất.",
}
SHARES = (
    ("satisfaction_ratio", "Hài lòng"),
    ("online_filing_ratio", "Nộp trực tuyến"),
    ("online_payment_ratio", "Thanh toán trực tuyến"),
    ("digitized_ratio", "Số hóa"),
    ("national_sync_ratio", "Đồng bộ Cổng DVC quốc gia"),
)
TASK_STATES = ("open", "overdue", "done", "done_late")
#: An agency's page lists the duties due this far either side of today (the plan page: 60 days).
AGENCY_SPAN = dt.timedelta(days=31)


WriteHandler = Callable[[Any, Request, Session, dict[str, str]], Awaitable[Response]]


def write(handler: WriteHandler) -> Callable[[Any, Request], Awaitable[Response]]:
    """A write's route: ``handler`` runs with the session and form :meth:`WebPages.writer` accepted, else the
    page refusing the write answers. The route's signature is ``(request)`` alone, as FastAPI reads it."""
    async def route(self: WebPages, request: Request) -> Response:
        checked = await self.writer(request)
        if isinstance(checked, HTMLResponse):
            return checked
        session, form = checked
        return await handler(self, request, session, form)

    route.__name__, route.__qualname__, route.__doc__ = handler.__name__, handler.__qualname__, handler.__doc__
    return route


@dataclass(kw_only=True, eq=False)
class WebPages:
    board: Scoreboard
    directory: Directory
    clock: Callable[[], dt.datetime]
    store: WebStore
    sessions: Sessions
    peers: Peers
    open_read_on_loopback: bool = True
    secure_cookies: bool | None = None  # None: when the request came over TLS

    def __post_init__(self) -> None:
        env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True),
                          trim_blocks=True, lstrip_blocks=True)
        env.globals.update(vn_time=lambda moment: fmt.vn_time(moment, tz=VN_TZ), pct=fmt.pct, vn_date=fmt.vn_date,
                           points=fmt.points, number=fmt.number, period_label=fmt.period_label,
                           state_text=fmt.state_text, kind_text=fmt.kind_text, meets=fmt.meets,
                           index_part=fmt.index_part, groups=fmt.GROUPS, severity_text=fmt.SEVERITY_TEXT,
                           ack_kinds=fmt.ACK_KIND_TEXT, prefix=PREFIX, on_time_target=ON_TIME_TARGET,
                           plan_target=PLAN_TARGET)
        # a name at the start of a table's row: 'toàn huyện Tuy Phong' (said mid-sentence) -> 'Toàn huyện Tuy Phong'
        env.filters["first_upper"] = lambda text: text[:1].upper() + text[1:]
        self._env = env
        self._css = (HERE / "static" / "style.css").read_bytes()
        self._icon = (HERE / "static" / "favicon.svg").read_bytes()  # a tick on the accent colour

    def router(self) -> APIRouter:
        r = APIRouter(prefix=PREFIX, tags=["officials' web page"], include_in_schema=False)
        r.add_api_route("/", self.overview, methods=["GET"])
        r.add_api_route("/don-vi/{code}", self.agency, methods=["GET"])
        r.add_api_route("/ke-hoach", self.plan, methods=["GET"])
        r.add_api_route("/ke-hoach/bao-cao", self.plan_report, methods=["POST"])
        r.add_api_route("/canh-bao", self.alerts, methods=["GET"])
        r.add_api_route("/canh-bao/xac-nhan", self.ack, methods=["POST"])
        r.add_api_route("/tam-dung", self.add_silence, methods=["POST"])
        r.add_api_route("/tam-dung/ket-thuc", self.expire_silence, methods=["POST"])
        r.add_api_route("/bao-cao", self.report, methods=["GET"])
        r.add_api_route("/dang-nhap", self.signin_page, methods=["GET"])
        r.add_api_route("/dang-nhap", self.signin, methods=["POST"])
        r.add_api_route("/dang-xuat", self.signout, methods=["POST"])
        r.add_api_route("/style.css", self.css, methods=["GET"])
        r.add_api_route("/favicon.svg", self.icon, methods=["GET"])
        return r

    # -- plumbing ----------------------------------------------------------------------------------
    def today(self) -> dt.date:
        return today_in_vietnam(self.clock())

    def session(self, request: Request) -> Session | None:
        return self.sessions.read(request.cookies.get(COOKIE))

    def may_read(self, request: Request) -> bool:
        return (self.open_read_on_loopback and is_loopback(request)) or self.session(request) is not None

    def render(self, request: Request, template: str, *, status: int = 200, **view: Any) -> HTMLResponse:
        session = self.session(request)
        ok = request.query_params.get("ok")
        html = self._env.get_template(template).render(
            session=session, today=self.today(), today_text=fmt.vn_long_date(self.today()),
            flash=OK_TEXT.get(ok or ""), agencies=self.directory.agencies, district=self.directory.district,
            **view)
        return HTMLResponse(html, status_code=status, headers={
            "Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self';"
                                       " frame-ancestors 'none'; base-uri 'none'"})

    def refuse(self, request: Request, status: int, message: str) -> HTMLResponse:
        return self.render(request, "refused.html.j2", status=status, message=message)

    def need_reader(self, request: Request) -> Response | None:
        if self.may_read(request):
            return None
        return RedirectResponse(f"{PREFIX}/dang-nhap?next={quote(request.url.path)}", status_code=303)

    async def form(self, request: Request) -> dict[str, str]:
        return await read_form(request)

    async def writer(self, request: Request) -> tuple[Session, dict[str, str]] | HTMLResponse:
        """The session and form of a write, or the page refusing it (no session, no or a wrong CSRF token, a
        password changed since the session began)."""
        form = await self.form(request)
        session = self.session(request)
        if session is None:
            return self.refuse(request, 401, "Cần đăng nhập để thực hiện thao tác này.")
        if not csrf_ok(session, form.get("csrf")):
            return self.refuse(request, 403, "Yêu cầu không hợp lệ (thiếu hoặc sai mã chống giả mạo CSRF). "
                                             "Hãy tải lại trang rồi thử lại.")
        stored = await asyncio.to_thread(self.store.password_hash, session.official)
        if stored is None or fingerprint(stored) != session.fingerprint:
            return self.refuse(request, 401, "Phiên đăng nhập đã hết hiệu lực; hãy đăng nhập lại.")
        try:  # the directory as it is now: an official removed or moved since signing in acts no more, or elsewhere
            answer = await self.peers.notifier.call("GET", f"/officials/{quote(session.official, safe='')}")
        except PeerDown as exc:
            return self.refuse(request, 503, f"Chưa thực hiện được: {exc}.")
        if not answer.ok:
            return self.refuse(request, 401, "Tài khoản không còn trong danh bạ cán bộ.")
        current = replace(session, agency=str(answer.body["agency_code"]),
                          scope=tuple(str(x) for x in answer.body["scope"]))
        return current, form

    async def audit(self, session: Session, *, action: str, agency: str, target: str, outcome: str) -> None:
        entry = AuditEntry(at=self.clock(), official_id=session.official, action=action, agency_code=agency,
                           target=target, outcome=outcome)
        await asyncio.to_thread(self.store.record, entry)
        log.info("web write official=%s action=%s agency=%s outcome=%s", session.official, action, agency,
                 outcome.split(":")[0])

    async def out_of_scope(self, request: Request, session: Session, *, action: str, agency: str,
                           target: str) -> HTMLResponse:
        await self.audit(session, action=action, agency=agency, target=target, outcome="refused: out of scope")
        return self.refuse(request, 403, f"Tài khoản {session.title} chỉ được thao tác cho đơn vị của mình; "
                                         f"{self.directory.name(agency)} không thuộc phạm vi này.")

    def name(self, code: str) -> str:
        return self.directory.name(code)

    async def css(self) -> Response:
        return Response(self._css, media_type="text/css", headers={"Cache-Control": "max-age=3600"})

    async def icon(self) -> Response:
        """The pages' icon, named in their head (a browser asks /favicon.ico otherwise, a 404 in its console)."""
        return Response(self._icon, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})

    # -- overview -----------------------------------------------------------------------------------
    async def overview(self, request: Request) -> Response:
        if (denied := self.need_reader(request)) is not None:
            return denied
        view = await asyncio.to_thread(self._overview)
        return self.render(request, "overview.html.j2", **view)

    def _overview(self) -> dict[str, Any]:
        today = self.today()
        tables = self.board.current_tables(today)
        district = self.directory.district_code
        codes = [district, *(a.code for a in self.directory.agencies if a.code != district)]
        rows = []
        for code in codes:
            figs = {k: t.figures.get(code) for k, t in tables.items()}
            rows.append({"code": code, "name": self.name(code), "district": code == district, **{
                k: (f.on_time_ratio if f else None) for k, f in figs.items()},
                "month_figures": figs["month"], "year_figures": figs["year"]})
        month_key = tables["month"].period.key
        trend_points = []
        for p in _last_months(today, 12):
            t = tables["month"] if p.key == month_key else self.board.table(p, today=today)
            f = t.figures.get(district)
            trend_points.append((fmt.short_month(p.key), f.on_time_ratio if f else None))
        agencies_only = [r for r in rows if not r["district"]]
        district_month = tables["month"].figures.get(district)
        return {
            "periods": {k: fmt.period_label(t.period.key) for k, t in tables.items()},
            "rows": rows,
            "shares": SHARES,
            "on_time_chart": charts.target_bars([(r["name"], r["month"]) for r in agencies_only],
                                                target=ON_TIME_TARGET,
                                                title="Tỷ lệ hồ sơ đúng hạn tháng này so với mục tiêu 98 %"),
            "trend_chart": charts.trend(trend_points, target=ON_TIME_TARGET,
                                        title="Tỷ lệ đúng hạn toàn huyện 12 tháng qua"),
            "plan_chart": charts.target_bars([(r["name"], r["year_figures"].plan_completion_ratio
                                               if r["year_figures"] else None) for r in agencies_only],
                                             target=PLAN_TARGET,
                                             title="Tỷ lệ hoàn thành nhiệm vụ kế hoạch năm so với mục tiêu 95 %"),
            "index": district_month.index if district_month else (),
            "index_total": _index_total(district_month),
        }

    # -- agency -------------------------------------------------------------------------------------
    async def agency(self, request: Request, code: str) -> Response:
        if (denied := self.need_reader(request)) is not None:
            return denied
        if not self.directory.known(code):
            return self.refuse(request, 404, "Không có đơn vị này trong danh mục.")
        view = await asyncio.to_thread(self._agency_figures, code)
        problems: list[str] = []
        dossiers = await self._peer(problems, self.peers.monitor.get("/dossiers/open", agency=code), "dossiers")
        today = self.today()
        duties = await self._peer(problems, self.peers.monitor.get(
            "/plan/occurrences", agency=code, **{"from": (today - AGENCY_SPAN).isoformat(),
                                                 "to": (today + AGENCY_SPAN).isoformat()}), "occurrences")
        alerts = await self._peer(problems, self.peers.notifier.get("/alerts", agency=code), "alerts")
        for r in duties:
            r["agency_name"] = self.name(code)
        for a in alerts:
            a["agency_name"] = self.name(code)
        return self.render(request, "agency.html.j2", code=code, agency_name=self.name(code),
                           dossiers=_as_dates(dossiers), duties=_as_dates(duties), alerts=ordered_alerts(alerts),
                           problems=problems, **view)

    async def _peer(self, problems: list[str], call: Any, key: str) -> list[dict[str, Any]]:
        try:
            body = await call
        except PeerDown as exc:
            problems.append(f"Không đọc được dữ liệu ({exc}).")
            return []
        return list(body.get(key, []))

    def _agency_figures(self, code: str) -> dict[str, Any]:
        today = self.today()
        tables = self.board.current_tables(today)
        figs = {k: t.figures.get(code) for k, t in tables.items()}
        week = self.board.field_review(Span.week_of(today), today=today)
        month = self.board.field_review(Span.parse(tables["month"].period.key), today=today)
        _, late, _ = self.board.review(code, tables["month"].period, today=today, limit=200)
        return {
            "figures": figs, "periods": {k: fmt.period_label(t.period.key) for k, t in tables.items()},
            "week_label": fmt.period_label(week.span.key), "month_label": fmt.period_label(month.span.key),
            "week_fields": [r for r in week.fields if r.agency_code == code],
            "month_fields": [r for r in month.fields if r.agency_code == code],
            "late_month": late,
        }

    # -- plan ---------------------------------------------------------------------------------------
    async def plan(self, request: Request) -> Response:
        if (denied := self.need_reader(request)) is not None:
            return denied
        q = request.query_params
        agency = q.get("agency") or None
        state = q.get("state") or None
        period = (q.get("period") or "").strip() or None
        if agency is not None and not self.directory.known(agency):
            agency = None
        problems: list[str] = []
        rows = await self._peer(problems, self.peers.monitor.get("/plan/occurrences", agency=agency), "occurrences")
        rows = [r for r in _as_dates(rows) if (state is None or r["state"] == state)
                and (period is None or period in (r["period"] or ""))]
        rows.sort(key=lambda r: (r["agency_code"], r["period"], r["due_day"], r["task_id"]))
        for r in rows:
            r["agency_name"] = self.name(r["agency_code"])
        reports = await asyncio.to_thread(self.store.audit, action="plan_report",
                                          agencies=[agency] if agency else None, limit=20)
        return self.render(request, "plan.html.j2", rows=rows, problems=problems, agency=agency, state=state,
                           period=period or "", task_states=TASK_STATES, reports=reports)

    @write
    async def plan_report(self, request: Request, session: Session, form: dict[str, str]) -> Response:
        agency, task = form.get("agency_code", ""), form.get("task_id", "")
        target = f"{form.get('plan_id', '')}/{task}/{form.get('period', '')}"
        if not session.may_act_for(agency):
            return await self.out_of_scope(request, session, action="plan_report", agency=agency, target=target)
        body = {"task_id": task, "agency_code": agency, "period": form.get("period") or None,
                "plan_id": form.get("plan_id") or None, "state": form.get("state") or "done",
                "note": (form.get("note") or "").strip() or None}
        try:
            answer = await self.peers.monitor.post("/plan/report", body)
        except PeerDown as exc:
            return self.refuse(request, 503, f"Chưa gửi được báo cáo: {exc}.")
        if not answer.ok:
            await self.audit(session, action="plan_report", agency=agency, target=target,
                             outcome=f"refused: {answer.detail}")
            return self.refuse(request, 422, f"Báo cáo không được chấp nhận: {fmt.report_refusal(answer.detail)}.")
        await self.audit(session, action="plan_report", agency=agency, target=target,
                         outcome=f"ok: {answer.body.get('event_id', '')}")
        return RedirectResponse(f"{PREFIX}/ke-hoach?{urlencode({'agency': agency, 'ok': 'report'})}",
                                status_code=303)

    # -- alerts and silences --------------------------------------------------------------------------
    async def alerts(self, request: Request) -> Response:
        if (denied := self.need_reader(request)) is not None:
            return denied
        agency = request.query_params.get("agency") or None
        if agency is not None and not self.directory.known(agency):
            agency = None
        problems: list[str] = []
        alerts = ordered_alerts(await self._peer(problems, self.peers.notifier.get("/alerts", agency=agency), "alerts"))
        silences = await self._peer(problems, self.peers.notifier.get("/silences"), "silences")
        creators = {e.target: e for e in await asyncio.to_thread(self.store.audit, action="silence_add", limit=500)}
        for s in silences:
            s["ends_at"] = dt.datetime.fromisoformat(s["ends_at"])
            s["by"] = creators.get(s["id"])
        for a in alerts:
            a["agency_name"] = self.name(a["agency_code"]) if self.directory.known(a["agency_code"]) else ""
        return self.render(request, "alerts.html.j2", alerts=alerts, silences=silences, problems=problems,
                           agency=agency, kinds=fmt.KIND_TEXT)

    @write
    async def ack(self, request: Request, session: Session, form: dict[str, str]) -> Response:
        key = form.get("alert_key", "")
        try:
            firing = (await self.peers.notifier.get("/alerts")).get("alerts", [])
        except PeerDown as exc:
            return self.refuse(request, 503, f"Chưa xác nhận được: {exc}.")
        alert = next((a for a in firing if a["alert_key"] == key), None)
        if alert is None:
            return self.refuse(request, 409, "Cảnh báo này đã kết thúc hoặc không tồn tại.")
        agency = alert["agency_code"]
        if not session.may_act_for(agency):
            return await self.out_of_scope(request, session, action="ack", agency=agency, target=key)
        try:
            answer = await self.peers.notifier.post(f"/alerts/{quote(key, safe='')}/ack",
                                                    {"official": session.official, "kind": form.get("kind", ""),
                                                     "note": (form.get("note") or "")[:500]})
        except PeerDown as exc:
            return self.refuse(request, 503, f"Chưa xác nhận được: {exc}.")
        if not answer.ok:
            await self.audit(session, action="ack", agency=agency, target=key, outcome=f"refused: {answer.detail}")
            return self.refuse(request, answer.status if answer.status in (403, 409, 422) else 422,
                               f"Không xác nhận được: {answer.detail}")
        await self.audit(session, action="ack", agency=agency, target=key, outcome="ok")
        return RedirectResponse(f"{PREFIX}/canh-bao?ok=ack", status_code=303)

    @write
    async def add_silence(self, request: Request, session: Session, form: dict[str, str]) -> Response:
        agency = form.get("agency", "")
        if not self.directory.known(agency):
            return self.refuse(request, 422, "Chọn một đơn vị trong danh mục.")
        if not session.may_act_for(agency):
            return await self.out_of_scope(request, session, action="silence_add", agency=agency, target="-")
        try:
            hours = float(form.get("hours") or "0")
        except ValueError:
            hours = 0.0
        body = {"agencies": [agency], "kinds": [form["kind"]] if form.get("kind") else [], "hours": hours,
                "comment": (form.get("comment") or "").strip()}
        try:
            answer = await self.peers.notifier.post("/silences", body) if 0 < hours <= 24 * 90 else None
        except PeerDown as exc:
            return self.refuse(request, 503, f"Chưa tạo được lệnh tạm dừng: {exc}.")
        if answer is None or not answer.ok:
            detail = answer.detail if answer is not None else "thời hạn từ 1 giờ đến 90 ngày"
            return self.refuse(request, 422, f"Không tạo được lệnh tạm dừng: {detail}")
        await self.audit(session, action="silence_add", agency=agency, target=str(answer.body["id"]), outcome="ok")
        return RedirectResponse(f"{PREFIX}/canh-bao?ok=silence", status_code=303)

    @write
    async def expire_silence(self, request: Request, session: Session, form: dict[str, str]) -> Response:
        sid = form.get("silence_id", "")
        try:
            silences = (await self.peers.notifier.get("/silences")).get("silences", [])
        except PeerDown as exc:
            return self.refuse(request, 503, f"Chưa kết thúc được: {exc}.")
        silence = next((s for s in silences if s["id"] == sid), None)
        if silence is None:
            return self.refuse(request, 404, "Không có lệnh tạm dừng này (hoặc đã kết thúc).")
        agencies = silence["matchers"].get("agencies", [])
        if not session.wide and (not agencies or not all(session.may_act_for(a) for a in agencies)):
            return await self.out_of_scope(request, session, action="silence_expire",
                                           agency=agencies[0] if agencies else "*", target=sid)
        try:
            answer = await self.peers.notifier.post(f"/silences/{quote(sid, safe='')}/expire", {})
        except PeerDown as exc:
            return self.refuse(request, 503, f"Chưa kết thúc được: {exc}.")
        if not answer.ok:
            return self.refuse(request, 422, f"Không kết thúc được: {answer.detail}")
        await self.audit(session, action="silence_expire", agency=agencies[0] if agencies else "*", target=sid,
                         outcome="ok")
        return RedirectResponse(f"{PREFIX}/canh-bao?ok=expire", status_code=303)

    # -- monthly report -----------------------------------------------------------------------------
    async def report(self, request: Request) -> Response:
        if (denied := self.need_reader(request)) is not None:
            return denied
        today = self.today()
        text = request.query_params.get("period")
        try:
            period = Period.parse(text) if text else Period.containing(today, "month")
            table = await asyncio.to_thread(self.board.table, period, today=today)
        except (ValueError, PeriodNotStarted) as exc:
            return self.refuse(request, 422, f"Kỳ báo cáo không hợp lệ: {exc}")
        rows = report_rows(table, self.directory)
        return self.render(request, "report.html.j2", period=period.key, period_text=fmt.period_label(period.key),
                           columns=COLUMNS, rows=rows, current=table.current, as_of=table.as_of,
                           months=[p.key for p in _last_months(today, 12)][::-1])

    # -- sign in and out ------------------------------------------------------------------------------
    async def signin_page(self, request: Request) -> Response:
        return self.render(request, "signin.html.j2", error=None, official="",
                           next=_safe_next(request.query_params.get("next")))

    async def signin(self, request: Request) -> Response:
        form = await self.form(request)
        official = (form.get("official") or "").strip()[:64]
        password = form.get("password") or ""
        nxt = _safe_next(form.get("next"))
        who = None
        if official:
            try:
                answer = await self.peers.notifier.call("GET", f"/officials/{quote(official, safe='')}")
            except PeerDown as exc:
                return self.render(request, "signin.html.j2", status=503, error=f"Chưa đăng nhập được: {exc}.",
                                   official=official, next=nxt)
            who = answer.body if answer.ok else None
        stored = await asyncio.to_thread(self.store.password_hash, official) if who else None
        # The same Argon2 work whoever is named: the answer's time says neither whether the id is an official's
        # nor whether that official has a password.
        if not await asyncio.to_thread(verify_password, stored, password) or who is None:
            return self.render(request, "signin.html.j2", status=401, official=official, next=nxt,
                               error="Tên đăng nhập hoặc mật khẩu không đúng.")
        assert stored is not None
        cookie, session = self.sessions.issue(official=who["id"], title=who["title"], agency=who["agency_code"],
                                              scope=who["scope"], fingerprint=fingerprint(stored))
        await self.audit(session, action="signin", agency=session.agency, target="-", outcome="ok")
        response = RedirectResponse(nxt, status_code=303)
        response.set_cookie(COOKIE, cookie, max_age=self.sessions.max_age, httponly=True, samesite="lax",
                            secure=self._secure(request), path="/")
        return response

    async def signout(self, request: Request) -> Response:
        """The session's cookie goes. Only its CSRF token is asked (no other site signs an official out): not the
        directory nor the password, so a notifier that does not answer or a password removed never keeps a cookie."""
        form = await self.form(request)
        session = self.session(request)
        if session is not None and not csrf_ok(session, form.get("csrf")):
            return self.refuse(request, 403, "Yêu cầu không hợp lệ (thiếu hoặc sai mã chống giả mạo CSRF). "
                                             "Hãy tải lại trang rồi thử lại.")
        response = RedirectResponse(f"{PREFIX}/?ok=signout", status_code=303)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="lax", secure=self._secure(request))
        return response

    def _secure(self, request: Request) -> bool:
        return self.secure_cookies if self.secure_cookies is not None else request.url.scheme == "https"


async def read_form(request: Request, *, limit: int = FORM_MAX) -> dict[str, str]:
    """A form POST's fields (the first value of each), or none when its body is over ``limit`` bytes: known from
    ``Content-Length`` or while reading, never read whole (sign-in is open to anyone who reaches the page)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return {}
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return {}
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in parsed.items()}


def _last_months(today: dt.date, n: int) -> list[Period]:
    """The running month and the ``n - 1`` before it, oldest first."""
    out = []
    year, month = today.year, today.month
    for _ in range(n):
        out.append(Period.parse(f"{year:04d}-{month:02d}"))
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return out[::-1]


def _index_total(figures: Any) -> tuple[float | None, float]:
    if figures is None:
        return None, 0.0
    computed = [p for p in figures.index if p.points is not None]
    return (sum(p.points for p in computed) if computed else None), sum(p.max_points for p in computed)


def _as_dates(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for r in rows:
        for k in ("due_day", "opens_on", "done_on"):
            if r.get(k):
                r[k] = dt.date.fromisoformat(r[k])
    return rows


SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}


def ordered_alerts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The notifier's alerts (JSON) with their times read, in the order the page lists them."""
    for a in rows:
        a["starts_at"] = dt.datetime.fromisoformat(a["starts_at"])
        if a.get("acknowledged"):
            a["acknowledged"]["at"] = dt.datetime.fromisoformat(a["acknowledged"]["at"])
    # What nobody answers for yet first, the most severe first, the oldest first.
    rows.sort(key=lambda a: (a["acknowledged"] is not None, -SEVERITY_RANK.get(a["severity"], 0), a["starts_at"]))
    return rows


def _safe_next(value: str | None) -> str:
    """Where to go after signing in: a path of this page only (never another site)."""
    if value and value.startswith(f"{PREFIX}/") and not value.startswith("//") and "\\" not in value:
        return value
    return f"{PREFIX}/"
