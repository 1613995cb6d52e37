"""The officials' web page in a real browser (Debian's chromium driven by Playwright) against the whole stack as
`make run` starts it, with dossiers, a rating, plan duties and alerts in it.

Skipped, saying why, when Playwright or /usr/bin/chromium is missing (.ci/run installs chromium). With
``PARWATCH_WEB_SCREENSHOTS=DIR`` the overview and an agency page are saved there (README's screenshots).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from parwatch.testing import Ready, Stack
from services.scoring.web import fmt
from services.scoring.web.auth import COOKIE
from services.scoring.web.pages import PREFIX, SHARES
from shared.calendar import VN_TZ
from shared.testing import dossier_event, jetstream, publish_event

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

CHROMIUM = Path("/usr/bin/chromium")
AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"  # shipped with the tests: vendor/axe-core/README.md
AXE_TAGS = ["wcag2a", "wcag2aa", "best-practice"]
PARWATCH = Path(sys.executable).parent / "parwatch"
OFFICIAL, PASSWORD = "tuphap-lanhdao", "mật khẩu thử nghiệm 146"  # Phòng Tư pháp's head (directory example)
OTHER = "XA_VINH_TAN"
WAIT = 60.0
#: The notifier of this stack reminds of a still-firing dossier alert every REPEAT seconds (the example directory's
#: route says a day) and sends at any hour (quiet hours would hold a reminder until the next working morning), so
#: a test sees reminders come.
REPEAT = 4

try:
    from playwright.sync_api import Browser, Page, sync_playwright
except ImportError:  # pragma: no cover - the skip below says it
    sync_playwright = None  # type: ignore[assignment]


def _poll(check: Callable[[], Any], *, what: str, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not seen within {timeout}s: {what}")
        time.sleep(0.3)


class Site:
    def __init__(self, stack: Stack, ready: Ready, codes: dict[str, str]) -> None:
        self.stack = stack
        self.scoring = ready.services["scoring"].metrics.removesuffix("/metrics")
        self.notifier = ready.services["notifier"].metrics.removesuffix("/metrics")
        self.monitor = ready.services["deadline_monitor"].metrics.removesuffix("/metrics")
        self.web = f"{self.scoring}/web"
        self.nats_url = ready.nats_url
        self.codes = codes

    def json(self, url: str, **params: Any) -> Any:
        r = httpx.get(url, params=params, timeout=10)
        r.raise_for_status()
        return r.json()

    def plan_tasks(self, agency: str) -> dict[str, float]:
        """deadline_monitor's ``parwatch_plan_tasks{agency}`` by state, scraped from its /metrics."""
        r = httpx.get(f"{self.monitor}/metrics", timeout=10)
        r.raise_for_status()
        family = next(f for f in text_string_to_metric_families(r.text) if f.name == "parwatch_plan_tasks")
        return {s.labels["state"]: s.value for s in family.samples if s.labels["agency"] == agency}

    def alerts(self, agency: str) -> list[dict[str, Any]]:
        return self.json(f"{self.notifier}/alerts", agency=agency)["alerts"]

    def alert_of(self, agency: str, ref: str) -> dict[str, Any] | None:
        return next((a for a in self.alerts(agency) if a["kind"] == "dossier_overdue" and a["ref"] == ref), None)


