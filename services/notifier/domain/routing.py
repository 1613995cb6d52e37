"""Who should hear of an alert: routes matched in order, roles resolved per agency.

A route's receivers are roles (``officer``, ``head``, ``district_leadership``)
or official ids. A role is resolved in the alert's agency; when the agency has
nobody in that role, the next level up hears of it instead (officer -> head ->
district leadership), so an alert is never routed into a void. Like
Alertmanager, the first matching route wins unless it says ``continue``.

Some alerts never take that path (:func:`restricted`): an ``unknown_agency``
alert, any alert whose agency is outside the agency directory (nobody in the
district answers for such a code, and the code came from outside), and an
``operator_alert`` (Prometheus's alerts on parwatch itself, from
Alertmanager: the system's health is the desk's job, not an agency's). They
go to the technical desk (``Directory.technical_desk``) alone, never up the
chain to leaders, and are never escalated.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.notifier.domain.model import (
    DESK_KINDS,
    LEVEL_ROUTED,
    ROLES,
    AlertRecord,
    Directory,
    Official,
    Route,
)

#: The route name of assignments to the technical desk when no route matched the alert.
TECHNICAL_DESK_ROUTE = "technical-desk"

_CHAIN = {"officer": ("officer", "head", "district_leadership"), "head": ("head", "district_leadership"),
          "district_leadership": ("district_leadership",)}


@dataclass(frozen=True)
class Target:
    receiver_id: str
    route: str
    level: int = LEVEL_ROUTED


def officials_for_role(directory: Directory, agency_code: str, role: str) -> list[Official]:
    """Officials of ``role`` for the agency, falling back up the chain when there are none."""
    for level_role in _CHAIN[role]:
        found = directory.leadership() if level_role == "district_leadership" else directory.officials_in(
            agency_code, level_role
        )
        if found:
            return sorted(found, key=lambda o: o.id)
    return []


def resolve(directory: Directory, spec: str, agency_code: str) -> list[Official]:
    if spec in ROLES:
        return officials_for_role(directory, agency_code, spec)
    official = directory.officials.get(spec)
    return [official] if official else []


def matching_routes(directory: Directory, alert: AlertRecord) -> list[Route]:
    out = []
    for route in directory.routes:
        if route.match.matches(alert):
            out.append(route)
            if not route.continue_:
                break
    return out


def restricted(directory: Directory, alert: AlertRecord) -> bool:
    """For the technical desk only: an ``unknown_agency`` or ``operator_alert`` alert, or an alert of a code outside
    the directory."""
    return alert.kind in DESK_KINDS or not directory.knows(alert.agency_code)


def desk_targets(directory: Directory, alert: AlertRecord) -> list[Target]:
    """The technical desk, under the first matching route's name (its timing), else :data:`TECHNICAL_DESK_ROUTE`."""
    routes = matching_routes(directory, alert)
    name = routes[0].name if routes else TECHNICAL_DESK_ROUTE
    return [Target(receiver_id=i, route=name) for i in directory.technical_desk if i in directory.officials]


def route_alert(directory: Directory, alert: AlertRecord) -> list[Target]:
    """Receivers of an alert, each once, in route order (the technical desk alone for a restricted alert)."""
    if restricted(directory, alert):
        return desk_targets(directory, alert)
    seen: set[str] = set()
    out: list[Target] = []
    for route in matching_routes(directory, alert):
        for spec in route.receivers:
            for official in resolve(directory, spec, alert.agency_code):
                if official.id not in seen:
                    seen.add(official.id)
                    out.append(Target(receiver_id=official.id, route=route.name))
    return out
