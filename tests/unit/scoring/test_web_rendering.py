"""The officials' page's pure rendering: Vietnamese numbers and dates, SVG charts, who may act for whom."""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.scoring.web import charts, fmt
from services.scoring.web.auth import Session, Sessions, csrf_ok, hash_password, verify_password

# -- numbers, percentages, dates ------------------------------------------------------------------------

@pytest.mark.parametrize(("ratio", "text"), [
    (0.975, "97,5 %"), (1.0, "100,0 %"), (0.0, "0,0 %"), (0.98, "98,0 %"), (0.12345, "12,3 %"),
])
def test_a_ratio_is_written_as_a_vietnamese_percentage(ratio: float, text: str) -> None:
    assert fmt.pct(ratio) == text


def test_a_missing_value_is_absent_never_zero() -> None:
    assert fmt.pct(None) == fmt.ABSENT
    assert fmt.points(None) == fmt.ABSENT
    assert fmt.vn_date(None) == fmt.ABSENT
    assert fmt.pct(0.0) != fmt.ABSENT


def test_thousands_take_a_dot_and_decimals_a_comma() -> None:
    assert fmt.number(1234567) == "1.234.567"
    assert fmt.number(1234.5, digits=1) == "1.234,5"


def test_dates_periods_and_weekdays_in_vietnamese() -> None:
    assert fmt.vn_date(dt.date(2026, 12, 2)) == "02/12/2026"
    assert fmt.vn_long_date(dt.date(2026, 12, 2)) == "Thứ Tư, ngày 02/12/2026"
    assert fmt.vn_long_date(dt.date(2026, 12, 6)) == "Chủ nhật, ngày 06/12/2026"
    assert fmt.period_label("2026-11") == "Tháng 11/2026"
    assert fmt.period_label("2026-Q4") == "Quý IV/2026"
    assert fmt.period_label("2026") == "Năm 2026"
    assert fmt.period_label("2026-W49") == "Tuần 49/2026"
    assert fmt.short_month("2026-01") == "T1/26"


def test_a_time_is_shown_in_the_business_time_zone() -> None:
    from shared.calendar import VN_TZ

    moment = dt.datetime(2026, 12, 2, 1, 15, tzinfo=dt.UTC)
    assert fmt.vn_time(moment, tz=VN_TZ) == "08:15 02/12/2026"


def test_days_late_and_the_target_class() -> None:
    today = dt.date(2026, 12, 10)
    assert fmt.days_late(dt.date(2026, 12, 7), today) == 3
    assert fmt.days_late(dt.date(2026, 12, 11), today) == 0
    assert fmt.days_late(None, today) is None
    assert fmt.meets(0.98, 0.98) == "ok"
    assert fmt.meets(0.979, 0.98) == "below"
    assert fmt.meets(None, 0.98) == "absent"


@given(st.floats(min_value=0, max_value=1, allow_nan=False))
def test_every_percentage_reads_back_to_its_ratio(ratio: float) -> None:
    text = fmt.pct(ratio, digits=1)
    assert re.fullmatch(r"\d{1,3},\d %", text)
    assert abs(float(text[:-2].replace(",", ".")) / 100 - ratio) <= 0.0005 + 1e-12


def test_a_refused_report_is_explained_in_vietnamese() -> None:
    assert fmt.report_refusal("--agency: PNV does not own task W.monthly") == \
        "đơn vị này không phải là đơn vị chủ trì nhiệm vụ"
    assert fmt.report_refusal("--period: task W has no occurrence 1999-01").startswith("kỳ báo cáo")
    assert fmt.report_refusal("TASK: no loaded plan has a task 'X'").startswith("không có nhiệm vụ")
    assert fmt.report_refusal("something new") == "báo cáo không hợp lệ"


# -- charts ---------------------------------------------------------------------------------------------

def _svg(text: str) -> ET.Element:
    return ET.fromstring(text)


def test_bars_draw_one_bar_per_value_and_none_for_an_absent_one() -> None:
    svg = _svg(charts.target_bars([("Phòng Tư pháp", 0.99), ("Xã Vĩnh Tân", 0.9), ("Xã Chí Công", None)],
                                  target=0.98, title="Đúng hạn"))
    bars = svg.findall(".//rect[@class]")
    drawn = [b for b in bars if b.get("class", "").startswith("bar")]
    assert [b.get("class") for b in drawn] == ["bar ok", "bar below"]
    texts = ["".join(t.itertext()) for t in svg.findall("text")]
    assert "Xã Chí Công" in texts and fmt.ABSENT in texts
    assert "99,0 %" in texts and "90,0 %" in texts