def _events(now: dt.datetime) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Phòng Tư pháp: one dossier ended on time (rated), one ended late today, one overdue, one due today;
    Xã Vĩnh Tân: one overdue."""
    run = uuid.uuid4().hex[:6].upper()
    codes = {k: f"WEB-{run}-{k}" for k in ("ONTIME", "LATE", "OVERDUE", "SOON", "OTHER")}
    at = lambda delta: (now - delta).isoformat()
    one_day = {"statutory_duration": {"value": 1, "unit": "working_days"}}
    events = [
        dossier_event(codes["ONTIME"], 2, at(dt.timedelta(days=2)), seq=1, agency="PTP",
                      statutory_duration={"value": 15, "unit": "working_days"}, channel=2),
        dossier_event(codes["ONTIME"], 10, at(dt.timedelta(hours=1)), seq=2, agency="PTP"),
        dossier_event(codes["LATE"], 2, at(dt.timedelta(days=30)), seq=1, agency="PTP", channel=1, **one_day),
        dossier_event(codes["LATE"], 10, at(dt.timedelta(minutes=30)), seq=2, agency="PTP"),
        dossier_event(codes["OVERDUE"], 2, at(dt.timedelta(days=20)), seq=1, agency="PTP", **one_day),
        dossier_event(codes["SOON"], 2, at(dt.timedelta(minutes=5)), seq=1, agency="PTP",
                      due_at=now.replace(hour=23, minute=0, second=0, microsecond=0).isoformat()),
        dossier_event(codes["OTHER"], 2, at(dt.timedelta(days=20)), seq=1, agency=OTHER, **one_day),
    ]
    rating = {"specversion": "1.0", "id": str(uuid.uuid4()), "source": "e2e/kiosk", "type": "vn.tthc.rating.submitted",
              "time": now.isoformat(), "subject": codes["ONTIME"],
              "data": {"dossier_code": codes["ONTIME"], "agency_code": "PTP", "rated_at": now.isoformat(),
                       "overall": "satisfied"}}
    return [*events, rating], codes


async def _publish(url: str, events: list[dict[str, Any]]) -> None:
    async with jetstream(url) as js:
        for e in events:
            subject = "tthc.rating.events" if e["type"].startswith("vn.tthc.rating") else "tthc.dossier.events"
            await publish_event(js, subject, e)


def _directory(folder: Path) -> Path:
    """The shipped example directory, its dossiers' route reminding every REPEAT seconds instead of every day."""
    text = (Path(__file__).parents[2] / "services" / "notifier" / "directory.example.yaml").read_text("utf-8")
    route = "    receivers: [officer]\n    repeat_interval: 1d\n"
    assert text.count(route) == 1, "the example's dossiers route changed: change this copy too"
    path = folder / "directory.yaml"
    path.write_text(text.replace(route, f"    receivers: [officer]\n    repeat_interval: {REPEAT}s\n"), "utf-8")
    return path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    if sync_playwright is None:
        pytest.skip("Playwright for Python is not installed (pip install -e '.[test]')")
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium (apt-get install chromium)")
    from parwatch.demo import current_plan_copy

    tmp = tmp_path_factory.mktemp("web")
    now = dt.datetime.now(VN_TZ)
    plans = current_plan_copy(tmp / "plans", year=now.year).parent
    env = Stack.environment(tmp / "var") | {"PARWATCH_MONITOR_PLANS_DIR": str(plans),
                                            "PARWATCH_MONITOR_INCLUDE_SHIPPED_PLANS": "false",
                                            "PARWATCH_NOTIFIER_DIRECTORY": str(_directory(tmp)),
                                            "PARWATCH_NOTIFIER_GROUP_WAIT": "1s",
                                            "PARWATCH_NOTIFIER_GROUP_INTERVAL": "1s",
                                            "PARWATCH_NOTIFIER_QUIET_HOURS": "false"}
    stack = Stack(data_dir=tmp / "var", log=tmp / "stack.log", env=env)
    stack.start(cwd=tmp)
    try:
        ready = stack.wait_ready()
        subprocess.run([str(PARWATCH), "web", "password", OFFICIAL, "--stdin"], input=PASSWORD + "\n", text=True,
                       env=stack.env, check=True, capture_output=True, timeout=60)
        events, codes = _events(now)
        asyncio.run(_publish(ready.nats_url, events))
        s = Site(stack, ready, codes)
        _poll(lambda: s.json(f"{s.scoring}/figures/PTP")["ended_late"] == 1
              and s.json(f"{s.scoring}/figures/PTP")["open"] == 2
              and s.json(f"{s.scoring}/figures/PTP")["rated"] == 1, what="PTP's figures")
        _poll(lambda: s.alert_of("PTP", codes["OVERDUE"]) and s.alert_of(OTHER, codes["OTHER"]),
              what="the overdue alerts in the notifier")
        yield s
        assert stack.stop() == 0, stack.text()[-3000:]
    finally:
        stack.kill()


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


