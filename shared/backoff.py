"""The one backoff policy: how long to wait before trying again after failures.

Used wherever parwatch tries again: a consumer's redelivery delay, the outbox
relay, a periodic loop waiting out a database outage, a notice that a channel
refused, the supervisor restarting a service.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass

import nats.errors
import nats.js.errors

from shared.db import is_conflict, is_transient


@dataclass(frozen=True)
class Backoff:
    """Exponential delay (seconds): ``first`` after the first failure, times ``factor`` each time, at most ``cap``."""

    first: float = 1.0
    factor: float = 2.0
    cap: float = 120.0

    def __post_init__(self) -> None:
        if self.first <= 0 or self.factor < 1 or self.cap < self.first:
            raise ValueError("backoff needs first > 0, factor >= 1 and cap >= first")

    def delay(self, failures: int) -> float:
        """Seconds to wait after ``failures`` consecutive failures (1 for the first)."""
        exponent = max(0, failures - 1)
        # factor ** exponent overflows a float long before it matters: stop at the cap.
        if exponent > 64:
            return self.cap
        return min(self.cap, self.first * self.factor**exponent)

    def after(self, failures: int, now: dt.datetime) -> dt.datetime:
        """When to try again, ``failures`` failures in, from ``now``."""
        return now + dt.timedelta(seconds=self.delay(failures))


#: Broker errors that say the connection or the server is away, busy or full: they pass.
_BROKER_AWAY = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionDrainingError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.NoServersError,
    nats.errors.SlowConsumerError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.ServerError,
    nats.js.errors.NoStreamResponseError,
)


def is_retryable(exc: BaseException) -> bool:
    """Trouble that may pass by itself: the database or the broker away or busy, a lost race.

    Anything else (a bug, bad data, a request the server refuses) would only
    fail again.
    """
    if is_transient(exc) or is_conflict(exc):
        return True
    if isinstance(exc, _BROKER_AWAY):
        return True
    if isinstance(exc, nats.js.errors.APIError):
        return exc.code is not None and exc.code >= 500  # the stream's store full, a leader lost
    return isinstance(exc, (asyncio.TimeoutError, ConnectionError))
