"""Property: for any stream of events (duplicates, out of order, in any batches), the incrementally
maintained aggregates equal what rebuild-scores recomputes, and both equal the aggregates computed
independently: each period counts each dossier as it stood at the period's last day (the highest revision
all of whose snapshots up to it occurred by then), and the latest rating and task occurrence."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete

from services.scoring.domain import (
    PERIOD_KINDS,
    DossierFacts,
    Period,
    RatingFacts,
    TaskFacts,
    dossier_contributions,
    open_key,
    rating_contributions,
    task_contributions,
)
from services.scoring.store import TABLES, ScoringStore, create_schema
from shared.calendar import local_date
from shared.db import make_engine

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 11, 20, 3, tzinfo=UTC)
# Days around month, quarter and year boundaries.
DAYS = [dt.date(2026, 9, 29) + dt.timedelta(days=i) for i in range(5)] + [
    dt.date(2026, 12, 30) + dt.timedelta(days=i) for i in range(4)
]
AGENCIES = ["PTP", "PNV", "XA_VINH_TAN"]

day = st.sampled_from(DAYS)
# Event times of snapshots: around the same boundaries, on both sides of midnight in Vietnam (17:00 UTC).
MOMENTS = [dt.datetime.combine(d, dt.time(h, 30), tzinfo=UTC) for d in DAYS for h in (16, 17)]
PERIODS = sorted({Period.containing(d, kind) for d in DAYS for kind in PERIOD_KINDS})
maybe_day = st.none() | day


@st.composite
def dossier_content(draw, code: str, revision: int) -> DossierFacts:
    counted = draw(st.booleans()) or revision > 1
    ended = draw(maybe_day) if counted else None
    paused = ended is None and draw(st.booleans())
    return DossierFacts(
        dossier_code=code,
        revision=revision,
        agency_code=draw(st.sampled_from(AGENCIES)),
        counted=counted,
        receipt_day=draw(day) if counted else None,
        due_day=draw(maybe_day),
        paused=paused,
        pause_started_on=draw(day) if paused else None,
        supplement_requests=draw(st.integers(0, 3)),
        ended_on=ended,
        timeliness=draw(st.sampled_from(["early", "on_time", "late", None])) if ended else None,
        channel=draw(st.sampled_from([None, 1, 2, 3])),
        online_payment=draw(st.sampled_from([None, True, False])),
        digitized=draw(st.sampled_from([None, True, False])),
        synced_national=draw(st.sampled_from([None, True, False])),
        occurred_at=draw(st.none() | st.sampled_from(MOMENTS)),
    )


@st.composite
def rating_content(draw, code: str, event_id: str) -> RatingFacts:
    moment = dt.datetime.combine(draw(day), dt.time(draw(st.sampled_from([0, 16, 17, 23])), 30), tzinfo=UTC)
    criteria = draw(st.dictionaries(st.sampled_from(["c1", "c2", "c9"]), st.sampled_from([0, 1, 2]), max_size=3))
    return RatingFacts(dossier_code=code, agency_code=draw(st.sampled_from(AGENCIES)), rated_at=moment,
                       event_id=event_id, overall=draw(st.sampled_from(["very_satisfied", "satisfied", "unsatisfied"])),
                       criteria=criteria)


@st.composite
def task_content(draw, task_id: str, event_id: str) -> TaskFacts:
    return TaskFacts(plan_id="146", task_id=task_id, occurrence=draw(st.sampled_from(["", "2026-10"])),
                     agency_code=draw(st.sampled_from(AGENCIES)), due_day=draw(day),
                     state=draw(st.sampled_from(["open", "done", "done_late", "overdue"])),
                     updated_at=NOW + dt.timedelta(minutes=draw(st.integers(0, 3))), event_id=event_id)


@st.composite
def event_stream(draw):
    """Records defined once per identity, then delivered in any order, repeated, in random batches."""
    dossiers = {
        (f"D{i}", r): draw(dossier_content(f"D{i}", r))
        for i in range(draw(st.integers(1, 5)))
        for r in range(1, draw(st.integers(1, 4)) + 1)
    }
    ratings = {(f"D{i}", f"r{j}"): draw(rating_content(f"D{i}", f"r{j}"))
               for i in range(3) for j in range(draw(st.integers(0, 3)))}
    tasks = {(f"t{i}", f"e{j}"): draw(task_content(f"t{i}", f"e{j}"))
             for i in range(2) for j in range(draw(st.integers(0, 3)))}
    items = [("state", v) for v in dossiers.values()] + [("rating", v) for v in ratings.values()] + [
        ("task", v) for v in tasks.values()
    ]
    delivered = draw(st.lists(st.sampled_from(items), max_size=40)) if items else []
    delivered = draw(st.permutations(delivered + items))  # everything at least once, some twice
    sizes = draw(st.lists(st.integers(1, 8), min_size=len(delivered), max_size=len(delivered)))
    batches, i = [], 0
    for size in sizes:
        if i >= len(delivered):
            break
        batches.append(delivered[i : i + size])
        i += size
    return batches


def expected_aggregates(batches) -> tuple[dict, dict]:
    """Independently: pick the winning record of each identity, sum its contributions."""
    states: dict[str, DossierFacts] = {}
    snapshots: dict[str, dict[int, DossierFacts]] = {}
    ratings: dict[str, dict[str, RatingFacts]] = {}  # every rating of each dossier, by event id
    tasks: dict[tuple, TaskFacts] = {}
    for batch in batches:
        for kind, rec in batch:
            if kind == "state":
                snapshots.setdefault(rec.dossier_code, {})[rec.revision] = rec
                if rec.dossier_code not in states or rec.revision > states[rec.dossier_code].revision:
                    states[rec.dossier_code] = rec
            elif kind == "rating":
                ratings.setdefault(rec.dossier_code, {})[rec.event_id] = rec
            else:
                cur = tasks.get(rec.key)
                if cur is None or (rec.updated_at, rec.event_id) > (cur.updated_at, cur.event_id):
                    tasks[rec.key] = rec
    cells: Counter = Counter()
    opens: Counter = Counter()
    for f in states.values():
        for p in PERIODS:
            at_end = state_at_end(snapshots[f.dossier_code], p.end)
            if at_end is not None:
                cells.update({k: n for k, n in dossier_contributions(at_end).items() if k[0] == p.key})
        if (k := open_key(f)) is not None:
            opens[k] += 1
    for by_id in ratings.values():
        for p in PERIODS:  # each period counts the dossier's latest rating made in it
            made = [r for r in by_id.values() if p.start <= local_date(r.rated_at) <= p.end]
            if made:
                latest = max(made, key=lambda r: (r.rated_at, r.event_id))
                cells.update({k: n for k, n in rating_contributions([latest]).items() if k[0] == p.key})
    for t in tasks.values():
        cells.update(task_contributions(t))
    return {k: n for k, n in cells.items() if n}, {k: n for k, n in opens.items() if n}


def state_at_end(snapshots: dict[int, DossierFacts], day: dt.date) -> DossierFacts | None:
    """The highest revision whose snapshots after the first, up to it, all occurred by the end of ``day`` (or carry
    no time); the first stands for any earlier day."""
    revisions = sorted(snapshots)
    found = snapshots[revisions[0]]
    for revision in revisions[1:]:
        when = snapshots[revision].occurred_at
        if when is not None and local_date(when) > day:
            break
        found = snapshots[revision]
    return found


@pytest.fixture
def engine(database_url: str):
    engine = make_engine(database_url)
    create_schema(engine)
    yield engine
    engine.dispose()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(batches=event_stream())
def test_incremental_aggregates_equal_rebuild(engine, batches) -> None:
    with engine.begin() as conn:  # one database per test, emptied per example
        for table in TABLES:
            conn.execute(delete(table))
    store = ScoringStore(engine)
    for batch in batches:
        states = [rec for kind, rec in batch if kind == "state"]
        ratings = [rec for kind, rec in batch if kind == "rating"]
        tasks = [rec for kind, rec in batch if kind == "task"]
        if states:
            store.apply_states(states, now=NOW)
        if ratings:
            store.apply_ratings(ratings)
        if tasks:
            store.apply_tasks(tasks)
    incremental = store.aggregates()
    assert incremental == expected_aggregates(batches)
    store.rebuild()
    assert store.aggregates() == incremental
