"""scoring's read model: figures per agency and period, read from the aggregates.

It only reads. The metrics, the query API, the report command and the
service layer's KPI rounds (:mod:`services.scoring.service`) all take their
figures from it, so they always agree.

The current period ends now: its ended counts come from the period cells and
its open dossiers from the small open table, judged against today. A past
period ends on its last day: open dossiers at that day come from a bounded,
index-backed query on the stored dossiers (those not ended by then).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from services.scoring.catalog import Procedure, online_service_counts
from services.scoring.domain import (
    PERIOD_KINDS,
    Figures,
    IndexConfig,
    Period,
    PeriodKind,
    compute_figures,
    current_periods,
    roll_up,
)
from services.scoring.review import DEFAULT_MAX_FIELDS, Review, Span, build_review
from services.scoring.store import DossierRef, ScoringStore
from shared.agencies import DEFAULT_FILE, UNKNOWN, UNKNOWN_NAME, AgencyDirectory, load_agencies

DEFAULT_AGENCIES = DEFAULT_FILE


@dataclass(frozen=True)
class Agency:
    code: str
    name: str
    kind: str  # department | commune | district | unknown


@dataclass(frozen=True)
class Directory:
    """Tuy Phong's units (the shared agency directory, ``shared.agencies``) and the district roll-up code.

    Codes outside it are shown as one ``unknown`` unit (:meth:`label`), named :data:`UNKNOWN_NAME`.
    """

    district: Agency
    agencies: tuple[Agency, ...]

    @property
    def district_code(self) -> str:
        return self.district.code

    def name(self, code: str) -> str:
        if code == self.district.code:
            return self.district.name
        for a in self.agencies:
            if a.code == code:
                return a.name
        return UNKNOWN_NAME  # never a code from outside

    def names(self) -> dict[str, str]:
        return {a.code: a.name for a in self.agencies} | {self.district.code: self.district.name, UNKNOWN: UNKNOWN_NAME}

    def known(self, code: str) -> bool:
        return code == self.district.code or any(a.code == code for a in self.agencies)

    def label(self, code: str) -> str:
        """The code as figures, metrics and reports show it: itself if known, else ``unknown``."""
        return code if self.known(code) else UNKNOWN

    @classmethod
    def of(cls, agencies: AgencyDirectory) -> Directory:
        # The roll-up speaks of the whole district, not of its People's Committee.
        name = agencies.district_name
        prefix = "Ủy ban nhân dân "
        roll_up_name = "toàn " + name[len(prefix) :] if name.startswith(prefix) else f"toàn {name}"
        return cls(
            district=Agency(code=agencies.district_code, name=roll_up_name, kind="district"),
            agencies=tuple(Agency(code=a.code, name=a.name, kind=a.kind) for a in agencies.agencies),
        )


def load_directory(path: str | Path | None = None, *, extra: str | Path | None = None) -> Directory:
    """The shared agency directory at ``path`` (default ``shared/data/agencies.yaml``), extended by ``extra``."""
    return Directory.of(load_agencies(path, extra=extra))


class PeriodNotStarted(ValueError):
    """A period that begins after today has no figures yet."""


@dataclass(frozen=True)
class PeriodTable:
    """Every agency's figures (and the district's) for one period."""

    period: Period
    current: bool  # True: the period is running and ends now
    as_of: dt.date  # the day open dossiers were judged at
    figures: dict[str, Figures]  # agency code -> figures; agencies without data are absent


class Scoreboard:
    """``directory``: codes outside it are added up under ``unknown`` (None: every code as stored, for tests
    of the arithmetic alone)."""

    def __init__(
        self, store: ScoringStore, *, config: IndexConfig, district: str, directory: Directory | None = None,
        procedures: Iterable[Procedure] = (),
    ) -> None:
        self.store = store
        self.config = config
        self.district = district
        self.directory = directory
        #: The procedure catalog's counts per agency (eligible, offered fully online): the running periods' alone.
        self.catalog = online_service_counts(procedures)

    def _label(self, code: str) -> str:
        return self.directory.label(code) if self.directory is not None else code

    def _by_label(
        self, counts: Mapping[str, Counter[str]], opens: Mapping[str, tuple[int, int]]
    ) -> dict[str, Counter[str]]:
        """Each label's counts: the stored codes' ended counts and open/overdue dossiers, added up."""
        per_agency: dict[str, Counter[str]] = {}
        for agency in set(counts) | set(opens):
            c = per_agency.setdefault(self._label(agency), Counter())
            c.update(counts.get(agency, {}))
            n_open, n_overdue = opens.get(agency, (0, 0))
            c["open"] += n_open
            c["overdue"] += n_overdue
        return per_agency

    def _table(
        self, period: Period, *, current: bool, as_of: dt.date, counts: Mapping[str, Counter[str]],
        opens: Mapping[str, tuple[int, int]],
    ) -> PeriodTable:
        per_agency = self._by_label(counts, opens)
        figures = {a: compute_figures(c, config=self.config) for a, c in per_agency.items()}
        figures = {a: f for a, f in figures.items() if f.has_data}
        if figures:
            total = roll_up(per_agency[a] for a in figures)
            figures[self.district] = compute_figures(total, config=self.config)
        return PeriodTable(period=period, current=current, as_of=as_of, figures=figures)

    def current_tables(self, today: dt.date) -> dict[PeriodKind, PeriodTable]:
        """The running month, quarter and year: three small reads in all."""
        periods = current_periods(today)
        counts = self.store.period_counts(p.key for p in periods.values())
        opens = self.store.open_now(today)
        return {
            kind: self._table(periods[kind], current=True, as_of=today,
                              counts=self._with_catalog(counts[periods[kind].key]), opens=opens)
            for kind in PERIOD_KINDS
        }

    def _with_catalog(self, counts: Mapping[str, Counter[str]]) -> dict[str, Counter[str]]:
        """A running period's counts and the catalog's (the catalog in force now has no history)."""
        out = {agency: Counter(c) for agency, c in counts.items()}
        for agency, c in self.catalog.items():
            out.setdefault(agency, Counter()).update(c)
        return out

    def is_current(self, period: Period, today: dt.date) -> bool:
        if period.start > today:
            raise PeriodNotStarted(f"period {period.key} has not started yet")
        return period.contains(today)

    def table(self, period: Period, *, today: dt.date) -> PeriodTable:
        """Any period that has started: the running one ends now, a past one on its last day."""
        if self.is_current(period, today):
            return self.current_tables(today)[period.kind]
        counts = self.store.period_counts([period.key])[period.key]
        opens = self.store.open_at(period.end)
        return self._table(period, current=False, as_of=period.end, counts=counts, opens=opens)

    def review(
        self, agency: str, period: Period, *, today: dt.date, limit: int
    ) -> tuple[bool, list[DossierRef], list[DossierRef]]:
        """The dossiers of the weekly review: ended late in the period, overdue at its end."""
        current = self.is_current(period, today)
        agencies: list[str] | None = [agency]
        if agency == self.district:
            agencies = None
        elif agency == UNKNOWN and self.directory is not None:
            agencies = [c for c in sorted(self.store.known_agencies()) if not self.directory.known(c)]
        late, overdue = self.store.review_list(
            agencies=agencies, period=period, day=today if current else period.end, current=current, limit=limit
        )
        return current, late, overdue

    def field_review(self, span: Span, *, today: dt.date, max_fields: int = DEFAULT_MAX_FIELDS) -> Review:
        """The weekly review per agency and field, and of inter-agency dossiers (:mod:`services.scoring.review`):
        a running span ends today, a past one on its last day."""
        if span.start > today:
            raise PeriodNotStarted(f"period {span.key} has not started yet")
        current = span.end >= today
        as_of = today if current else span.end
        counts = self.store.review_counts(start=span.start, end=span.end, day=as_of, current=current)
        return build_review(counts, span=span, current=current, as_of=as_of, label=self._label,
                            district=self.district, max_fields=max_fields)
