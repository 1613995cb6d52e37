"""dossier_tracker's agency labels: directory codes or ``unknown``, whatever codes the store holds."""

from __future__ import annotations

import datetime as dt

from prometheus_client import CollectorRegistry

from services.dossier_tracker.metrics import DossierCollector
from shared.agencies import load_agencies
from shared.calendar import load_calendar
from shared.rules import OpenFacts
from shared.testing import metric_samples, metric_value

AGENCIES = load_agencies()
NOW = dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.timezone.utc)


class FakeStore:
    """What the collector reads: ended counts and open dossiers by due day, for 500 invented codes and PTP."""

    def ended_counts(self) -> list[tuple[str, str, int]]:
        return [(f"ZZ{i}", "late", 1) for i in range(500)] + [("PTP", "early", 2)]

    def open_by_due_day(self) -> list[tuple[str, OpenFacts, int]]:
        past = OpenFacts(dt.date(2026, 11, 2))
        return [(f"Nộp phạt gấp {i}", past, 1) for i in range(500)] + [("PTP", past, 1)]


def test_series_are_bounded_by_the_directory_and_unknown_adds_everything_up() -> None:
    registry = CollectorRegistry()
    registry.register(DossierCollector(FakeStore(), calendar=load_calendar(), clock=lambda: NOW,  # type: ignore[arg-type]
                                       label=AGENCIES.label))
    samples = metric_samples(registry)
    agencies = {dict(labels)["agency"] for _, labels in samples}
    assert agencies == {"PTP", "unknown"}
    assert len(samples) == 2 * (3 + 4)  # two agency values, three timeliness and four states each
    assert metric_value(registry, "parwatch_dossiers_ended_total", agency="unknown", timeliness="late") == 500
    assert metric_value(registry, "parwatch_dossiers_open", agency="unknown", state="overdue") == 500
    assert metric_value(registry, "parwatch_dossiers_open", agency="PTP", state="overdue") == 1
