"""Periods in Asia/Ho_Chi_Minh: parsing, bounds, labels, and midnight Vietnam time."""

from __future__ import annotations

import datetime as dt

import pytest

from services.scoring.domain import (
    DossierFacts,
    Period,
    RatingFacts,
    TaskFacts,
    current_periods,
    dossier_contributions,
    period_keys,
    rating_contributions,
    task_contributions,
    today_in_vietnam,
)

UTC = dt.timezone.utc


@pytest.mark.parametrize(
    ("text", "kind", "start", "end", "label"),
    [
        ("2026-10", "month", dt.date(2026, 10, 1), dt.date(2026, 10, 31), "tháng 10/2026"),
        ("2024-02", "month", dt.date(2024, 2, 1), dt.date(2024, 2, 29), "tháng 2/2024"),
        ("2026-12", "month", dt.date(2026, 12, 1), dt.date(2026, 12, 31), "tháng 12/2026"),
        ("2026-Q4", "quarter", dt.date(2026, 10, 1), dt.date(2026, 12, 31), "quý IV/2026"),
        ("2026-q1", "quarter", dt.date(2026, 1, 1), dt.date(2026, 3, 31), "quý I/2026"),
        ("2026", "year", dt.date(2026, 1, 1), dt.date(2026, 12, 31), "năm 2026"),
    ],
)
def test_parse_gives_bounds_and_vietnamese_label(text, kind, start, end, label) -> None:
    p = Period.parse(text)
    assert (p.kind, p.start, p.end, p.label_vi) == (kind, start, end, label)
    assert Period.parse(p.key) == p


@pytest.mark.parametrize(
    "text", ["2026-13", "2026-00", "2026-Q5", "2026-Q0", "26-10", "2026/10", "", "2026-W27", "abcd"]
)
def test_parse_rejects_other_forms(text: str) -> None:
    with pytest.raises(ValueError, match="is not YYYY-MM"):
        Period.parse(text)


def test_period_keys_of_a_day() -> None:
    assert period_keys(dt.date(2026, 11, 30)) == ("2026-11", "2026-Q4", "2026")
    assert period_keys(dt.date(2027, 1, 1)) == ("2027-01", "2027-Q1", "2027")
    assert {k: p.key for k, p in current_periods(dt.date(2026, 4, 1)).items()} == {
        "month": "2026-04", "quarter": "2026-Q2", "year": "2026"
    }


def test_today_turns_at_midnight_vietnam_time_not_utc() -> None:
    # 23:59:59 on 31/10 in Hanoi is 16:59:59 UTC; one second later it is November there.
    assert today_in_vietnam(dt.datetime(2026, 10, 31, 16, 59, 59, tzinfo=UTC)) == dt.date(2026, 10, 31)
    assert today_in_vietnam(dt.datetime(2026, 10, 31, 17, 0, 0, tzinfo=UTC)) == dt.date(2026, 11, 1)
    # New year in Vietnam while it is still 31/12 in UTC.
    now = dt.datetime(2026, 12, 31, 17, 30, tzinfo=UTC)
    assert current_periods(today_in_vietnam(now))["year"].key == "2027"


def test_rating_just_after_midnight_vietnam_counts_in_the_new_month() -> None:
    rating = RatingFacts(
        dossier_code="D1", agency_code="PTP", rated_at=dt.datetime(2026, 10, 31, 17, 0, tzinfo=UTC),
        event_id="e1", overall="satisfied",
    )
    cells = rating_contributions([rating])
    assert cells[("2026-11", "PTP", "rated")] == 1
    assert ("2026-10", "PTP", "rated") not in cells
    assert cells[("2026-Q4", "PTP", "rated")] == 1


def test_dossier_counts_in_the_periods_of_its_receipt_and_end_days() -> None:
    f = DossierFacts(
        dossier_code="D1", revision=3, agency_code="PTP", counted=True, receipt_day=dt.date(2026, 9, 30),
        due_day=dt.date(2026, 10, 2), ended_on=dt.date(2026, 10, 1), timeliness="early", channel=2,
    )
    cells = dossier_contributions(f)
    assert cells[("2026-09", "PTP", "received")] == 1
    assert cells[("2026-Q3", "PTP", "filed_online")] == 1
    assert cells[("2026-10", "PTP", "ended_early")] == 1
    assert cells[("2026-Q4", "PTP", "ended_early")] == 1
    assert cells[("2026", "PTP", "received")] == 1
    assert ("2026-10", "PTP", "received") not in cells


def duty(state: str, *, due: dt.date, done_on: dt.date | None = None) -> TaskFacts:
    return TaskFacts(plan_id="146", task_id="I.1", occurrence="2026-11", agency_code="PTP", due_day=due, state=state,
                     updated_at=dt.datetime(2026, 12, 5, 2, tzinfo=dt.timezone.utc), event_id="e", done_on=done_on)


@pytest.mark.parametrize(
    ("record", "november", "later"),
    [
        # Overdue at November's end, done late in December: November keeps it overdue; the quarter and year count
        # it done late.
        (duty("done_late", due=dt.date(2026, 11, 15), done_on=dt.date(2026, 12, 3)), "overdue", "done_late"),
        # Due on November's last day, done after it: November closed with it not done.
        (duty("done_late", due=dt.date(2026, 11, 30), done_on=dt.date(2026, 12, 3)), "overdue", "done_late"),
        (duty("done", due=dt.date(2026, 11, 15), done_on=dt.date(2026, 11, 10)), "done", "done"),
        (duty("overdue", due=dt.date(2026, 11, 15)), "overdue", "overdue"),
        (duty("open", due=dt.date(2026, 11, 15)), "open", "open"),
        (duty("done_late", due=dt.date(2026, 11, 15)), "done_late", "done_late"),  # stored before done_on
    ],
)
def test_a_duty_counts_in_each_period_of_its_due_day_as_it_stood_at_the_period_s_end(
    record: TaskFacts, november: str, later: str
) -> None:
    cells = task_contributions(record)
    assert cells == {("2026-11", "PTP", f"task_{november}"): 1, ("2026-Q4", "PTP", f"task_{later}"): 1,
                     ("2026", "PTP", f"task_{later}"): 1}
