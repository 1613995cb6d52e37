"""A dossier_tracker running in the test's process, on a test's nats-server and database, and its figures."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from services.dossier_tracker.app import create_app
from services.dossier_tracker.settings import TrackerSettings
from shared.settings import CommonSettings
from shared.testing import metric_value


@contextlib.asynccontextmanager
async def running_tracker(nats_url: str, database_url: str, **overrides: Any) -> AsyncIterator[Any]:
    """The service started (retries after 0.2-0.5 s, ``overrides`` of its settings), stopped at the end."""
    settings = TrackerSettings(**({"retry_first_delay": 0.2, "retry_max_delay": 0.5} | overrides))
    service, _ = create_app(CommonSettings(nats_url=nats_url, database_url=database_url), settings)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


def value(service: Any, name: str, **labels: str) -> float:
    """A sample of the service's metrics, 0 when absent."""
    return metric_value(service.registry, name, **labels) or 0.0
