"""Plain data of the notifier's domain."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from shared.agencies import UNKNOWN, UNKNOWN_NAME

if TYPE_CHECKING:
    from services.notifier.domain.inhibit import InhibitRule

Severity = Literal["info", "warning", "critical"]
SEVERITY_RANK: Mapping[str, int] = {"info": 0, "warning": 1, "critical": 2}

Role = Literal["officer", "head", "district_leadership"]
ROLES: tuple[str, ...] = ("officer", "head", "district_leadership")

AlertState = Literal["firing", "resolved"]

#: Alert kinds from the most to the least urgent (the order of a notice's lines).
KIND_ORDER: tuple[str, ...] = ("dossier_overdue", "dossier_apology_due", "dossier_due_soon", "plan_task_overdue",
                               "plan_task_due_soon", "kpi_below_target", "deadletter", "unknown_agency",
                               "operator_alert")

#: Events named a unit outside the agency directory: for the technical desk only, never for leaders.
UNKNOWN_AGENCY_KIND = "unknown_agency"
#: Prometheus's alerts on parwatch itself, handed over by Alertmanager: for the technical desk only.
OPERATOR_ALERT_KIND = "operator_alert"
#: Kinds that only the technical desk hears of, whatever the routes say.
DESK_KINDS: frozenset[str] = frozenset({UNKNOWN_AGENCY_KIND, OPERATOR_ALERT_KIND})

#: Escalation levels of an assignment: routed, to the head, to district leadership.
LEVEL_ROUTED, LEVEL_HEAD, LEVEL_LEADERSHIP = 0, 1, 2

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, None: 1}


def parse_duration(text: str | int | float) -> dt.timedelta:
    """``30s``, ``5m``, ``4h``, ``2d``, ``1w`` or a number of seconds."""
    if isinstance(text, bool):
        raise ValueError("a duration is a number with a unit: 30s, 5m, 4h, 2d")
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        m = _DURATION.match(text)
        if not m:
            raise ValueError(f"{text!r} is not a duration; write e.g. 30s, 5m, 4h, 2d")
        seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return dt.timedelta(seconds=seconds)


@dataclass(frozen=True)
class Official:
    """Someone (or a shared mailbox) who receives notices, by role in an agency."""

    id: str
    agency_code: str
    role: Role
    title: str
    email: str | None = None
    webhook: str | None = None
    #: Reached only by routes naming its id, never through its role.
    direct_only: bool = False


@dataclass(frozen=True)
class Match:
    """Which alerts a route takes; an empty set matches anything."""

    kinds: frozenset[str] = frozenset()
    severities: frozenset[str] = frozenset()
    agencies: frozenset[str] = frozenset()

    def matches(self, alert: AlertRecord) -> bool:
        return (
            (not self.kinds or alert.kind in self.kinds)
            and (not self.severities or alert.severity in self.severities)
            and (not self.agencies or alert.agency_code in self.agencies)
        )


@dataclass(frozen=True)
class Timing:
    group_wait: dt.timedelta
    group_interval: dt.timedelta
    repeat_interval: dt.timedelta


@dataclass(frozen=True)
class Route:
    """Alerts matching ``match`` go to ``receivers`` (roles or official ids)."""

    name: str
    match: Match
    receivers: tuple[str, ...]
    continue_: bool = False
    escalate: bool = True
    group_wait: dt.timedelta | None = None
    group_interval: dt.timedelta | None = None
    repeat_interval: dt.timedelta | None = None

    def timing(self, default: Timing) -> Timing:
        return Timing(
            group_wait=self.group_wait if self.group_wait is not None else default.group_wait,
            group_interval=self.group_interval if self.group_interval is not None else default.group_interval,
            repeat_interval=self.repeat_interval if self.repeat_interval is not None else default.repeat_interval,
        )


@dataclass(frozen=True)
class Directory:
    """Agencies, their officials and the routes, as validated by ``config``.

    ``agency_names`` is the agency directory (``shared.agencies``: its units
    and the district): a code outside it is shown as ``unknown`` and named
    :data:`UNKNOWN_NAME`, never echoed. ``technical_desk``: the official ids
    that hear of alerts for such codes and of ``unknown_agency`` alerts.
    """

    officials: Mapping[str, Official]
    routes: tuple[Route, ...]
    agency_names: Mapping[str, str]
    district_code: str
    district_name: str
    technical_desk: tuple[str, ...] = ()
    #: Alertmanager's inhibit rules (``domain.inhibit``); the config's defaults when the file names none.
    inhibit_rules: tuple[InhibitRule, ...] = ()

    def knows(self, code: str) -> bool:
        return code in self.agency_names

    def agency_label(self, code: str) -> str:
        """``code`` if the agency directory holds it, else ``unknown``."""
        return code if code in self.agency_names else UNKNOWN

    def agency_name(self, code: str) -> str:
        return self.agency_names.get(code, UNKNOWN_NAME)

    def officials_in(self, agency_code: str, role: str) -> list[Official]:
        return [
            o for o in self.officials.values() if o.agency_code == agency_code and o.role == role and not o.direct_only
        ]

    def leadership(self) -> list[Official]:
        return [o for o in self.officials.values() if o.role == "district_leadership" and not o.direct_only]

    def agencies_with_officials(self) -> list[str]:
        return sorted({o.agency_code for o in self.officials.values()})

    def route(self, name: str) -> Route | None:
        for r in self.routes:
            if r.name == name:
                return r
        return None


@dataclass(frozen=True)
class AlertRecord:
    """The notifier's view of one alert (latest episode of its ``alert_key``)."""

    alert_key: str
    kind: str
    severity: str
    agency_code: str
    ref: str
    summary: str
    starts_at: dt.datetime
    state: AlertState
    received_at: dt.datetime
    ends_at: dt.datetime | None = None
    resolved_at: dt.datetime | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def firing(self) -> bool:
        return self.state == "firing"


@dataclass(frozen=True)
class Assignment:
    """That one receiver should hear of one alert episode, and what it heard."""

    alert_key: str
    receiver_id: str
    episode: dt.datetime
    level: int
    route: str
    created_at: dt.datetime
    notified_state: AlertState | None = None
    notified_at: dt.datetime | None = None
    notify_count: int = 0
    suppressed: bool = False
    done: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.alert_key, self.receiver_id)


@dataclass(frozen=True)
class GroupState:
    receiver_id: str
    agency_code: str
    last_flush_at: dt.datetime | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.receiver_id, self.agency_code)


@dataclass(frozen=True)
class EscalationPolicy:
    head_after_hours: float = 8.0
    leadership_after_hours: float = 24.0
    min_severity: str = "warning"


def notice_key(alert_key: str, episode: dt.datetime, state: str, repeat: int = 0) -> str:
    """Identity of one notice in the notification log (per receiver and channel)."""
    base = f"{alert_key}@{episode.astimezone(dt.timezone.utc).isoformat()}:{state}"
    return f"{base}:r{repeat}" if repeat else base