PAGES = ("/", "/don-vi/PTP", "/ke-hoach", "/canh-bao", "/bao-cao", "/dang-nhap")


def _watched(page: Page) -> list[str]:
    """What the browser complains of on ``page`` from now on: console errors and warnings (a resource that did
    not load, a CSP violation, a deprecated feature) and uncaught script errors."""
    said: list[str] = []
    page.on("console", lambda m: said.append(f"console.{m.type} at {page.url}: {m.text}")
            if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: said.append(f"pageerror at {page.url}: {e}"))
    return said


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A desk-sized page; the test fails if the browser logged any console error or warning on it."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="vi-VN")
    page = context.new_page()
    said = _watched(page)
    yield page
    context.close()
    assert said == [], said


def sign_in(page: Page, site: Site) -> None:
    page.goto(f"{site.web}/dang-nhap")
    page.fill("input[name=official]", OFFICIAL)
    page.fill("input[name=password]", PASSWORD)
    page.click("form.stack button[type=submit]")
    page.wait_for_url(f"{site.web}/")
    assert "Trưởng phòng - Phòng Tư pháp" in page.inner_text("[data-testid=signed-in]")


def _screenshot(page: Page, name: str) -> None:
    """The whole page (not only its first screen) saved as ``name`` when PARWATCH_WEB_SCREENSHOTS names a folder."""
    folder = os.environ.get("PARWATCH_WEB_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / name), full_page=True)


def _periods(site: Site) -> dict[str, str | None]:
    """The page's three columns as /figures periods: the running month (the default), quarter and year."""
    month = site.json(f"{site.scoring}/figures/PTP")["period"]  # YYYY-MM
    year, m = month.split("-")
    return {"month": None, "quarter": f"{year}-Q{(int(m) - 1) // 3 + 1}", "year": year}


def _figures(site: Site, agency: str, period: str | None) -> dict[str, Any]:
    return site.json(f"{site.scoring}/figures/{agency}", **({"period": period} if period else {}))


def test_the_overview_shows_the_figures_the_scoring_api_gives(site: Site, page: Page) -> None:
    page.goto(f"{site.web}/")  # reading is open on loopback
    assert page.title().startswith("Tổng quan")
    periods = _periods(site)
    agencies = site.json(f"{site.scoring}/agencies")
    assert {a["kind"] for a in agencies} >= {"district", "department", "commune"}
    for agency in (a["code"] for a in agencies if a["kind"] != "unknown"):  # every agency, and the district's
        figures = {kind: _figures(site, agency, period) for kind, period in periods.items()}
        for kind in periods:
            cell = page.inner_text(f"[data-agency='{agency}'][data-figure='on_time_{kind}']")
            assert cell == fmt.pct(figures[kind]["on_time_ratio"]), (agency, kind, figures[kind]["on_time_ratio"])
        for key in ("open", "overdue"):  # the running month's
            assert page.inner_text(f"[data-agency='{agency}'][data-figure='{key}']") == str(figures["month"][key])
        for key, _ in SHARES:
            cell = page.inner_text(f"[data-agency='{agency}'][data-figure='{key}']")
            assert cell == fmt.pct(figures["month"][key]), (agency, key, figures["month"][key])
    ptp = _figures(site, "PTP", None)
    assert ptp["on_time_ratio"] == pytest.approx(0.5)  # (1 on time + 1 open in time) / (2 ended + 2 open)
    assert (ptp["open"], ptp["overdue"]) == (2, 1)
    assert ptp["online_payment_ratio"] is None and page.inner_text(
        "[data-agency='PTP'][data-figure='online_payment_ratio']") == "—"  # absent, not 0
    district = _figures(site, "TUY_PHONG", None)
    for part in district["index"]:
        assert page.inner_text(f"[data-part='{part['part']}']") == fmt.points(part["points"])
    assert page.inner_text("[data-testid=index-total]") == fmt.points(district["index_points_computed"])
    # plan completion of the year, one bar row per agency: its name, then its value (or absent)
    chart = page.locator("[data-testid=plan-completion] svg")
    names = chart.locator("text.label").all_text_contents()
    values = chart.locator("text.value").all_text_contents()
    by_name = {a["name"]: a["code"] for a in agencies if a["kind"] not in ("district", "unknown")}
    assert sorted(names) == sorted(by_name) and len(values) == len(names)
    for name, value in zip(names, values, strict=True):
        expected = _figures(site, by_name[name], periods["year"])["plan_completion_ratio"]
        assert value == fmt.pct(expected), (name, value, expected)
    assert page.locator("svg.chart").count() == 3
    district_rows = page.locator("table.figures tr.district td:first-child")
    assert district_rows.all_inner_texts() == ["Toàn huyện Tuy Phong"] * 2  # a row starts with a capital
    _screenshot(page, "web-overview.png")


def test_an_agency_page_shows_its_dossiers_review_duties_and_alerts(site: Site, browser: Browser) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, locale="vi-VN")  # a phone
    page = context.new_page()
    said = _watched(page)
    try:
        page.goto(f"{site.web}/don-vi/PTP")
        assert page.inner_text("h1") == "Phòng Tư pháp"
        dossiers = page.inner_text("[data-testid=open-dossiers]")
        overdue_row = page.locator("[data-testid=open-dossiers] tr", has_text=site.codes["OVERDUE"])
        assert "Quá hạn" in overdue_row.inner_text() and "1.004227" in overdue_row.inner_text()
        assert int(overdue_row.locator("td.num").inner_text()) >= 14  # received 20 days ago, due after 1 working day
        assert site.codes["SOON"] in dossiers and "Sắp đến hạn" in dossiers
        assert site.codes["ONTIME"] not in dossiers and site.codes["OTHER"] not in dossiers
        review = page.locator("[data-testid=review]").first.inner_text()  # this week, by field
        assert "HOTICH" in review
        assert site.codes["LATE"] in page.inner_text("main")
        _agency_page_equals_the_apis(site, page, "PTP")
        duties = page.locator("[data-testid=duties] tr[data-agency=PTP]")
        assert duties.count() > 0
        alert_row = page.locator("[data-testid=alerts] tr", has_text=site.codes["OVERDUE"])
        assert alert_row.locator("td").nth(2).inner_text() == "Phòng Tư pháp"  # its name, not its code
        # README's screenshot: the whole page at a desk's width (dossiers, weekly review, duties, alerts)
        page.set_viewport_size({"width": 1280, "height": 900})
        _screenshot(page, "web-agency.png")
    finally:
        context.close()
    assert said == [], said


