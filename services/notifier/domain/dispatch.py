"""What to send now: routing, escalation, grouping, repeats, resolved notices.

One pure function, :func:`plan_dispatch`, takes the notifier's state and
``now`` and returns a :class:`Plan`. The caller persists the plan (new and
changed assignments, group flush times) together with the outbox rows of its
flushes, in one transaction, so a plan is carried out at most once.

Semantics (Alertmanager's, per receiver and agency):

* An *assignment* says that a receiver should hear of an alert episode (an
  ``alert_key`` with its ``starts_at``). It is created when a route or an
  escalation level names the receiver, and remembers what was notified.
* A *group* is (receiver, agency); every code outside the agency directory
  is one agency, ``unknown``, so invented codes make one notice, not one each,
  and never reach a subject. A new alert is ready ``group_wait`` after
  it was received (an escalation: after it was decided); a group sends at
  most once per ``group_interval``;
  when a group sends, it carries every notice it has pending, so alerts that
  arrive together go in one message.
* A firing alert already notified is repeated ``repeat_interval`` after the
  last notice; a resolved alert that was notified firing gets a resolved
  notice; one that was never notified is closed silently.
* A silenced alert is not sent (``suppressed``, counted once); quiet hours
  hold every notice but a new critical alert until working hours.
* An inhibited alert (``domain.inhibit``: another firing alert shares its
  cause) is held like a silenced one, and no escalation is decided for it
  while inhibited; once the source resolves it is notified as usual.
* An acknowledged alert (``domain.ack``) is not repeated and not escalated
  while the acknowledgement holds (same episode, severity not risen); its
  resolved notice still goes out.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol

from services.notifier.domain.ack import Acknowledgement, holds
from services.notifier.domain.escalation import WorkingHours, escalation_level, escalation_targets, escalation_times
from services.notifier.domain.inhibit import Inhibition, Inhibitor
from services.notifier.domain.model import (
    KIND_ORDER,
    LEVEL_ROUTED,
    SEVERITY_RANK,
    AlertRecord,
    Assignment,
    Directory,
    EscalationPolicy,
    GroupState,
    Timing,
    notice_key,
)
from services.notifier.domain.quiet import WorkingDays, bypasses_quiet, is_quiet
from services.notifier.domain.routing import Target, matching_routes, restricted, route_alert
from services.notifier.domain.silence import Silence, silenced_by


class Calendar(WorkingHours, WorkingDays, Protocol):
    pass


@dataclass(frozen=True)
class NoticeItem:
    """One alert in one notice: firing (first or repeat) or resolved."""

    alert: AlertRecord
    state: str
    level: int
    repeat: int = 0

    @property
    def notice_key(self) -> str:
        return notice_key(self.alert.alert_key, self.alert.starts_at, self.state, self.repeat)


@dataclass(frozen=True)
class Flush:
    """A notice to one receiver about one agency's alerts."""

    receiver_id: str
    agency_code: str
    items: tuple[NoticeItem, ...]


@dataclass(frozen=True)
class Suppression:
    """A notice held back: by a silence (``silence_id``) or an inhibit rule (``rule``, ``silence_id`` empty)."""

    receiver_id: str
    alert_key: str
    silence_id: str
    rule: str = ""
    source_key: str = ""


@dataclass
class Plan:
    created: list[Assignment] = field(default_factory=list)
    updated: list[Assignment] = field(default_factory=list)
    removed: list[Assignment] = field(default_factory=list)
    flushes: list[Flush] = field(default_factory=list)
    groups: list[GroupState] = field(default_factory=list)
    suppressed: list[Suppression] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.created or self.updated or self.removed or self.flushes or self.groups)


@dataclass(frozen=True)
class _Candidate:
    assignment: Assignment
    item: NoticeItem
    ready_at: dt.datetime
    group_interval: dt.timedelta


