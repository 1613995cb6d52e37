"""The weekly review's arithmetic: per agency and field, capped; inter-agency dossiers; weeks as spans; the table."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections import Counter

import pytest

from services.scoring.board import Directory
from services.scoring.report import review_rows, review_to_csv
from services.scoring.review import OTHER_FIELDS, UNKNOWN_FIELD, ReviewFigures, Span, build_review
from shared.agencies import load_agencies

D = dt.date
DIRECTORY = Directory.of(load_agencies())
DISTRICT = DIRECTORY.district_code
WEEK = Span.parse("2026-W48")


def review(counts: dict, *, max_fields: int = 10):  # type: ignore[no-untyped-def]
    return build_review(Counter(counts), span=WEEK, current=False, as_of=WEEK.end, label=DIRECTORY.label,
                        district=DISTRICT, max_fields=max_fields)


def test_a_week_is_monday_to_sunday_and_other_periods_read_as_scoring_reads_them() -> None:
    assert (WEEK.kind, WEEK.start, WEEK.end) == ("week", D(2026, 11, 23), D(2026, 11, 29))
    assert Span.week_of(D(2026, 11, 29)) == WEEK
    assert (Span.parse("2026-11").start, Span.parse("2026-11").end) == (D(2026, 11, 1), D(2026, 11, 30))
    for bad in ("2026-W54", "2026-W5", "W48", "2026-13"):
        with pytest.raises(ValueError):
            Span.parse(bad)


def test_late_ratio_is_late_and_overdue_over_ended_and_open_and_none_without_dossiers() -> None:
    assert ReviewFigures(ended=3, ended_late=1, open=1, overdue=1).late_ratio == pytest.approx(2 / 4)
    assert ReviewFigures().late_ratio is None


def test_figures_per_agency_and_field_with_the_district_roll_up_and_inter_agency_dossiers() -> None:
    r = review({
        ("PTP", "HOTICH", False, "ended"): 4, ("PTP", "HOTICH", False, "ended_late"): 1,
        ("PTP", "HOTICH", True, "open"): 2, ("PTP", "HOTICH", True, "overdue"): 1,
        ("PTP", "DATDAI", False, "open"): 1,
        ("ZZNEW", "HOTICH", False, "ended"): 1,  # outside the directory: under "unknown"
    })
    rows = {(f.agency_code, f.field_code): f.figures for f in r.fields}
    assert rows[("PTP", "HOTICH")] == ReviewFigures(ended=4, ended_late=1, open=2, overdue=1)
    assert rows[("PTP", "DATDAI")] == ReviewFigures(open=1)
    assert rows[("unknown", "HOTICH")] == ReviewFigures(ended=1)
    assert rows[(DISTRICT, "HOTICH")] == ReviewFigures(ended=5, ended_late=1, open=2, overdue=1)
    assert [f.field_code for f in r.fields if f.agency_code == "PTP"] == ["HOTICH", "DATDAI"]  # most late first
    assert r.inter_agency == {"PTP": ReviewFigures(open=2, overdue=1), DISTRICT: ReviewFigures(open=2, overdue=1)}
    assert r.total["PTP"] == ReviewFigures(ended=4, ended_late=1, open=3, overdue=1)
    assert [f.agency_code for f in r.fields][-1] == DISTRICT


def test_rare_fields_beyond_the_cap_are_added_up_in_one_row() -> None:
    counts = {("PTP", f"F{i:03d}", False, "overdue"): i for i in range(1, 51)}
    counts |= {("PTP", f"F{i:03d}", False, "open"): i for i in range(1, 51)}
    r = review(counts, max_fields=3)
    ptp = [f for f in r.fields if f.agency_code == "PTP"]
    assert [f.field_code for f in ptp] == ["F050", "F049", "F048", OTHER_FIELDS]
    assert ptp[-1].figures.overdue == sum(range(1, 48))
    assert len(r.fields) == 8  # PTP and the district: 3 fields and the rest each


def test_field_codes_are_made_safe_and_a_missing_one_is_shown_as_unknown() -> None:
    r = review({("PTP", "=HYPERLINK(\u202e\x1b[2J)", False, "open"): 1, ("PTP", None, False, "open"): 2})
    codes = {f.field_code for f in r.fields if f.agency_code == "PTP"}
    assert codes == {"=HYPERLINK([2J)", UNKNOWN_FIELD}
    body = review_to_csv(r, DIRECTORY).decode("utf-8-sig")
    cells = [row[3] for row in csv.reader(io.StringIO(body))]
    assert "'=HYPERLINK([2J)" in cells and "=HYPERLINK([2J)" not in cells  # never a formula
    assert "\x1b" not in body and "\u202e" not in body


def test_the_table_lists_fields_then_inter_agency_per_agency_in_the_directory_order() -> None:
    r = review({("PTP", "HOTICH", True, "ended"): 2, ("PTP", "HOTICH", True, "ended_late"): 1})
    rows = review_rows(r, DIRECTORY)
    assert [row[:4] for row in rows] == [
        ["PTP", "Phòng Tư pháp", "Lĩnh vực", "HOTICH"],
        ["PTP", "Phòng Tư pháp", "Liên thông", None],
        [DISTRICT, DIRECTORY.name(DISTRICT), "Lĩnh vực", "HOTICH"],
        [DISTRICT, DIRECTORY.name(DISTRICT), "Liên thông", None],
    ]
    assert rows[0][4:] == [2, 1, 0, 0, 0.5]
