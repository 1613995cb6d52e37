"""Due rules, occurrences, period keys, owners and plan-file validation."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.deadline_monitor.plan import (
    WEEKDAYS,
    Monthly,
    OnDate,
    PlanError,
    Task,
    UnknownAgencyError,
    Weekly,
    Yearly,
    load_agencies,
    occurrences,
    period_key,
    resolve_owners,
    validate_plan_text,
)
from shared.calendar import load_calendar

CAL = load_calendar()
AGENCIES = load_agencies()
D = dt.date


def task(due: dict[str, Any], *, owner: Any = None) -> Task:
    return Task(id="T-1", title="Nhiệm vụ thử", section="II.1.a", owner=owner or {"group": "all"}, due=due)


def due_days(due: dict[str, Any], start: dt.date, end: dt.date) -> list[tuple[str | None, dt.date]]:
    return [(o.period, o.due_day) for o in occurrences(task(due), start=start, end=end, calendar=CAL)]


# -- period keys ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "day", "key"),
    [
        (Weekly(every="week", weekday="mon"), D(2025, 12, 29), "2026-W01"),  # ISO week 1 of 2026 begins in 2025
        (Weekly(every="week", weekday="mon"), D(2024, 12, 30), "2025-W01"),
        (Weekly(every="week", weekday="sun"), D(2021, 1, 3), "2020-W53"),
        (Weekly(every="week", weekday="fri"), D(2023, 7, 7), "2023-W27"),
        (Monthly(every="month", day=31), D(2023, 7, 31), "2023-07"),
        (Yearly(every="year", month=11, day=15), D(2023, 11, 15), "2023"),
        (OnDate(date=D(2023, 6, 20)), D(2023, 6, 20), None),
    ],
)
def test_period_key(rule: object, day: dt.date, key: str | None) -> None:
    assert period_key(rule, day) == key


# -- weekly ---------------------------------------------------------------------------


def test_weekly_across_the_year_boundary() -> None:
    # Friday 2/1/2026 is a day off (worked back on Saturday 10/1/2026): it moves to
    # Monday 5/1/2026 but stays in the period of the week it was scheduled in.
    assert due_days({"every": "week", "weekday": "fri"}, D(2025, 12, 22), D(2026, 1, 16)) == [
        ("2025-W52", D(2025, 12, 26)),
        ("2026-W01", D(2026, 1, 5)),
        ("2026-W02", D(2026, 1, 9)),
        ("2026-W03", D(2026, 1, 16)),
    ]


def test_weekly_monday_of_iso_week_one() -> None:
    assert due_days({"every": "week", "weekday": "mon"}, D(2025, 12, 27), D(2026, 1, 4)) == [
        ("2026-W01", D(2025, 12, 29)),
    ]


def test_weekly_on_a_weekend_day_moves_to_monday() -> None:
    assert due_days({"every": "week", "weekday": "sat"}, D(2023, 7, 1), D(2023, 7, 16)) == [
        ("2023-W26", D(2023, 7, 3)),
        ("2023-W27", D(2023, 7, 10)),
    ]


# -- monthly --------------------------------------------------------------------------


def test_monthly_day_31_is_the_last_day_of_shorter_months() -> None:
    assert due_days({"every": "month", "day": 31}, D(2023, 2, 1), D(2023, 2, 28)) == [("2023-02", D(2023, 2, 28))]
    assert due_days({"every": "month", "day": 31}, D(2024, 2, 1), D(2024, 2, 29)) == [("2024-02", D(2024, 2, 29))]
    assert due_days({"every": "month", "day": 31}, D(2023, 6, 1), D(2023, 6, 30)) == [("2023-06", D(2023, 6, 30))]


def test_monthly_day_31_in_april_on_a_holiday() -> None:
    # 31/3/2024 is a Sunday: March falls due on Monday 1/4. 30/4/2024 (Tuesday) and
    # 1/5 are holidays and 29/4 was swapped off: April falls due on Thursday 2/5/2024.
    assert due_days({"every": "month", "day": 31}, D(2024, 4, 1), D(2024, 5, 31)) == [
        ("2024-03", D(2024, 4, 1)),
        ("2024-04", D(2024, 5, 2)),
        ("2024-05", D(2024, 5, 31)),
    ]


def test_monthly_due_day_in_tet_2026_moves_after_the_holiday() -> None:
    # Tết Bính Ngọ: 16-20/2/2026 are days off; 17/1/2026 is a Saturday.
    assert due_days({"every": "month", "day": 17}, D(2026, 1, 1), D(2026, 3, 31)) == [
        ("2026-01", D(2026, 1, 19)),
        ("2026-02", D(2026, 2, 23)),
        ("2026-03", D(2026, 3, 17)),
    ]


def test_monthly_due_day_on_a_weekend() -> None:
    assert due_days({"every": "month", "day": 25}, D(2023, 11, 1), D(2023, 11, 30)) == [("2023-11", D(2023, 11, 27))]


# -- yearly ---------------------------------------------------------------------------


def test_yearly_15_november() -> None:
    assert due_days({"every": "year", "month": 11, "day": 15}, D(2023, 1, 1), D(2025, 12, 31)) == [
        ("2023", D(2023, 11, 15)),
        ("2024", D(2024, 11, 15)),
        ("2025", D(2025, 11, 17)),  # Saturday 15/11/2025
    ]


def test_yearly_29_february_in_a_common_year() -> None:
    assert due_days({"every": "year", "month": 2, "day": 29}, D(2023, 1, 1), D(2024, 12, 31)) == [
        ("2023", D(2023, 2, 28)),
        ("2024", D(2024, 2, 29)),
    ]


# -- one-shot and continuous -----------------------------------------------------------


def test_one_shot_date() -> None:
    assert due_days({"date": "2023-06-20"}, D(2023, 6, 1), D(2023, 6, 30)) == [(None, D(2023, 6, 20))]
    assert due_days({"date": "2023-06-20"}, D(2023, 6, 21), D(2023, 12, 31)) == []


def test_one_shot_on_a_sunday_falls_due_on_monday() -> None:
    due = {"date": D(2023, 7, 30)}
    assert due_days(due, D(2023, 7, 1), D(2023, 7, 30)) == []  # not yet due on Sunday
    assert due_days(due, D(2023, 7, 31), D(2023, 8, 31)) == [(None, D(2023, 7, 31))]


def test_continuous_has_no_occurrence() -> None:
    assert due_days({"continuous": True}, D(2023, 1, 1), D(2030, 12, 31)) == []


def test_empty_window() -> None:
    assert due_days({"every": "week", "weekday": "fri"}, D(2023, 7, 10), D(2023, 7, 1)) == []


# -- start/end bounds ----------------------------------------------------------------


def test_without_start_an_earlier_period_can_fall_due_in_the_window() -> None:
    # 31/12/2022 (Saturday), then 1/1 and the compensatory 2/1/2023: due Tuesday 3/1/2023.
    assert due_days({"every": "year", "month": 12, "day": 31}, D(2023, 1, 1), D(2023, 1, 31)) == [
        ("2022", D(2023, 1, 3)),
    ]


def test_rule_start_and_end_bound_the_scheduled_days() -> None:
    due = {"every": "month", "day": 5, "start": D(2023, 7, 10), "end": D(2023, 9, 30)}
    assert due_days(due, D(2023, 1, 1), D(2023, 12, 31)) == [
        ("2023-08", D(2023, 8, 7)),  # 5/8/2023 is a Saturday
        ("2023-09", D(2023, 9, 5)),
    ]


def test_a_rule_ending_on_a_day_off_still_falls_due_after_it() -> None:
    due = {"every": "year", "month": 12, "day": 31, "start": D(2023, 1, 1), "end": D(2023, 12, 31)}
    assert due_days(due, D(2023, 1, 1), D(2023, 12, 31)) == []
    assert due_days(due, D(2023, 1, 1), D(2024, 12, 31)) == [("2023", D(2024, 1, 2))]


def test_start_bound_is_inclusive() -> None:
    due = {"every": "week", "weekday": "fri", "start": D(2023, 6, 16), "end": D(2023, 6, 30)}
    assert [p for p, _ in due_days(due, D(2023, 1, 1), D(2023, 12, 31))] == ["2023-W24", "2023-W25", "2023-W26"]


def test_window_start_catches_a_due_day_moved_into_it() -> None:
    # Scheduled Sunday 30/4/2023, the holidays run to 3/5: due Thursday 4/5/2023.
    assert due_days({"every": "month", "day": 30}, D(2023, 5, 4), D(2023, 5, 4)) == [("2023-04", D(2023, 5, 4))]


# -- property: occurrences are sorted, unique per period, in the window, on working days --

SHORT_MONTHS = {2: 29, 4: 30, 6: 30, 9: 30, 11: 30}
RULES = st.one_of(
    st.builds(lambda d: {"date": d}, st.dates(D(2022, 6, 1), D(2028, 6, 30))),
    st.builds(lambda w: {"every": "week", "weekday": w}, st.sampled_from(WEEKDAYS)),
    st.builds(lambda d: {"every": "month", "day": d}, st.integers(1, 31)),
    st.builds(lambda m, d: {"every": "year", "month": m, "day": min(d, SHORT_MONTHS.get(m, 31))},
              st.integers(1, 12), st.integers(1, 31)),
)


@st.composite
def bounded_rules(draw: st.DrawFn) -> dict[str, Any]:
    rule = dict(draw(RULES))
    if "every" in rule and draw(st.booleans()):
        start = draw(st.dates(D(2022, 6, 1), D(2027, 12, 31)))
        rule["start"] = start
        rule["end"] = start + dt.timedelta(days=draw(st.integers(0, 500)))
    return rule


@settings(max_examples=300, deadline=None)
@given(rule=bounded_rules(), start=st.dates(D(2023, 1, 1), D(2027, 12, 31)), length=st.integers(0, 400))
def test_occurrences_property(rule: dict[str, Any], start: dt.date, length: int) -> None:
    end = start + dt.timedelta(days=length)
    found = occurrences(task(rule), start=start, end=end, calendar=CAL)
    days = [o.due_day for o in found]
    assert days == sorted(days)
    periods = [o.period for o in found]
    if "every" in rule:
        assert len(periods) == len(set(periods)) and None not in periods
    else:
        assert len(found) <= 1 and periods in ([], [None])
    for occurrence in found:
        assert start <= occurrence.due_day <= end
        assert CAL.is_working_day(occurrence.due_day)
        assert occurrence.task_id == "T-1"


@settings(max_examples=100, deadline=None)
@given(day=st.integers(1, 31), start=st.dates(D(2023, 1, 1), D(2027, 12, 31)), months=st.integers(2, 24))
def test_monthly_rule_has_one_occurrence_per_inner_month(day: int, start: dt.date, months: int) -> None:
    """Every month lying wholly inside the window (after a month of slack) has its occurrence."""
    end = start + dt.timedelta(days=31 * months)
    found = {o.period for o in occurrences(task({"every": "month", "day": day}), start=start, end=end, calendar=CAL)}
    first = (start.year * 12 + start.month) + 1
    last = (end.year * 12 + end.month) - 2
    for index in range(first, last + 1):
        year, month0 = divmod(index - 1, 12)
        assert f"{year}-{month0 + 1:02d}" in found


# -- owners ------------------------------------------------------------------------------


def test_resolve_owners_group_and_codes_in_file_order_without_duplicates() -> None:
    owners = resolve_owners(task({"continuous": True}, owner={"group": "communes", "codes": ["VP_HDND_UBND"]}),
                            AGENCIES)
    assert owners[0] == "VP_HDND_UBND"
    assert owners[1:] == list(AGENCIES.members("communes"))
    same = resolve_owners(task({"continuous": True}, owner={"group": "departments", "codes": ["PNV"]}), AGENCIES)
    assert same == list(AGENCIES.members("departments"))


def test_owner_shorthands() -> None:
    assert resolve_owners(task({"continuous": True}, owner="PNV"), AGENCIES) == ["PNV"]
    assert resolve_owners(task({"continuous": True}, owner=["PTP", "PNV"]), AGENCIES) == ["PNV", "PTP"]
    assert len(resolve_owners(task({"continuous": True}), AGENCIES)) == len(AGENCIES.agencies)


def test_resolve_owners_refuses_unknown_codes() -> None:
    with pytest.raises(UnknownAgencyError, match="NOPE"):
        resolve_owners(task({"continuous": True}, owner=["PNV", "NOPE"]), AGENCIES)


# -- validation ----------------------------------------------------------------------------

BROKEN = """\
plan_id: TEST-1
title: Kế hoạch thử
issued_on: 2023-06-16
issuer: TUY_PHONG
valid_from: 2023-06-15
valid_until: 2023-12-31
colour: red                                   # E-extra
targets:
  - {id: on_time_ratio, title: Đúng hạn, unit: ratio, op: gt, value: 0.98}
