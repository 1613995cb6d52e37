"""The working-day calendar: contract rules 1-3 and the override file."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.calendar import (
    VN_TZ,
    CalendarOverrideError,
    CalendarOverrides,
    WorkingCalendar,
    load_calendar,
    period_name,
)

D = dt.date.fromisoformat
CAL = load_calendar()  # the shipped override file
BARE = WorkingCalendar()  # the holiday library alone


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


@pytest.mark.parametrize(
    "day",
    ["2025-01-27", "2025-01-28", "2025-01-29", "2025-01-30", "2025-01-31"],
)
def test_tet_2025_weekdays_are_days_off(day: str) -> None:
    assert not CAL.is_working_day(D(day))


@pytest.mark.parametrize("day", ["2026-02-16", "2026-02-17", "2026-02-18", "2026-02-19", "2026-02-20"])
def test_tet_2026_weekdays_are_days_off(day: str) -> None:
    assert not CAL.is_working_day(D(day))


def test_days_around_tet_2026() -> None:
    assert CAL.is_working_day(D("2026-02-13"))  # Friday before
    assert CAL.is_working_day(D("2026-02-23"))  # Monday after
    assert CAL.next_working_day(D("2026-02-13")) == D("2026-02-23")


def test_make_up_saturday_from_the_override_file() -> None:
    # Saturday 8/2/2025 was worked for Monday 27/1/2025; the library misses it.
    assert not BARE.is_working_day(D("2025-02-08"))
    assert CAL.is_working_day(D("2025-02-08"))
    assert CAL.next_working_day(D("2025-02-07")) == D("2025-02-08")


def test_swap_of_2_january_2026() -> None:
    assert BARE.is_working_day(D("2026-01-02"))
    assert not CAL.is_working_day(D("2026-01-02"))
    assert CAL.is_working_day(D("2026-01-10"))


def test_plain_weekend_and_public_holidays() -> None:
    assert not CAL.is_working_day(D("2026-11-28"))  # Saturday
    assert not CAL.is_working_day(D("2026-11-29"))  # Sunday
    assert not CAL.is_working_day(D("2026-09-02"))  # National Day
    assert not CAL.is_working_day(D("2026-04-30"))
    assert CAL.is_working_day(D("2026-11-27"))


def test_library_weekend_workday_is_a_working_day() -> None:
    # The library knows Saturday 26/4/2025 was worked (for Friday 2/5/2025).
    assert CAL.is_working_day(D("2025-04-26"))
    assert not CAL.is_working_day(D("2025-05-02"))


class TestReceiptDay:
    def test_before_cutoff_is_same_day(self) -> None:
        assert CAL.receipt_day(at("2026-11-26T16:59:00+07:00")) == D("2026-11-26")

    def test_at_17_00_is_same_day(self) -> None:
        assert CAL.receipt_day(at("2026-11-26T17:00:00+07:00")) == D("2026-11-26")

    def test_after_17_00_moves_to_next_working_day(self) -> None:
        assert CAL.receipt_day(at("2026-11-26T17:00:01+07:00")) == D("2026-11-27")
        # Friday evening: next Monday.
        assert CAL.receipt_day(at("2026-11-27T17:30:00+07:00")) == D("2026-11-30")

    def test_friday_evening_before_tet(self) -> None:
        assert CAL.receipt_day(at("2026-02-13T18:00:00+07:00")) == D("2026-02-23")

    def test_day_off_moves_to_next_working_day(self) -> None:
        assert CAL.receipt_day(at("2026-11-28T09:00:00+07:00")) == D("2026-11-30")

    def test_uses_vietnam_time_not_the_offset_given(self) -> None:
        # 10:30 UTC is 17:30 in Hanoi: after the cut-off.
        assert CAL.receipt_day(at("2026-11-26T10:30:00+00:00")) == D("2026-11-27")
        # 23:00 UTC on the 25th is 06:00 on the 26th in Hanoi.
        assert CAL.receipt_day(at("2026-11-25T23:00:00+00:00")) == D("2026-11-26")

    def test_naive_datetime_is_refused(self) -> None:
        with pytest.raises(ValueError, match="offset"):
            CAL.receipt_day(dt.datetime(2026, 11, 26, 9, 0))


class TestDueDay:
    def test_working_days_skip_weekend(self) -> None:
        # Received Thursday: 3 working days = Fri, Mon, Tue.
        assert CAL.due_day(received_at=at("2026-11-26T09:00:00+07:00"), value=3, unit="working_days") == D(
            "2026-12-01"
        )

    def test_working_days_skip_tet(self) -> None:
        assert CAL.due_day(received_at=at("2026-02-12T09:00:00+07:00"), value=2, unit="working_days") == D(
            "2026-02-23"
        )

    def test_working_days_count_from_the_moved_receipt_day(self) -> None:
        # Received after 17:00 on Thursday: receipt Friday, 1 working day = Monday.
        assert CAL.due_day(received_at=at("2026-11-26T17:30:00+07:00"), value=1, unit="working_days") == D(
            "2026-11-30"
        )

    def test_fractional_working_days_round_up(self) -> None:
        assert CAL.due_day(received_at=at("2026-11-26T09:00:00+07:00"), value=0.5, unit="working_days") == D(
            "2026-11-27"
        )

    def test_calendar_days_land_on_working_day(self) -> None:
        assert CAL.due_day(received_at=at("2026-11-23T09:00:00+07:00"), value=3, unit="days") == D("2026-11-26")
        # Monday + 5 days = Saturday: moved to Monday.
        assert CAL.due_day(received_at=at("2026-11-23T09:00:00+07:00"), value=5, unit="days") == D("2026-11-30")

    def test_hours_within_the_day(self) -> None:
        assert CAL.due_day(received_at=at("2026-11-26T08:00:00+07:00"), value=2, unit="hours") == D("2026-11-26")

    def test_hours_run_over_lunch_and_evening(self) -> None:
        end = CAL.add_working_hours(at("2026-11-26T10:30:00+07:00"), 2)
        assert end == at("2026-11-26T14:30:00+07:00")
        end = CAL.add_working_hours(at("2026-11-27T16:00:00+07:00"), 2)  # Friday
        assert end == at("2026-11-30T08:00:00+07:00")

    def test_hours_start_at_opening_when_received_early_or_at_lunch(self) -> None:
        assert CAL.add_working_hours(at("2026-11-26T06:00:00+07:00"), 1) == at("2026-11-26T08:00:00+07:00")
        assert CAL.add_working_hours(at("2026-11-26T12:00:00+07:00"), 1) == at("2026-11-26T14:30:00+07:00")

    def test_hours_after_cutoff_start_next_working_morning(self) -> None:
        assert CAL.due_day(received_at=at("2026-11-27T18:00:00+07:00"), value=8, unit="hours") == D("2026-11-30")
        assert CAL.due_day(received_at=at("2026-11-27T18:00:00+07:00"), value=8.5, unit="hours") == D("2026-12-01")

    def test_exactly_full_day_ends_at_17_00_same_day(self) -> None:
        assert CAL.add_working_hours(at("2026-11-26T07:00:00+07:00"), 8) == at("2026-11-26T17:00:00+07:00")

    def test_unknown_unit(self) -> None:
        with pytest.raises(ValueError):
            CAL.due_day(received_at=at("2026-11-26T08:00:00+07:00"), value=2, unit="weeks")


class TestOverrideFile:
    def test_parses_dates(self) -> None:
        o = CalendarOverrides.from_yaml("days_off: [2026-03-02]\nworking_days: ['2026-03-07']\n")
        cal = WorkingCalendar(o)
        assert not cal.is_working_day(D("2026-03-02"))
        assert cal.is_working_day(D("2026-03-07"))

    def test_override_beats_the_library(self) -> None:
        cal = WorkingCalendar(CalendarOverrides.from_yaml("working_days: [2026-09-02]"))
        assert cal.is_working_day(D("2026-09-02"))

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("days_off: 2026-01-02", "days_off must be a list"),
            ("days_off: [2026-13-01]", r"days_off\[0\] must be a date"),
            ("holidays: []", "unknown keys"),
            ("days_off: [2026-01-02]\nworking_days: [2026-01-02]", "both"),
            ("[1, 2]", "expected a mapping"),
            ("days_off: [", "not valid YAML"),
        ],
    )
    def test_errors_are_clear(self, text: str, message: str) -> None:
        with pytest.raises(CalendarOverrideError, match=message):
            CalendarOverrides.from_yaml(text)

    def test_empty_file_is_no_override(self) -> None:
        assert CalendarOverrides.from_yaml("") == CalendarOverrides()


days = st.dates(min_value=D("2024-01-01"), max_value=D("2027-12-31"))


@settings(max_examples=200, deadline=None)
@given(day=days, n=st.integers(min_value=0, max_value=60))
def test_add_working_days_counts_exactly_n(day: dt.date, n: int) -> None:
    due = CAL.add_working_days(day, n)
    assert CAL.working_days_between(day, due) == n
    if n:
        assert CAL.is_working_day(due)


@settings(max_examples=200, deadline=None)
@given(
    moment=st.datetimes(min_value=dt.datetime(2024, 1, 1), max_value=dt.datetime(2027, 12, 31), timezones=st.just(VN_TZ))
)
def test_receipt_day_is_a_working_day_not_before_the_date(moment: dt.datetime) -> None:
    receipt = CAL.receipt_day(moment)
    assert CAL.is_working_day(receipt)
    assert receipt >= moment.date()
    assert (receipt - moment.date()).days <= 12  # Tết is the longest run of days off


@settings(max_examples=200, deadline=None)
@given(
    moment=st.datetimes(min_value=dt.datetime(2024, 1, 1), max_value=dt.datetime(2027, 6, 30), timezones=st.just(VN_TZ)),
    a=st.floats(min_value=0, max_value=80, allow_nan=False),
    b=st.floats(min_value=0, max_value=80, allow_nan=False),
)
def test_working_hours_are_monotonic_and_land_in_office_hours(moment: dt.datetime, a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    end_lo, end_hi = CAL.add_working_hours(moment, lo), CAL.add_working_hours(moment, hi)
    assert end_lo <= end_hi
    assert end_hi >= moment
    t = end_hi.timetz().replace(tzinfo=None)
    assert dt.time(7, 0) <= t <= dt.time(17, 0)
    assert not (dt.time(11, 30) < t < dt.time(13, 30))
    if hi > 0:
        assert CAL.is_working_day(end_hi.date())


@pytest.mark.parametrize(
    ("key", "name"),
    [("2026-W48", "tuần 48/2026"), ("2026-W01", "tuần 1/2026"), ("2026-11", "tháng 11/2026"),
     ("2023-07", "tháng 7/2023"), ("2026-Q4", "quý IV/2026"), ("2026", "năm 2026")],
)
def test_a_period_key_is_named_in_vietnamese(key: str, name: str) -> None:
    assert period_name(key) == name