def test_a_bar_is_as_long_as_its_ratio_and_the_target_line_sits_at_the_target() -> None:
    svg = _svg(charts.target_bars([("A", 0.5), ("B", 1.0)], target=0.98, title="t", width=640))
    drawn = [b for b in svg.findall(".//rect") if b.get("class", "").startswith("bar")]
    tracks = [b for b in svg.findall(".//rect") if b.get("class") == "track"]
    full = float(tracks[0].get("width"))
    assert float(drawn[0].get("width")) == pytest.approx(full * 0.5, abs=0.1)
    assert float(drawn[1].get("width")) == pytest.approx(full, abs=0.1)
    line = svg.find("line[@class='target']")
    left = float(tracks[0].get("x"))
    assert float(line.get("x1")) == pytest.approx(left + full * 0.98, abs=0.1)


def test_labels_are_escaped() -> None:
    text = charts.target_bars([("<script>alert(1)</script>", 0.5)], target=0.98, title="a & b")
    assert "<script>" not in text
    _svg(text)  # still well-formed


def test_the_trend_breaks_its_line_at_a_missing_month() -> None:
    points = [("T1", 0.99), ("T2", 0.97), ("T3", None), ("T4", 0.95), ("T5", 0.96)]
    svg = _svg(charts.trend(points, target=0.98, title="xu hướng"))
    lines = svg.findall("polyline")
    assert sorted(len(p.get("points").split()) for p in lines) == [2, 2]
    circles = svg.findall("circle")
    assert len(circles) == 4
    assert [c.get("class") for c in circles] == ["point ok", "point below", "point below", "point below"]


def test_the_trend_puts_a_higher_ratio_higher() -> None:
    svg = _svg(charts.trend([("a", 0.6), ("b", 0.9)], target=0.98, title="t"))
    low, high = (float(c.get("cy")) for c in svg.findall("circle"))
    assert high < low


def test_the_trend_axis_reaches_down_to_the_lowest_value_instead_of_clipping_it() -> None:
    svg = _svg(charts.trend([("a", 0.0), ("b", 0.9)], target=0.98, title="t"))
    axis = ["".join(t.itertext()) for t in svg.findall("text[@class='axis']")]
    assert "0 %" in axis
    low, high = (float(c.get("cy")) for c in svg.findall("circle"))
    bottom = max(float(g.get("y1")) for g in svg.findall("line[@class='grid']"))
    assert low == pytest.approx(bottom) and high < low
    default = _svg(charts.trend([("a", 0.97), ("b", 0.99)], target=0.98, title="t"))
    assert "50 %" in ["".join(t.itertext()) for t in default.findall("text[@class='axis']")]


def test_a_chart_names_no_outside_address() -> None:
    text = charts.target_bars([("A", 0.5)], target=0.98, title="t") + charts.trend([("a", 0.5)], target=0.98,
                                                                                  title="t")
    assert "http" not in text


# -- sessions, CSRF, scope, passwords -------------------------------------------------------------------

def test_a_session_cookie_reads_back_and_a_forged_one_does_not() -> None:
    sessions = Sessions(b"k" * 32, max_age_seconds=3600)
    cookie, session = sessions.issue(official="ptp-truongphong", title="Trưởng phòng", agency="PTP",
                                     scope=["PTP"], fingerprint="f")
    assert sessions.read(cookie) == session
    assert sessions.read(cookie[:-2] + ("A" if cookie[-2] != "A" else "B") + cookie[-1]) is None
    assert Sessions(b"x" * 32, max_age_seconds=3600).read(cookie) is None
    assert sessions.read(None) is None


def test_an_old_session_no_longer_holds() -> None:
    cookie, _ = Sessions(b"k" * 32, max_age_seconds=3600).issue(official="a", title="t", agency="PTP",
                                                                scope=["PTP"], fingerprint="f")
    assert Sessions(b"k" * 32, max_age_seconds=-1).read(cookie) is None


def test_csrf_needs_the_sessions_own_token() -> None:
    s = Session(official="a", title="t", agency="PTP", scope=("PTP",), csrf="abc", fingerprint="f")
    assert csrf_ok(s, "abc")
    assert not csrf_ok(s, "abd")
    assert not csrf_ok(s, "")
    assert not csrf_ok(s, None)
    assert not csrf_ok(None, "abc")


