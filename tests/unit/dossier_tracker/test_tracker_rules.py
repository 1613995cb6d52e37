"""Contract timeliness rules 1-6 on the pure dossier domain."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.dossier_tracker.domain import RecordedEvent, derive_state, open_state, order_events
from shared.calendar import load_calendar

CAL = load_calendar()
D = dt.date.fromisoformat
_ids = itertools.count(1)


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text if "+" in text[10:] or text.endswith("Z") else text + "+07:00")


def ev(status: int, when: str, *, seq: int | None = None, **extra: Any) -> RecordedEvent:
    fields: dict[str, Any] = {
        "source": "motcua",
        "event_id": f"e{next(_ids)}",
        "dossier_code": "H1",
        "sequence": seq,
        "status": status,
        "occurred_at": at(when),
        "agency_code": "PTP",
        "procedure_code": "1.0001",
        "field_code": "HT",
    }
    for key in ("received_at", "due_at"):
        if key in extra:
            extra[key] = at(extra[key])
    fields.update(extra)
    return RecordedEvent(**fields)


def received(when: str, *, seq: int | None = 1, days: float = 3, unit: str = "working_days", **extra: Any):
    return ev(2, when, seq=seq, received_at=when, duration_value=days, duration_unit=unit, **extra)


class TestRule1Counting:
    def test_never_received_is_not_counted(self) -> None:
        state = derive_state([ev(1, "2026-11-23T08:00", seq=1), ev(3, "2026-11-23T09:00", seq=2)], calendar=CAL)
        assert not state.counted
        assert state.timeliness is None
        assert not state.is_open

    def test_counts_from_first_status_2(self) -> None:
        state = derive_state([ev(1, "2026-11-20T08:00", seq=1), received("2026-11-23T08:00", seq=2)], calendar=CAL)
        assert state.counted and state.is_open
        assert state.receipt_day == D("2026-11-23")

    def test_receipt_after_17_moves_receipt_and_due_day(self) -> None:
        state = derive_state([received("2026-11-25T17:05", days=1)], calendar=CAL)
        assert state.receipt_day == D("2026-11-26")
        assert state.due_day == D("2026-11-27")

    def test_receipt_before_a_holiday_skips_it(self) -> None:
        # 24/11/2026 (Vietnam Culture Day) is a day off in the holiday library.
        state = derive_state([received("2026-11-23T17:05", days=1)], calendar=CAL)
        assert state.receipt_day == D("2026-11-25")
        assert state.due_day == D("2026-11-26")

    def test_receipt_on_a_day_off(self) -> None:
        state = derive_state([received("2026-11-28T09:00", days=1)], calendar=CAL)  # Saturday
        assert state.receipt_day == D("2026-11-30")
        assert state.due_day == D("2026-12-01")


class TestRule3DueDay:
    def test_due_at_from_source_wins(self) -> None:
        state = derive_state([received("2026-11-23T08:00", due_at="2026-12-10T17:00")], calendar=CAL)
        assert state.due_day == D("2026-12-10") and state.due_from_source

    def test_latest_due_at_wins(self) -> None:
        state = derive_state(
            [
                received("2026-11-23T08:00", seq=1, due_at="2026-12-10T17:00"),
                ev(4, "2026-11-24T08:00", seq=2, due_at="2026-12-04T17:00"),
            ],
            calendar=CAL,
        )
        assert state.due_day == D("2026-12-04")

    def test_due_at_date_is_taken_in_vietnam_time(self) -> None:
        state = derive_state([received("2026-11-23T08:00", due_at="2026-12-03T18:30:00Z")], calendar=CAL)
        assert state.due_day == D("2026-12-04")

    def test_working_days(self) -> None:
        assert derive_state([received("2026-11-26T08:00", days=3)], calendar=CAL).due_day == D("2026-12-01")

    def test_calendar_days(self) -> None:
        state = derive_state([received("2026-11-23T08:00", days=5, unit="days")], calendar=CAL)
        assert state.due_day == D("2026-11-30")

    def test_hours(self) -> None:
        state = derive_state([received("2026-11-27T15:00", days=4, unit="hours")], calendar=CAL)
        assert state.due_day == D("2026-11-30")

    def test_no_due_information(self) -> None:
        state = derive_state([ev(2, "2026-11-23T08:00", seq=1, received_at="2026-11-23T08:00")], calendar=CAL)
        assert state.due_day is None
        ended = derive_state(
            [ev(2, "2026-11-23T08:00", seq=1, received_at="2026-11-23T08:00"), ev(9, "2026-11-24T08:00", seq=2)],
            calendar=CAL,
        )
        assert ended.ended_on == D("2026-11-24") and ended.timeliness is None


class TestRule4Pauses:
    def test_pause_moves_computed_due_day_by_paused_working_days(self) -> None:
        # Due Tue 1/12 without pause. Paused Fri 27/11, resumed Tue 1/12: the
        # paused working days are Mon 30/11 and Tue 1/12 (after the pause day,
        # up to and including the resume day): due Thu 3/12.
        history = [
            received("2026-11-26T08:00", seq=1, days=3),
            ev(5, "2026-11-27T09:00", seq=2),
            ev(4, "2026-12-01T09:00", seq=3),
        ]
        state = derive_state(history, calendar=CAL)
        assert state.due_day == D("2026-12-03")
        assert not state.paused and state.supplement_requests == 1

    def test_financial_obligation_also_pauses(self) -> None:
        history = [
            received("2026-11-26T08:00", seq=1, days=3),
            ev(6, "2026-11-27T09:00", seq=2),
            ev(4, "2026-11-30T09:00", seq=3),
        ]
        assert derive_state(history, calendar=CAL).due_day == D("2026-12-02")

    def test_pause_does_not_move_a_due_day_from_the_source(self) -> None:
        history = [
            received("2026-11-26T08:00", seq=1, due_at="2026-12-01T17:00"),
            ev(5, "2026-11-27T09:00", seq=2),
            ev(4, "2026-12-01T09:00", seq=3),
        ]
        assert derive_state(history, calendar=CAL).due_day == D("2026-12-01")

    def test_open_pause(self) -> None:
        history = [received("2026-11-26T08:00", seq=1), ev(5, "2026-11-27T09:00", seq=2)]
        state = derive_state(history, calendar=CAL)
        assert state.paused and state.pause_started_on == D("2026-11-27")
        assert open_state(paused=state.paused, due_day=state.due_day, today=D("2026-12-20"), calendar=CAL) == (
            "awaiting_supplement"
        )

    def test_consecutive_5_and_6_are_one_pause(self) -> None:
        history = [
            received("2026-11-26T08:00", seq=1, days=3),
            ev(5, "2026-11-27T09:00", seq=2),
            ev(6, "2026-11-30T09:00", seq=3),
            ev(4, "2026-12-01T09:00", seq=4),
        ]
        assert derive_state(history, calendar=CAL).due_day == D("2026-12-03")

    def test_second_supplement_makes_it_late_whatever_the_dates(self) -> None:
        history = [
            received("2026-11-26T08:00", seq=1, days=10),
            ev(5, "2026-11-26T09:00", seq=2),
            ev(4, "2026-11-26T10:00", seq=3),
            ev(5, "2026-11-26T11:00", seq=4),
            ev(4, "2026-11-26T14:00", seq=5),
            ev(9, "2026-11-26T15:00", seq=6),
        ]
        state = derive_state(history, calendar=CAL)
        assert state.supplement_requests == 2
        assert state.timeliness == "late"

    def test_ending_while_paused_counts_the_pause(self) -> None:
        history = [
            received("2026-11-26T08:00", seq=1, days=1),  # due Fri 27/11
            ev(5, "2026-11-26T09:00", seq=2),
            ev(9, "2026-11-30T09:00", seq=3),  # paused Fri 27 and Mon 30: due moves to Tue 1/12
        ]
        state = derive_state(history, calendar=CAL)
        assert state.due_day == D("2026-12-01")
        assert state.timeliness == "early"


class TestRule5Ending:
    @pytest.mark.parametrize(
        ("ended", "expected"),
        [
            ("2026-11-30T16:00", "early"),
            ("2026-12-01T08:00", "on_time"),
            ("2026-12-01T23:59", "on_time"),
            ("2026-12-02T00:01", "late"),
            ("2026-12-01T17:30:00Z", "late"),  # 00:30 on 2/12 in Vietnam
        ],
    )
    def test_by_calendar_date_in_vietnam(self, ended: str, expected: str) -> None:
        history = [received("2026-11-26T08:00", seq=1, days=3), ev(10, ended, seq=2)]  # due Tue 1/12
        assert derive_state(history, calendar=CAL).timeliness == expected

    @pytest.mark.parametrize("status", [3, 7, 8, 9, 10])
    def test_every_end_status_ends(self, status: int) -> None:
        state = derive_state([received("2026-11-26T08:00", seq=1), ev(status, "2026-11-27T08:00", seq=2)], calendar=CAL)
        assert state.ended_on == D("2026-11-27") and state.end_status == status and not state.is_open

    def test_first_end_status_counts(self) -> None:
        history = [
            received("2026-11-26T08:00", seq=1, days=3),
            ev(9, "2026-11-30T08:00", seq=2),
            ev(10, "2026-12-05T08:00", seq=3),
        ]
        state = derive_state(history, calendar=CAL)
        assert state.ended_on == D("2026-11-30") and state.timeliness == "early"
        assert state.status == 10

    def test_end_before_receipt_is_ignored(self) -> None:
        history = [ev(3, "2026-11-20T08:00", seq=1), received("2026-11-26T08:00", seq=2)]
        state = derive_state(history, calendar=CAL)
        assert state.is_open


class TestRule6OpenStates:
    DUE = D("2026-12-01")  # a Tuesday

    @pytest.mark.parametrize(
        ("today", "expected"),
        [
            ("2026-11-26", "in_time"),
            ("2026-11-27", "in_time"),  # Friday: next working day is Monday 30/11
            ("2026-11-28", "in_time"),  # Saturday: the next working day, Monday 30/11, is before the due day
            ("2026-11-30", "due_soon"),
            ("2026-12-01", "due_soon"),
            ("2026-12-02", "overdue"),
        ],
    )
    def test_states(self, today: str, expected: str) -> None:
        assert open_state(paused=False, due_day=self.DUE, today=D(today), calendar=CAL) == expected

    def test_due_soon_over_a_weekend(self) -> None:
        assert open_state(paused=False, due_day=D("2026-11-30"), today=D("2026-11-27"), calendar=CAL) == "due_soon"

    def test_paused_comes_first(self) -> None:
        assert open_state(paused=True, due_day=self.DUE, today=D("2026-12-10"), calendar=CAL) == (
            "awaiting_supplement"
        )

    def test_a_pause_begun_after_the_due_day_is_overdue(self) -> None:
        # Rule 7 (shared.rules): only a pause begun on or before the due day stops the clock.
        state = open_state(paused=True, pause_started_on=D("2026-12-03"), due_day=self.DUE, today=D("2026-12-10"),
                           calendar=CAL)
        assert state == "overdue"

    def test_a_second_supplement_request_is_overdue_even_paused(self) -> None:
        history = [
            received("2026-11-26T08:00", seq=1, days=30),
            ev(5, "2026-11-27T09:00", seq=2),
            ev(4, "2026-11-30T09:00", seq=3),
            ev(5, "2026-12-01T09:00", seq=4),
        ]
        state = derive_state(history, calendar=CAL)
        assert state.paused and state.supplement_requests == 2
        assert open_state(paused=state.paused, pause_started_on=state.pause_started_on, due_day=state.due_day,
                          supplement_requests=state.supplement_requests, today=D("2026-12-02"), calendar=CAL) == (
            "overdue"
        )


class TestOrdering:
    def test_sequence_orders_whatever_the_times(self) -> None:
        a = ev(2, "2026-11-26T10:00", seq=1, received_at="2026-11-26T08:00")
        b = ev(9, "2026-11-26T09:00", seq=2)  # clock skew at the source
        assert [e.status for e in order_events([b, a])] == [2, 9]

    def test_occurred_at_when_a_sequence_is_missing(self) -> None:
        a = ev(2, "2026-11-26T08:00", seq=5, received_at="2026-11-26T08:00")
        b = ev(9, "2026-11-27T09:00", seq=None)
        assert [e.status for e in order_events([b, a])] == [2, 9]


statuses = st.lists(st.sampled_from([4, 4, 5, 6, 9, 10, 3, 7, 8]), min_size=0, max_size=8)


@settings(max_examples=150, deadline=None)
@given(
    tail=statuses,
    gaps=st.lists(st.integers(min_value=0, max_value=4 * 24 * 60), min_size=8, max_size=8),
    use_sequence=st.booleans(),
    data=st.data(),
)
def test_any_arrival_order_gives_the_same_state(tail: list[int], gaps: list[int], use_sequence: bool, data) -> None:  # type: ignore[no-untyped-def]
    start = at("2026-11-23T08:00")
    history = [received("2026-11-23T08:00", seq=1 if use_sequence else None, days=5)]
    moment = start
    for i, status in enumerate(tail):
        moment = moment + dt.timedelta(minutes=gaps[i] + 1)
        history.append(ev(status, moment.isoformat(), seq=i + 2 if use_sequence else None))
    shuffled = data.draw(st.permutations(history))
    assert derive_state(shuffled, calendar=CAL) == derive_state(history, calendar=CAL)
    state = derive_state(history, calendar=CAL)
    assert state.revision == len(history)
    if state.ended_on is not None:
        assert state.timeliness in {"early", "on_time", "late"}
        assert not state.paused
