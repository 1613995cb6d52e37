"""The one periodic loop: run a step now, then every ``interval`` seconds or when woken.

Every background job of a service runs through :func:`run_every`: the
deadline monitor's tick, an outbox relay, scoring's KPI watch, the
notifier's dispatch and delivery. A step that may be retried (database or
broker away: :func:`shared.backoff.is_retryable`) waits out the failure under
the shared :class:`~shared.backoff.Backoff`; any other exception ends the loop
with it, and the service restarts the loop under the same policy
(:class:`shared.service.Service`).

Tests never wait for a loop: they call the step itself with the time they
choose (``tick(now)``, ``deliver(now)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from shared.backoff import Backoff, is_retryable

log = logging.getLogger(__name__)

#: A step returns True when it left work undone (a full batch): the loop runs it again at once.
Step = Callable[[], Awaitable[bool | None]]


class Wake:
    """Cuts a loop's wait short: something was committed that its step should see."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def __call__(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
        self._event.clear()


async def run_every(
    interval: float,
    step: Step,
    *,
    name: str,
    wake: Wake | None = None,
    backoff: Backoff = Backoff(first=1.0, cap=60.0),
) -> None:
    """Run ``step`` for ever: again at once while it has more, else after ``interval`` or a wake."""
    failures = 0
    while True:
        try:
            more = await step()
        except Exception as exc:
            if not is_retryable(exc):
                raise
            failures += 1
            delay = backoff.delay(failures)
            log.warning("%s failed error=%s; again in %.1fs", name, type(exc).__name__, delay)
            await asyncio.sleep(delay)
            continue
        failures = 0
        if more:
            await asyncio.sleep(0)  # let the consumers and the HTTP server run between full batches
            continue
        if wake is None:
            await asyncio.sleep(interval)
        else:
            await wake.wait(interval)