def test_scope_is_the_own_agency_unless_wider() -> None:
    own = Session(official="a", title="t", agency="PTP", scope=("PTP",), csrf="c", fingerprint="f")
    wide = Session(official="b", title="t", agency="TUY_PHONG", scope=("*",), csrf="c", fingerprint="f")
    assert own.may_act_for("PTP") and not own.may_act_for("XA_VINH_TAN")
    assert wide.may_act_for("XA_VINH_TAN") and wide.wide and not own.wide


def test_a_password_is_kept_as_an_argon2_hash() -> None:
    hashed = hash_password("một mật khẩu dài")
    assert hashed.startswith("$argon2id$") and "một" not in hashed
    assert verify_password(hashed, "một mật khẩu dài")
    assert not verify_password(hashed, "một mật khẩu khác")
    assert not verify_password(None, "một mật khẩu dài")
    with pytest.raises(ValueError):
        hash_password("ngắn")


def test_the_alerts_page_lists_what_nobody_answers_for_first_the_most_severe_first() -> None:
    from services.scoring.web.pages import ordered_alerts

    def alert(key: str, severity: str, starts: str, acked: bool = False) -> dict:  # type: ignore[type-arg]
        ack = {"official": "ptp-desk", "kind": "handling", "at": "2026-12-02T09:00:00+07:00"} if acked else None
        return {"alert_key": key, "severity": severity, "starts_at": starts, "acknowledged": ack}

    rows = ordered_alerts([
        alert("warn-old", "warning", "2026-12-01T08:00:00+07:00"),
        alert("crit-acked", "critical", "2026-11-30T08:00:00+07:00", acked=True),
        alert("crit-new", "critical", "2026-12-02T08:00:00+07:00"),
        alert("info", "info", "2026-11-01T08:00:00+07:00"),
        alert("crit-old", "critical", "2026-12-01T08:00:00+07:00"),
    ])
    assert [r["alert_key"] for r in rows] == ["crit-old", "crit-new", "warn-old", "info", "crit-acked"]


async def _read_form_of(chunks: list[bytes], headers: list[tuple[bytes, bytes]] | None = None) -> tuple[dict, int]:
    """The fields read_form gives for a body sent in ``chunks``, and how many chunks it took to decide."""
    from starlette.requests import Request

    from services.scoring.web.pages import read_form

    taken = 0

    async def receive() -> dict:
        nonlocal taken
        taken += 1
        if taken > len(chunks):
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": chunks[taken - 1], "more_body": taken < len(chunks)}

    scope = {"type": "http", "method": "POST", "path": "/web/dang-nhap", "headers": headers or [], "query_string": b""}
    return await read_form(Request(scope, receive)), taken


async def test_a_form_is_read_and_an_oversized_one_is_not_read_whole() -> None:
    from services.scoring.web.pages import FORM_MAX

    fields, _ = await _read_form_of([b"official=ptp&password=", b"x%20y&csrf=t"])
    assert fields == {"official": "ptp", "password": "x y", "csrf": "t"}
    # A sign-in POST of a thousand chunks over the limit: reading stops once the limit is passed.
    chunk = b"a" * 4096
    fields, taken = await _read_form_of([chunk] * 1000)
    assert fields == {} and taken <= FORM_MAX // len(chunk) + 1
    # A declared length over the limit: nothing read at all.
    fields, taken = await _read_form_of([chunk] * 1000, headers=[(b"content-length", str(4096 * 1000).encode())])
    assert fields == {} and taken == 0


class _NotifierAway:
    """The notifier as the page's back end sees it: it knows the official and the alert, then stops answering."""

    def __init__(self) -> None:
        from services.scoring.web.peers import PeerAnswer

        self.official = PeerAnswer(200, {"id": "ptp-lead", "title": "Trưởng phòng", "agency_code": "PTP",
                                         "scope": ["PTP"]})

    async def call(self, method: str, path: str, **_: object):
        return self.official

    async def get(self, path: str, **_: object) -> dict:
        if path == "/alerts":
            return {"alerts": [{"alert_key": "k1", "agency_code": "PTP"}]}
        return {"silences": [{"id": "s1", "matchers": {"agencies": ["PTP"]}}]}

    async def post(self, path: str, body: dict):
        from services.scoring.web.peers import PeerDown

        raise PeerDown("notifier did not answer (ConnectError)")


class _Store:
    def password_hash(self, official: str) -> str:
        return "stored-hash"

    def record(self, entry: object) -> None:
        pass


