"""The procedure catalog: its CSV format is validated with FILE:LINE errors, the shipped sample loads against the
agency directory, and the online-service share counts eligible procedures offered fully online."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.scoring.catalog import (
    SAMPLE_CATALOG,
    CatalogError,
    load_procedure_catalog,
    online_service_counts,
    parse_procedure_catalog,
)
from services.scoring.domain import IndexConfig, compute_figures, roll_up
from shared.agencies import load_agencies

HEADER = "code,name,field,agency,level,eligible_full_online,offered_full_online"


def parse(*rows: str, agencies=None):
    return parse_procedure_catalog([HEADER, *rows], source="cat.csv", agencies=agencies)


def errors_of(*rows: str, agencies=None) -> list[str]:
    with pytest.raises(CatalogError) as caught:
        parse(*rows, agencies=agencies)
    return caught.value.errors


def test_the_shipped_sample_loads_against_the_directory() -> None:
    codes = {a.code for a in load_agencies().agencies}
    procedures = load_procedure_catalog(SAMPLE_CATALOG, agencies=codes)
    assert procedures and {p.agency_code for p in procedures} <= codes
    assert any("," in p.name for p in procedures)  # a quoted name with a comma stays one cell
    assert any(p.eligible_full_online and not p.offered_full_online for p in procedures)


def test_every_bad_line_is_reported_with_its_file_line_and_column() -> None:
    errors = errors_of(
        "1.001,Đăng ký khai sinh,HT,PTP,district,yes,yes",
        "1.002,Đăng ký kết hôn,HT,PTP,province,yes,yes",  # line 3: level
        "1.003,Chứng thực,CT,PTP,district,maybe,no",  # line 4: eligible
        "1.004,Cấp phép,XD,PTP,district,no,yes",  # line 5: offered without eligible
        "bad code!,Tên,HT,NOPE,commune,yes,yes",  # line 6: code, and an agency outside the directory
        "1.001,Đăng ký khai sinh,HT,PTP,district,yes,no",  # line 7: the same procedure of the same unit again
        "1.005,Thiếu cột,HT,PTP",  # line 8: too few columns
        agencies={"PTP"},
    )
    assert errors == [
        "cat.csv:3: level: one of district, commune",
        "cat.csv:4: eligible_full_online: yes or no",
        "cat.csv:5: offered_full_online: yes for a procedure not eligible_full_online",
        "cat.csv:6: code: 1 to 64 of A-Z a-z 0-9 . _ / -",
        "cat.csv:6: agency: not a unit of the agency directory",
        "cat.csv:7: code: procedure 1.001 of PTP is also on line 2",
        "cat.csv:8: row: 7 columns expected, found 4",
    ]


def test_a_wrong_header_or_an_empty_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=r"cat.csv:1: header: the columns are code,name,field"):
        parse_procedure_catalog(["code,name,agency", "1,a,PTP"], source="cat.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(CatalogError, match=r"empty.csv:1: the file is empty"):
        load_procedure_catalog(empty)
    with pytest.raises(CatalogError, match="cannot read"):
        load_procedure_catalog(tmp_path / "missing.csv")


def test_the_same_procedure_may_be_offered_by_several_units_and_vietnamese_yes_no_is_read() -> None:
    procedures = parse("1.001,Đăng ký khai sinh,HT,XA_A,commune,có,có",
                       "1.001,Đăng ký khai sinh,HT,XA_B,commune,có,không")
    assert [(p.agency_code, p.offered_full_online) for p in procedures] == [("XA_A", True), ("XA_B", False)]


def test_the_share_counts_eligible_procedures_offered_fully_online() -> None:
    procedures = parse(
        "1,Một,HT,XA_A,commune,yes,yes",
        "2,Hai,HT,XA_A,commune,yes,no",
        "3,Ba,HT,XA_A,commune,yes,yes",
        "4,Bốn,CT,XA_A,commune,no,no",  # not eligible: in neither part
        "5,Năm,CT,XA_B,commune,no,no",  # a unit with no eligible procedure: no value
    )
    counts = online_service_counts(procedures)
    assert counts == {"XA_A": {"procedures_eligible": 3, "procedures_online": 2}}
    figures = compute_figures(counts["XA_A"], config=IndexConfig())
    assert figures.online_service_ratio == pytest.approx(2 / 3)
    assert figures.kpi("online_service") == figures.online_service_ratio
    assert figures.kpi_denominator("online_service") == 3
    assert figures.online_filing_ratio is None  # the dossiers' online-filing share is a figure of its own
    assert compute_figures({}, config=IndexConfig()).online_service_ratio is None
    district = compute_figures(roll_up([counts["XA_A"], {"procedures_eligible": 1, "procedures_online": 1}]),
                               config=IndexConfig())
    assert district.online_service_ratio == pytest.approx(3 / 4)  # from the sums, not a mean of shares
