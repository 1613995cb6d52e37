"""dossier_tracker's metrics read from the database at scrape time.

``parwatch_dossiers_ended_total`` comes from the ended-count table kept in the
same transaction as the state, so it survives restarts and never counts a
dossier twice. ``parwatch_dossiers_open`` is evaluated against the current
day in Asia/Ho_Chi_Minh at each scrape (rule 6 as ``shared.rules.open_state``
decides it, as scoring and deadline_monitor do), from a GROUP BY of the open
dossiers on what the rule reads.

The ``agency`` label is a code of the agency directory (``shared.agencies``)
or ``unknown``: the stored counts of every code outside the directory are
added up under that one value, so invented codes cannot multiply series (at
most the directory's size plus one, times three timeliness or four states).
``timeliness`` and ``state`` come from the domain's fixed sets.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.dossier_tracker.domain import TIMELINESS
from services.dossier_tracker.store import TrackerStore
from shared.calendar import WorkingCalendar, local_date
from shared.metrics import database_backed
from shared.rules import OPEN_STATES, open_state


class DossierCollector(Collector):
    """``label`` maps a stored agency code to its label value (``AgencyDirectory.label``)."""

    def __init__(
        self,
        store: TrackerStore,
        *,
        calendar: WorkingCalendar,
        clock: Callable[[], dt.datetime],
        label: Callable[[str], str],
    ) -> None:
        self.store = store
        self.calendar = calendar
        self.clock = clock
        self.label = label

    def describe(self) -> list[Metric]:
        return []  # collected lazily: no database call at registration

    @database_backed
    def collect(self) -> Iterator[Metric]:
        ended = CounterMetricFamily(
            "parwatch_dossiers_ended",
            "Dossiers ended (rule 5), by accountable agency (unknown: outside the directory) and timeliness.",
            labels=["agency", "timeliness"],
        )
        counts: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(TIMELINESS, 0))
        for agency, timeliness, n in self.store.ended_counts():
            if timeliness in TIMELINESS:
                counts[self.label(agency)][timeliness] += n
        for agency in sorted(counts):
            for timeliness in TIMELINESS:
                ended.add_metric([agency, timeliness], counts[agency][timeliness])
        yield ended

        today = local_date(self.clock())
        gauge = GaugeMetricFamily(
            "parwatch_dossiers_open",
            "Open dossiers at the current day (rule 6), by accountable agency (unknown: outside the directory) and"
            " state.",
            labels=["agency", "state"],
        )
        soon = self.calendar.next_working_day(today)
        open_counts: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(OPEN_STATES, 0))
        for agency, facts, n in self.store.open_by_due_day():
            open_counts[self.label(agency)][open_state(facts, day=today, soon=soon)] += n
        for agency in sorted(set(open_counts) | set(counts)):
            for state in OPEN_STATES:
                gauge.add_metric([agency, state], open_counts[agency][state])
        yield gauge
