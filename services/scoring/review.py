"""The weekly review (Plan 146, III.2.2.3): late and overdue dossiers per agency and field, and inter-agency ones.

For a span (an ISO week ``2026-W48``, or a month, quarter or year) and each
agency, per field (``field_code``, the contract's MaLinhVuc; shown as the code,
made safe, as no catalogue names the fields yet):

* ``ended``: dossiers that ended in the span with a due day (early, on time
  or late: those without a due day are in neither part of the rate, as in
  rule 7), ``ended_late`` among them;
* ``open``: dossiers open at the span's end (now if it is running),
  ``overdue`` among them;
* ``late_ratio`` = (ended late + overdue) / (ended + open): the complement of
  rule 7's on-time rate restricted to the field; null without dossiers.

Inter-agency dossiers (hồ sơ liên thông): the contract has no field for them.
A dossier is counted as inter-agency when its state snapshots named more than
one ``agency_code`` over its history (the dossier moved from one unit to
another); scoring stores that flag with the dossier
(``scoring_dossier.inter_agency``). It is counted under its current agency.
What scoring cannot see: an agency named only by an event that was never the
latest of its history when a snapshot was made (an event arriving late, in
the middle of the history), and changes before this version stored the flag.

Rows do not explode with the codes the sources send: per agency the
``max_fields`` fields with the most late and overdue dossiers are shown, the
others added up in one row :data:`OTHER_FIELDS`; dossiers stored before
scoring kept their field are under :data:`UNKNOWN_FIELD`. Agencies outside the
directory are added up under ``unknown``, as everywhere in scoring.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from services.scoring.domain import Period, ratio
from shared.text import safe_text

#: The row that adds up an agency's fields beyond ``max_fields`` (cannot be a contract code).
OTHER_FIELDS = "(khác)"
#: Dossiers stored before scoring kept their field (cannot be a contract code).
UNKNOWN_FIELD = "(chưa rõ)"
DEFAULT_MAX_FIELDS = 10
FIGURES = ("ended", "ended_late", "open", "overdue")
_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")


@dataclass(frozen=True)
class Span:
    """What a review covers: an ISO week, or a scoring period (month, quarter, year)."""

    key: str
    kind: str  # week | month | quarter | year
    start: dt.date
    end: dt.date  # inclusive

    @classmethod
    def parse(cls, text: str) -> Span:
        """``2026-W48`` (ISO week, Monday to Sunday), or what :meth:`Period.parse` reads."""
        raw = text.strip().upper()
        if (m := _WEEK.match(raw)) is not None:
            try:
                monday = dt.date.fromisocalendar(int(m[1]), int(m[2]), 1)
            except ValueError:
                raise ValueError(f"week {text[:20]!r} does not exist") from None
            return cls(raw, "week", monday, monday + dt.timedelta(days=6))
        try:
            period = Period.parse(text)
        except ValueError:
            raise ValueError(
                f"period {text[:20]!r} is not YYYY-Www, YYYY-MM, YYYY-Qn or YYYY (e.g. 2026-W48, 2026-10)"
            ) from None
        return cls(period.key, period.kind, period.start, period.end)

    @classmethod
    def week_of(cls, day: dt.date) -> Span:
        year, week, _ = day.isocalendar()
        return cls.parse(f"{year}-W{week:02d}")


@dataclass(frozen=True)
class ReviewFigures:
    ended: int = 0
    ended_late: int = 0
    open: int = 0
    overdue: int = 0

    @property
    def late_ratio(self) -> float | None:
        return ratio(self.ended_late + self.overdue, self.ended + self.open)

    @property
    def late(self) -> int:
        return self.ended_late + self.overdue

    @classmethod
    def of(cls, counts: Mapping[str, int]) -> ReviewFigures:
        return cls(**{f: counts.get(f, 0) for f in FIGURES})


@dataclass(frozen=True)
class FieldRow:
    agency_code: str
    field_code: str  # safe to show; or OTHER_FIELDS, UNKNOWN_FIELD
    figures: ReviewFigures


@dataclass(frozen=True)
class Review:
    span: Span
    current: bool
    as_of: dt.date
    fields: tuple[FieldRow, ...]  # per agency by code, then the district; by late count within
    inter_agency: dict[str, ReviewFigures]  # agency (and district) -> its inter-agency dossiers
    total: dict[str, ReviewFigures]  # agency (and district) -> all its dossiers


ReviewCounts = Mapping[tuple[str, "str | None", bool, str], int]


def field_label(code: str | None) -> str:
    """A field code as the review shows it: made safe (it came from outside), or :data:`UNKNOWN_FIELD`."""
    return UNKNOWN_FIELD if code is None or code == "" else safe_text(code, limit=64)


def build_review(
    counts: ReviewCounts, *, span: Span, current: bool, as_of: dt.date, label: Callable[[str], str], district: str,
    max_fields: int = DEFAULT_MAX_FIELDS,
) -> Review:
    """The review of ``counts`` (:meth:`ScoringStore.review_counts`): ``label`` maps a stored agency code to the
    one shown (``unknown`` outside the directory); ``district``, the roll-up's code."""
    per_field: dict[str, dict[str, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
    inter: dict[str, Counter[str]] = defaultdict(Counter)
    total: dict[str, Counter[str]] = defaultdict(Counter)
    for (agency, field_code, is_inter, figure), n in counts.items():
        for who in (label(agency), district):
            per_field[who][field_label(field_code)][figure] += n
            total[who][figure] += n
            if is_inter:
                inter[who][figure] += n
    agencies = sorted(a for a in per_field if a != district) + ([district] if district in per_field else [])
    rows = [row for a in agencies for row in _capped(a, per_field[a], max_fields)]
    return Review(
        span=span, current=current, as_of=as_of, fields=tuple(rows),
        inter_agency={a: ReviewFigures.of(inter[a]) for a in agencies if a in inter},
        total={a: ReviewFigures.of(total[a]) for a in agencies},
    )


def _capped(agency: str, fields: Mapping[str, Counter[str]], max_fields: int) -> list[FieldRow]:
    """The agency's ``max_fields`` fields with the most late and overdue dossiers (then the most dossiers, then by
    code), and the rest added up in one :data:`OTHER_FIELDS` row."""
    ranked = sorted(
        ((code, ReviewFigures.of(c)) for code, c in fields.items()),
        key=lambda item: (-item[1].late, -(item[1].ended + item[1].open), item[0]),
    )
    shown, rest = ranked[:max_fields], ranked[max_fields:]
    rows = [FieldRow(agency, code, f) for code, f in shown]
    if rest:
        summed = Counter[str]()
        for _, f in rest:
            summed.update({name: getattr(f, name) for name in FIGURES})
        rows.append(FieldRow(agency, OTHER_FIELDS, ReviewFigures.of(summed)))
    return rows
