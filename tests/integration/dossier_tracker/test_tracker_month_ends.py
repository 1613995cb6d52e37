"""The tracker's store tells a dossier's state at the end of each month a batch of its events crosses (for closed
periods), and what it tells again when events come again, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from services.dossier_tracker.domain import RecordedEvent, derive_state
from services.dossier_tracker.store import TrackerStore, create_schema
from shared.calendar import load_calendar
from shared.db import make_engine

ICT = dt.timezone(dt.timedelta(hours=7))
NOW = dt.datetime(2026, 12, 1, 8, 0, tzinfo=ICT)
CAL = load_calendar()


@pytest.fixture
def store(database_url: str) -> Iterator[TrackerStore]:
    engine = make_engine(database_url)
    create_schema(engine)
    yield TrackerStore(engine, calendar=CAL)
    engine.dispose()


def event(seq: int, status: int, at: str) -> RecordedEvent:
    moment = dt.datetime.fromisoformat(at).replace(tzinfo=ICT)
    return RecordedEvent(
        source="motcua.test", event_id=f"H.M-{seq}", dossier_code="H.M", sequence=seq, status=status,
        occurred_at=moment, agency_code="PTP", procedure_code="1.004227", field_code="HOTICH",
        received_at=moment if status == 2 else None,
        duration_value=1.0 if status == 2 else None, duration_unit="working_days" if status == 2 else None,
    )


def test_a_batch_across_a_month_s_last_midnight_tells_the_state_at_that_midnight(store: TrackerStore) -> None:
    batch = [event(1, 2, "2026-11-27T10:00"), event(2, 4, "2026-11-30T23:30"), event(3, 9, "2026-12-01T00:20")]
    result = store.apply_batch(batch, [1, 2, 3], now=NOW)
    (state, day, occurred_at), = result.month_ends
    assert (day, occurred_at) == (dt.date(2026, 11, 30), batch[1].occurred_at)
    assert state == derive_state(batch[:2], calendar=CAL) and state.revision == 2 and state.ended_on is None
    assert result.states["H.M"] == derive_state(batch, calendar=CAL) and result.states["H.M"].revision == 3

    # Delivered again (all duplicates: stored the first time, its facts perhaps never published): the current
    # state and the month end are told again, the same facts.
    again = store.apply_batch(batch, [1, 2, 3], now=NOW)
    assert again.duplicate == [True, True, True]
    assert again.month_ends == result.month_ends and again.states["H.M"] == result.states["H.M"]


def test_an_id_its_source_used_before_for_another_dossier_is_a_duplicate_that_stores_and_tells_nothing(
    store: TrackerStore,
) -> None:
    first = event(1, 2, "2026-11-27T10:00")
    stored = store.apply_batch([first], [1], now=NOW).states["H.M"]
    # The same (source, id), naming a dossier never stored: a duplicate; no state for it, nothing told.
    unknown = first._replace(dossier_code="H.OTHER", status=4)
    result = store.apply_batch([unknown], [2], now=NOW)
    assert result.duplicate == [True]
    assert (result.states, result.month_ends, result.rewrites) == ({}, [], {})
    # Naming another stored dossier: a duplicate; that dossier's own state is told as it stands, unchanged.
    other = first._replace(dossier_code="H.OTHER", event_id="H.OTHER-1")
    other_state = store.apply_batch([other], [3], now=NOW).states["H.OTHER"]
    result = store.apply_batch([unknown._replace(occurred_at=first.occurred_at - dt.timedelta(days=40))], [4],
                               now=NOW)
    assert result.duplicate == [True]
    assert (result.states, result.month_ends, result.rewrites) == ({"H.OTHER": other_state}, [], {})
    # Twice in one batch, new: the first is stored, the second is its duplicate.
    twice = event(2, 4, "2026-11-30T09:00")
    result = store.apply_batch([twice, twice._replace(dossier_code="H.NEW")], [5, 6], now=NOW)
    assert result.duplicate == [False, True]
    assert set(result.states) == {"H.M"} and result.states["H.M"].revision == stored.revision + 1


def test_a_batch_delivered_again_with_new_events_tells_each_month_end_once(store: TrackerStore) -> None:
    first = [event(1, 2, "2026-10-27T10:00"), event(2, 4, "2026-11-03T09:00")]
    told = store.apply_batch(first, [1, 2], now=NOW).month_ends
    assert [day for _, day, _ in told] == [dt.date(2026, 10, 31)]
    # The same two again, with a December event: October's end from the history, November's from the new event.
    later = event(3, 9, "2026-12-01T08:00")
    result = store.apply_batch([*first, later], [1, 2, 3], now=NOW)
    assert result.duplicate == [True, True, False]
    assert sorted((day, state) for state, day, _ in result.month_ends) == [
        (dt.date(2026, 10, 31), derive_state(first[:1], calendar=CAL)),
        (dt.date(2026, 11, 30), derive_state(first, calendar=CAL)),
    ]


def test_a_batch_within_one_month_or_after_a_stored_one_tells_no_month_end(store: TrackerStore) -> None:
    assert store.apply_batch([event(1, 2, "2026-11-27T10:00"), event(2, 4, "2026-11-30T23:30")], [1, 2],
                             now=NOW).month_ends == []
    # The stored state stands at the end of November: a December batch has nothing of November to tell, the
    # first time or again.
    december = [event(3, 4, "2026-12-01T08:00"), event(4, 9, "2026-12-02T08:00")]
    assert store.apply_batch(december, [3, 4], now=NOW).month_ends == []
    assert store.apply_batch(december, [3, 4], now=NOW).month_ends == []


def test_a_late_event_folds_the_history_again_and_tells_its_month_ends_in_a_new_generation(
    store: TrackerStore,
) -> None:
    """A late event that sorts before events already folded: the whole history is folded again, its month ends
    from the late event's month on are told (the closed month now as it stood with it), in generation 1, and
    the batch says from which revision it tells the dossier again."""
    received, returned = event(1, 2, "2026-10-05T09:00"), event(3, 10, "2026-11-03T09:00")
    store.apply_batch([received], [1], now=NOW)
    store.apply_batch([returned], [2], now=NOW)
    late = event(2, 9, "2026-10-20T09:00")  # resolved in October, known only now
    result = store.apply_batch([late], [3], now=NOW)
    assert result.rewrites == {"H.M": 2}  # the second event in the history's order is the late one
    (state, day, _), = result.month_ends
    assert day == dt.date(2026, 10, 31) and state.generation == 1 and state.revision == 2
    assert state._replace(generation=0) == derive_state([received, late], calendar=CAL)
    assert state.ended_on == dt.date(2026, 10, 20)  # October closed with the dossier resolved
    current = result.states["H.M"]
    assert current.generation == 1 and current._replace(generation=0) == derive_state(
        [received, late, returned], calendar=CAL)
    # Later events extend the refolded history in the same generation; nothing is told again.
    after = store.apply_batch([event(4, 10, "2026-12-01T09:00")], [4], now=NOW)
    assert after.rewrites == {} and after.states["H.M"].generation == 1 and after.month_ends == []
