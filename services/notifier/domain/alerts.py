"""Merging alert events into the notifier's record of an alert, whatever their order.

An alert's *episode* is its ``starts_at``. A newer episode replaces an older
one; events of an older episode are ignored; within an episode ``resolved``
is final (a late ``firing`` copy does not reopen it) and a later ``firing``
updates the text, severity and labels.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from services.notifier.domain.model import AlertRecord


def merge_alert(current: AlertRecord | None, incoming: AlertRecord, *, now: dt.datetime) -> AlertRecord | None:
    """The new record, or None when the event changes nothing."""
    if incoming.state == "resolved" and incoming.resolved_at is None:
        incoming = replace(incoming, resolved_at=now)
    if current is None or incoming.starts_at > current.starts_at:
        return incoming
    if incoming.starts_at < current.starts_at or not current.firing:
        return None
    if incoming.state == "resolved":
        return replace(current, state="resolved", ends_at=incoming.ends_at, resolved_at=incoming.resolved_at,
                       summary=incoming.summary, labels=incoming.labels)
    updated = replace(current, kind=incoming.kind, severity=incoming.severity, agency_code=incoming.agency_code,
                      ref=incoming.ref, summary=incoming.summary, labels=incoming.labels)
    return None if updated == current else updated
