"""dossier_tracker: the one place that wires the service."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.dossier_tracker import handlers
from services.dossier_tracker.api_keys import KeyChecker, KeyStore, create_key_schema
from services.dossier_tracker.http_ingest import IngestLimits, SourceLimits, ingest_router
from services.dossier_tracker.metrics import DossierCollector
from services.dossier_tracker.service import TrackerService, open_store
from services.dossier_tracker.settings import TrackerSettings
from services.dossier_tracker.store import TrackerStore, create_schema
from shared.agencies import AgencySettings
from shared.calendar import load_calendar
from shared.consumer import Consumers, EventCounter
from shared.db import make_engine
from shared.process import WorkerProcess
from shared.publishing import JetStreamPublisher
from shared.retention import Cleanup
from shared.service import Service, make_broker, utc_now
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
    store = TrackerStore(engine, calendar=calendar)  # this process's: metrics and health read it
    overrides = str(common.calendar_overrides) if common.calendar_overrides else None
    worker = WorkerProcess(open_store, database_url, overrides)  # the writes
    registry = CollectorRegistry()
    agencies = AgencySettings().load()  # metric labels: its codes, else "unknown"
    registry.register(DossierCollector(store, calendar=calendar, clock=clock, label=agencies.label))

    broker = make_broker(common)
    publisher = JetStreamPublisher(broker)
    consumers = Consumers(
        NAME,
        publisher=publisher,
        retry=settings.retry_policy(),
        batch_size=settings.batch_size,
        linger=settings.linger,
        clock=clock,
        counter=EventCounter(registry),
    )
    handlers.register(consumers, TrackerService(store=worker, publisher=publisher, clock=clock), durable=settings.durable)
    service = Service(name=NAME, port=settings.port, broker=broker, registry=registry, settings=common,
                      consumers=consumers)
    service.use_database(engine, create_schema=lambda: (create_schema(engine), create_key_schema(engine)),
                         ping=store.ping)
    cleanup = Cleanup(store.prune, common.retention(), clock=clock)
    service.every(common.retention_interval, cleanup.once, name="retention")
    service.on_start.append(worker.start)  # after the schema exists
    service.on_stop.insert(0, worker.stop)  # after the batch in hand was stored
    # CloudEvents over HTTP for systems that cannot speak NATS: published on the same input subjects.
    ingest = ingest_router(
        source_of=KeyChecker(KeyStore(engine)).source_of,
        limits=IngestLimits(max_batch=settings.http_max_batch, max_batch_bytes=settings.http_max_batch_bytes),
        rates=SourceLimits(rate=settings.http_rate, burst=settings.http_burst),
        jetstream=lambda: service.jetstream,
    )
    app = service.app(description="Consumes dossier status events, keeps each dossier's state and timeliness; "
                      "takes the same events over HTTP (POST /events).", extra_routes=[ingest])
    return service, app
