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
from services.dossier_tracker.worker import StoreWorker
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
    database_url = common.database_url_for(NAME)
    engine = make_engine(database_url)
    store = TrackerStore(engine, calendar=calendar)
    worker = StoreWorker(database_url, calendar_overrides=common.calendar_overrides) if settings.store_process else None
    registry = CollectorRegistry()
    counter = EventCounter(registry)
    registry.register(DossierCollector(store, calendar=calendar, clock=clock))

    broker = make_broker(common)
    retry = settings.retry_policy()
    broker.include_router(
        build_router(
            store=store,
            worker=worker,
            publisher=JetStreamPublisher(broker),
            counter=counter,
            retry=retry,
            clock=clock,
            durable=settings.durable,
            batch_size=settings.batch_size,
            batch_timeout=settings.batch_timeout,
            in_flight=2 if worker is not None else 0,  # one stored while the next waits its turn
        )
    )
    service = Service(name=NAME, port=settings.port, broker=broker, registry=registry, settings=common)

    service.use_database(engine, create_schema=lambda: create_schema(engine), ping=store.ping)
    if worker is not None:
        service.on_start.append(worker.start)  # after the schema exists
        service.on_stop.insert(0, worker.stop)  # after the batch in flight settled
    app = service.app(description="Consumes dossier status events, keeps each dossier's state and timeliness.")
    return service, app


def main() -> None:
    run_service(NAME, create_app)
