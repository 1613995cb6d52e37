"""When digests fall due, and what they hold."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict

from services.notifier.domain.digest import (
    OTHER_FIELDS,
    UNKNOWN_FIELD,
    DigestPeriod,
    FieldCount,
    build_weekly,
    count_fields,
    count_period,
    covers,
    due_periods,
)
from services.notifier.render import Renderer

VN = dt.timezone(dt.timedelta(hours=7))
AT = dt.time(7, 30)


def keys(now, calendar):
    return [(p.kind, p.key, p.start.isoformat(), p.end.isoformat())
            for p in due_periods(now, calendar=calendar, digest_time=AT)]


def test_weekly_on_monday_morning_monthly_on_the_first_working_day(calendar):
    assert keys(dt.datetime(2026, 11, 30, 7, 29, tzinfo=VN), calendar) == [
        ("monthly", "2026-10", "2026-10-01", "2026-10-31")]
    assert keys(dt.datetime(2026, 11, 30, 7, 30, tzinfo=VN), calendar)[0] == (
        "weekly", "2026-W48", "2026-11-23", "2026-11-29")
    # 1/11/2026 is a Sunday: the October summary waits for Monday 2/11.
    assert [k for k in keys(dt.datetime(2026, 11, 1, 9, 0, tzinfo=VN), calendar) if k[0] == "monthly"] == []
    assert keys(dt.datetime(2026, 11, 2, 7, 30, tzinfo=VN), calendar)[-1][:2] == ("monthly", "2026-10")


def test_a_holiday_monday_moves_the_weekly_digest(calendar):
    monday = dt.date(2026, 4, 27)  # Giỗ Tổ Hùng Vương 2026 falls on Sunday 26/4: Monday 27/4 is a day off
    assert not calendar.is_working_day(monday)
    at = dt.datetime.combine(monday, dt.time(9, 0), tzinfo=VN)
    assert not [k for k in keys(at, calendar) if k[0] == "weekly"]
    at = dt.datetime.combine(monday + dt.timedelta(days=1), dt.time(7, 30), tzinfo=VN)
    assert [k for k in keys(at, calendar) if k[0] == "weekly"] == [("weekly", "2026-W17", "2026-04-20", "2026-04-26")]


def test_no_digest_for_a_period_before_the_notifier_ran(calendar):
    period = due_periods(dt.datetime(2026, 11, 30, 8, 0, tzinfo=VN), calendar=calendar, digest_time=AT)[0]
    assert covers(period, dt.datetime(2026, 11, 25, 9, 0, tzinfo=VN))
    assert not covers(period, dt.datetime(2026, 11, 30, 7, 0, tzinfo=VN))


def test_weekly_content_and_monthly_counts(make_alert):
    period = due_periods(dt.datetime(2026, 11, 30, 8, 0, tzinfo=VN), calendar=_Weekdays(), digest_time=AT)[0]
    alerts = [
        make_alert("o1", kind="dossier_overdue", ref="H-1", starts_at=dt.datetime(2026, 11, 24, 8, tzinfo=VN)),
        make_alert("o2", kind="dossier_overdue", ref="H-2", state="resolved",
                   starts_at=dt.datetime(2026, 11, 20, 8, tzinfo=VN), ends_at=dt.datetime(2026, 11, 26, 8, tzinfo=VN)),
        make_alert("a1", kind="dossier_apology_due", ref="H-3"),
        make_alert("t1", kind="plan_task_overdue", ref="T-1"),
        make_alert("x1", kind="dossier_overdue", ref="N-1", agency="PNV"),
    ]
    d = build_weekly("PTP", period, alerts)
    assert [e.ref for e in d.overdue] == ["H-1"] and [e.ref for e in d.ended_late] == ["H-2"]
    assert [e.ref for e in d.apology_due] == ["H-3"] and [e.ref for e in d.tasks] == ["T-1"]
    nov = type(period)("monthly", "2026-11", dt.date(2026, 11, 1), dt.date(2026, 11, 30))
    c = count_period("PTP", nov, alerts)
    assert c.fired["dossier_overdue"] == 2 and c.resolved == {"dossier_overdue": 1}
    assert c.open_at_end["dossier_overdue"] == 1


class _Weekdays:
    def is_working_day(self, day: dt.date) -> bool:
        return day.weekday() < 5


WEEK = DigestPeriod("weekly", "2026-W48", dt.date(2026, 11, 23), dt.date(2026, 11, 29))


def test_the_weekly_digest_counts_its_dossiers_per_field(make_alert):
    alerts = [
        make_alert("o1", kind="dossier_overdue", ref="H-1", labels={"field_code": "HOTICH"}),
        make_alert("o2", kind="dossier_overdue", ref="H-2", labels={"field_code": "DATDAI"}),
        make_alert("a1", kind="dossier_apology_due", ref="H-3", labels={"field_code": "HOTICH"}),
        make_alert("l1", kind="dossier_overdue", ref="H-4", state="resolved", labels={"field_code": "HOTICH"},
                   starts_at=dt.datetime(2026, 11, 20, 8, tzinfo=VN), ends_at=dt.datetime(2026, 11, 25, 8, tzinfo=VN)),
        make_alert("s1", kind="dossier_due_soon", ref="H-5", labels={"field_code": "XAYDUNG"}),  # not counted
        make_alert("u1", kind="dossier_overdue", ref="H-6", labels={}),
    ]
    d = build_weekly("PTP", WEEK, alerts)
    assert d.by_field == (FieldCount("HOTICH", overdue=1, apology_due=1, ended_late=1),
                          FieldCount(UNKNOWN_FIELD, overdue=1), FieldCount("DATDAI", overdue=1))


def test_fields_beyond_the_limit_are_added_up_and_codes_are_made_safe(make_alert):
    alerts = [make_alert(f"o{i}", kind="dossier_overdue", ref=f"H-{i}", labels={"field_code": f"F{i % 5}"})
              for i in range(12)]
    alerts.append(make_alert("x", kind="dossier_overdue", ref="H-X", labels={"field_code": "EVIL\u202e\x1b[2J"}))
    d = build_weekly("PTP", WEEK, alerts)
    rows = count_fields(overdue=d.overdue, apology_due=(), ended_late=(), limit=2)
    assert [(f.field_code, f.overdue) for f in rows] == [("F0", 3), ("F1", 3), (OTHER_FIELDS, 7)]
    assert "EVIL[2J" in {f.field_code for f in d.by_field}


def test_the_digest_templates_show_the_fields(directory, escalation, make_alert):
    """The templates render the per-field lines when the view carries them (``by_field``); HTML escapes them."""
    alert = make_alert("o1", kind="dossier_overdue", ref="H-1", labels={"field_code": "HO<b>TICH"})
    digest = build_weekly("PTP", WEEK, [alert])
    renderer = Renderer(directory=directory, escalation=escalation)
    payload = {"type": "digest", "receiver": "ptp-desk", "role": "officer", "agency": "PTP",
               "digest": {**asdict(digest), "period": {"key": WEEK.key, "start": "2026-11-23", "end": "2026-11-29"},
                          "overdue": [], "apology_due": [], "due_soon": [], "ended_late": [], "tasks": [],
                          "kpis": [], "counts": [], "by_field": [asdict(f) for f in digest.by_field]}}
    view, data = renderer._digest_view(payload)  # the renderer passes the fields to the templates and the webhook
    assert data["digest"]["by_field"] == [asdict(f) for f in digest.by_field]
    view |= {"delivery_id": "d1"}
    text = renderer.text.get_template("digest.txt.j2").render(view)
    html = renderer.html.get_template("digest.html.j2").render(view)
    assert "- HO<b>TICH: quá hạn 1, cần gửi phiếu xin lỗi 0, kết thúc trễ hạn trong kỳ 0" in text
    assert "<td>HO&lt;b&gt;TICH</td><td>1</td>" in html
    plain = renderer.text.get_template("digest.txt.j2").render({k: v for k, v in view.items() if k != "by_field"})
    assert "LĨNH VỰC" not in plain  # a view without fields (a digest of an older notifier) renders as before
