"""Grouping, dedup, repeats, resolved notices, quiet hours, silences and escalation.

A tiny in-memory loop applies each plan as the store would, with a fake
``now``: no sleeping, no I/O.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from services.notifier.domain.alerts import merge_alert
from services.notifier.domain.dispatch import Flush, plan_dispatch
from services.notifier.domain.model import AlertRecord, EscalationPolicy, GroupState, Timing
from services.notifier.domain.silence import Silence

VN = dt.timezone(dt.timedelta(hours=7))
T0 = dt.datetime(2026, 11, 25, 9, 0, tzinfo=VN)  # Wednesday, working hours


class Sim:
    def __init__(self, directory, calendar, timing, escalation, *, quiet_hours=True):
        self.directory, self.calendar, self.timing, self.escalation = directory, calendar, timing, escalation
        self.quiet_hours = quiet_hours
        self.alerts: dict[str, AlertRecord] = {}
        self.assignments = {}
        self.groups: dict[tuple[str, str], GroupState] = {}
        self.silences: list[Silence] = []
        self.sent: list[Flush] = []
        self.suppressed = []

    def receive(self, alert: AlertRecord, now: dt.datetime) -> None:
        alert = replace(alert, received_at=now)  # as the store records it
        merged = merge_alert(self.alerts.get(alert.alert_key), alert, now=now)
        if merged is not None:
            self.alerts[alert.alert_key] = merged

    def tick(self, now: dt.datetime) -> list[Flush]:
        plan = plan_dispatch(now=now, alerts=self.alerts, assignments=list(self.assignments.values()),
                             groups=self.groups, silences=self.silences, directory=self.directory,
                             timing=self.timing, escalation=self.escalation, calendar=self.calendar,
                             quiet_hours=self.quiet_hours)
        for a in plan.removed:
            self.assignments.pop(a.key, None)
        for a in [*plan.created, *plan.updated]:
            self.assignments[a.key] = a
        for g in plan.groups:
            self.groups[g.key] = g
        self.sent += plan.flushes
        self.suppressed += plan.suppressed
        return plan.flushes


def sim(directory, calendar, timing, escalation, **kw):
    return Sim(directory, calendar, timing, escalation, **kw)


def summary(flushes):
    return sorted((f.receiver_id, f.agency_code, tuple((i.alert.ref, i.state, i.repeat) for i in f.items))
                  for f in flushes)


def test_group_wait_then_one_notice_per_receiver_and_agency(directory, calendar, timing, escalation, make_alert):
    s = sim(directory, calendar, timing, escalation)
    s.receive(make_alert("a1", ref="H-1"), T0)
    assert s.tick(T0) == []  # group wait: siblings may still come
    s.receive(make_alert("a2", ref="H-2", kind="dossier_overdue"), T0 + dt.timedelta(seconds=10))
    s.receive(make_alert("b1", ref="N-1", agency="PNV"), T0 + dt.timedelta(seconds=10))
    assert s.tick(T0 + dt.timedelta(seconds=10)) == []
    flushes = s.tick(T0 + dt.timedelta(seconds=30))
    # a2 joined a1's group before the wait ended: one notice carries both; PNV's has its own wait.
    assert summary(flushes) == [("ptp-desk", "PTP", (("H-2", "firing", 0), ("H-1", "firing", 0)))]
    assert summary(s.tick(T0 + dt.timedelta(seconds=40))) == [("pnv-desk", "PNV", (("N-1", "firing", 0),))]
    assert s.tick(T0 + dt.timedelta(hours=1)) == []  # notified once, not again


def test_group_interval_batches_later_alerts(directory, calendar, timing, escalation, make_alert):
    s = sim(directory, calendar, timing, escalation)
    s.receive(make_alert("a1", ref="H-1"), T0)
    s.tick(T0)
    assert len(s.tick(T0 + dt.timedelta(seconds=30))) == 1
    s.receive(make_alert("a2", ref="H-2"), T0 + dt.timedelta(minutes=1))
    s.tick(T0 + dt.timedelta(minutes=1))
    s.receive(make_alert("a3", ref="H-3"), T0 + dt.timedelta(minutes=2))
    assert s.tick(T0 + dt.timedelta(minutes=2)) == []  # group sent 1.5 min ago: wait for the interval
    flushes = s.tick(T0 + dt.timedelta(seconds=330))
    assert summary(flushes) == [("ptp-desk", "PTP", (("H-2", "firing", 0), ("H-3", "firing", 0)))]


def test_same_alert_key_twice_is_notified_once(directory, calendar, timing, escalation, make_alert):
    s = sim(directory, calendar, timing, escalation)
    s.receive(make_alert("a1", summary="lần 1"), T0)
    s.tick(T0)
    s.receive(make_alert("a1", summary="lần 2"), T0 + dt.timedelta(seconds=5))  # republished by the monitor
    flushes = s.tick(T0 + dt.timedelta(seconds=30))
    assert len(flushes) == 1 and len(flushes[0].items) == 1
    assert flushes[0].items[0].alert.summary == "lần 2"
    s.receive(make_alert("a1", summary="lần 3"), T0 + dt.timedelta(minutes=10))
    assert s.tick(T0 + dt.timedelta(minutes=30)) == []


def test_repeat_interval_reminds_of_a_long_firing_alert(directory, calendar, timing, escalation, make_alert):
    s = sim(directory, calendar, replace(timing, repeat_interval=dt.timedelta(hours=4)),
            replace(escalation, head_after_hours=0, leadership_after_hours=0))
    s.receive(make_alert("a1"), T0)
    s.tick(T0)
    s.tick(T0 + dt.timedelta(seconds=30))
    assert s.tick(T0 + dt.timedelta(hours=4)) == []  # 4 h after the notice, not yet
    flushes = s.tick(T0 + dt.timedelta(hours=4, seconds=30))
    assert summary(flushes) == [("ptp-desk", "PTP", (("H31.12-001", "firing", 1),))]
    assert flushes[0].items[0].notice_key.endswith(":firing:r1")


def test_resolved_notice_only_for_what_was_notified(directory, calendar, timing, escalation, make_alert):
    s = sim(directory, calendar, timing, escalation)
    s.receive(make_alert("a1", ref="H-1"), T0)
    s.receive(make_alert("a2", ref="H-2"), T0)
    s.tick(T0)
    s.tick(T0 + dt.timedelta(seconds=30))
    s.receive(make_alert("a1", ref="H-1", state="resolved", ends_at=T0 + dt.timedelta(minutes=20)),
              T0 + dt.timedelta(minutes=20))
    flushes = s.tick(T0 + dt.timedelta(minutes=20))
    assert summary(flushes) == [("ptp-desk", "PTP", (("H-1", "resolved", 0),))]
    # Resolved before anyone was told: closed silently.
    s.receive(make_alert("a3", ref="H-3"), T0 + dt.timedelta(minutes=21))
    s.tick(T0 + dt.timedelta(minutes=21))
    s.receive(make_alert("a3", ref="H-3", state="resolved", ends_at=T0 + dt.timedelta(minutes=21, seconds=10)),
              T0 + dt.timedelta(minutes=21, seconds=10))
    assert s.tick(T0 + dt.timedelta(hours=1)) == []
    assert s.assignments[("a3", "ptp-desk")].done


def test_a_late_firing_copy_does_not_reopen_a_resolved_alert(directory, calendar, timing, escalation, make_alert):
    s = sim(directory, calendar, timing, escalation)
    s.receive(make_alert("a1", state="resolved", ends_at=T0), T0)
    s.receive(make_alert("a1"), T0 + dt.timedelta(seconds=1))  # the firing event, out of order
    assert s.alerts["a1"].state == "resolved"
    assert s.tick(T0 + dt.timedelta(minutes=5)) == []
    # A new episode (later starts_at) fires again.
    s.receive(make_alert("a1", starts_at=T0 + dt.timedelta(hours=1)), T0 + dt.timedelta(hours=1))
    s.tick(T0 + dt.timedelta(hours=1))
    assert len(s.tick(T0 + dt.timedelta(hours=1, seconds=30))) == 1


def test_quiet_hours_hold_all_but_critical(directory, calendar, timing, escalation, make_alert):
    s = sim(directory, calendar, timing, escalation)
    evening = dt.datetime(2026, 11, 27, 18, 0, tzinfo=VN)  # Friday after office hours
    s.receive(make_alert("w", ref="H-W", starts_at=evening), evening)
    s.receive(make_alert("c", ref="H-C", severity="critical", kind="dossier_overdue", starts_at=evening), evening)
    s.tick(evening)
    flushes = s.tick(evening + dt.timedelta(minutes=1))
    assert summary(flushes) == [("ptp-desk", "PTP", (("H-C", "firing", 0),))]  # critical goes out at night
    assert s.tick(dt.datetime(2026, 11, 28, 10, 0, tzinfo=VN)) == []  # Saturday: held
    monday = dt.datetime(2026, 11, 30, 7, 0, tzinfo=VN)
    assert summary(s.tick(monday - dt.timedelta(minutes=1))) == []  # the critical reminder waits too
    assert summary(s.tick(monday)) == [("ptp-desk", "PTP", (("H-C", "firing", 1), ("H-W", "firing", 0)))]


def test_quiet_hours_can_be_switched_off(directory, calendar, timing, escalation, make_alert):
    s = sim(directory, calendar, timing, escalation, quiet_hours=False)
    night = dt.datetime(2026, 11, 25, 23, 0, tzinfo=VN)
    s.receive(make_alert("w", starts_at=night), night)
    s.tick(night)
    assert len(s.tick(night + dt.timedelta(minutes=1))) == 1


def test_silence_suppresses_once_and_releases_on_expiry(directory, calendar, timing, escalation, make_alert):
    s = sim(directory, calendar, timing, escalation)
    s.silences = [Silence(id="s1", starts_at=T0, ends_at=T0 + dt.timedelta(hours=1), comment="đang xử lý",
                          created_at=T0, agencies=frozenset({"PTP"}))]
    s.receive(make_alert("a1", ref="H-1"), T0)
    s.receive(make_alert("b1", ref="N-1", agency="PNV"), T0)
    s.tick(T0)
    flushes = s.tick(T0 + dt.timedelta(minutes=1))
    assert summary(flushes) == [("pnv-desk", "PNV", (("N-1", "firing", 0),))]
    s.tick(T0 + dt.timedelta(minutes=30))
    assert [(x.receiver_id, x.alert_key, x.silence_id) for x in s.suppressed] == [("ptp-desk", "a1", "s1")]
    flushes = s.tick(T0 + dt.timedelta(hours=1))  # the silence ended; the alert still fires
    assert summary(flushes) == [("ptp-desk", "PTP", (("H-1", "firing", 0),))]


def test_resolved_while_silenced_is_closed_without_notice(directory, calendar, timing, escalation, make_alert):
    s = sim(directory, calendar, timing, escalation)
    s.receive(make_alert("a1"), T0)
    s.tick(T0)
    s.tick(T0 + dt.timedelta(seconds=30))
    s.silences = [Silence(id="s1", starts_at=T0, ends_at=T0 + dt.timedelta(days=1), comment="x", created_at=T0,
                          alert_keys=frozenset({"a1"}))]
    s.receive(make_alert("a1", state="resolved", ends_at=T0 + dt.timedelta(minutes=5)), T0 + dt.timedelta(minutes=5))
    assert s.tick(T0 + dt.timedelta(minutes=10)) == []
    assert s.assignments[("a1", "ptp-desk")].done


def test_escalation_to_head_then_leadership_in_working_hours(directory, calendar, timing, make_alert):
    s = sim(directory, calendar, replace(timing, repeat_interval=dt.timedelta(days=30)),
            EscalationPolicy(head_after_hours=8, leadership_after_hours=24), quiet_hours=False)
    start = dt.datetime(2026, 11, 27, 16, 0, tzinfo=VN)  # Friday 16:00
    s.receive(make_alert("a1", ref="H-1", starts_at=start, severity="warning"), start)
    s.tick(start)
    assert [f.receiver_id for f in s.tick(start + dt.timedelta(seconds=30))] == ["ptp-desk"]
    head_due = dt.datetime(2026, 11, 30, 16, 0, tzinfo=VN)  # 8 working hours later, after the weekend
    assert s.tick(head_due - dt.timedelta(minutes=1)) == []
    s.tick(head_due)
    flushes = s.tick(head_due + dt.timedelta(seconds=30))
    assert [(f.receiver_id, f.items[0].level) for f in flushes] == [("ptp-head", 1)]
    lead_due = dt.datetime(2026, 12, 2, 16, 0, tzinfo=VN)
    s.tick(lead_due)
    flushes = s.tick(lead_due + dt.timedelta(seconds=30))
    assert [(f.receiver_id, f.items[0].level) for f in flushes] == [("lead", 2)]
    # Resolved: everyone who heard of it hears that it ended.
    end = lead_due + dt.timedelta(hours=1)
    s.receive(make_alert("a1", ref="H-1", starts_at=start, state="resolved", ends_at=end), end)
    flushes = s.tick(end)
    assert sorted((f.receiver_id, f.items[0].state) for f in flushes) == [
        ("lead", "resolved"), ("ptp-desk", "resolved"), ("ptp-head", "resolved")]


def test_routes_that_say_no_escalation_and_info_alerts_do_not_escalate(directory, calendar, timing, escalation,
                                                                        make_alert):
    s = sim(directory, calendar, timing, escalation, quiet_hours=False)
    old = T0 - dt.timedelta(days=30)
    s.receive(make_alert("dl", kind="deadletter", agency="PNV", ref="TTHC_DOSSIER", starts_at=old), T0)
    s.receive(make_alert("i", severity="info", starts_at=old), T0)
    s.tick(T0)
    assert sorted(f.receiver_id for f in s.tick(T0 + dt.timedelta(minutes=1))) == ["ptp-desk", "tech"]


alert_events = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from(["firing", "resolved"]), st.integers(0, 2),
              st.integers(0, 120)),
    min_size=1, max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(events=alert_events)
def test_whatever_the_order_each_episode_is_notified_firing_at_most_once_per_receiver(
    directory, calendar, make_alert, events
):
    timing = Timing(dt.timedelta(seconds=30), dt.timedelta(minutes=5), dt.timedelta(days=30))
    s = Sim(directory, calendar, timing, EscalationPolicy(0, 0), quiet_hours=False)
    now = T0
    for key, state, episode, gap in events:
        starts = T0 - dt.timedelta(days=1) + dt.timedelta(hours=episode)
        s.receive(make_alert(key, ref=key, state=state, starts_at=starts,
                             ends_at=now if state == "resolved" else None), now)
        s.tick(now)
        now += dt.timedelta(seconds=gap)
    s.tick(now + dt.timedelta(hours=1))
    firing, resolved = {}, {}
    for f in s.sent:
        for i in f.items:
            bucket = firing if i.state == "firing" else resolved
            k = (f.receiver_id, i.notice_key)
            bucket[k] = bucket.get(k, 0) + 1
    assert all(n == 1 for n in firing.values()), firing
    assert all(n == 1 for n in resolved.values()), resolved
    # A resolved notice only follows a firing notice of the same episode.
    for (receiver, key), _ in resolved.items():
        assert (receiver, key.replace(":resolved", ":firing")) in firing