@pytest.mark.parametrize(("path", "form"), [
    ("/web/canh-bao/xac-nhan", {"alert_key": "k1", "kind": "handling"}),
    ("/web/tam-dung", {"agency": "PTP", "hours": "2", "comment": "bảo trì"}),
    ("/web/tam-dung/ket-thuc", {"silence_id": "s1"}),
])
def test_a_write_the_notifier_does_not_answer_is_refused_with_503_not_an_error(path: str, form: dict) -> None:
    import datetime as dt

    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from services.scoring.board import load_directory
    from services.scoring.web.auth import COOKIE, Sessions, fingerprint
    from services.scoring.web.pages import WebPages
    from services.scoring.web.peers import Peers

    sessions = Sessions(b"k" * 32, max_age_seconds=3600)
    pages = WebPages(board=None, directory=load_directory(), store=_Store(), sessions=sessions,  # type: ignore[arg-type]
                     clock=lambda: dt.datetime(2026, 11, 25, 2, tzinfo=dt.UTC),
                     peers=Peers(notifier=_NotifierAway(), monitor=_NotifierAway()))  # type: ignore[arg-type]
    app = FastAPI()
    app.include_router(pages.router())
    cookie, session = sessions.issue(official="ptp-lead", title="Trưởng phòng", agency="PTP", scope=["PTP"],
                                     fingerprint=fingerprint("stored-hash"))
    client = TestClient(app, cookies={COOKIE: cookie})
    answer = client.post(path, data={**form, "csrf": session.csrf}, follow_redirects=False)
    assert answer.status_code == 503 and "notifier did not answer" in answer.text


def test_signing_in_as_nobody_costs_the_same_hash_as_a_wrong_password(monkeypatch: pytest.MonkeyPatch) -> None:
    import datetime as dt

    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from services.scoring.board import load_directory
    from services.scoring.web import pages as pages_module
    from services.scoring.web.auth import Sessions
    from services.scoring.web.pages import WebPages
    from services.scoring.web.peers import PeerAnswer, Peers

    class Notifier(_NotifierAway):
        async def call(self, method: str, path: str, **_: object):
            return self.official if path == "/officials/ptp-lead" else PeerAnswer(404, {"detail": "no such official"})

    hashed: list[str | None] = []
    monkeypatch.setattr(pages_module, "verify_password", lambda stored, password: hashed.append(stored) or False)
    pages = WebPages(board=None, directory=load_directory(), store=_Store(),  # type: ignore[arg-type]
                     sessions=Sessions(b"k" * 32, max_age_seconds=3600),
                     clock=lambda: dt.datetime(2026, 11, 25, 2, tzinfo=dt.UTC),
                     peers=Peers(notifier=Notifier(), monitor=Notifier()))  # type: ignore[arg-type]
    app = FastAPI()
    app.include_router(pages.router())
    client = TestClient(app)
    for official in ("ptp-lead", "nobody-here"):
        answer = client.post("/web/dang-nhap", data={"official": official, "password": "wrong password"})
        assert answer.status_code == 401
    assert hashed == ["stored-hash", None]  # one hash each: verify_password hashes anyway without a stored hash


# -- pages rendered through the router, peers faked ----------------------------------------------------

class _Notifier(_NotifierAway):
    """The notifier answering: one firing alert and one silence of Phòng Tư pháp."""

    async def get(self, path: str, **_: object) -> dict:
        if path == "/alerts":
            return {"alerts": [{"alert_key": "k1", "agency_code": "PTP", "kind": "dossier_overdue", "ref": "D1",
                                "severity": "critical", "summary": "Hồ sơ D1 quá hạn",
                                "starts_at": "2026-11-20T08:00:00+07:00", "acknowledged": None}]}
        if path == "/silences":
            return {"silences": [{"id": "s1", "matchers": {"agencies": ["PTP"]}, "comment": "Họp giao ban",
                                  "ends_at": "2026-11-26T08:00:00+07:00"}]}
        return {}


class _AuditStore(_Store):
    def audit(self, **_: object) -> list:
        return []


_SESSIONS = Sessions(b"k" * 32, max_age_seconds=3600)


def _pages_app():
    """The pages' routes in an app of their own, with a fake notifier and store."""
    from fastapi import FastAPI

    from services.scoring.board import load_directory
    from services.scoring.web.pages import WebPages
    from services.scoring.web.peers import Peers

    pages = WebPages(board=None, directory=load_directory(), store=_AuditStore(), sessions=_SESSIONS,  # type: ignore[arg-type]
                     clock=lambda: dt.datetime(2026, 11, 25, 2, tzinfo=dt.UTC),
                     peers=Peers(notifier=_Notifier(), monitor=_Notifier()))  # type: ignore[arg-type]
    app = FastAPI()
    app.include_router(pages.router())
    return app


