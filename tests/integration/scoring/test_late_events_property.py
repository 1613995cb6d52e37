"""Property, across the two stores: whatever order a district's dossier events arrive in (late events that sort
into the middle of a stored history, batches delivered again, facts delivered again), the facts dossier_tracker
publishes leave scoring's closed months as the events say: each month counts each dossier as it stood at the
month's last day, the fold of the events that had occurred by then (``derive_state``).

Both stores share one database (SQLite, and PostgreSQL when available); the facts go from one to the other as
``TrackerService`` publishes them (``batch_facts``), in publication order, each batch's facts perhaps delivered
twice."""

from __future__ import annotations

import datetime as dt
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete

from services.dossier_tracker.domain import RecordedEvent, derive_state
from services.dossier_tracker.service import batch_facts
from services.dossier_tracker.store import TABLES as TRACKER_TABLES
from services.dossier_tracker.store import TrackerStore
from services.dossier_tracker.store import create_schema as create_tracker_schema
from services.scoring.domain import DossierFacts, Period, dossier_contributions
from services.scoring.store import TABLES as SCORING_TABLES
from services.scoring.store import ScoringStore
from services.scoring.store import create_schema as create_scoring_schema
from shared.calendar import load_calendar, local_date
from shared.db import make_engine
from shared.events import DossierStateChanged

ICT = dt.timezone(dt.timedelta(hours=7))
NOW = dt.datetime(2026, 12, 20, 9, 0, tzinfo=ICT)
CAL = load_calendar()
CLOSED = [Period.parse("2026-10"), Period.parse("2026-11")]
# Moments around October's and November's last midnights, in Vietnam.
MOMENTS = [dt.datetime.combine(dt.date(2026, 10, 1) + dt.timedelta(days=d), dt.time(h, 30), tzinfo=ICT)
           for d in (25, 29, 30, 31, 33, 59, 60, 61, 65) for h in (8, 23)]


@st.composite
def dossier_history(draw, code: str) -> list[RecordedEvent]:
    """Received, then some of processing (4), a supplement request (5), resumed (4), resolved (9), returned (10),
    in time order; sequence follows time."""
    times = sorted(draw(st.lists(st.sampled_from(MOMENTS), min_size=1, max_size=5, unique=True)))
    statuses = [2, *draw(st.lists(st.sampled_from([4, 5, 9, 10]), min_size=len(times) - 1,
                                  max_size=len(times) - 1))]
    received = times[0]
    return [
        RecordedEvent(
            source="motcua.test", event_id=f"{code}-{i}", dossier_code=code, sequence=i, status=status,
            occurred_at=at, agency_code="PTP", procedure_code="1.004227", field_code="HOTICH",
            received_at=received if status == 2 else None,
            duration_value=3.0 if status == 2 else None, duration_unit="working_days" if status == 2 else None,
            channel=draw(st.sampled_from([None, 1, 2])),
        )
        for i, (status, at) in enumerate(zip(statuses, times, strict=True), 1)
    ]


@st.composite
def arrivals(draw):
    """The histories, and the tracker's batches: every event once, in any order, some batches delivered twice."""
    histories = {f"D{i}": draw(dossier_history(f"D{i}")) for i in range(draw(st.integers(1, 3)))}
    events = draw(st.permutations([e for h in histories.values() for e in h]))
    batches, i = [], 0
    while i < len(events):
        size = draw(st.integers(1, 3))
        batches.append(events[i : i + size])
        i += size
    again = draw(st.lists(st.integers(0, len(batches) - 1), max_size=2))
    for j in sorted(again, reverse=True):
        batches.insert(j + 1, batches[j])  # delivered again right after (stored, its facts published again)
    return histories, batches, draw(st.booleans())


def expected(histories: dict[str, list[RecordedEvent]]) -> Counter:
    """Each closed month counts each dossier as the events that had occurred by its last day make it."""
    cells: Counter = Counter()
    for history in histories.values():
        for period in CLOSED:
            by_then = [e for e in history if local_date(e.occurred_at) <= period.end]
            if not by_then:
                continue
            state = derive_state(by_then, calendar=CAL)
            facts = DossierFacts.from_state(DossierStateChanged(**state._asdict(), updated_at=NOW))
            cells.update({k: n for k, n in dossier_contributions(facts).items() if k[0] == period.key})
    return +cells


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(case=arrivals())
def test_closed_months_read_the_events_that_occurred_in_them_whatever_their_arrival(database_url, case) -> None:
    histories, batches, facts_twice = case
    engine = make_engine(database_url)
    create_tracker_schema(engine)
    create_scoring_schema(engine)
    with engine.begin() as conn:  # one database per test, emptied per example
        for table in [*TRACKER_TABLES, *SCORING_TABLES]:
            conn.execute(delete(table))
    tracker = TrackerStore(engine, calendar=CAL)
    scoring = ScoringStore(engine)
    published: list[list[DossierFacts]] = []
    for seq, batch in enumerate(batches, 1):
        result = tracker.apply_batch(batch, [seq] * len(batch), now=NOW)
        published.append([DossierFacts.from_state(f.data) for f in batch_facts(batch, result, now=NOW)])
        scoring.apply_states(published[-1], now=NOW)
    if facts_twice:  # every fact delivered again at the end, the oldest first
        for facts in published:
            scoring.apply_states(facts, now=NOW)
    counts = scoring.period_counts([p.key for p in CLOSED])
    served = Counter({(p, a, f): n for p, by_agency in counts.items() for a, figs in by_agency.items()
                      for f, n in figs.items()})
    assert served == expected(histories)
    engine.dispose()