def _rows(page: Page, table: Any) -> list[list[str]]:
    return [[c.strip() for c in row.locator("td").all_inner_texts()] for row in table.locator("tbody tr").all()]


def _agency_page_equals_the_apis(site: Site, page: Page, agency: str) -> None:
    """The agency page's cards against scoring's /figures, its weekly review against scoring's /review (this week
    and this month, by field), its dossier lists against deadline_monitor's /dossiers/open and scoring's
    /dossiers/{agency}/late."""
    periods = _periods(site)
    figures = {kind: _figures(site, agency, period) for kind, period in periods.items()}
    for kind in periods:
        assert page.inner_text(f".cards [data-figure=on_time_{kind}]") == fmt.pct(figures[kind]["on_time_ratio"])
    for key in ("open", "overdue"):
        assert page.inner_text(f".cards [data-figure={key}]") == str(figures["month"][key])
    month = figures["month"]["period"]
    tables, headings = page.locator("[data-testid=review]"), page.locator("section:has([data-testid=review]) h3")
    assert tables.count() == 2
    for i, period in enumerate((None, month)):  # the running week, then the running month
        review = site.json(f"{site.scoring}/review", **({"period": period} if period else {}))
        assert headings.nth(i).inner_text() == fmt.period_label(review["period"])
        expected = [[r["field_code"], *(str(r["figures"][k]) for k in ("ended", "ended_late", "open", "overdue")),
                     fmt.pct(r["figures"]["late_ratio"])] for r in review["fields"] if r["agency"] == agency]
        assert expected and _rows(page, tables.nth(i)) == expected, (review["period"], expected)
    opened = site.json(f"{site.monitor}/dossiers/open", agency=agency)["dossiers"]
    expected = [[d["dossier_code"], d["procedure_code"], d["field_code"],
                 fmt.vn_date(dt.date.fromisoformat(d["due_day"]) if d["due_day"] else None), fmt.state_text(d["state"]),
                 str(d["days_late"]) if d["state"] == "overdue" else ""] for d in opened]
    assert expected and _rows(page, page.locator("[data-testid=open-dossiers]")) == expected
    late = site.json(f"{site.scoring}/dossiers/{agency}/late", period=month)["late"]
    shown = page.locator("[data-testid=late-month] .code").all_inner_texts()
    assert late and shown == [d["dossier_code"] for d in late]


