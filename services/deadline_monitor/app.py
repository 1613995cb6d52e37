"""deadline_monitor: the one place that wires the service."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from nats.js.api import ConsumerInfo
from prometheus_client import CollectorRegistry

from services.deadline_monitor import handlers
from services.deadline_monitor.api import MonitorApi
from services.deadline_monitor.catalog import catalog_from_settings, occurrence_specs
from services.deadline_monitor.domain import Policy, from_attributes
from services.deadline_monitor.metrics import MonitorCollector
from services.deadline_monitor.service import MonitorService
from services.deadline_monitor.settings import MonitorSettings
from services.deadline_monitor.store import MonitorStore, create_schema
from shared.agencies import AgencySettings
from shared.backlog import Backlog
from shared.backoff import Backoff
from shared.calendar import load_calendar
from shared.consumer import Consumers
from shared.db import make_engine
from shared.events import CloudEvent, encode, headers_for
from shared.lease import Lease
from shared.outbox import Relay
from shared.publishing import JetStreamPublisher
from shared.retention import Cleanup
from shared.service import Service, make_broker, utc_now
from shared.settings import CommonSettings
from shared.streams import PLAN_EVENTS

NAME = "deadline_monitor"


def policy_from(settings: MonitorSettings) -> Policy:
    return from_attributes(Policy, settings)


def create_app(
    common: CommonSettings | None = None,
    settings: MonitorSettings | None = None,
    *,
    clock: Callable[[], dt.datetime] = utc_now,
) -> tuple[Service, FastAPI]:
    """Wire the monitor. Plan files are validated here: an invalid one stops the start,
    with every error listed (:class:`services.deadline_monitor.catalog.PlanLoadError`).

    ``clock`` is the business clock the monitor decides with (tests move it
    across days). The outbox keeps the wall clock: a failed publication is
    retried after real seconds, whatever day the business clock says.
    """
    common = common or CommonSettings()
    settings = settings or MonitorSettings()
    calendar = load_calendar(common.calendar_overrides)
    catalog = catalog_from_settings(settings, agencies=AgencySettings().load(override=settings.agencies_file))
    specs = occurrence_specs(catalog, calendar=calendar, settings=settings)
    engine = make_engine(common.database_url_for(NAME))
    store = MonitorStore(engine)
    registry = CollectorRegistry()

    broker = make_broker(common)
    publisher = JetStreamPublisher(broker)
    consumers = Consumers(
        NAME, publisher=publisher, retry=settings.retry_policy(), batch_size=settings.batch_size,
        linger=settings.linger, clock=clock,
    )
    service = Service(
        name=NAME, port=settings.port, broker=broker, registry=registry, settings=common, consumers=consumers
    )
    relay = Relay(
        store.outbox,
        publisher.deliver,
        clock=utc_now,
        batch=settings.outbox_batch,
        backoff=Backoff(first=settings.outbox_interval, cap=max(60.0, settings.outbox_interval)),
    )

    async def consumer_info(stream: str, durable: str) -> ConsumerInfo:
        return await service.jetstream.consumer_info(stream, durable)

    backlog = Backlog.configured(settings, consumer_info=consumer_info, own=handlers.snapshot_consumer(settings.durable))
    ttl = settings.deadletter_resolve_after_hours
    monitor = MonitorService(
        store=store,
        catalog=catalog,
        calendar=calendar,
        policy=policy_from(settings),
        clock=clock,
        backlog=backlog,
        wake=relay.wake,
        deadletter_ttl=dt.timedelta(hours=ttl) if ttl else None,
        unknown_agency_quiet=(
            dt.timedelta(hours=settings.unknown_agency_resolve_after_hours)
            if settings.unknown_agency_resolve_after_hours
            else None
        ),
        tick_chunk=settings.tick_chunk,
    )
    handlers.register(consumers, monitor, durable=settings.durable)
    registry.register(
        MonitorCollector(store, clock=clock, label=catalog.agencies.label, plans_in_force=monitor.plans_in_force)
    )

    async def sync_plans() -> None:
        await monitor.sync_plans(specs)

    service.use_database(engine, create_schema=lambda: create_schema(engine), ping=store.ping)
    service.on_start.append(sync_plans)  # after the schema: use_database's hook runs first
    service.on_start.append(monitor.resume)  # an earlier run's hold, before the consumers and the tick start
    service.every(settings.tick_interval, monitor.tick, name="tick")
    service.every(0.5, monitor.settle_when_caught_up, name="caught_up")  # the last of a history, once idle
    cleanup = Cleanup(store.prune, common.retention(), clock=clock)
    service.every(common.retention_interval, cleanup.once, name="retention")
    lease = Lease(engine, name=f"parwatch:{NAME}")  # replicas: one relays the outbox
    service.on_stop.insert(0, lease.stop)
    service.every(settings.outbox_interval, lease.only_when_held(relay.once), name="outbox", wake=relay.wake)
    async def publish_report(event: CloudEvent[Any]) -> int:  # the officials' page reports a duty, as the CLI does
        ack = await service.jetstream.publish(PLAN_EVENTS, encode(event), headers=headers_for(event))
        return int(ack.seq)

    token = settings.api_token.get_secret_value() if settings.api_token is not None else None
    api = MonitorApi(store=store, catalog=catalog, calendar=calendar, clock=clock, publish=publish_report,
                     window=(settings.plan_window_from, settings.plan_window_to), api_token=token)
    app = service.app(description="Alerts before a dossier or a plan task is late; tracks plan task occurrences.",
                      extra_routes=[api.router()])
    app.state.monitor = monitor
    app.state.relay = relay
    app.state.store = store
    return service, app
