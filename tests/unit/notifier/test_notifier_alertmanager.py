"""Alertmanager's webhook payload: what the receiver accepts, refuses, and makes of it.

The valid payload is the example of Alertmanager's webhook documentation
(version 4, a firing alert with ``endsAt`` at Go's zero time).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from typing import Any

import pytest

from services.notifier.alertmanager import (
    MAX_ALERTS,
    MAX_BODY_BYTES,
    SOURCE,
    PayloadRejected,
    incoming_alerts,
    kept_labels,
    parse_payload,
    severity_of,
)
from services.notifier.domain.dispatch import desired_targets
from services.notifier.domain.model import AlertRecord, EscalationPolicy
from services.notifier.domain.routing import restricted, route_alert
from services.notifier.render import Renderer
from shared.events import ALERT_FIRING_TYPE, ALERT_RESOLVED_TYPE
from shared.testing import alertmanager_example

UTC = dt.UTC
NOW = dt.datetime(2026, 11, 25, 2, 0, tzinfo=UTC)

DOCS_EXAMPLE: dict[str, Any] = alertmanager_example("notifier:9104")


def body(payload: dict[str, Any] | None = None, **changes: Any) -> bytes:
    p = copy.deepcopy(payload or DOCS_EXAMPLE)
    p.update(changes)
    return json.dumps(p, ensure_ascii=False).encode()


def with_alert(**changes: Any) -> bytes:
    p = copy.deepcopy(DOCS_EXAMPLE)
    p["alerts"][0].update(changes)
    return body(p)


def rejected(raw: bytes) -> str:
    with pytest.raises(PayloadRejected) as info:
        parse_payload(raw)
    return info.value.reason


def test_the_documented_example_becomes_one_operator_alert_of_the_district():
    [incoming] = incoming_alerts(parse_payload(body()), agency_code="TUY_PHONG", now=NOW)
    assert (incoming.source, incoming.type) == (SOURCE, ALERT_FIRING_TYPE)
    assert incoming.event_id == "1a30ba71cca2921f@2026-11-25T01:52:26.739266+00:00:firing"
    a = incoming.alert
    assert a.alert_key == "operator_alert:ParwatchServiceDown:1a30ba71cca2921f"
    assert (a.kind, a.severity, a.agency_code, a.ref) == ("operator_alert", "critical", "TUY_PHONG",
                                                         "ParwatchServiceDown")
    assert a.summary == "Dịch vụ parwatch-notifier không phản hồi."
    assert a.starts_at == dt.datetime(2026, 11, 25, 1, 52, 26, 739266, tzinfo=UTC)
    assert a.ends_at is None  # a firing alert's endsAt is Go's zero time: not an end
    assert list(a.labels)[:2] == ["alertname", "severity"] and a.labels["job"] == "parwatch-notifier"


def test_a_resolved_alert_resolves_the_same_alert_key_with_its_end():
    raw = with_alert(status="resolved", endsAt="2026-11-25T09:10:00+07:00")
    [firing] = incoming_alerts(parse_payload(body()), agency_code="TUY_PHONG", now=NOW)
    [resolved] = incoming_alerts(parse_payload(raw), agency_code="TUY_PHONG", now=NOW)
    assert resolved.type == ALERT_RESOLVED_TYPE
    assert resolved.alert.alert_key == firing.alert.alert_key
    assert resolved.alert.starts_at == firing.alert.starts_at  # the same episode
    assert resolved.alert.ends_at == dt.datetime(2026, 11, 25, 2, 10, tzinfo=UTC)
    assert resolved.event_id != firing.event_id


def test_a_resolved_alert_without_a_real_end_ends_now():
    [resolved] = incoming_alerts(parse_payload(with_alert(status="resolved")), agency_code="TUY_PHONG", now=NOW)
    assert resolved.alert.ends_at == NOW


def test_what_alertmanager_sends_again_has_the_same_event_ids_and_a_new_episode_does_not():
    first = incoming_alerts(parse_payload(body()), agency_code="TUY_PHONG", now=NOW)
    again = incoming_alerts(parse_payload(body()), agency_code="TUY_PHONG", now=NOW + dt.timedelta(hours=4))
    assert [e.event_id for e in first] == [e.event_id for e in again]
    later = incoming_alerts(parse_payload(with_alert(startsAt="2026-11-26T08:00:00+07:00")), agency_code="TUY_PHONG",
                            now=NOW)
    assert later[0].event_id != first[0].event_id and later[0].alert.alert_key == first[0].alert.alert_key


def test_fields_a_later_alertmanager_adds_are_ignored():
    p = copy.deepcopy(DOCS_EXAMPLE)
    p["alerts"][0]["silenceURL"] = "http://am/silence"
    p["someNewField"] = {"x": 1}
    assert len(parse_payload(body(p)).alerts) == 1


@pytest.mark.parametrize(("raw", "where"), [
    (b"{", "body: Invalid JSON"),
    (b"[]", "body: Input should be an object"),
    (body(version="3"), "version: Input should be '4'"),
    (body(alerts=[]), "alerts: List should have at least 1 item"),
    (body(status="pending"), "status: Input should be 'firing' or 'resolved'"),
    (with_alert(startsAt="2026-11-25T08:52:26"), "alerts[0].startsAt"),  # no offset
    (with_alert(startsAt="0001-01-01T00:00:00Z"), "alerts[0].startsAt: must lie between"),
    (with_alert(fingerprint="not-a-fingerprint"), "alerts[0].fingerprint: must be 16 hexadecimal digits"),
    (with_alert(labels={"alertname": 7}), "alerts[0].labels: Input should be a valid string"),
    (with_alert(labels=["alertname"]), "alerts[0].labels: Input should be an object"),
    (body(truncatedAlerts="0"), "truncatedAlerts: Input should be a valid integer"),
])
def test_malformed_payloads_are_refused_naming_the_field(raw, where):
    assert rejected(raw).startswith(where)


def test_oversized_payloads_are_refused():
    too_many = copy.deepcopy(DOCS_EXAMPLE)
    too_many["alerts"] = too_many["alerts"] * (MAX_ALERTS + 1)
    assert rejected(body(too_many)).startswith("alerts: List should have at most 1000 items")
    assert rejected(with_alert(labels={"alertname": "X", "job": "j" * 4097})).startswith(
        "alerts[0].labels: String should have at most 4096 characters")
    assert rejected(with_alert(annotations={f"a{i}": "x" for i in range(65)})).startswith(
        "alerts[0].annotations: Dictionary should have at most 64 items")
    huge = b" " * (MAX_BODY_BYTES + 1)
    assert rejected(huge) == f"body is {MAX_BODY_BYTES + 1} bytes; the limit is {MAX_BODY_BYTES}"


def test_a_refusal_never_echoes_a_value_or_a_label_name():
    canary = "CANARY-0123456789"
    for raw in (with_alert(fingerprint=canary), with_alert(labels={canary: 7}), with_alert(labels={canary * 20: "v"}),
                with_alert(startsAt=canary), body(version=canary), body(receiver=canary * 100)):
        reason = rejected(raw)
        assert "CANARY" not in reason and "0123456789" not in reason, reason


def test_text_is_made_safe_not_refused():
    hostile = "Dòng một\nDòng hai \x1b[31mđỏ\u202e ngược\u200b"
    [incoming] = incoming_alerts(parse_payload(with_alert(
        annotations={"summary": hostile}, labels={"alertname": "Bad\nName", "job\x07": "a\u2028b"})),
        agency_code="TUY_PHONG", now=NOW)
    a = incoming.alert
    assert a.summary == "Dòng một Dòng hai [31mđỏ ngược"
    assert a.ref == "Bad Name" and a.alert_key == "operator_alert:alert:1a30ba71cca2921f"
    assert a.labels == {"alertname": "Bad Name", "job": "a b"}  # (and the contract's Alert took them: TEXT_PATTERN)


def test_the_summary_falls_back_to_the_description_then_a_fixed_sentence():
    [d] = incoming_alerts(parse_payload(with_alert(annotations={"description": "Chỉ có mô tả"})),
                          agency_code="TUY_PHONG", now=NOW)
    [n] = incoming_alerts(parse_payload(with_alert(annotations={"summary": " \n "}, labels={})),
                          agency_code="TUY_PHONG", now=NOW)
    assert d.alert.summary == "Chỉ có mô tả"
    assert n.alert.summary.startswith("Prometheus báo một cảnh báo") and n.alert.ref == "Prometheus"
    assert n.alert.severity == "warning" and n.alert.alert_key == "operator_alert:alert:1a30ba71cca2921f"


@pytest.mark.parametrize(("value", "severity"), [("critical", "critical"), ("PAGE", "critical"),
                                                 ("warning", "warning"), ("info", "info"), ("", "warning"),
                                                 ("whatever", "warning")])
def test_severity_labels_map_to_parwatch_severities(value, severity):
    assert severity_of({"severity": value}) == severity


def test_at_most_32_labels_are_kept_alertname_and_severity_first():
    labels = {f"l{i:02d}": "v" for i in range(60)} | {"severity": "info", "alertname": "A"}
    kept = kept_labels(labels)
    assert len(kept) == 32 and list(kept)[:3] == ["alertname", "severity", "l00"]


def record(incoming, *, received_at: dt.datetime = NOW) -> AlertRecord:
    a = incoming.alert
    return AlertRecord(alert_key=a.alert_key, kind=a.kind, severity=a.severity, agency_code=a.agency_code, ref=a.ref,
                       summary=a.summary, starts_at=a.starts_at, state="firing", received_at=received_at,
                       labels=dict(a.labels))


def test_it_goes_to_the_technical_desk_alone_and_is_never_escalated(directory, calendar):
    [incoming] = incoming_alerts(parse_payload(body()), agency_code=directory.district_code, now=NOW)
    alert = record(incoming)
    assert restricted(directory, alert)
    assert [t.receiver_id for t in route_alert(directory, alert)] == ["tech"]
    policy = EscalationPolicy(head_after_hours=1, leadership_after_hours=2, min_severity="info")
    weeks_later = alert.starts_at + dt.timedelta(days=21)
    assert [t.receiver_id for t in desired_targets(directory, alert, now=weeks_later, escalation=policy,
                                                   calendar=calendar)] == ["tech"]


def test_the_desk_reads_it_in_vietnamese(directory, escalation):
    [incoming] = incoming_alerts(parse_payload(body()), agency_code=directory.district_code, now=NOW)
    a = incoming.alert
    item = {"notice_key": "k", "alert_key": a.alert_key, "state": "firing", "level": 0, "repeat": 0, "kind": a.kind,
            "severity": a.severity, "agency_code": a.agency_code, "ref": a.ref, "summary": a.summary,
            "starts_at": a.starts_at.isoformat(), "ends_at": None, "labels": dict(a.labels)}
    payload = {"type": "alerts", "receiver": "tech", "role": "officer", "agency": a.agency_code,
               "notice_keys": ["k"], "items": [item]}
    message = Renderer(directory=directory, escalation=escalation).render(payload, delivery_id="d", sent_at=NOW)
    assert "[KHẨN]" in message.subject and "1 cảnh báo vận hành hệ thống" in message.subject
    assert "Cảnh báo vận hành hệ thống: ParwatchServiceDown" in message.text
    assert "Kính gửi: Bộ phận kỹ thuật\n" in message.text  # the desk by its post, not the district's officer
    assert "Dịch vụ parwatch-notifier không phản hồi." in message.text
    assert "Kiểm tra và khắc phục sự cố của hệ thống parwatch" in message.text
