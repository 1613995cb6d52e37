"""dossier_tracker: the one place that wires the service."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.dossier_tracker.handlers import build_router
from services.dossier_tracker.metrics import DossierCollector
from services.dossier_tracker.settings import TrackerSettings
from services.dossier_tracker.store import TrackerStore, create_schema
from shared.calendar import load_calendar
from shared.consuming import EventCounter
from shared.db import make_engine
from shared.publishing import JetStreamPublisher
from shared.service import Service, make_broker, serve, setup_logging
from shared.settings import CommonSettings

NAME = "dossier_tracker"


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def create_app(
    common: CommonSettings | None = None,
    settings: TrackerSettings | None = None,
    *,
    clock: Callable[[], dt.datetime] = utc_now,
) -> tuple[Service, FastAPI]:
    common = common or CommonSettings()
    settings = settings or TrackerSettings()
    calendar = load_calendar(common.calendar_overrides)
    engine = make_engine(common.database_url_for(NAME))
    store = TrackerStore(engine, calendar=calendar)
    registry = CollectorRegistry()
    counter = EventCounter(registry)
    registry.register(DossierCollector(store, calendar=calendar, clock=clock))

    broker = make_broker(common)
    retry = settings.retry_policy()
    broker.include_router(
        build_router(
            store=store,
            publisher=JetStreamPublisher(broker),
            counter=counter,
            retry=retry,
            clock=clock,
            durable=settings.durable,
            batch_size=settings.batch_size,
            batch_timeout=settings.batch_timeout,
        )
    )
    service = Service(name=NAME, port=settings.port, broker=broker, registry=registry, settings=common)

    async def migrate() -> None:
        await asyncio.to_thread(create_schema, engine)

    async def database_ok() -> bool:
        return await asyncio.to_thread(store.ping)

    async def dispose() -> None:
        engine.dispose()

    service.on_start.append(migrate)
    service.on_stop.append(dispose)
    service.health_checks["database"] = database_ok
    app = service.app(description="Consumes dossier status events, keeps each dossier's state and timeliness.")
    return service, app


def main() -> None:
    common = CommonSettings()
    setup_logging(common, service=NAME)
    service, app = create_app(common)
    serve(service, app)
