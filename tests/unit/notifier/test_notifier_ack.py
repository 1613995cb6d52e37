"""Acknowledgements, pure: signed links (valid, expired, tampered, other receiver), when one holds, its effect on
reminders and escalation in the dispatch loop (a fake ``now``, no sleeping), and how messages show it."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, replace

import pytest

from services.notifier.ack import AckLinks
from services.notifier.domain.ack import (
    Acknowledgement,
    LinkClaim,
    LinkError,
    _b64,
    _unb64,
    holds,
    sign_link,
    verify_link,
)
from services.notifier.domain.alerts import merge_alert
from services.notifier.domain.digest import DigestPeriod, build_weekly
from services.notifier.domain.dispatch import Flush, plan_dispatch
from services.notifier.domain.model import AlertRecord, EscalationPolicy, GroupState
from services.notifier.render import Renderer
from services.notifier.service import _jsonable

VN = dt.timezone(dt.timedelta(hours=7))
T0 = dt.datetime(2026, 11, 25, 9, 0, tzinfo=VN)  # Wednesday, working hours
SECRET = b"k" * 32
EXPIRES = int((T0 + dt.timedelta(days=7)).timestamp())


def claim(**kw) -> LinkClaim:
    return LinkClaim(**{"alert_key": "dossier_overdue:H-1", "receiver_id": "ptp-desk", "kind": "apology_sent",
                        "expires": EXPIRES, **kw})


# -- signed links ------------------------------------------------------------------------------


def test_a_valid_link_gives_back_its_claim():
    assert verify_link(SECRET, sign_link(SECRET, claim()), now=T0) == claim()


def test_an_expired_link_is_refused():
    token = sign_link(SECRET, claim())
    assert verify_link(SECRET, token, now=T0 + dt.timedelta(days=7) - dt.timedelta(seconds=1)) == claim()
    with pytest.raises(LinkError) as info:
        verify_link(SECRET, token, now=T0 + dt.timedelta(days=7))
    assert info.value.reason == "expired"


def _tamper(token: str, **changes) -> str:
    body, mac = token.split(".")
    raw = json.loads(_unb64(body))
    raw.update(changes)
    return f"{_b64(json.dumps(raw).encode())}.{mac}"


@pytest.mark.parametrize("changes", [{"r": "ptp-head"}, {"a": "dossier_overdue:H-2"}, {"k": "handling"},
                                     {"e": EXPIRES + 86400}])
def test_a_tampered_link_is_refused_whatever_was_changed(changes):
    """Another receiver, another alert, another kind or a later expiry: the signature no longer matches."""
    with pytest.raises(LinkError) as info:
        verify_link(SECRET, _tamper(sign_link(SECRET, claim()), **changes), now=T0)
    assert info.value.reason == "signature"


def test_a_link_signed_with_another_secret_or_cut_short_is_refused():
    with pytest.raises(LinkError, match="signature"):
        verify_link(b"other", sign_link(SECRET, claim()), now=T0)
    token = sign_link(SECRET, claim())
    for bad in (token[:-4], token.split(".")[0], "x.y", "", token + ".x"):
        with pytest.raises(LinkError):
            verify_link(SECRET, bad, now=T0)


def test_links_are_one_per_kind_and_bound_to_receiver_and_alert():
    links = AckLinks(secret=SECRET, base_url="https://parwatch.example/notifier/", ttl=dt.timedelta(days=7))
    urls = links.urls("dossier_overdue:H-1", "ptp-desk", now=T0)
    assert set(urls) == {"apology_sent", "handling"}
    for kind, url in urls.items():
        assert url.startswith("https://parwatch.example/notifier/ack/")
        got = verify_link(SECRET, url.rsplit("/", 1)[1], now=T0)
        assert (got.alert_key, got.receiver_id, got.kind, got.expires) == ("dossier_overdue:H-1", "ptp-desk", kind,
                                                                          EXPIRES)


# -- when an acknowledgement holds -------------------------------------------------------------------


def ack_of(alert: AlertRecord, **kw) -> Acknowledgement:
    return Acknowledgement(**{"alert_key": alert.alert_key, "episode": alert.starts_at, "severity": alert.severity,
                              "official_id": "ptp-desk", "kind": "handling", "acked_at": T0, "via": "cli", **kw})


def test_an_ack_holds_for_its_episode_until_the_severity_rises(make_alert):
    alert = make_alert("a1", severity="warning")
    ack = ack_of(alert)
    assert holds(ack, alert)
    assert holds(ack, replace(alert, severity="info"))
    assert not holds(ack, replace(alert, severity="critical"))
    assert not holds(ack, replace(alert, starts_at=alert.starts_at + dt.timedelta(days=1)))  # fired again
    assert not holds(None, alert)


# -- in the dispatch loop ------------------------------------------------------------------------------


class Loop:
    def __init__(self, directory, calendar, timing, escalation):
        self.directory, self.calendar, self.timing, self.escalation = directory, calendar, timing, escalation
        self.alerts: dict[str, AlertRecord] = {}
        self.assignments = {}
        self.groups: dict[tuple[str, str], GroupState] = {}
        self.acks: dict[str, Acknowledgement] = {}

    def receive(self, alert: AlertRecord, now: dt.datetime) -> None:
        merged = merge_alert(self.alerts.get(alert.alert_key), replace(alert, received_at=now), now=now)
        if merged is not None:
            self.alerts[alert.alert_key] = merged

    def tick(self, now: dt.datetime) -> list[Flush]:
        plan = plan_dispatch(now=now, alerts=self.alerts, assignments=list(self.assignments.values()),
                             groups=self.groups, silences=[], directory=self.directory, timing=self.timing,
                             escalation=self.escalation, calendar=self.calendar, quiet_hours=False, acks=self.acks)
        for a in plan.removed:
            self.assignments.pop(a.key, None)
        for a in [*plan.created, *plan.updated]:
            self.assignments[a.key] = a
        for g in plan.groups:
            self.groups[g.key] = g
        return plan.flushes


def sent(flushes):
    return sorted((f.receiver_id, i.alert.alert_key, i.state, i.repeat) for f in flushes for i in f.items)


H = dt.timedelta(hours=1)


def test_an_acknowledged_alert_is_not_reminded_nor_escalated_but_its_end_is_told(directory, calendar, timing,
                                                                                  make_alert):
    s = Loop(directory, calendar, replace(timing, repeat_interval=4 * H),
             EscalationPolicy(head_after_hours=2, leadership_after_hours=0))
    alert = make_alert("a1", kind="dossier_overdue", starts_at=T0)
    s.receive(alert, T0)
    s.tick(T0)
    assert sent(s.tick(T0 + dt.timedelta(seconds=30))) == [("ptp-desk", "a1", "firing", 0)]
    s.acks["a1"] = ack_of(s.alerts["a1"], acked_at=T0 + H)
    for hours in range(1, 24):
        assert s.tick(T0 + hours * H) == []  # no reminder at 4 h, no escalation to the head at 2 h
    assert ("a1", "ptp-head") not in s.assignments
    s.receive(replace(alert, state="resolved", ends_at=T0 + 25 * H), T0 + 25 * H)
    assert sent(s.tick(T0 + 25 * H)) == [("ptp-desk", "a1", "resolved", 0)]


def test_without_the_ack_the_same_alert_is_reminded_and_escalated(directory, calendar, timing, make_alert):
    """The control of the test above: the loop does remind and escalate when nobody acknowledged."""
    s = Loop(directory, calendar, replace(timing, repeat_interval=4 * H),
             EscalationPolicy(head_after_hours=2, leadership_after_hours=0))
    s.receive(make_alert("a1", kind="dossier_overdue", starts_at=T0), T0)
    s.tick(T0)
    s.tick(T0 + dt.timedelta(seconds=30))
    flushes = [f for hours in range(1, 6) for f in s.tick(T0 + hours * H)]
    assert ("ptp-head", "a1", "firing", 0) in sent(flushes) and ("ptp-desk", "a1", "firing", 1) in sent(flushes)


def test_a_higher_severity_or_a_new_episode_ends_the_ack(directory, calendar, timing, make_alert):
    s = Loop(directory, calendar, replace(timing, repeat_interval=4 * H),
             EscalationPolicy(head_after_hours=0, leadership_after_hours=0))
    alert = make_alert("a1", kind="dossier_overdue", starts_at=T0)
    s.receive(alert, T0)
    s.tick(T0)
    s.tick(T0 + dt.timedelta(seconds=30))
    s.acks["a1"] = ack_of(s.alerts["a1"])
    assert s.tick(T0 + 5 * H) == []
    s.receive(replace(alert, severity="critical"), T0 + 6 * H)  # worse: the reminders resume
    assert sent(s.tick(T0 + 6 * H)) == [("ptp-desk", "a1", "firing", 1)]

    s.receive(replace(alert, state="resolved", ends_at=T0 + 7 * H), T0 + 7 * H)
    s.tick(T0 + 7 * H)
    s.acks["a1"] = ack_of(s.alerts["a1"], severity="critical")
    s.receive(replace(alert, starts_at=T0 + 8 * H), T0 + 8 * H)  # fired again: a new episode
    assert sent(s.tick(T0 + 8 * H + dt.timedelta(minutes=5))) == [("ptp-desk", "a1", "firing", 0)]


# -- messages --------------------------------------------------------------------------------------------


def test_a_notice_carries_the_receivers_links_and_a_digest_says_who_answered(directory, escalation, make_alert):
    links = AckLinks(secret=SECRET, base_url="http://localhost:9104", ttl=dt.timedelta(days=7))
    renderer = Renderer(directory=directory, escalation=escalation, ack_links=links.urls)
    alert = make_alert("dossier_overdue:H-1", kind="dossier_overdue", ref="H-1")
    item = {"notice_key": "k", "alert_key": alert.alert_key, "state": "firing", "level": 0, "repeat": 0,
            "kind": alert.kind, "severity": alert.severity, "agency_code": "PTP", "ref": "H-1",
            "summary": alert.summary, "starts_at": alert.starts_at.isoformat(), "ends_at": None, "labels": {}}
    body = {"type": "alerts", "receiver": "ptp-desk", "role": "officer", "agency": "PTP", "items": [item]}
    message = renderer.render(body, delivery_id="d1", sent_at=T0)
    urls = links.urls(alert.alert_key, "ptp-desk", now=T0)
    assert f'Xác nhận "Đã gửi thư xin lỗi": {urls["apology_sent"]}' in message.text
    assert f'Xác nhận "Đang xử lý": {urls["handling"]}' in message.text
    assert f'href="{urls["handling"]}"' in message.html
    plain = Renderer(directory=directory, escalation=escalation).render(body, delivery_id="d1", sent_at=T0)
    assert "Xác nhận" not in plain.text  # no links configured, none shown

    period = DigestPeriod("weekly", "2026-W47", dt.date(2026, 11, 16), dt.date(2026, 11, 22))
    ack = ack_of(alert, kind="apology_sent", acked_at=T0, note="đã gọi điện hẹn lại")
    digest = build_weekly("PTP", period, [alert], {alert.alert_key: ack})
    assert digest.overdue[0].ack == ack
    payload = {"type": "digest", "receiver": "ptp-desk", "role": "officer", "agency": "PTP",
               "digest": _jsonable(asdict(digest)) | {"kind": "weekly"}}
    text = renderer.render(payload, delivery_id="d2", sent_at=T0).text
    assert "Đã xác nhận: đã gửi thư xin lỗi - Một cửa Phòng Tư pháp, 25/11/2026 09:00 (đã gọi điện hẹn lại)" in text
    stale = build_weekly("PTP", period, [replace(alert, starts_at=alert.starts_at + H)], {alert.alert_key: ack})
    assert stale.overdue[0].ack is None  # an ack of an earlier episode says nothing of this one