def test_the_plan_form_reports_a_duty_done_and_its_state_changes(site: Site, page: Page) -> None:
    sign_in(page, site)
    page.goto(f"{site.web}/ke-hoach?agency=PTP&state=open")
    row = page.locator("[data-testid=duties] tr[data-agency=PTP]", has=page.locator("form")).first
    task, period = row.get_attribute("data-task"), row.get_attribute("data-period")
    assert row.locator("[data-testid=state]").inner_text() == "Đang thực hiện"
    occurrence = next(o for o in site.json(f"{site.monitor}/plan/occurrences", agency="PTP")["occurrences"]
                      if o["task_id"] == task and o["period"] == period)
    counted = dt.date.fromisoformat(occurrence["opens_on"]) <= dt.datetime.now(VN_TZ).date()  # in the gauge yet
    before = site.plan_tasks("PTP")
    row.locator("input[name=note]").fill("Đã gửi báo cáo cho Phòng Nội vụ")
    row.locator("button").click()
    page.wait_for_url(re.compile(r".*/web/ke-hoach\?.*ok=report"))
    assert "Đã gửi báo cáo" in page.inner_text(".flash")
    selector = f"[data-testid=duties] tr[data-task='{task}'][data-period='{period}'][data-agency=PTP]"

    def done() -> bool:
        page.goto(f"{site.web}/ke-hoach?agency=PTP")
        return page.inner_text(f"{selector} [data-testid=state]") == "Đã hoàn thành"

    _poll(done, what=f"task {task} {period} done on the page")
    recorded = page.locator("[data-testid=reports] tr", has_text=f"/{task}/{period}").first.inner_text()
    assert OFFICIAL in recorded and "Đã gửi" in recorded  # who reported it, and when (the row's first cell)
    occ = site.json(f"{site.monitor}/plan/occurrences", agency="PTP")["occurrences"]
    assert next(o for o in occ if o["task_id"] == task and o["period"] == period)["state"] == "done"
    # ... and in the contract's gauge: one more done, one fewer open (if it had opened, it was counted open)
    after = site.plan_tasks("PTP")
    assert after["done"] == before["done"] + 1, (before, after)
    assert after["open"] == before["open"] - (1 if counted else 0), (before, after)
    assert (after["overdue"], after["done_late"]) == (before["overdue"], before["done_late"]), (before, after)