def desired_targets(
    directory: Directory,
    alert: AlertRecord,
    *,
    now: dt.datetime,
    escalation: EscalationPolicy,
    calendar: WorkingHours,
) -> list[Target]:
    """Everyone who should hear of a firing alert at ``now``: routes, then escalation (never for a restricted one:
    the technical desk alone)."""
    targets = route_alert(directory, alert)
    if restricted(directory, alert):
        return targets
    routes = matching_routes(directory, alert)
    escalating = [r for r in routes if r.escalate]
    if escalating:
        level = escalation_level(alert, now=now, times=escalation_times(alert, escalation, calendar))
        if level:
            seen = {t.receiver_id for t in targets}
            for t in escalation_targets(directory, alert, level=level, route=escalating[0].name):
                if t.receiver_id not in seen:
                    seen.add(t.receiver_id)
                    targets.append(t)
    return targets


def plan_dispatch(
    *,
    now: dt.datetime,
    alerts: Mapping[str, AlertRecord],
    assignments: Iterable[Assignment],
    groups: Mapping[tuple[str, str], GroupState],
    silences: Iterable[Silence],
    directory: Directory,
    timing: Timing,
    escalation: EscalationPolicy,
    calendar: Calendar,
    quiet_hours: bool = True,
    acks: Mapping[str, Acknowledgement] | None = None,
) -> Plan:
    plan = _PlanBuilder()
    acks = acks or {}
    silences = list(silences)
    inhibitor = Inhibitor.of(directory.inhibit_rules, alerts.values(), district_code=directory.district_code)
    live: dict[tuple[str, str], Assignment] = {}
    known: set[tuple[str, str]] = set()
    for a in assignments:
        alert = alerts.get(a.alert_key)
        if alert is None or a.episode != alert.starts_at or a.receiver_id not in directory.officials:
            plan.removed.append(a)  # an older episode, or a receiver gone from the directory
            continue
        if restricted(directory, alert) and a.receiver_id not in directory.technical_desk:
            plan.removed.append(a)  # routed before the directory said so (an older notifier): the desk's alone now
            continue
        known.add(a.key)
        if not a.done:
            live[a.key] = a

    for alert in alerts.values():
        if not alert.firing:
            continue
        for t in desired_targets(directory, alert, now=now, escalation=escalation, calendar=calendar):
            key = (alert.alert_key, t.receiver_id)
            if key in known:
                continue
            if t.level != LEVEL_ROUTED and (holds(acks.get(alert.alert_key), alert)
                                            or inhibitor.inhibits(alert, directory.officials.get(t.receiver_id))):
                continue  # not escalated while acknowledged, or while another alert carries its cause
            new = Assignment(alert_key=alert.alert_key, receiver_id=t.receiver_id, episode=alert.starts_at,
                             level=t.level, route=t.route, created_at=now)
            plan.create(new)
            live[key] = new
            known.add(key)

    quiet = quiet_hours and is_quiet(now, calendar)
    by_group: dict[tuple[str, str], list[_Candidate]] = defaultdict(list)
    for a in live.values():
        alert = alerts[a.alert_key]
        route = directory.route(a.route)
        t = route.timing(timing) if route else timing
        candidate = _candidate(a, alert, t, now)
        if candidate is None:
            if not alert.firing and a.notified_state is None:
                plan.update(replace(a, done=True))  # resolved before anyone was told
            continue
        if alert.firing and holds(acks.get(alert.alert_key), alert):
            continue  # someone answers for it: no reminder, no escalation notice
        silence = silenced_by(silences, alert, a.receiver_id, now)
        inhibition = None if silence else inhibitor.inhibits(alert, directory.officials.get(a.receiver_id))
        if silence is not None or inhibition is not None:
            if not a.suppressed:
                plan.suppressed.append(_suppression(a, silence, inhibition))
            if alert.firing:
                if not a.suppressed:
                    plan.update(replace(a, suppressed=True))
            else:
                plan.update(replace(a, suppressed=True, done=True))
            continue
        if quiet and not bypasses_quiet(severity=alert.severity, state=candidate.item.state,
                                        repeat=candidate.item.repeat):
            continue
        by_group[(a.receiver_id, directory.agency_label(alert.agency_code))].append(candidate)

    for (receiver_id, agency_code), candidates in sorted(by_group.items()):
        last = groups.get((receiver_id, agency_code))
        last_flush = last.last_flush_at if last else None
        interval = min(c.group_interval for c in candidates)
        if last_flush is not None and now < last_flush + interval:
            continue
        if not any(c.ready_at <= now for c in candidates):
            continue
        items = tuple(sorted((c.item for c in candidates), key=_item_order))
        plan.flushes.append(Flush(receiver_id=receiver_id, agency_code=agency_code, items=items))
        plan.groups.append(GroupState(receiver_id=receiver_id, agency_code=agency_code, last_flush_at=now))
        for c in candidates:
            a = c.assignment
            if c.item.state == "firing":
                plan.update(replace(a, notified_state="firing", notified_at=now, notify_count=a.notify_count + 1,
                                         suppressed=False))
            else:
                plan.update(replace(a, notified_state="resolved", notified_at=now, suppressed=False, done=True))
    return plan.build()


