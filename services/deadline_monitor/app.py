"""deadline_monitor: the one place that wires the service."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from fastapi import FastAPI
from nats.js.errors import NotFoundError
from prometheus_client import CollectorRegistry

from services.deadline_monitor.catalog import catalog_from_settings, occurrence_specs
from services.deadline_monitor.domain import Policy
from services.deadline_monitor.handlers import build_router, snapshot_consumer
from services.deadline_monitor.metrics import MonitorCollector
from services.deadline_monitor.monitor import Monitor
from services.deadline_monitor.outbox import Outbox
from services.deadline_monitor.settings import MonitorSettings
from services.deadline_monitor.store import MonitorStore, create_schema
from shared.calendar import load_calendar
from shared.db import make_engine
from shared.publishing import JetStreamPublisher
from shared.service import Service, make_broker, run_service, utc_now
from shared.settings import CommonSettings

NAME = "deadline_monitor"


def policy_from(settings: MonitorSettings) -> Policy:
    return Policy(
        due_soon_working_days=settings.due_soon_working_days,
        apology_working_days=settings.apology_working_days,
        plan_due_soon_working_days=settings.plan_due_soon_working_days,
        plan_alert_max_age_days=settings.plan_alert_max_age_days,
    )


def create_app(
    common: CommonSettings | None = None,
    settings: MonitorSettings | None = None,
    *,
    clock: Callable[[], dt.datetime] = utc_now,
) -> tuple[Service, FastAPI]:
    """Wire the monitor. Plan files are validated here: an invalid one stops the start,
    with every error listed (:class:`services.deadline_monitor.catalog.PlanLoadError`)."""
    common = common or CommonSettings()
    settings = settings or MonitorSettings()
    calendar = load_calendar(common.calendar_overrides)
    catalog = catalog_from_settings(settings)
    specs = occurrence_specs(catalog, calendar=calendar, settings=settings)
    engine = make_engine(common.database_url_for(NAME))
    ttl = (
        dt.timedelta(hours=settings.deadletter_resolve_after_hours) if settings.deadletter_resolve_after_hours else None
    )
    store = MonitorStore(
        engine,
        calendar=calendar,
        policy=policy_from(settings),
        catalog=catalog,
        deadletter_ttl=ttl,
        chunk=settings.tick_chunk,
    )
    registry = CollectorRegistry()
    registry.register(MonitorCollector(store, clock=clock))

    broker = make_broker(common)
    publisher = JetStreamPublisher(broker)
    outbox = Outbox(store, publisher, batch=settings.outbox_batch, interval=settings.outbox_interval)
    stream, durable = snapshot_consumer(settings.durable)

    upstream = tuple(settings.upstream_consumer.split(":", 1)) if settings.upstream_consumer else None

    async def snapshot_backlog() -> int | None:
        """Snapshots not yet delivered to the monitor's consumer (None before it exists)."""
        try:
            info = await broker.config.connection_state.stream.consumer_info(stream, durable)
        except NotFoundError:
            return None
        return int(info.num_pending or 0)

    async def upstream_backlog() -> int | None:
        """Dossier events dossier_tracker has not read yet: state the monitor has not seen either."""
        if upstream is None:
            return 0
        try:
            info = await broker.config.connection_state.stream.consumer_info(*upstream)
        except NotFoundError:
            return 0  # no tracker consumer (yet): nothing waits upstream
        return int(info.num_pending or 0)

    monitor = Monitor(
        store=store,
        outbox=outbox,
        clock=clock,
        district_code=catalog.agencies.district_code,
        tick_interval=settings.tick_interval,
        catch_up_threshold=settings.catch_up_threshold,
        snapshot_backlog=snapshot_backlog,
        upstream_backlog=upstream_backlog,
    )
    retry = settings.retry_policy()
    broker.include_router(
        build_router(
            monitor=monitor,
            publisher=publisher,
            retry=retry,
            clock=clock,
            durable=settings.durable,
            batch_size=settings.batch_size,
            batch_timeout=settings.batch_timeout,
        )
    )
    service = Service(name=NAME, port=settings.port, broker=broker, registry=registry, settings=common)

    async def sync_plans() -> None:
        await monitor.sync_plans(specs)

    service.use_database(engine, create_schema=lambda: create_schema(engine), ping=store.ping)
    service.on_start.append(sync_plans)  # after the schema: use_database's hook runs first
    service.background += [monitor.run_ticks, outbox.run]
    app = service.app(description="Alerts before a dossier or a plan task is late; tracks plan task occurrences.")
    app.state.monitor = monitor
    app.state.outbox = outbox
    app.state.store = store
    return service, app


def main() -> None:
    run_service(NAME, create_app)
