"""The notifier's metrics: notices by result, alerts received, send errors, and what waits in the outbox.

Every label value comes from a closed set: ``kind`` from ``ALERT_KINDS`` (any
other kind, which the contract's parser already refuses, is counted as
``other``), ``severity`` from the contract's three, ``channel`` from the
configured channels, ``result`` and ``retryable`` from the code.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shared.events import ALERT_KINDS
from shared.metrics import database_backed
from shared.outbox import Outbox

SEVERITIES = ("info", "warning", "critical")


class NotifierMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.notifications = Counter(
            "parwatch_notifications_total",
            "Notices by channel: sent, failed (given up) or suppressed (silenced or inhibited).",
            ["channel", "result"],
            registry=registry,
        )
        self.alerts = Counter(
            "parwatch_alerts_total",
            "Distinct firing alert events received on tthc.alerts (deduplicated on source and id).",
            ["kind", "severity"],
            registry=registry,
        )
        self.send_errors = Counter(
            "parwatch_notifier_send_errors_total",
            "Failed delivery attempts by channel and whether they will be retried.",
            ["channel", "retryable"],
            registry=registry,
        )

    def alert_received(self, *, kind: str, severity: str) -> None:
        """Count one distinct firing alert event, under closed label values."""
        self.alerts.labels(kind=kind if kind in ALERT_KINDS else "other",
                           severity=severity if severity in SEVERITIES else "other").inc()

    def initialize(self, channels: Iterable[str], *, outbox: Outbox) -> None:
        """Export zeros for the known series, so dashboards and rate() see them from the start, and the
        outbox's size by channel (read at each scrape)."""
        channels = sorted(set(channels))
        for channel in channels:
            for result in ("sent", "failed", "suppressed"):
                self.notifications.labels(channel=channel, result=result)
        for kind in ALERT_KINDS:
            for severity in SEVERITIES:
                self.alerts.labels(kind=kind, severity=severity)
        self.registry.register(OutboxPending(outbox, channels))


class OutboxPending(Collector):
    """``parwatch_notifier_outbox_pending{channel}``: the notices waiting in the outbox (its topics are channels)."""

    def __init__(self, outbox: Outbox, channels: Iterable[str]) -> None:
        self.outbox = outbox
        self.channels = list(channels)

    @database_backed
    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "parwatch_notifier_outbox_pending", "Notices waiting in the outbox, by channel.", labels=["channel"]
        )
        waiting = self.outbox.topics()
        counts = dict.fromkeys(self.channels, 0) | waiting
        for channel in sorted(counts):
            gauge.add_metric([channel], counts[channel])
        yield gauge