def _suppression(a: Assignment, silence: Silence | None, inhibition: Inhibition | None) -> Suppression:
    if silence is not None:
        return Suppression(a.receiver_id, a.alert_key, silence.id)
    assert inhibition is not None
    return Suppression(a.receiver_id, a.alert_key, "", rule=inhibition.rule, source_key=inhibition.source_key)


def _candidate(a: Assignment, alert: AlertRecord, t: Timing, now: dt.datetime) -> _Candidate | None:
    if alert.firing:
        if a.notified_state is None:
            # The wait runs from when the alert arrived (an escalation: from when it was decided).
            item = NoticeItem(alert=alert, state="firing", level=a.level)
            since = alert.received_at if a.level == LEVEL_ROUTED else a.created_at
            return _Candidate(a, item, since + t.group_wait, t.group_interval)
        if a.notified_state == "firing" and a.notified_at is not None and now >= a.notified_at + t.repeat_interval:
            item = NoticeItem(alert=alert, state="firing", level=a.level, repeat=a.notify_count)
            return _Candidate(a, item, a.notified_at + t.repeat_interval, t.group_interval)
        return None
    if a.notified_state == "firing":
        item = NoticeItem(alert=alert, state="resolved", level=a.level)
        return _Candidate(a, item, alert.resolved_at or now, t.group_interval)
    return None


class _PlanBuilder:
    """Collects a plan; a change to an assignment created in this plan stays a creation."""

    def __init__(self) -> None:
        self.removed: list[Assignment] = []
        self.flushes: list[Flush] = []
        self.groups: list[GroupState] = []
        self.suppressed: list[Suppression] = []
        self._created: dict[tuple[str, str], Assignment] = {}
        self._updated: dict[tuple[str, str], Assignment] = {}

    def create(self, a: Assignment) -> None:
        self._created[a.key] = a

    def update(self, a: Assignment) -> None:
        if a.key in self._created:
            self._created[a.key] = a
        else:
            self._updated[a.key] = a

    def build(self) -> Plan:
        return Plan(created=list(self._created.values()), updated=list(self._updated.values()), removed=self.removed,
                    flushes=self.flushes, groups=self.groups, suppressed=self.suppressed)


def _item_order(item: NoticeItem) -> tuple[int, int, int, str, str]:
    kind = KIND_ORDER.index(item.alert.kind) if item.alert.kind in KIND_ORDER else len(KIND_ORDER)
    return (0 if item.state == "firing" else 1, -SEVERITY_RANK.get(item.alert.severity, 0), kind, item.alert.kind,
            item.alert.ref)
