"""Delivery channels: one module per channel, each saying whether a failure is retryable.

A channel sends one rendered :class:`Message` to one official and returns a
:class:`SendResult`; it never raises for a delivery problem. ``retryable``
failures (server down, timeout, 4xx SMTP reply, HTTP 5xx/429) are tried again
later with exponential back-off; the others (a refused address, HTTP 4xx) are
given up and counted ``failed``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from services.notifier.domain.model import Official


@dataclass(frozen=True)
class Message:
    """A rendered notice; ``delivery_id`` is stable across retries of the same notice."""

    delivery_id: str
    subject: str
    text: str
    html: str
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SendResult:
    ok: bool
    retryable: bool = False
    reason: str = ""

    @classmethod
    def sent(cls) -> SendResult:
        return cls(ok=True)

    @classmethod
    def retry(cls, reason: str) -> SendResult:
        return cls(ok=False, retryable=True, reason=reason)

    @classmethod
    def give_up(cls, reason: str) -> SendResult:
        return cls(ok=False, retryable=False, reason=reason)


class Channel(Protocol):
    name: str

    async def send(self, official: Official, message: Message) -> SendResult: ...