tasks:
  - id: T1
    title: Nhiệm vụ một
    section: II.1.a
    owner: [PNV, XYZ]                         # E-owner-code
    due: {date: 2023-06-20}
  - id: T1                                    # E-dup-id
    title: Nhiệm vụ hai
    section: II.1.b
    owner: {group: communes}
    due: {every: year, month: 2, day: 30}     # E-feb-30
  - id: T3                                    # E-no-title
    section: II.1.c
    owner: {group: all}
    due: {date: 2024-03-01}                   # E-outside
  - id: T4
    title: Nhiệm vụ bốn
    section: II.1.d
    owner: {group: everyone}                  # E-group
    collaborators: [PNVV]                     # E-collab
    due: {every: fortnight}                   # E-form
  - id: T5
    title: Nhiệm vụ năm
    section: II.1.e
    owner: PNV
    due:
      every: week
      weekday: friday                         # E-weekday
      start: 2023-09-01
      end: 2023-08-01                         # E-end
    target: {metric: speed}                   # E-metric
    report_to: [TUY_PHONG, NOBODY]            # E-report
"""


def line_of(text: str, marker: str) -> int:
    lines = [i for i, line in enumerate(text.splitlines(), start=1) if line.rstrip().endswith(f"# {marker}")]
    assert len(lines) == 1, marker
    return lines[0]


def test_validation_reports_every_error_with_line_and_field() -> None:
    errors = validate_plan_text(BROKEN, source="broken.yaml")
    expected = {
        ("E-extra", "colour"),
        ("E-owner-code", "tasks[0].owner[1]"),
        ("E-dup-id", "tasks[1].id"),
        ("E-feb-30", "tasks[1].due.day"),
        ("E-no-title", "tasks[2].title"),
        ("E-outside", "tasks[2].due.date"),
        ("E-group", "tasks[3].owner.group"),
        ("E-collab", "tasks[3].collaborators[0]"),
        ("E-form", "tasks[3].due"),
        ("E-weekday", "tasks[4].due.weekday"),
        ("E-end", "tasks[4].due.end"),
        ("E-metric", "tasks[4].target.metric"),
        ("E-report", "tasks[4].report_to[1]"),
    }
    assert {(e.line, e.field) for e in errors} == {(line_of(BROKEN, m), f) for m, f in expected}
    assert errors == sorted(errors, key=lambda e: (e.line, e.field, e.message))
    by_field = {e.field: e.message for e in errors}
    assert "XYZ" in by_field["tasks[0].owner[1]"]
    assert "duplicate task id 'T1'" in by_field["tasks[1].id"]
    assert "month 2 has no day 30" in by_field["tasks[1].due.day"]
    assert "outside the plan's validity" in by_field["tasks[2].due.date"]
    assert "due must be one of" in by_field["tasks[3].due"]
    assert by_field["tasks[2].title"] == "required field is missing"
    assert by_field["colour"] == "unknown field"
    assert all(e.source == "broken.yaml" for e in errors)
    assert str(errors[0]).startswith(f"broken.yaml:{errors[0].line}: ")


def test_validation_of_a_yaml_syntax_error_gives_its_line() -> None:
    text = "plan_id: X\ntitle: Kế hoạch\ntasks:\n  - id: a\n    title: a: b\n"
    errors = validate_plan_text(text, source="bad.yaml")
    assert len(errors) == 1
    assert errors[0].line == 5
    assert errors[0].message.startswith("not valid YAML")


def test_validation_finds_duplicate_keys() -> None:
    text = BROKEN.replace("    title: Nhiệm vụ một\n", "    title: Nhiệm vụ một\n    title: Nhiệm vụ một lần nữa\n")
    errors = validate_plan_text(text, source="dup.yaml")
    dup = [e for e in errors if e.message.startswith("duplicate key")]
    assert [(e.line, e.field) for e in dup] == [(13, "tasks[0].title")]
    assert "first at line 12" in dup[0].message


def test_validation_of_something_that_is_not_a_plan() -> None:
    assert validate_plan_text("", source="empty.yaml") == [
        PlanError(line=1, field="", message="a plan file is a YAML mapping (plan_id, title, ..., tasks)",
                  source="empty.yaml")
    ]
    assert len(validate_plan_text("- a\n- b\n", source="list.yaml")) == 1


def test_validation_of_validity_and_targets() -> None:
    text = (
        "plan_id: P\ntitle: Kế hoạch\nissued_on: 2023-06-16\nissuer: NOWHERE\n"
        "valid_from: 2023-12-31\nvalid_until: 2023-01-01\n"
        "targets:\n  - {id: r, title: Tỷ lệ, unit: ratio, op: gt, value: 98}\n"
        "  - {id: r, title: Tỷ lệ, unit: count, op: ge, value: 1.5}\n"
        "tasks: []\n"
    )
    fields = {(e.line, e.field) for e in validate_plan_text(text, source="v.yaml")}
    assert fields == {
        (4, "issuer"),
        (6, "valid_until"),
        (8, "targets[0].value"),
        (9, "targets[1].value"),
        (9, "targets[1].id"),
        (10, "tasks"),
    }


def test_an_impossible_date_is_reported_with_the_other_errors() -> None:
    text = BROKEN.replace("due: {date: 2024-03-01}", "due: {date: 2023-02-30}")
    errors = validate_plan_text(text, source="broken.yaml")
    bad_date = [e for e in errors if e.field == "tasks[2].due.date"]
    assert len(bad_date) == 1 and bad_date[0].line == line_of(BROKEN, "E-outside")
    assert "date" in bad_date[0].message
    assert len(errors) == 13  # nothing else was hidden by the bad date
