"""Wiring of the notifier: the one place that builds and connects things.

``create_app`` reads settings, loads and validates the directory (a bad file
stops the start with every problem listed), builds channels, store, service
layer and consumer, and returns the :class:`Service` and its HTTP app.
Nothing connects before the app's lifespan starts.
"""

from __future__ import annotations

import functools
import logging

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.notifier import handlers
from services.notifier.ack import SECRET_FILE, AckLinks
from services.notifier.alertmanager import AlertmanagerReceiver
from services.notifier.api import AckApi
from services.notifier.config import load_directory
from services.notifier.metrics import NotifierMetrics
from services.notifier.notify import Channel
from services.notifier.notify.log import LogChannel
from services.notifier.notify.smtp import SmtpChannel
from services.notifier.notify.webhook import WebhookChannel
from services.notifier.render import Renderer
from services.notifier.service import Clock, NotifierService
from services.notifier.settings import NotifierSettings
from services.notifier.store import Store
from services.notifier.web_api import WebApi
from shared.agencies import AgencySettings
from shared.calendar import load_calendar
from shared.consumer import Consumers, RetryPolicy
from shared.db import make_engine
from shared.http import trusted_caller
from shared.lease import Lease
from shared.publishing import JetStreamPublisher
from shared.retention import Cleanup
from shared.secret import load_secret
from shared.service import Service, make_broker, utc_now
from shared.settings import CommonSettings

log = logging.getLogger(__name__)

NAME = "notifier"


def build_channels(settings: NotifierSettings) -> tuple[dict[str, Channel], str]:
    """The channels, and the name of the one e-mail notices use (smtp, or log without a host)."""
    channels: dict[str, Channel] = {"log": LogChannel(), "webhook": WebhookChannel(
        secret_for=settings.webhook_secret_for, timeout=settings.webhook_timeout, ca_file=settings.webhook_ca_file)}
    if not settings.smtp_host:
        return channels, "log"
    channels["smtp"] = SmtpChannel(
        host=settings.smtp_host,
        port=settings.smtp_port_or_default(),
        security=settings.smtp_security,
        sender=settings.smtp_from,
        user=settings.smtp_user,
        password=settings.smtp_password_value(),
        ca_file=settings.smtp_ca_file,
        timeout=settings.smtp_timeout,
    )
    return channels, "smtp"


def create_app(
    common: CommonSettings | None = None, settings: NotifierSettings | None = None, *, clock: Clock = utc_now
) -> tuple[Service, FastAPI]:
    common = common or CommonSettings()
    settings = settings or NotifierSettings()
    directory = load_directory(settings.directory_path(), agencies=AgencySettings().load())
    if not directory.technical_desk:
        log.warning("no technical desk in the directory: unknown_agency alerts, Alertmanager's operator alerts and "
                    "alerts for agency codes outside the agency directory reach nobody (set technical_desk, or a "
                    "deadletter route to an official)")
    missing = [o.id for o in directory.officials.values()
               if o.webhook and not settings.webhook_secret_for(o.id)]
    if missing:
        raise ValueError(f"no webhook secret for {', '.join(sorted(missing))}: set PARWATCH_NOTIFIER_WEBHOOK_SECRET, "
                         "PARWATCH_NOTIFIER_WEBHOOK_SECRET_FILE or PARWATCH_NOTIFIER_WEBHOOK_SECRETS")
    escalation = settings.escalation()
    channels, email_channel = build_channels(settings)
    if email_channel == "log":
        log.warning("no SMTP host configured: e-mail notices are written to the log channel")

    registry = CollectorRegistry()
    engine = make_engine(common.database_url_for(NAME))
    store = Store(engine)
    secret = load_secret(settings.ack_secret_value(), common.data_dir, name=SECRET_FILE)
    links = AckLinks(secret=secret, base_url=settings.public_base_url(), ttl=settings.ack_link_ttl)
    renderer = Renderer(directory=directory, escalation=escalation, ack_links=links.urls)
    notifier = NotifierService(
        store=store, directory=directory, renderer=renderer,
        channels=channels, email_channel=email_channel, timing=settings.timing(), escalation=escalation,
        calendar=load_calendar(common.calendar_overrides),
        metrics=NotifierMetrics(registry), clock=clock, quiet_hours=settings.quiet_hours,
        backoff=settings.delivery_backoff(), delivery_batch=settings.delivery_batch,
        weekly_digest=settings.weekly_digest, monthly_digest=settings.monthly_digest, digest_time=settings.digest_time,
    )

    broker = make_broker(common)
    consumers = Consumers(NAME, publisher=JetStreamPublisher(broker), retry=RetryPolicy(),
                          batch_size=settings.consumer_batch, linger=settings.consumer_linger, clock=clock)
    handlers.register(consumers, notifier, durable=settings.durable)
    service = Service(name=NAME, port=settings.port, broker=broker, registry=registry, settings=common,
                      consumers=consumers)
    service.use_database(engine, create_schema=notifier.create_schema, ping=store.ping)
    lease = Lease(engine, name=f"parwatch:{NAME}")  # replicas: one dispatches and delivers
    service.on_stop.insert(0, lease.stop)
    service.every(settings.tick_interval, lease.only_when_held(notifier.tick), name="dispatch")
    cleanup = Cleanup(store.prune, common.retention(), clock=clock)
    service.every(common.retention_interval, cleanup.once, name="retention")
    service.every(settings.delivery_interval, lease.only_when_held(notifier.relay.once), name="outbox",
                  wake=notifier.relay.wake)
    token = settings.api_token.get_secret_value() if settings.api_token is not None else None
    api = AckApi(store=store, directory=directory, secret=secret, clock=clock, api_token=token)
    am_token = settings.alertmanager_token_value()
    receiver = AlertmanagerReceiver(record=notifier.receive, agency_code=directory.district_code, clock=clock,
                                    trusted=functools.partial(trusted_caller, token=am_token))
    app = service.app(
        title="parwatch notifier",
        description="Routes tthc.alerts to the right officials, once, in Vietnamese (SMTP, webhook, log); "
                    "officials acknowledge alerts here (/ack, /alerts); the officials' web page reads officials and manages silences (/officials, /silences); Alertmanager hands over Prometheus's "
                    "alerts for the technical desk (/alertmanager).",
        extra_routes=[api.router(), receiver.router(),
                      WebApi(store=store, directory=directory, clock=clock, api_token=token).router()],
    )
    app.state.notifier = notifier
    app.state.store = store
    return service, app
