"""Acknowledgements: an official says "apology sent" or "being handled", and the reminders stop.

An acknowledgement is of one alert *as it stands*: its episode (``starts_at``)
and its severity then. While it holds, the alert is not repeated and not
escalated (a resolved notice still goes to whoever was told it fired). It
stops holding when the condition changes: a new episode (the alert resolved
and fired again) or a higher severity.

The one-click link in an e-mail carries a token: the alert key, the receiver,
the kind of acknowledgement and an expiry, signed with HMAC-SHA256 over those
four. It is bound to that receiver and that alert; anything changed, or a
token past its expiry, is refused. The secret is the operator's setting.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass

from services.notifier.domain.model import SEVERITY_RANK, AlertRecord

#: Kinds of acknowledgement, with how an official reads them.
ACK_KINDS: Mapping[str, str] = {"apology_sent": "đã gửi thư xin lỗi", "handling": "đang xử lý"}
NOTE_MAX = 500


@dataclass(frozen=True)
class Acknowledgement:
    alert_key: str
    episode: dt.datetime  # the alert's starts_at when acknowledged
    severity: str  # the alert's severity when acknowledged
    official_id: str
    kind: str  # apology_sent | handling
    acked_at: dt.datetime
    via: str  # link | cli | api
    note: str = ""

    @property
    def kind_text(self) -> str:
        return ACK_KINDS.get(self.kind, self.kind)


def holds(ack: Acknowledgement | None, alert: AlertRecord) -> bool:
    """Whether ``ack`` still covers ``alert``: same episode, severity not risen."""
    return (ack is not None and ack.alert_key == alert.alert_key and ack.episode == alert.starts_at
            and SEVERITY_RANK.get(alert.severity, 0) <= SEVERITY_RANK.get(ack.severity, 0))


# -- signed links ------------------------------------------------------------------------------


class LinkError(ValueError):
    """A link that cannot acknowledge anything: ``reason`` is ``malformed``, ``signature`` or ``expired``."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class LinkClaim:
    alert_key: str
    receiver_id: str
    kind: str
    expires: int  # Unix seconds


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, claim: LinkClaim) -> bytes:
    signed = json.dumps([claim.alert_key, claim.receiver_id, claim.kind, claim.expires], ensure_ascii=False,
                        separators=(",", ":")).encode()
    return hmac.new(secret, signed, hashlib.sha256).digest()


def sign_link(secret: bytes, claim: LinkClaim) -> str:
    """A URL-safe token: the claim and its HMAC-SHA256."""
    body = _b64(json.dumps({"a": claim.alert_key, "r": claim.receiver_id, "k": claim.kind, "e": claim.expires},
                           ensure_ascii=False, separators=(",", ":")).encode())
    return f"{body}.{_b64(_mac(secret, claim))}"


def verify_link(secret: bytes, token: str, *, now: dt.datetime) -> LinkClaim:
    """The claim of a token signed with ``secret`` and not expired at ``now``; else :class:`LinkError`."""
    try:
        body, mac = token.split(".")
        raw = json.loads(_unb64(body))
        claim = LinkClaim(alert_key=str(raw["a"]), receiver_id=str(raw["r"]), kind=str(raw["k"]),
                          expires=int(raw["e"]))
        given = _unb64(mac)
    except (ValueError, KeyError, TypeError):
        raise LinkError("malformed") from None
    if not hmac.compare_digest(given, _mac(secret, claim)):
        raise LinkError("signature")
    if claim.kind not in ACK_KINDS:
        raise LinkError("malformed")
    if now.timestamp() >= claim.expires:
        raise LinkError("expired")
    return claim
