"""Inhibition (Alertmanager's ``inhibit_rules``): matchers, the defaults, the config, and the dispatch loop.

The loop is driven by hand with a fake ``now`` (no sleeping), applying each
plan as the store would.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest

from services.notifier.config import ConfigError, parse_directory
from services.notifier.domain.alerts import merge_alert
from services.notifier.domain.dispatch import Flush, plan_dispatch
from services.notifier.domain.inhibit import DEFAULT_INHIBIT_RULES, Inhibitor, parse_matcher
from services.notifier.domain.model import AlertRecord, EscalationPolicy, GroupState

VN = dt.timezone(dt.timedelta(hours=7))
T0 = dt.datetime(2026, 11, 25, 9, 0, tzinfo=VN)  # Wednesday, working hours
MIN = dt.timedelta(minutes=1)


class Loop:
    def __init__(self, directory, calendar, timing, escalation):
        self.directory, self.calendar, self.timing, self.escalation = directory, calendar, timing, escalation
        self.alerts: dict[str, AlertRecord] = {}
        self.assignments = {}
        self.groups: dict[tuple[str, str], GroupState] = {}
        self.suppressed = []

    def receive(self, alert: AlertRecord, now: dt.datetime) -> None:
        merged = merge_alert(self.alerts.get(alert.alert_key), replace(alert, received_at=now), now=now)
        if merged is not None:
            self.alerts[alert.alert_key] = merged

    def tick(self, now: dt.datetime) -> list[Flush]:
        plan = plan_dispatch(now=now, alerts=self.alerts, assignments=list(self.assignments.values()),
                             groups=self.groups, silences=[], directory=self.directory, timing=self.timing,
                             escalation=self.escalation, calendar=self.calendar, quiet_hours=False)
        for a in plan.removed:
            self.assignments.pop(a.key, None)
        for a in [*plan.created, *plan.updated]:
            self.assignments[a.key] = a
        for g in plan.groups:
            self.groups[g.key] = g
        self.suppressed += plan.suppressed
        return plan.flushes


def sent(flushes):
    return sorted((f.receiver_id, i.alert.kind, i.state, i.repeat) for f in flushes for i in f.items)


def no_escalation():
    return EscalationPolicy(head_after_hours=0, leadership_after_hours=0)


# -- matchers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "labels", "expected"), [
    ('kind="dossier_overdue"', {"kind": "dossier_overdue"}, True),
    ('kind!="dossier_overdue"', {"kind": "dossier_overdue"}, False),
    ('kind=~"dossier_due_soon|dossier_apology_due"', {"kind": "dossier_apology_due"}, True),
    ('kind=~"dossier"', {"kind": "dossier_overdue"}, False),  # anchored at both ends
    ('kind!~"dossier_.*"', {"kind": "kpi_below_target"}, True),
    ('reason=""', {}, True),  # a missing label is the empty string
    ("scope = district", {"scope": "district"}, True),
])
def test_matchers_are_alertmanagers(text, labels, expected):
    assert parse_matcher(text).matches(labels) is expected


@pytest.mark.parametrize("text", ["kind", 'kind=="x"', '1kind="x"', 'kind=~"("'])
def test_a_bad_matcher_is_refused(text):
    with pytest.raises(ValueError):
        parse_matcher(text)


# -- the default rules, as a pure check ---------------------------------------------------------


def test_an_overdue_dossier_inhibits_its_own_due_soon_and_apology_due_only(directory, make_alert):
    overdue = make_alert("o:H-1", kind="dossier_overdue", ref="H-1")
    alerts = [overdue, make_alert("s:H-1", ref="H-1"), make_alert("a:H-1", kind="dossier_apology_due", ref="H-1"),
              make_alert("s:H-2", ref="H-2"), make_alert("s:H-1:PNV", ref="H-1", agency="PNV")]
    inhibitor = Inhibitor.of(DEFAULT_INHIBIT_RULES, alerts, district_code=directory.district_code)
    desk = directory.officials["ptp-desk"]
    found = {a.alert_key: inhibitor.inhibits(a, desk) for a in alerts}
    assert found["s:H-1"].rule == "dossier-overdue" and found["s:H-1"].source_key == "o:H-1"
    assert found["a:H-1"].source_key == "o:H-1"
    assert found["o:H-1"] is None  # never itself
    assert found["s:H-2"] is None  # another dossier
    assert found["s:H-1:PNV"] is None  # equal: agency too
    resolved = Inhibitor.of(DEFAULT_INHIBIT_RULES, [replace(overdue, state="resolved"), *alerts[1:]],
                            district_code=directory.district_code)
    assert resolved.inhibits(alerts[1], desk) is None  # a resolved source inhibits nothing


def kpi(make_alert, agency, *, kpi_name="on_time", period="2026-11"):
    return make_alert(f"kpi_below_target:{agency}:{kpi_name}:{period}", kind="kpi_below_target", agency=agency,
                      ref=f"{kpi_name}/{period}", labels={"kpi": kpi_name, "period": period})


def test_a_district_kpi_inhibits_the_same_kpi_per_commune_for_the_leadership_only(directory, make_alert):
    district, commune = kpi(make_alert, "TUY_PHONG"), kpi(make_alert, "XA_CHI_CONG")
    other_kpi = kpi(make_alert, "PTP", kpi_name="online_filing")
    inhibitor = Inhibitor.of(DEFAULT_INHIBIT_RULES, [district, commune, other_kpi],
                             district_code=directory.district_code)
    lead, desk = directory.officials["lead"], directory.officials["chicong-desk"]
    assert inhibitor.inhibits(commune, lead).rule == "district-kpi"
    assert inhibitor.inhibits(commune, desk) is None  # the commune still hears of its own figure
    assert inhibitor.inhibits(other_kpi, lead) is None  # another KPI: another cause
    assert inhibitor.inhibits(district, lead) is None


# -- in the dispatch loop ------------------------------------------------------------------------


def test_inhibited_alerts_are_not_notified_until_the_source_resolves(directory, calendar, timing, make_alert):
    s = Loop(directory, calendar, timing, no_escalation())
    s.receive(make_alert("o:H-1", kind="dossier_overdue", ref="H-1"), T0)
    s.receive(make_alert("s:H-1", ref="H-1"), T0)
    s.receive(make_alert("a:H-1", kind="dossier_apology_due", ref="H-1"), T0)
    s.tick(T0)
    assert sent(s.tick(T0 + MIN)) == [("ptp-desk", "dossier_overdue", "firing", 0)]
    assert sorted((x.alert_key, x.rule) for x in s.suppressed) == [("a:H-1", "dossier-overdue"),
                                                                   ("s:H-1", "dossier-overdue")]
    assert s.tick(T0 + 10 * MIN) == []
    assert len(s.suppressed) == 2  # counted once
    s.receive(make_alert("o:H-1", kind="dossier_overdue", ref="H-1", state="resolved", ends_at=T0 + 20 * MIN),
              T0 + 20 * MIN)
    # The source resolved (say, a mistaken overdue); the due-soon and apology-due still fire: told now.
    assert sent(s.tick(T0 + 20 * MIN)) == [("ptp-desk", "dossier_apology_due", "firing", 0),
                                           ("ptp-desk", "dossier_due_soon", "firing", 0),
                                           ("ptp-desk", "dossier_overdue", "resolved", 0)]


def test_an_inhibited_alert_is_not_reminded_and_ends_silently(directory, calendar, timing, make_alert):
    s = Loop(directory, calendar, replace(timing, repeat_interval=dt.timedelta(hours=4)), no_escalation())
    s.receive(make_alert("s:H-1", ref="H-1"), T0)
    s.tick(T0)
    assert sent(s.tick(T0 + MIN)) == [("ptp-desk", "dossier_due_soon", "firing", 0)]
    s.receive(make_alert("o:H-1", kind="dossier_overdue", ref="H-1"), T0 + 2 * MIN)
    assert s.tick(T0 + 3 * MIN) == []  # the group sent 2 minutes ago
    assert sent(s.tick(T0 + 6 * MIN)) == [("ptp-desk", "dossier_overdue", "firing", 0)]
    reminders = s.tick(T0 + dt.timedelta(hours=4, minutes=5))
    assert sent(reminders) == []  # no due-soon reminder beside the overdue
    assert sent(s.tick(T0 + dt.timedelta(hours=4, minutes=10))) == [("ptp-desk", "dossier_overdue", "firing", 1)]
    s.receive(make_alert("s:H-1", ref="H-1", state="resolved", ends_at=T0 + dt.timedelta(hours=5)),
              T0 + dt.timedelta(hours=5))
    assert s.tick(T0 + dt.timedelta(hours=5)) == []
    assert s.assignments[("s:H-1", "ptp-desk")].done  # closed without a resolved notice


def test_an_inhibited_alert_is_not_escalated(directory, calendar, timing, make_alert):
    s = Loop(directory, calendar, replace(timing, repeat_interval=dt.timedelta(days=30)),
             EscalationPolicy(head_after_hours=1, leadership_after_hours=0))
    s.receive(make_alert("o:H-1", kind="dossier_overdue", ref="H-1", starts_at=T0), T0)
    s.receive(make_alert("a:H-1", kind="dossier_apology_due", ref="H-1", starts_at=T0), T0)
    s.tick(T0)
    s.tick(T0 + MIN)
    s.tick(T0 + dt.timedelta(hours=2))
    flushes = s.tick(T0 + dt.timedelta(hours=2, minutes=1))
    assert sent(flushes) == [("ptp-head", "dossier_overdue", "firing", 0)]  # the head hears of the overdue only
    assert ("a:H-1", "ptp-head") not in s.assignments


def test_inhibit_rules_off_means_every_alert_is_notified(directory, calendar, timing, make_alert):
    s = Loop(replace(directory, inhibit_rules=()), calendar, timing, no_escalation())
    s.receive(make_alert("o:H-1", kind="dossier_overdue", ref="H-1"), T0)
    s.receive(make_alert("s:H-1", ref="H-1"), T0)
    s.tick(T0)
    assert sent(s.tick(T0 + MIN)) == [("ptp-desk", "dossier_due_soon", "firing", 0),
                                      ("ptp-desk", "dossier_overdue", "firing", 0)]


# -- the directory file ------------------------------------------------------------------------------

BASE = """\
version: 1
agencies:
  - code: PTP
    officials:
      - {id: ptp-desk, name: Một cửa, role: officer, email: ptp.desk@example.invalid}
