"""Alerts for codes outside the agency directory, and ``unknown_agency`` alerts: the technical desk alone.

The code came from outside and may be hostile: it never climbs the routing
chain to leaders, is never escalated, makes one group whatever the number of
codes, and never reaches a subject, a body or a webhook payload.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry

from services.notifier.config import ConfigError, parse_directory
from services.notifier.domain.dispatch import desired_targets, plan_dispatch
from services.notifier.domain.model import Assignment, EscalationPolicy
from services.notifier.domain.routing import restricted, route_alert
from services.notifier.metrics import NotifierMetrics
from services.notifier.render import UNKNOWN_AGENCY_SUMMARY, Renderer
from shared.agencies import UNKNOWN, UNKNOWN_NAME

VN = dt.timezone(dt.timedelta(hours=7))
T0 = dt.datetime(2026, 11, 25, 9, 0, tzinfo=VN)  # Wednesday, working hours
HOSTILE = "Nộp phạt gấp: STK 0123456789 CANARY"


def ids(targets):
    return [t.receiver_id for t in targets]


def canary_free(*texts: str) -> bool:
    return not any("CANARY" in t or "0123456789" in t for t in texts)


def test_an_alert_of_an_unknown_code_goes_to_the_technical_desk_alone(directory, make_alert):
    assert directory.technical_desk == ("tech",)  # the officials its deadletter route names
    overdue = make_alert(kind="dossier_overdue", severity="critical", agency=HOSTILE)
    kpi = make_alert(kind="kpi_below_target", agency=HOSTILE)
    assert restricted(directory, overdue) and restricted(directory, kpi)
    assert ids(route_alert(directory, overdue)) == ["tech"]  # not the chain up to "lead"
    assert ids(route_alert(directory, kpi)) == ["tech"]
    assert not restricted(directory, make_alert(agency="PTP"))


def test_an_unknown_agency_alert_goes_to_the_desk_even_when_the_routes_say_officer(directory, make_alert):
    # The district has no officer here: the default route would climb to the leadership.
    alert = make_alert("unknown_agency", kind="unknown_agency", agency="TUY_PHONG")
    assert ids(route_alert(directory, alert)) == ["tech"]


def test_without_a_technical_desk_nobody_hears_rather_than_leaders(make_alert):
    bare = parse_directory("""\
agencies:
  - code: TUY_PHONG
    officials: [{id: lead, role: district_leadership, name: Lãnh đạo, email: lead@example.org}]
routes:
  - {name: default, receivers: [officer]}
