"""deadline_monitor's metrics, read from the database at scrape time.

``parwatch_plan_tasks{agency, state}`` (contract) counts task occurrences
that have opened by the current day in Asia/Ho_Chi_Minh (the first day of
their period; a one-shot task from its plan's ``valid_from``) or are done,
with their state on that day: ``done``, ``done_late``, ``open`` or
``overdue``, of the plans in force (a closed plan's occurrences keep their
final state in the database and leave the gauge: every tracked agency keeps
its four series, at 0 when no plan is in force). It is one GROUP BY on ``monitor_occurrence``, so it is right at
any instant, not only after a tick. Its ``agency`` is a code of the agency
directory (``shared.agencies``) or ``unknown`` (every other code, added up);
``state`` one of the four above.

Additions (not in the contract): ``parwatch_monitor_alerts_firing{kind}`` and
``parwatch_monitor_outbox_pending`` (events committed but not yet acked by
their stream: it grows while NATS is away).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import KW_ONLY, dataclass, field

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.deadline_monitor.domain import DEADLETTER, DOSSIER_KINDS, PLAN_KINDS, TASK_STATES, UNKNOWN_AGENCY
from services.deadline_monitor.store import MonitorStore
from shared.calendar import local_date
from shared.metrics import database_backed


@dataclass(eq=False)  # registered by identity, as any collector
class MonitorCollector(Collector):
    store: MonitorStore
    _: KW_ONLY
    clock: Callable[[], dt.datetime]
    #: A stored agency code's label value (``AgencyDirectory.label``); the wiring always gives it.
    label: Callable[[str], str] = field(default=lambda code: code)
    #: The ids of the plans in force on a day (``MonitorService.plans_in_force``); None: every plan stored.
    plans_in_force: Callable[[dt.date], Sequence[str]] | None = None

    def describe(self) -> list[Metric]:
        return []  # collected lazily: no database call at registration

    @database_backed
    def collect(self) -> Iterator[Metric]:
        today = local_date(self.clock())
        tasks = GaugeMetricFamily(
            "parwatch_plan_tasks",
            "Plan task occurrences opened by today or done, by owner agency and state on today.",
            labels=["agency", "state"],
        )
        counts: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(TASK_STATES, 0))
        for agency in self.store.tracked_agencies():
            counts[self.label(agency)]  # every tracked agency gets its four series, zeros included
        in_force = self.plans_in_force(today) if self.plans_in_force is not None else None
        for agency, state, n in self.store.plan_task_counts(today, plan_ids=in_force):
            if state in TASK_STATES:
                counts[self.label(agency)][state] += n
        for agency in sorted(counts):
            for state in TASK_STATES:
                tasks.add_metric([agency, state], counts[agency][state])
        yield tasks

        firing = GaugeMetricFamily(
            "parwatch_monitor_alerts_firing",
            "Alerts of the deadline monitor firing now, by kind.",
            labels=["kind"],
        )
        found = self.store.firing_counts()
        for kind in (*DOSSIER_KINDS, *PLAN_KINDS, DEADLETTER, UNKNOWN_AGENCY):
            firing.add_metric([kind], found.get(kind, 0))
        yield firing

        yield GaugeMetricFamily(
            "parwatch_monitor_outbox_pending",
            "Events committed by the deadline monitor and not yet acked by their stream.",
            value=self.store.outbox_size(),
        )