def test_acknowledging_an_alert_on_the_page_shows_who_and_when(site: Site, page: Page) -> None:
    sign_in(page, site)
    alert = site.alert_of("PTP", site.codes["OVERDUE"])
    assert alert is not None and alert["acknowledged"] is None
    page.goto(f"{site.web}/canh-bao?agency=PTP")
    row = page.locator(f"tr[data-alert='{alert['alert_key']}']")
    row.locator("select[name=kind]").select_option("apology_sent")
    row.locator("input[name=note]").fill("Đã gửi phiếu xin lỗi, hẹn ngày trả mới")
    before = dt.datetime.now(VN_TZ)
    row.locator("button").click()
    page.wait_for_url(re.compile(r".*/web/canh-bao\?ok=ack"))
    page.goto(f"{site.web}/canh-bao?agency=PTP")
    cell = page.inner_text(f"tr[data-alert='{alert['alert_key']}'] [data-testid=ack]")
    assert "Đã gửi thư xin lỗi" in cell and OFFICIAL in cell
    shown = re.search(r"lúc (\d\d:\d\d \d\d/\d\d/\d{4})", cell)
    assert shown is not None
    at = dt.datetime.strptime(shown.group(1), "%H:%M %d/%m/%Y").replace(tzinfo=VN_TZ)
    assert before.replace(second=0, microsecond=0) <= at <= dt.datetime.now(VN_TZ)
    acked = site.alert_of("PTP", site.codes["OVERDUE"])["acknowledged"]
    assert acked["official"] == OFFICIAL and acked["kind"] == "apology_sent" and acked["via"] == "api"


def _notified(site: Site, alert_key: str) -> list[dt.datetime]:
    """When the notifier's log says a firing notice of ``alert_key`` was sent (first or reminder), to anyone:
    ``parwatch notifications``, as an operator reads it."""
    out = subprocess.run([str(PARWATCH), "notifications", "--alert-key", alert_key, "--json", "--limit", "1000"],
                         env=site.stack.env, check=True, capture_output=True, text=True, timeout=60).stdout
    return sorted(dt.datetime.fromisoformat(r["sent_at"]) for r in json.loads(out) if r["state"] == "firing")


def test_acknowledging_an_alert_on_the_page_stops_its_reminders(site: Site, page: Page) -> None:
    """Two overdue dossiers of Phòng Tư pháp, each reminded of every REPEAT seconds; one is acknowledged on the
    alerts page. After that no reminder of it is sent, while the other (the control: without it a notifier that
    sent no reminders at all would pass) is reminded of again and again."""
    now = dt.datetime.now(VN_TZ)
    run = uuid.uuid4().hex[:6].upper()
    acked, control = f"WEB-{run}-ACKED", f"WEB-{run}-CONTROL"
    one_day = {"statutory_duration": {"value": 1, "unit": "working_days"}}
    events = [dossier_event(code, 2, (now - dt.timedelta(days=20)).isoformat(), seq=1, agency="PTP", **one_day)
              for code in (acked, control)]
    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API holds this thread's event loop
        pool.submit(asyncio.run, _publish(site.nats_url, events)).result(timeout=60)
    alerts = _poll(lambda: (a := site.alert_of("PTP", acked)) and (c := site.alert_of("PTP", control)) and (a, c),
                   what="the two overdue alerts in the notifier")
    key, control_key = alerts[0]["alert_key"], alerts[1]["alert_key"]
    _poll(lambda: len(_notified(site, key)) >= 2 and len(_notified(site, control_key)) >= 2,
          what="a first notice and a reminder of each")  # reminders do come before the acknowledgement

    sign_in(page, site)
    page.goto(f"{site.web}/canh-bao?agency=PTP")
    row = page.locator(f"tr[data-alert='{key}']")
    row.locator("select[name=kind]").select_option("handling")
    row.locator("button").click()
    page.wait_for_url(re.compile(r".*/web/canh-bao\?ok=ack"))
    acked_at = dt.datetime.now(dt.UTC)
    assert site.alert_of("PTP", acked)["acknowledged"]["official"] == OFFICIAL
    # A reminder the notifier had already queued when the acknowledgement came may still go out: allow one
    # relay pass (1 s) and a dispatch pass (2 s) for it; after that, none.
    settled = acked_at + dt.timedelta(seconds=3)
    _poll(lambda: sum(t > settled for t in _notified(site, control_key)) >= 3,
          what=f"three reminders of the control alert {control} after the acknowledgement", timeout=REPEAT * 3 + 30)
    late = [t for t in _notified(site, key) if t > settled]
    assert late == [], f"reminders of the acknowledged alert after it was acknowledged at {acked_at}: {late}"


