"""Silences: mute matching alerts for a while (``parwatch silence add``).

A silence matches an alert when every matcher it sets holds (kind, severity,
agency, ref, alert_key, receiver); it is active from ``starts_at`` until
``ends_at`` (expiring it sets ``ends_at`` to now). A silenced firing alert is
not sent; when the silence ends and the alert still fires, it is sent then.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from services.notifier.domain.model import AlertRecord

MATCHERS = ("kinds", "severities", "agencies", "refs", "alert_keys", "receivers")


@dataclass(frozen=True)
class Silence:
    id: str
    starts_at: dt.datetime
    ends_at: dt.datetime
    comment: str
    created_at: dt.datetime
    kinds: frozenset[str] = frozenset()
    severities: frozenset[str] = frozenset()
    agencies: frozenset[str] = frozenset()
    refs: frozenset[str] = frozenset()
    alert_keys: frozenset[str] = frozenset()
    receivers: frozenset[str] = frozenset()

    def active(self, now: dt.datetime) -> bool:
        return self.starts_at <= now < self.ends_at

    def state(self, now: dt.datetime) -> str:
        if now < self.starts_at:
            return "pending"
        return "active" if now < self.ends_at else "expired"

    def matches(self, alert: AlertRecord, receiver_id: str) -> bool:
        return (
            (not self.kinds or alert.kind in self.kinds)
            and (not self.severities or alert.severity in self.severities)
            and (not self.agencies or alert.agency_code in self.agencies)
            and (not self.refs or alert.ref in self.refs)
            and (not self.alert_keys or alert.alert_key in self.alert_keys)
            and (not self.receivers or receiver_id in self.receivers)
        )


def silenced_by(silences: Iterable[Silence], alert: AlertRecord, receiver_id: str, now: dt.datetime) -> Silence | None:
    for s in silences:
        if s.active(now) and s.matches(alert, receiver_id):
            return s
    return None


def check_new_silence(silence: Silence) -> None:
    """Refuse a silence that would mute everything or never be active."""
    if not any(getattr(silence, m) for m in MATCHERS):
        raise ValueError("a silence needs at least one matcher (kind, severity, agency, ref, alert key or receiver)")
    if silence.ends_at <= silence.starts_at:
        raise ValueError("a silence must end after it starts")
    if not silence.comment.strip():
        raise ValueError("a silence needs a comment saying why")
