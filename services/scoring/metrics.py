"""scoring's metrics, read from the aggregate tables at scrape time.

A scrape is three small reads (the period cells of the running month,
quarter and year, and a sum over the open-dossier table), whatever the number
of stored dossiers, and every replica reading one database exports the same
values. A figure without a denominator has no series (never 0 or 1).

``period`` is the running ``month``, ``quarter`` or ``year`` in
Asia/Ho_Chi_Minh. Satisfaction and plan completion have no ``period`` label
(contract): they are the running year's. ``agency`` is a code of the agency
directory (``shared.agencies``), ``unknown`` for every other code added up
(the board folds them), or the district code (``TUY_PHONG``) for the roll-up
of every agency: at most the directory's size plus two values, whatever the
events say. The other labels (``period``, ``part``, ``figure``,
``criterion``) come from fixed sets: the period kinds, the index parts, the
figures below, and the contract's criteria ``c1``..``c9``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.scoring.board import Scoreboard
from services.scoring.domain import PERIOD_KINDS, today_in_vietnam
from shared.metrics import database_backed

#: (figure attribute, ``figure`` label) of parwatch_period_dossiers.
PERIOD_DOSSIER_FIGURES = (
    ("ended_early", "ended_early"),
    ("ended_on_time", "ended_on_time"),
    ("ended_late", "ended_late"),
    ("ended_unclassified", "ended_unclassified"),
    ("open", "open"),
    ("overdue", "overdue"),
    ("received", "received"),
    ("rated", "rated"),
)

SHARES = (
    ("parwatch_online_filing_ratio", "online_filing_ratio",
     ("Share of dossiers received in the period that were filed online (channel 2), among those whose channel"
      " is known.")),
    ("parwatch_online_payment_ratio", "online_payment_ratio",
     "Share of dossiers received in the period whose fee was paid online, among those with a payment reported."),
    ("parwatch_digitized_ratio", "digitized_ratio",
     "Share of dossiers received in the period that were digitized, among those whose digitization is known."),
    ("parwatch_national_sync_ratio", "national_sync_ratio",
     ("Share of dossiers received in the period synced to the National Public Service Portal, among those whose"
      " sync is known.")),
)


class ScoringCollector(Collector):
    def __init__(self, board: Scoreboard, *, clock: Callable[[], dt.datetime]) -> None:
        self.board = board
        self.clock = clock

    def describe(self) -> list[Metric]:
        return []  # collected lazily: no database call at registration

    @database_backed
    def collect(self) -> Iterator[Metric]:
        tables = self.board.current_tables(today_in_vietnam(self.clock()))
        on_time = GaugeMetricFamily(
            "parwatch_on_time_ratio",
            "On-time rate (contract rule 7) of the running period, which ends now.",
            labels=["agency", "period"],
        )
        shares = {attr: GaugeMetricFamily(name, doc, labels=["agency", "period"]) for name, attr, doc in SHARES}
        points = GaugeMetricFamily(
            "parwatch_service_index_points",
            "Decision 766 service-quality index points parwatch can compute, by part (absent: not computable).",
            labels=["agency", "period", "part"],
        )
        dossiers = GaugeMetricFamily(
            "parwatch_period_dossiers",
            "Dossiers of the running period: ended by timeliness, open and overdue now, received, rated.",
            labels=["agency", "period", "figure"],
        )
        for kind in PERIOD_KINDS:
            table = tables[kind]
            for agency in sorted(table.figures):
                f = table.figures[agency]
                if f.on_time_ratio is not None:
                    on_time.add_metric([agency, kind], f.on_time_ratio)
                for attr, family in shares.items():
                    value = getattr(f, attr)
                    if value is not None:
                        family.add_metric([agency, kind], value)
                for part in f.index:
                    if part.points is not None:
                        points.add_metric([agency, kind, part.part], part.points)
                for attr, label in PERIOD_DOSSIER_FIGURES:
                    dossiers.add_metric([agency, kind, label], getattr(f, attr))
        yield on_time
        yield from shares.values()
        yield points
        yield dossiers

        year = tables["year"]
        satisfaction = GaugeMetricFamily(
            "parwatch_satisfaction_ratio",
            "Share of rated dossiers whose latest rating is satisfied or very satisfied, running year.",
            labels=["agency"],
        )
        criteria = GaugeMetricFamily(
            "parwatch_satisfaction_criterion_score",
            "Mean score (0 to 2) of each rating criterion c1..c9, running year.",
            labels=["agency", "criterion"],
        )
        online_service = GaugeMetricFamily(
            "parwatch_online_service_ratio",
            "Share of the agency's eligible procedures offered as full online public services (dịch vụ công trực"
            " tuyến toàn trình), from the procedure catalog in force; no series without a catalog.",
            labels=["agency"],
        )
        completion = GaugeMetricFamily(
            "parwatch_plan_completion_ratio",
            "Plan-task occurrences due in the running year done (on time or late) among those done or overdue.",
            labels=["agency"],
        )
        for agency in sorted(year.figures):
            f = year.figures[agency]
            if f.satisfaction_ratio is not None:
                satisfaction.add_metric([agency], f.satisfaction_ratio)
            for cid, mean in sorted(f.criteria.items()):
                criteria.add_metric([agency, cid], mean)
            if f.plan_completion_ratio is not None:
                completion.add_metric([agency], f.plan_completion_ratio)
            if f.online_service_ratio is not None:
                online_service.add_metric([agency], f.online_service_ratio)
        yield online_service
        yield satisfaction
        yield criteria
        yield completion