routes:
  - name: default
    receivers: [officer]
"""


def test_without_the_key_the_defaults_apply_and_an_empty_list_turns_inhibition_off():
    assert parse_directory(BASE).inhibit_rules == DEFAULT_INHIBIT_RULES
    assert parse_directory(BASE + "inhibit_rules: []\n").inhibit_rules == ()


def test_configured_rules_are_loaded():
    text = BASE + """inhibit_rules:
  - name: critical-over-warning
    source_matchers: ['severity="critical"']
    target_matchers: ['severity="warning"']
    equal: [ref]
    receivers: [ptp-desk]
"""
    (rule,) = parse_directory(text).inhibit_rules
    assert rule.name == "critical-over-warning" and rule.equal == ("ref",)
    assert rule.receivers == frozenset({"ptp-desk"}) and str(rule.source[0]) == 'severity="critical"'


def test_bad_rules_name_file_line_and_field():
    text = BASE + """inhibit_rules:
  - name: r1
    source_matchers: ['kind="dossier_late"']
    target_matchers: ['kind="dossier_due_soon"']
    receivers: [nobody]
  - name: r2
    source_matchers: ['kind=="x"']
    target_matchers: ['kind="dossier_due_soon"']
"""
    with pytest.raises(ConfigError) as info:
        parse_directory(text, source="dir.yaml")
    found = info.value.problems
    assert any(p.startswith("dir.yaml:15: inhibit_rules[1].source_matchers") for p in found), found
    with pytest.raises(ConfigError) as info:
        parse_directory(text.split("  - name: r2")[0], source="dir.yaml")
    found = info.value.problems
    assert found[0].startswith("dir.yaml:11: inhibit_rules[0].source_matchers[0]: unknown alert kind 'dossier_late'")
    assert found[1].startswith("dir.yaml:13: inhibit_rules[0].receivers[0]: 'nobody' is neither a role")
