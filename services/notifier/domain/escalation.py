"""Escalation: an alert still firing after N working hours reaches higher up.

After ``head_after_hours`` working hours from ``starts_at`` the agency's head
hears of it; after ``leadership_after_hours`` the district leadership.
Working hours are the one-stop desks' (07:00-11:30, 13:30-17:00 on working
days), so a weekend or a holiday does not count.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

from services.notifier.domain.model import (
    LEVEL_HEAD,
    LEVEL_LEADERSHIP,
    SEVERITY_RANK,
    AlertRecord,
    Directory,
    EscalationPolicy,
)
from services.notifier.domain.routing import Target, officials_for_role


class WorkingHours(Protocol):
    def add_working_hours(self, start: dt.datetime, hours: float) -> dt.datetime: ...


def escalation_times(alert: AlertRecord, policy: EscalationPolicy, calendar: WorkingHours) -> dict[int, dt.datetime]:
    """When each escalation level falls due for this alert (none if it does not escalate)."""
    if SEVERITY_RANK.get(alert.severity, 0) < SEVERITY_RANK[policy.min_severity]:
        return {}
    out: dict[int, dt.datetime] = {}
    if policy.head_after_hours > 0:
        out[LEVEL_HEAD] = calendar.add_working_hours(alert.starts_at, policy.head_after_hours)
    if policy.leadership_after_hours > 0:
        out[LEVEL_LEADERSHIP] = calendar.add_working_hours(alert.starts_at, policy.leadership_after_hours)
    return out


def escalation_level(alert: AlertRecord, *, now: dt.datetime, times: dict[int, dt.datetime]) -> int:
    if not alert.firing:
        return 0
    return max((level for level, at in times.items() if now >= at), default=0)


def escalation_targets(directory: Directory, alert: AlertRecord, *, level: int, route: str) -> list[Target]:
    out: list[Target] = []
    if level >= LEVEL_HEAD:
        out += [Target(o.id, route, LEVEL_HEAD) for o in officials_for_role(directory, alert.agency_code, "head")]
    if level >= LEVEL_LEADERSHIP:
        out += [Target(o.id, route, LEVEL_LEADERSHIP) for o in directory.leadership()]
    return out
