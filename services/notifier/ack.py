"""Recording acknowledgements, and the signed one-click links that lead to it.

The same checks whichever way an official acknowledges (a link in an e-mail,
``parwatch alerts ack``, the HTTP API): the alert fires, the official is in
the directory and answers for it (one of its receivers, or an official of its
agency), the kind is known, the note is short. Then one row in the store.

The link's secret is ``PARWATCH_NOTIFIER_ACK_SECRET``; without it (``make
run``), one is generated once and kept in the data folder, readable by its
owner only, so links stay valid across restarts.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from urllib.parse import quote

from services.notifier.domain.ack import ACK_KINDS, NOTE_MAX, Acknowledgement, LinkClaim, sign_link
from services.notifier.domain.model import Directory
from services.notifier.store import Store

SECRET_FILE = "notifier-ack-secret"


class AckRefused(ValueError):
    """Why an acknowledgement is not recorded; ``status`` is the HTTP status that says it."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


def acknowledge(store: Store, directory: Directory, *, alert_key: str, official_id: str, kind: str, note: str = "",
                via: str, now: dt.datetime) -> Acknowledgement:
    """Check and record one acknowledgement of the alert's current episode."""
    if kind not in ACK_KINDS:
        raise AckRefused(422, f"unknown kind {kind!r}; one of: {', '.join(ACK_KINDS)}")
    note = note.strip()
    if len(note) > NOTE_MAX:
        raise AckRefused(422, f"the note is longer than {NOTE_MAX} characters")
    official = directory.officials.get(official_id)
    if official is None:
        raise AckRefused(403, f"no official {official_id!r} in the directory")
    alert = store.alert(alert_key)
    if alert is None:
        raise AckRefused(404, f"no alert {alert_key!r}")
    if not alert.firing:
        raise AckRefused(409, "the alert is no longer firing")
    if official.agency_code != alert.agency_code and official_id not in store.receivers_of(alert_key,
                                                                                           alert.starts_at):
        raise AckRefused(403, f"{official_id!r} is neither a receiver of this alert nor an official of its agency")
    ack = Acknowledgement(alert_key=alert_key, episode=alert.starts_at, severity=alert.severity,
                          official_id=official_id, kind=kind, acked_at=now, via=via, note=note)
    store.add_ack(ack)
    return ack


@dataclass(frozen=True)
class AckLinks:
    """Signs the one-click links of a notice: one per kind, for one receiver and one alert."""

    secret: bytes
    base_url: str  # the notifier's HTTP API as officials reach it, e.g. https://parwatch.example/notifier
    ttl: dt.timedelta

    def urls(self, alert_key: str, receiver_id: str, *, now: dt.datetime) -> dict[str, str]:
        expires = int((now + self.ttl).timestamp())
        base = self.base_url.rstrip("/")
        return {kind: f"{base}/ack/{quote(sign_link(self.secret, LinkClaim(alert_key, receiver_id, kind, expires)))}"
                for kind in ACK_KINDS}
