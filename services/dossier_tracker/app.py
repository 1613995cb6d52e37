"""dossier_tracker: the one place that wires the service."""

from __future__ import annotations

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
from shared.service import Service, make_broker, run_service, utc_now
from shared.settings import CommonSettings

NAME = "dossier_tracker"


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

    service.use_database(engine, create_schema=lambda: create_schema(engine), ping=store.ping)
    app = service.app(description="Consumes dossier status events, keeps each dossier's state and timeliness.")
    return service, app


def main() -> None:
    run_service(NAME, create_app)
