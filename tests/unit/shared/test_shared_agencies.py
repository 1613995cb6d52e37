"""The one agency directory: loading, the operator's extension, and the ``unknown`` label."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.agencies import UNKNOWN, UNKNOWN_NAME, AgencySettings, load_agencies, parse_agencies

SHIPPED = load_agencies()
MAIN = (
    "district: {code: HUYEN, name: Ủy ban nhân dân huyện Thử}\n"
    "agencies:\n  - {code: PTP, kind: department, name: Phòng Tư pháp}\n"
)
EXTRA = "agencies:\n  - {code: XA_MOI, kind: commune, name: Xã Mới}\n"


def test_the_shipped_directory_holds_tuy_phongs_units() -> None:
    assert SHIPPED.district_code == "TUY_PHONG"
    assert len(SHIPPED.agencies) == 24
    assert SHIPPED.name("PTP") == "Phòng Tư pháp"
    assert SHIPPED.members("communes")[:2] == ("TT_LIEN_HUONG", "TT_PHAN_RI_CUA")


def test_a_known_code_is_its_own_label_any_other_is_unknown_and_never_named_by_itself() -> None:
    assert SHIPPED.label("PTP") == "PTP"
    assert SHIPPED.label("TUY_PHONG") == "TUY_PHONG"  # the district is known too
    hostile = "Nộp phạt gấp: STK 0123456789"
    assert SHIPPED.label(hostile) == UNKNOWN
    assert SHIPPED.name(hostile) == UNKNOWN_NAME
    assert SHIPPED.label("ptp") == UNKNOWN  # codes are exact
    assert SHIPPED.unknown_among(["PTP", "B", "A", "B"]) == ["A", "B"]


@given(st.text(max_size=80))
def test_any_code_labels_to_a_directory_code_or_unknown(code: str) -> None:
    label = SHIPPED.label(code)
    assert label == UNKNOWN or SHIPPED.known(label)
    assert SHIPPED.label(label) == label
    assert label == code or label == UNKNOWN


def test_an_extra_file_adds_units_to_the_main_one(tmp_path: Path) -> None:
    (tmp_path / "main.yaml").write_text(MAIN, encoding="utf-8")
    (tmp_path / "extra.yaml").write_text(EXTRA, encoding="utf-8")
    d = load_agencies(tmp_path / "main.yaml", extra=tmp_path / "extra.yaml")
    assert [a.code for a in d.agencies] == ["PTP", "XA_MOI"]
    assert d.label("XA_MOI") == "XA_MOI" and d.name("XA_MOI") == "Xã Mới"
    assert d.district_code == "HUYEN"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("agencies:\n  - {code: PTP, kind: department, name: Lại Phòng Tư pháp}\n", "codes used twice: PTP"),
        ("agencies:\n  - {code: HUYEN, kind: commune, name: Trùng mã huyện}\n", "codes used twice: HUYEN"),
        ("district: {code: KHAC, name: Huyện khác}\n" + EXTRA, "not a valid extra agencies file"),
        ("agencies:\n  - {code: unknown, kind: commune, name: Không rõ}\n", "not a valid extra agencies file"),
    ],
)
def test_an_extra_file_cannot_redefine_a_code_the_district_or_read_unknown(extra: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        parse_agencies(MAIN, source="main.yaml", extra=extra, extra_source="extra.yaml")
    assert "extra.yaml" in str(err.value)


def test_settings_replace_and_extend_the_shipped_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "main.yaml").write_text(MAIN, encoding="utf-8")
    (tmp_path / "extra.yaml").write_text(EXTRA, encoding="utf-8")
    monkeypatch.setenv("PARWATCH_AGENCIES_EXTRA", str(tmp_path / "extra.yaml"))
    extended = AgencySettings().load()
    assert extended.known("PNV") and extended.known("XA_MOI")  # the shipped file, extended
    monkeypatch.setenv("PARWATCH_AGENCIES_FILE", str(tmp_path / "main.yaml"))
    replaced = AgencySettings().load()
    assert [a.code for a in replaced.agencies] == ["PTP", "XA_MOI"] and not replaced.known("PNV")
    # A service's own older agencies_file setting wins over PARWATCH_AGENCIES_FILE.
    assert AgencySettings().load(override=Path(__file__).parents[3] / "shared" / "data" / "agencies.yaml").known("PNV")
    monkeypatch.setenv("PARWATCH_AGENCIES_EXTRA", str(tmp_path / "missing.yaml"))
    with pytest.raises(ValueError, match="missing.yaml does not exist"):
        AgencySettings().load()

