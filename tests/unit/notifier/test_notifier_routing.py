"""Routing, escalation timing, silences and quiet hours as pure functions."""

from __future__ import annotations

import datetime as dt

from services.notifier.domain.escalation import escalation_level, escalation_times
from services.notifier.domain.model import EscalationPolicy, parse_duration
from services.notifier.domain.quiet import is_quiet
from services.notifier.domain.routing import route_alert
from services.notifier.domain.silence import Silence, check_new_silence, silenced_by

VN = dt.timezone(dt.timedelta(hours=7))


def ids(targets):
    return [t.receiver_id for t in targets]


def test_first_matching_route_wins_and_roles_resolve_in_the_alerts_agency(directory, make_alert):
    assert ids(route_alert(directory, make_alert(agency="PTP"))) == ["ptp-desk"]
    assert ids(route_alert(directory, make_alert(agency="PNV"))) == ["pnv-desk"]  # not the direct-only tech desk
    assert ids(route_alert(directory, make_alert(kind="deadletter", agency="PNV"))) == ["tech"]
    assert [t.route for t in route_alert(directory, make_alert(kind="kpi_below_target"))] == ["kpi"]
    assert ids(route_alert(directory, make_alert(kind="kpi_below_target", agency="PTP"))) == ["ptp-head"]


def test_a_missing_role_falls_back_up_the_chain(directory, make_alert):
    # Xã Chí Công has no head in this directory: its KPI alert goes to the district leadership.
    assert ids(route_alert(directory, make_alert(kind="kpi_below_target", agency="XA_CHI_CONG"))) == ["lead"]
    # An agency with nobody at all: the leadership hears of it rather than nobody.
    assert ids(route_alert(directory, make_alert(agency="PYT"))) == ["lead"]


def test_escalation_counts_working_hours_only(make_alert, calendar):
    policy = EscalationPolicy(head_after_hours=8, leadership_after_hours=24)
    # Friday 27/11/2026 16:00: 1 h on Friday, then Monday 07:00-11:30 and 13:30-16:00 = 8 working hours.
    alert = make_alert(starts_at=dt.datetime(2026, 11, 27, 16, 0, tzinfo=VN))
    times = escalation_times(alert, policy, calendar)
    assert times[1] == dt.datetime(2026, 11, 30, 16, 0, tzinfo=VN)
    assert times[2] == dt.datetime(2026, 12, 2, 16, 0, tzinfo=VN)
    assert escalation_level(alert, now=dt.datetime(2026, 11, 29, 23, 0, tzinfo=VN), times=times) == 0
    assert escalation_level(alert, now=times[1], times=times) == 1
    assert escalation_level(alert, now=times[2], times=times) == 2
    assert escalation_times(make_alert(severity="info"), policy, calendar) == {}


def test_quiet_hours_follow_the_working_calendar(calendar):
    assert not is_quiet(dt.datetime(2026, 11, 25, 7, 0, tzinfo=VN), calendar)
    assert not is_quiet(dt.datetime(2026, 11, 25, 12, 0, tzinfo=VN), calendar)  # lunch is not quiet
    assert is_quiet(dt.datetime(2026, 11, 25, 17, 0, tzinfo=VN), calendar)
    assert is_quiet(dt.datetime(2026, 11, 25, 6, 59, tzinfo=VN), calendar)
    assert is_quiet(dt.datetime(2026, 11, 28, 10, 0, tzinfo=VN), calendar)  # Saturday
    assert is_quiet(dt.datetime(2026, 9, 2, 10, 0, tzinfo=VN), calendar)  # National Day
    assert is_quiet(dt.datetime(2026, 11, 25, 3, 0, tzinfo=dt.timezone.utc), calendar) is False  # 10:00 local


def test_silence_matchers_and_expiry(make_alert):
    t = dt.datetime(2026, 11, 25, 9, 0, tzinfo=VN)
    s = Silence(id="s1", starts_at=t, ends_at=t + dt.timedelta(hours=2), comment="bảo trì", created_at=t,
                agencies=frozenset({"PTP"}), kinds=frozenset({"dossier_due_soon"}))
    alert = make_alert()
    assert silenced_by([s], alert, "ptp-desk", t) is s
    assert silenced_by([s], alert, "ptp-desk", t + dt.timedelta(hours=2)) is None  # expired
    assert silenced_by([s], alert, "ptp-desk", t - dt.timedelta(seconds=1)) is None  # not yet
    assert silenced_by([s], make_alert(agency="PNV"), "pnv-desk", t) is None
    only_head = Silence(id="s2", starts_at=t, ends_at=t + dt.timedelta(hours=1), comment="x", created_at=t,
                        receivers=frozenset({"ptp-head"}))
    assert silenced_by([only_head], alert, "ptp-desk", t) is None
    assert silenced_by([only_head], alert, "ptp-head", t) is only_head


def test_a_silence_must_match_something_and_say_why():
    t = dt.datetime(2026, 11, 25, 9, 0, tzinfo=VN)
    for bad, why in (
        (Silence(id="", starts_at=t, ends_at=t + dt.timedelta(hours=1), comment="x", created_at=t), "matcher"),
        (Silence(id="", starts_at=t, ends_at=t, comment="x", created_at=t, kinds=frozenset({"a"})), "end after"),
        (Silence(id="", starts_at=t, ends_at=t + dt.timedelta(1), comment=" ", created_at=t, kinds=frozenset({"a"})),
         "comment"),
    ):
        try:
            check_new_silence(bad)
        except ValueError as exc:
            assert why in str(exc)
        else:
            raise AssertionError(f"accepted a silence without {why}")


def test_durations():
    assert parse_duration("30s") == dt.timedelta(seconds=30)
    assert parse_duration("1.5h") == dt.timedelta(minutes=90)
    assert parse_duration("1w") == dt.timedelta(days=7)
    assert parse_duration(90) == dt.timedelta(seconds=90)
    for bad in ("soon", "-1s", "5 minutes"):
        try:
            parse_duration(bad)
        except ValueError:
            continue
        raise AssertionError(bad)
