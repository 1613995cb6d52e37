"""scoring: the one place that wires the service."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable

from fastapi import FastAPI
from nats.js.api import ConsumerInfo
from prometheus_client import CollectorRegistry

from services.scoring import handlers
from services.scoring.alerts import KpiTargets
from services.scoring.api import build_api
from services.scoring.board import Directory, Scoreboard
from services.scoring.catalog import load_procedure_catalog
from services.scoring.metrics import ScoringCollector
from services.scoring.service import ScoringService
from services.scoring.settings import ScoringSettings
from services.scoring.store import ScoringStore, create_schema
from services.scoring.web import build_web
from shared.agencies import AgencySettings
from shared.backlog import Backlog
from shared.consumer import Consumers
from shared.db import make_engine
from shared.lease import Lease
from shared.outbox import Relay
from shared.plans import PlanSources, load_plan_targets
from shared.publishing import JetStreamPublisher
from shared.retention import Cleanup
from shared.service import Service, make_broker, utc_now
from shared.settings import CommonSettings

NAME = "scoring"

#: Seconds between outbox passes when nothing wakes the relay: how soon an alert the stream refused is retried
#: (each attempt after the outbox's backoff). A round that decided something wakes it at once.
OUTBOX_INTERVAL = 5.0


def create_app(
    common: CommonSettings | None = None,
    settings: ScoringSettings | None = None,
    *,
    clock: Callable[[], dt.datetime] = utc_now,
    plans: PlanSources | None = None,
) -> tuple[Service, FastAPI]:
    """``plans``: which plan files hold the targets; default the monitor's own settings, so both read the same."""
    common = common or CommonSettings()
    settings = settings or ScoringSettings()
    plan_targets = load_plan_targets((plans or PlanSources()).files())
    targets = KpiTargets(plans=tuple(plan_targets), kpis=settings.plan_target_kpis)
    directory = Directory.of(AgencySettings().load(override=settings.agencies_file))
    procedures = load_procedure_catalog(settings.procedure_catalog, agencies={a.code for a in directory.agencies}) \
        if settings.procedure_catalog is not None else ()
    engine = make_engine(common.database_url_for(NAME))
    store = ScoringStore(engine)
    board = Scoreboard(store, config=settings.index_config(), district=directory.district_code, directory=directory,
                       procedures=procedures)
    registry = CollectorRegistry()
    registry.register(ScoringCollector(board, clock=clock))

    broker = make_broker(common)
    publisher = JetStreamPublisher(broker)
    relay = Relay(store.outbox, publisher.deliver, clock=clock)
    # No event counter: parwatch_events_total is dossier_tracker's.
    consumers = Consumers(NAME, publisher=publisher, retry=settings.retry_policy(), batch_size=settings.batch_size,
                          linger=settings.linger, clock=clock)
    service = Service(name=NAME, port=settings.port, broker=broker, registry=registry, settings=common,
                      consumers=consumers)

    async def consumer_info(stream: str, durable: str) -> ConsumerInfo:
        return await service.jetstream.consumer_info(stream, durable)

    # The KPI rounds wait while scoring catches up on dossier state.
    backlog = Backlog.configured(settings, consumer_info=consumer_info, own=handlers.snapshot_consumer(settings.durable))
    scoring = ScoringService(store=store, board=board, directory=directory, settings=settings, clock=clock,
                             targets=targets, wake=relay.wake, backlog=backlog)
    handlers.register(consumers, scoring, durable=settings.durable)
    service.use_database(engine, create_schema=lambda: create_schema(engine), ping=store.ping)
    service.on_start.append(scoring.adopt_legacy_alerts)  # after the schema exists
    web, web_store = build_web(board=board, directory=directory, clock=clock, engine=engine, settings=settings,
                               data_dir=common.data_dir)

    async def create_web_schema() -> None:
        await asyncio.to_thread(web_store.create_schema)

    service.on_start.append(create_web_schema)
    lease = Lease(engine, name=f"parwatch:{NAME}")  # replicas: one evaluates the KPIs and relays the outbox
    service.on_stop.insert(0, lease.stop)
    service.every(settings.evaluate_interval, lease.only_when_held(scoring.evaluate), name="kpi")
    cleanup = Cleanup(store.prune, common.retention(), clock=clock)
    service.every(common.retention_interval, cleanup.once, name="retention")
    service.every(OUTBOX_INTERVAL, lease.only_when_held(relay.once), name="outbox", wake=relay.wake)
    app = service.app(
        description=(
            "Figures officials are judged by, per agency and period: on-time rate (contract rule 7), "
            "satisfaction, online, digitized and synced shares, plan-task completion, Decision 766 index points."
        ),
        extra_routes=[build_api(board=board, directory=directory, clock=clock), web],
    )
    app.state.scoring, app.state.relay = scoring, relay  # for whoever drives a round by hand (tests)
    return service, app
