"""scoring: the one place that wires the service."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.scoring.api import build_api
from services.scoring.board import Scoreboard, load_directory
from services.scoring.handlers import build_router
from services.scoring.metrics import ScoringCollector
from services.scoring.settings import ScoringSettings
from services.scoring.store import ScoringStore, create_schema
from services.scoring.watch import KpiWatch
from shared.db import make_engine
from shared.publishing import JetStreamPublisher
from shared.service import Service, make_broker, run_service, utc_now
from shared.settings import CommonSettings

NAME = "scoring"


def create_app(
    common: CommonSettings | None = None,
    settings: ScoringSettings | None = None,
    *,
    clock: Callable[[], dt.datetime] = utc_now,
) -> tuple[Service, FastAPI]:
    common = common or CommonSettings()
    settings = settings or ScoringSettings()
    directory = load_directory(settings.agencies_file)
    engine = make_engine(common.database_url_for(NAME))
    store = ScoringStore(engine)
    board = Scoreboard(store, config=settings.index_config(), district=directory.district_code)
    registry = CollectorRegistry()
    registry.register(ScoringCollector(board, clock=clock))

    broker = make_broker(common)
    publisher = JetStreamPublisher(broker)
    retry = settings.retry_policy()
    broker.include_router(
        build_router(
            store=store,
            publisher=publisher,
            retry=retry,
            clock=clock,
            durable=settings.durable,
            batch_size=settings.batch_size,
            batch_timeout=settings.batch_timeout,
        )
    )
    service = Service(name=NAME, port=settings.port, broker=broker, registry=registry, settings=common)
    watch = KpiWatch(
        store=store,
        board=board,
        directory=directory,
        publisher=publisher,
        policy=settings.hysteresis(),
        target=settings.target,
        kpis=settings.alert_kpis,
        periods=settings.alert_periods,
        include_district=settings.alert_district,
        interval=settings.evaluate_interval,
        clock=clock,
    )

    service.use_database(engine, create_schema=lambda: create_schema(engine), ping=store.ping)
    service.background.append(watch.run)
    app = service.app(
        description=(
            "Figures officials are judged by, per agency and period: on-time rate (contract rule 7), "
            "satisfaction, online, digitized and synced shares, plan-task completion, Decision 766 index points."
        ),
        extra_routes=[build_api(board=board, directory=directory, clock=clock)],
    )
    return service, app


def main() -> None:
    run_service(NAME, create_app)
