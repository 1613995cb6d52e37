"""When digests fall due, and what they hold."""

from __future__ import annotations

import datetime as dt

from services.notifier.domain.digest import build_weekly, count_period, covers, due_periods

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
