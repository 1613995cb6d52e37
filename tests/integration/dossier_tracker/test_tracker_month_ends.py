"""The tracker's store tells a dossier's state at the end of each month a batch of its events crosses (for closed
periods), on SQLite and PostgreSQL."""

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

    # Delivered again (all duplicates): the current state is told again, the month end is not (docs/scoring.md).
    again = store.apply_batch(batch, [1, 2, 3], now=NOW)
    assert again.duplicate == [True, True, True] and again.month_ends == []
    assert again.states["H.M"] == result.states["H.M"]


def test_a_batch_within_one_month_or_after_a_stored_one_tells_no_month_end(store: TrackerStore) -> None:
    assert store.apply_batch([event(1, 2, "2026-11-27T10:00"), event(2, 4, "2026-11-30T23:30")], [1, 2],
                             now=NOW).month_ends == []
    # The stored state stands at the end of November: a December batch has nothing of November to tell.
    assert store.apply_batch([event(3, 4, "2026-12-01T08:00"), event(4, 9, "2026-12-02T08:00")], [3, 4],
                             now=NOW).month_ends == []
