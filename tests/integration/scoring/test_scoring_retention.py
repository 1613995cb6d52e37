"""scoring's retention on SQLite and PostgreSQL, with fixed times: rows that can no longer change a figure go, the
figures stay, and a rebuild after it keeps the years whose rows are gone."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, select

from services.scoring.domain import DossierFacts, RatingFacts
from services.scoring.store import DOSSIER, FACT, PERIOD_COUNT, RATING, RATING_ENTRY, ScoringStore, create_schema
from shared.db import make_engine
from shared.retention import Retention

UTC = dt.timezone.utc
D = dt.date
NOW = dt.datetime(2027, 3, 1, 3, 0, tzinfo=UTC)  # 400 days before: 25/1/2026, so the boundary is 1/1/2026
DAYS = dt.timedelta(days=1)
RETENTION = Retention(dedup=400 * DAYS, history=400 * DAYS, log=400 * DAYS, chunk=500)


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    create_schema(engine)
    yield engine
    engine.dispose()


def ended(code: str, received: dt.date, on: dt.date, timeliness: str = "on_time") -> DossierFacts:
    return DossierFacts(dossier_code=code, revision=3, agency_code="PTP", counted=True, receipt_day=received,
                        due_day=on, ended_on=on, timeliness=timeliness, channel=2)


def rated(code: str, at: dt.datetime, overall: str = "satisfied") -> RatingFacts:
    return RatingFacts(dossier_code=code, agency_code="PTP", rated_at=at, event_id=f"{code}-r-{at:%Y%m%d}",
                       overall=overall)


def codes(engine: Engine, table) -> list[str]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return sorted(conn.execute(select(table.c.dossier_code)).scalars())


def test_rows_of_closed_years_go_the_figures_stay_and_a_rebuild_keeps_those_years(engine: Engine) -> None:
    clock = Clock(NOW - 500 * DAYS)  # 17/10/2025
    store = ScoringStore(engine, clock=clock)
    store.apply_states([ended("H.2025", D(2025, 5, 2), D(2025, 6, 3), "late"),
                        DossierFacts(dossier_code="H.NOT.COUNTED", revision=1, agency_code="PTP", counted=False),
                        DossierFacts(dossier_code="H.OPEN", revision=2, agency_code="PTP", counted=True,
                                     receipt_day=D(2025, 9, 1), due_day=D(2025, 9, 20))], now=clock())
    store.apply_ratings([rated("H.2025", dt.datetime(2025, 6, 10, 2, tzinfo=UTC))])
    clock.now = dt.datetime(2026, 2, 1, 3, tzinfo=UTC)  # after the boundary's day, within the 400 days
    store.apply_states(
        [ended("H.DEC", D(2025, 12, 1), D(2025, 12, 30)), ended("H.2026", D(2026, 1, 5), D(2026, 1, 20))], now=clock()
    )
    store.apply_ratings([rated("H.DEC", dt.datetime(2025, 12, 31, 2, tzinfo=UTC), "unsatisfied")])
    figures = store.aggregates()

    deleted = store.prune(RETENTION, now=NOW)

    assert deleted == {DOSSIER.name: 2, FACT.name: 2, RATING_ENTRY.name: 1, RATING.name: 1}
    assert codes(engine, DOSSIER) == ["H.2026", "H.DEC", "H.OPEN"]  # H.DEC changed 393 days ago; H.OPEN is open
    assert sorted(set(codes(engine, FACT))) == ["H.2026", "H.DEC", "H.OPEN"]  # a history goes with its dossier
    # Rated before the boundary, but stored within the 400 days:
    assert codes(engine, RATING) == codes(engine, RATING_ENTRY) == ["H.DEC"]
    assert store.aggregates() == figures  # the figures of 2025 are what they were
    spoil(engine, "2026")
    store.rebuild()
    assert store.aggregates() == figures  # 2025 kept as it was, 2026 on recounted from what is stored
    assert store.prune(RETENTION, now=NOW) == {DOSSIER.name: 0, FACT.name: 0, RATING_ENTRY.name: 0, RATING.name: 0}


def test_a_rebuild_before_any_pruning_recounts_every_year(engine: Engine) -> None:
    store = ScoringStore(engine, clock=Clock(NOW))
    store.apply_states([ended("H.2025", D(2025, 5, 2), D(2025, 6, 3))], now=NOW)  # changed now: nothing to prune
    assert store.prune(RETENTION, now=NOW) == {DOSSIER.name: 0, FACT.name: 0, RATING_ENTRY.name: 0, RATING.name: 0}
    figures = store.aggregates()
    spoil(engine, "2025")
    store.rebuild()
    assert store.aggregates() == figures


def spoil(engine: Engine, period: str) -> None:
    """A figure gone wrong, for rebuild to set right."""
    with engine.begin() as conn:
        conn.execute(PERIOD_COUNT.update().where(PERIOD_COUNT.c.period == period).values(n=99))


def test_a_newer_rating_of_a_kept_dossier_still_replaces_the_old_one(engine: Engine) -> None:
    """Within the retention a later rating of the same dossier is recognised as such, not counted twice."""
    store = ScoringStore(engine, clock=Clock(NOW - 10 * DAYS))
    store.apply_ratings([rated("H.R", dt.datetime(2027, 2, 1, 2, tzinfo=UTC), "unsatisfied")])
    store.prune(RETENTION, now=NOW)
    assert store.apply_ratings([rated("H.R", dt.datetime(2027, 2, 5, 2, tzinfo=UTC))]) == [True]
    cells, _ = store.aggregates()
    assert cells[("2027-02", "PTP", "rated")] == 1 and cells[("2027-02", "PTP", "rated_satisfied")] == 1