def _occurrence(site: Site, agency: str) -> dict[str, Any]:
    occ = site.json(f"{site.monitor}/plan/occurrences", agency=agency)["occurrences"]
    return next(o for o in occ if o["state"] in ("open", "overdue"))


def test_a_write_without_a_session_or_a_csrf_token_is_refused(site: Site, page: Page, browser: Browser) -> None:
    o = _occurrence(site, "PTP")
    form = {"plan_id": o["plan_id"], "task_id": o["task_id"], "agency_code": "PTP", "period": o["period"]}
    anonymous = browser.new_context()
    try:
        r = anonymous.request.post(f"{site.web}/ke-hoach/bao-cao", form=form | {"csrf": "x"}, max_redirects=0)
        assert r.status == 401 and "Cần đăng nhập" in r.text()
        key = site.alert_of(OTHER, site.codes["OTHER"])["alert_key"]
        r = anonymous.request.post(f"{site.web}/canh-bao/xac-nhan", form={"alert_key": key, "kind": "handling"},
                                   max_redirects=0)
        assert r.status == 401
    finally:
        anonymous.close()
    sign_in(page, site)
    for sent in ({}, {"csrf": "not-the-token"}):
        r = page.request.post(f"{site.web}/ke-hoach/bao-cao", form=form | sent, max_redirects=0)
        assert r.status == 403 and "CSRF" in r.text()
        r = page.request.post(f"{site.web}/tam-dung", form={"agency": "PTP", "hours": "2", "comment": "thử"} | sent,
                              max_redirects=0)
        assert r.status == 403
    assert site.json(f"{site.notifier}/silences")["silences"] == []


def test_signing_out_ends_the_session_even_once_the_password_is_removed(site: Site, page: Page) -> None:
    who, password = "tuphap-motcua", "mật khẩu thứ hai 146"
    subprocess.run([str(PARWATCH), "web", "password", who, "--stdin"], input=password + "\n", text=True,
                   env=site.stack.env, check=True, capture_output=True, timeout=60)
    page.goto(f"{site.web}/dang-nhap")
    page.fill("input[name=official]", who)
    page.fill("input[name=password]", password)
    page.click("form.stack button[type=submit]")
    page.wait_for_url(f"{site.web}/")
    subprocess.run([str(PARWATCH), "web", "password", who, "--remove"], text=True, env=site.stack.env, check=True,
                   capture_output=True, timeout=60)
    page.click(f"form[action='{PREFIX}/dang-xuat'] button")
    page.wait_for_url(f"{site.web}/?ok=signout")
    assert [c for c in page.context.cookies() if c["name"] == COOKIE] == []
    assert page.locator("[data-testid=signed-in]").count() == 0