def _signed_in_client(**client: object):
    """A TestClient of :func:`_pages_app` with a signed-in Phòng Tư pháp official's cookie; ``client`` goes to
    TestClient (base_url, client address)."""
    from fastapi.testclient import TestClient

    from services.scoring.web.auth import COOKIE, fingerprint

    cookie, _ = _SESSIONS.issue(official="ptp-lead", title="Trưởng phòng", agency="PTP", scope=["PTP"],
                                fingerprint=fingerprint("stored-hash"))
    return TestClient(_pages_app(), cookies={COOKIE: cookie}, **client)  # type: ignore[arg-type]


def test_every_column_of_the_alerts_page_has_a_name_a_screen_reader_reads() -> None:
    from html.parser import HTMLParser

    class Headers(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.names: list[str] = []
            self._in: bool = False

        def handle_starttag(self, tag: str, attrs: list) -> None:
            if tag == "th":
                self._in = True
                self.names.append("")

        def handle_endtag(self, tag: str) -> None:
            if tag == "th":
                self._in = False

        def handle_data(self, data: str) -> None:
            if self._in:
                self.names[-1] += data.strip()

    answer = _signed_in_client().get("/web/canh-bao")
    assert answer.status_code == 200 and 'data-silence="s1"' in answer.text
    parser = Headers()
    parser.feed(answer.text)
    assert parser.names and all(parser.names), parser.names
    assert '<span class="visually-hidden">Thao tác</span>' in answer.text  # the silences' action column


def test_the_trends_month_labels_stay_inside_the_chart() -> None:
    """Each x label's extent, at 0.6 em a character of the 11 px axis font, lies within the viewBox (the last,
    'T12/26', was centred 10 px from the edge and cut)."""
    points = [(fmt.short_month(f"2026-{m:02d}"), 0.97) for m in range(1, 13)]
    svg = _svg(charts.trend(points, target=0.98, title="t", width=640))
    width = float(svg.get("viewBox").split()[2])
    labels = [t for t in svg.findall("text[@class='axis']") if t.text in {p for p, _ in points}]
    assert [t.text for t in labels] == [p for p, _ in points]
    for t in labels:
        x, size = float(t.get("x")), len(t.text) * 11 * 0.6
        start = {"start": x, "middle": x - size / 2, "end": x - size}[t.get("text-anchor", "start")]
        assert 0 <= start and start + size <= width, (t.text, start, start + size, width)


@pytest.mark.parametrize(("how", "secure"), [
    ("http", False), ("https", True), ("http behind a proxy on this machine saying https", True),
    ("http behind a proxy elsewhere saying https", False),
])
def test_the_session_cookie_is_httponly_samesite_lax_and_secure_over_tls(
        how: str, secure: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over TLS is the request's scheme: https itself, or X-Forwarded-Proto from a proxy uvicorn trusts (the stack
    serves with uvicorn's defaults: proxy headers read from 127.0.0.1 only)."""
    from fastapi.testclient import TestClient
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    from services.scoring.web import pages as pages_module
    from services.scoring.web.auth import COOKIE

    monkeypatch.setattr(pages_module, "verify_password", lambda stored, password: stored == "stored-hash")
    app, headers, peer = _pages_app(), {}, ("testclient", 50000)
    if "proxy" in how:
        app = ProxyHeadersMiddleware(app, trusted_hosts="127.0.0.1")
        headers = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "192.0.2.7"}
        peer = ("127.0.0.1" if "this machine" in how else "192.0.2.9", 50000)
    client = TestClient(app, base_url=f"{how.split()[0]}://testserver", client=peer)
    answer = client.post("/web/dang-nhap", data={"official": "ptp-lead", "password": "một mật khẩu dài"},
                         headers=headers, follow_redirects=False)
    assert answer.status_code == 303
    cookie = answer.headers["set-cookie"]
    flags = {f.strip().split("=")[0].lower(): f.strip() for f in cookie.split(";")[1:]}
    assert cookie.startswith(f"{COOKIE}=")
    assert "httponly" in flags and flags["samesite"].lower() == "samesite=lax"
    assert ("secure" in flags) is secure, cookie


def test_every_page_names_the_pages_own_icon_and_it_is_served() -> None:
    """Without an icon named in the head the browser asks /favicon.ico: a 404 in its console."""
    client = _signed_in_client()
    assert '<link rel="icon" href="/web/favicon.svg" type="image/svg+xml">' in client.get("/web/canh-bao").text
    icon = client.get("/web/favicon.svg")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"
    _svg(icon.text)  # well-formed
