"""What every service's database-backed collector shares.

A collector that reads the database at scrape time raises while the
database is away, and one raising collector fails the whole ``/metrics``
answer: Prometheus would then see the service down (``up == 0``) although it
runs and waits for its database, and lose its counters too. Such a
collector's ``collect`` is wrapped in :func:`database_backed`: while the
database is away its families are left out of the scrape (logged), and the
rest of the service's metrics still answer. ``/health`` says the database
is away.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from typing import TypeVar

from prometheus_client.core import Metric

from shared.db import is_transient

log = logging.getLogger(__name__)

C = TypeVar("C")


def database_backed(collect: Callable[[C], Iterator[Metric]]) -> Callable[[C], Iterator[Metric]]:
    """``collect`` read whole before the scrape takes it; nothing of it while the database is away."""

    @functools.wraps(collect)
    def collect_or_leave_out(self: C) -> Iterator[Metric]:
        try:
            families = list(collect(self))
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("metrics left out of this scrape: database unavailable collector=%s error=%s",
                        type(self).__name__, type(exc).__name__)
            return iter(())
        return iter(families)

    return collect_or_leave_out