def test_a_write_for_another_agency_is_refused(site: Site, page: Page) -> None:
    sign_in(page, site)
    page.goto(f"{site.web}/ke-hoach?agency={OTHER}")
    assert page.locator(f"[data-testid=duties] tr[data-agency={OTHER}] form").count() == 0  # no form offered
    csrf = page.get_attribute("input[name=csrf]", "value")
    o = _occurrence(site, OTHER)
    r = page.request.post(f"{site.web}/ke-hoach/bao-cao", max_redirects=0, form={
        "csrf": csrf, "plan_id": o["plan_id"], "task_id": o["task_id"], "agency_code": OTHER, "period": o["period"]})
    assert r.status == 403 and "Xã Vĩnh Tân" in r.text()
    key = site.alert_of(OTHER, site.codes["OTHER"])["alert_key"]
    r = page.request.post(f"{site.web}/canh-bao/xac-nhan", max_redirects=0,
                          form={"csrf": csrf, "alert_key": key, "kind": "handling"})
    assert r.status == 403
    assert site.alert_of(OTHER, site.codes["OTHER"])["acknowledged"] is None
    r = page.request.post(f"{site.web}/tam-dung", max_redirects=0,
                          form={"csrf": csrf, "agency": OTHER, "hours": "2", "comment": "thử"})
    assert r.status == 403
    # within its scope the same official may: a silence for Phòng Tư pháp, listed with who, then expired
    r = page.request.post(f"{site.web}/tam-dung", form={"csrf": csrf, "agency": "PTP", "kind": "dossier_due_soon",
                                                        "hours": "2", "comment": "Họp giao ban"})
    assert r.ok
    page.goto(f"{site.web}/canh-bao")
    row = page.locator("[data-testid=silences] tr[data-silence]", has_text="Họp giao ban")
    assert OFFICIAL in row.inner_text() and "Phòng Tư pháp" in row.inner_text()
    row.locator("button").click()
    page.wait_for_url(re.compile(r".*ok=expire"))
    assert site.json(f"{site.notifier}/silences")["silences"] == []


def test_no_page_logs_a_console_error_signed_in_or_not(site: Site, page: Page) -> None:
    """The page fixture fails on any console error or warning, or script error; this visits every page both
    ways (the forms are there only when signed in)."""
    said = _watched(page)
    for signed_in in (False, True):
        if signed_in:
            sign_in(page, site)
        for path in PAGES:
            response = page.goto(f"{site.web}{path}")
            assert response is not None and response.ok, path
            page.wait_for_load_state("load")
    assert page.inner_text("h1") == "Đăng nhập"  # the last page was drawn
    assert said == [], said


def test_pages_have_no_external_urls(site: Site, page: Page) -> None:
    sign_in(page, site)
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    for path in PAGES:
        response = page.goto(f"{site.web}{path}")
        assert response is not None and response.ok, path
        html = page.content()
        assert not re.search(r"https?://|\b(src|href|action)=\"//", html), path
    assert requested and all(u.startswith(site.scoring + "/") for u in requested), requested
    assert any(u.endswith("/web/style.css") for u in requested)


def _axe(page: Page) -> list[str]:
    """axe-core's violations on the page as loaded, each with its rule id, what it asks and the nodes that fail."""
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})", AXE_TAGS)
    return [f"{v['id']} ({v['impact']}): {v['help']}\n" + "\n".join(
        f"    {' '.join(map(str, n['target']))}: {n['failureSummary']}" for n in v["nodes"])
        for v in result["violations"]]


def test_every_page_passes_axe_cores_accessibility_check(site: Site, browser: Browser) -> None:
    """Labels, contrast, landmarks and the rest of axe-core's WCAG 2 A/AA rules (and its best practices) on every
    page, signed in (so with every form) and the sign-in page, on a desk and on a phone."""
    failures: list[str] = []
    for viewport in ({"width": 1280, "height": 900}, {"width": 390, "height": 844}):
        # axe is injected as a script, and the pages' CSP allows no script at all (default-src 'none'): this
        # context alone bypasses the CSP, to run axe. Every other test keeps it, and fails on a CSP violation.
        context = browser.new_context(viewport=viewport, locale="vi-VN", bypass_csp=True)
        page = context.new_page()
        said = _watched(page)
        try:
            page.goto(f"{site.web}/dang-nhap")
            failures += [f"{viewport['width']}px /dang-nhap: {v}" for v in _axe(page)]
            sign_in(page, site)
            for path in (p for p in PAGES if p != "/dang-nhap"):
                page.goto(f"{site.web}{path}")
                failures += [f"{viewport['width']}px {path}: {v}" for v in _axe(page)]
        finally:
            context.close()
        assert said == [], said
    assert failures == [], "\n".join(failures)
