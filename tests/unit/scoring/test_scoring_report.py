"""The report's exports neutralise formula injection (OWASP) and keep numbers numbers."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io

import pytest

from services.scoring.board import Agency, Directory, PeriodTable
from services.scoring.domain import IndexConfig, Period, compute_figures
from services.scoring.report import FORMULA_TRIGGERS, text_cell, to_csv, to_xlsx

HOSTILE = ['=HYPERLINK("https://evil.example/fix","Bấm vào đây")', "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A9)",
           "\t=1+1", "\r=1+1"]


def _report(code: str, name: str) -> tuple[PeriodTable, Directory]:
    directory = Directory(
        district=Agency(code="TUY_PHONG", name="toàn huyện Tuy Phong", kind="district"),
        agencies=(Agency(code="PTP", name=name, kind="department"),),
    )
    figures = compute_figures({"ended_early": 3, "ended_late": 1, "received": 4, "filed_online": 2},
                              config=IndexConfig())
    negative = dataclasses.replace(figures, ended_early=-3, on_time_ratio=-0.5)
    table = PeriodTable(period=Period(2026, "month", 11), current=False, as_of=dt.date(2026, 11, 30),
                        figures={"PTP": negative, code: figures})
    return table, directory


@pytest.mark.parametrize("value", HOSTILE)
def test_a_text_cell_that_begins_like_a_formula_gets_a_single_quote(value: str) -> None:
    cell = text_cell(value)
    assert cell.startswith("'") and not cell[1:].startswith(("\t", "\r"))  # the tab or CR is not shown either
    assert text_cell("PTP") == "PTP" and text_cell("Phòng Tư pháp") == "Phòng Tư pháp"


@pytest.mark.parametrize("value", HOSTILE)
def test_csv_cells_are_neutralised_and_numbers_stay_numbers(value: str) -> None:
    table, directory = _report(code=value, name=value)
    rows = list(csv.reader(io.StringIO(to_csv(table, directory).decode("utf-8-sig"))))
    text_cells = [c for row in rows[1:] for c in row[:2]]
    assert not [c for c in text_cells if c.startswith(FORMULA_TRIGGERS)]
    assert sum(c.startswith("'") for c in text_cells) >= 2  # the hostile code and the hostile name
    ptp = next(row for row in rows if row[0] == "PTP")
    assert ptp[2] == "-3" and ptp[8] == "-0.5000"  # negative numbers are numbers, not quoted text


@pytest.mark.parametrize("value", HOSTILE)
def test_xlsx_cells_are_strings_never_formulas_and_numbers_stay_numbers(value: str) -> None:
    from openpyxl import load_workbook

    table, directory = _report(code=value, name=value)
    ws = load_workbook(io.BytesIO(to_xlsx(table, directory))).active
    rows = list(ws.iter_rows(min_row=4))
    text_cells = [c for row in rows for c in row[:2]]
    assert all(c.data_type == "s" for c in text_cells if c.value is not None)
    assert not [c.value for c in text_cells if isinstance(c.value, str) and c.value.startswith(FORMULA_TRIGGERS)]
    assert sum(str(c.value).startswith("'") for c in text_cells) >= 2
    assert not [c.coordinate for row in ws.iter_rows() for c in row if c.data_type == "f"]
    ptp = next(row for row in rows if row[0].value == "PTP")
    assert ptp[2].value == -3 and ptp[2].data_type == "n"
    assert ptp[8].value == -0.5 and ptp[8].data_type == "n"