""")
    assert bare.technical_desk == ()
    assert route_alert(bare, make_alert(agency=HOSTILE)) == []
    assert route_alert(bare, make_alert("unknown_agency", kind="unknown_agency", agency="TUY_PHONG")) == []
    assert ids(route_alert(bare, make_alert(agency="PTP"))) == ["lead"]  # a known agency still climbs


def test_it_is_never_escalated(directory, make_alert, calendar):
    policy = EscalationPolicy(head_after_hours=8, leadership_after_hours=24, min_severity="info")
    old = make_alert(kind="dossier_overdue", severity="critical", agency=HOSTILE, starts_at=T0 - dt.timedelta(days=60))
    targets = desired_targets(directory, old, now=T0, escalation=policy, calendar=calendar)
    assert ids(targets) == ["tech"]
    known = replace(old, agency_code="PTP")  # the same alert of a known agency reaches the head and the leaders
    assert {"ptp-head", "lead"} <= set(ids(desired_targets(directory, known, now=T0, escalation=policy,
                                                           calendar=calendar)))


def test_three_hundred_codes_make_one_notice_to_the_desk(directory, make_alert, calendar, timing, escalation):
    alerts = {}
    for i in range(300):
        a = make_alert(f"dossier_overdue:H-{i}", kind="dossier_overdue", severity="critical",
                       agency=f"{HOSTILE} {i}", ref=f"H-{i}", received_at=T0 - dt.timedelta(minutes=5))
        alerts[a.alert_key] = a
    plan = plan_dispatch(now=T0, alerts=alerts, assignments=[], groups={}, silences=[], directory=directory,
                         timing=timing, escalation=escalation, calendar=calendar, quiet_hours=False)
    assert {a.receiver_id for a in plan.created} == {"tech"}
    [flush] = plan.flushes
    assert (flush.receiver_id, flush.agency_code, len(flush.items)) == ("tech", UNKNOWN, 300)
    assert [g.key for g in plan.groups] == [("tech", UNKNOWN)]


def test_an_assignment_made_before_to_a_leader_is_dropped(directory, make_alert, calendar, timing, escalation):
    alert = make_alert(kind="dossier_overdue", severity="critical", agency=HOSTILE)
    stale = Assignment(alert_key=alert.alert_key, receiver_id="lead", episode=alert.starts_at, level=2,
                       route="default", created_at=T0 - dt.timedelta(days=1))
    plan = plan_dispatch(now=T0, alerts={alert.alert_key: alert}, assignments=[stale], groups={}, silences=[],
                         directory=directory, timing=timing, escalation=escalation, calendar=calendar,
                         quiet_hours=False)
    assert plan.removed == [stale]
    assert {f.receiver_id for f in plan.flushes} <= {"tech"}


@pytest.fixture
def renderer(directory) -> Renderer:
    return Renderer(directory=directory, escalation=EscalationPolicy())


def notice_item(key: str, *, kind: str, agency: str, ref: str, summary: str) -> dict:
    return {"notice_key": f"{key}@x:firing", "alert_key": key, "state": "firing", "level": 0, "repeat": 0,
            "kind": kind, "severity": "critical", "agency_code": agency, "ref": ref, "summary": summary,
            "starts_at": T0.isoformat(), "ends_at": None, "labels": {"due_day": "2026-11-20"}}


def test_no_part_of_an_unknown_code_reaches_the_message(renderer):
    items = [
        notice_item("dossier_overdue:H-1", kind="dossier_overdue", agency=HOSTILE, ref="H-1",
                    summary=f"Hồ sơ H-1 của {HOSTILE} đã quá hạn"),
        notice_item(f"kpi_below_target:{HOSTILE}:on_time:2026-11", kind="kpi_below_target", agency=HOSTILE,
                    ref=f"{HOSTILE}/on_time", summary=f"Tỷ lệ của {HOSTILE} dưới mục tiêu"),
    ]
    for agency in (HOSTILE, UNKNOWN):  # the raw code, or the label the dispatch groups it under
        payload = {"type": "alerts", "receiver": "tech", "role": "officer", "agency": agency, "items": items}
        m = renderer.render(payload, delivery_id="parwatch-1", sent_at=T0)
        body = json.dumps(m.data, ensure_ascii=False)
        assert canary_free(m.subject, m.text, m.html, body)
        assert m.subject == f"[parwatch] [KHẨN] {UNKNOWN_NAME}: 1 hồ sơ quá hạn, 1 chỉ tiêu chưa đạt"
        assert "Kính gửi: Bộ phận kỹ thuật" in m.text  # the desk by its post, not an unknown agency's officer
        assert m.text.count(UNKNOWN_AGENCY_SUMMARY) == 2
        assert m.data["agency"] == {"code": UNKNOWN, "name": UNKNOWN_NAME}
        assert {a["agency_code"] for a in m.data["alerts"]} == {UNKNOWN}


def test_the_unknown_agency_alert_reads_in_vietnamese(renderer):
    summary = ("Hệ thống nhận được dữ liệu mang mã đơn vị không có trong danh mục đơn vị (300 hồ sơ trong lần nhận "
               "đầu tiên).")
    item = notice_item("unknown_agency", kind="unknown_agency", agency="TUY_PHONG", ref="agency_directory",
                       summary=summary) | {"severity": "warning", "labels": {"dossiers": "300"}}
    payload = {"type": "alerts", "receiver": "tech", "role": "officer", "agency": "TUY_PHONG", "items": [item]}
    m = renderer.render(payload, delivery_id="parwatch-2", sent_at=T0)
    assert m.subject == "[parwatch] Ủy ban nhân dân huyện Tuy Phong: 1 cảnh báo mã đơn vị ngoài danh mục"
    assert "Dữ liệu mang mã đơn vị không có trong danh mục đơn vị" in m.text
    assert summary in m.text  # the district's own alert keeps its summary (it names no code)
    assert "xem danh sách mã bằng lệnh: parwatch agencies unknown" in m.text
    assert "\ufffd" not in m.text


def test_technical_desk_is_checked_and_may_be_named_outright():
    text = """\
agencies:
  - code: PNV
    officials:
      - {{id: pnv-desk, role: officer, name: Một cửa, email: pnv@example.org}}
      - {{id: ky-thuat, role: officer, direct_only: true, name: Kỹ thuật, email: kt@example.org}}
technical_desk: [{desk}]
routes:
  - {{name: default, receivers: [officer]}}
"""
    assert parse_directory(text.format(desk="ky-thuat")).technical_desk == ("ky-thuat",)
    with pytest.raises(ConfigError) as err:
        parse_directory(text.format(desk="nobody"), source="dir.yaml")
    assert "dir.yaml:6: technical_desk[0]: 'nobody' is not an official id of this file" in err.value.problems


def test_alert_counter_labels_are_a_closed_set():
    metrics = NotifierMetrics(CollectorRegistry())
    metrics.alert_received(kind="unknown_agency", severity="warning")
    metrics.alert_received(kind=HOSTILE, severity="loud")
    assert metrics.registry.get_sample_value("parwatch_alerts_total",
                                             {"kind": "unknown_agency", "severity": "warning"}) == 1
    assert metrics.registry.get_sample_value("parwatch_alerts_total", {"kind": "other", "severity": "other"}) == 1
