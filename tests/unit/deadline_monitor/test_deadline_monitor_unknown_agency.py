"""Dossiers of units outside the agency directory: no dossier alert, and the one ``unknown_agency`` alert."""

from __future__ import annotations

import datetime as dt

from services.deadline_monitor import domain
from services.deadline_monitor.domain import DOSSIER_KINDS, DOSSIER_OVERDUE, DossierFacts, Policy, UnknownSeen
from services.deadline_monitor.plan import load_agencies
from shared.agencies import UNKNOWN_NAME
from shared.calendar import load_calendar

CAL = load_calendar()
H = domain.horizons(dt.date(2026, 11, 30), calendar=CAL, policy=Policy())  # a Monday
STARTS = dt.datetime(2026, 11, 30, 8, 0, tzinfo=dt.timezone.utc)


def overdue(agency: str) -> DossierFacts:
    return DossierFacts(dossier_code="H-1", agency_code=agency, procedure_code="1.001", field_code="HT",
                        is_open=True, due_day=dt.date(2026, 11, 20))


def test_a_dossier_of_an_unknown_unit_fires_nothing_and_the_tick_leaves_it_alone() -> None:
    known = domain.settle_dossier(overdue("PTP"), 0, H)
    assert known.move.fire == DOSSIER_OVERDUE and known.tick_level is None  # overdue: time can change nothing more
    unknown = domain.settle_dossier(overdue("X"), 0, H, known=False)
    assert not unknown.move and unknown.firing == 0 and unknown.tick_level is None
    # One that fired while its unit was in the directory (a unit since removed) resolves.
    was_firing = domain.bits_of(DOSSIER_KINDS, DOSSIER_KINDS)
    gone = domain.settle_dossier(overdue("X"), was_firing, H, known=False)
    assert gone.move.fire is None and set(gone.move.resolve) == set(DOSSIER_KINDS) and gone.firing == 0


def test_the_unknown_agency_alert_names_no_code_and_says_how_many_and_how_to_list() -> None:
    alert = domain.unknown_agency_alert(UnknownSeen(dossiers=300, plan_reports=2), district_code="TUY_PHONG",
                                        starts_at=STARTS)
    assert (alert.alert_key, alert.kind, alert.severity, alert.agency_code) == (
        "unknown_agency", "unknown_agency", "warning", "TUY_PHONG")
    assert alert.labels == {"dossiers": "300", "plan_reports": "2"}
    assert "300 hồ sơ và 2 báo cáo nhiệm vụ" in alert.summary
    assert "không có trong danh mục đơn vị" in alert.summary and "parwatch agencies unknown" in alert.summary
    only_dossiers = domain.unknown_agency_alert(UnknownSeen(dossiers=1), district_code="TUY_PHONG", starts_at=STARTS)
    assert "(1 hồ sơ trong lần nhận đầu tiên)" in only_dossiers.summary
    assert not UnknownSeen() and UnknownSeen(plan_reports=1)


def test_the_catalog_never_names_an_unknown_unit_by_its_code() -> None:
    catalog = domain.Catalog(agencies=load_agencies(), plans={})
    assert catalog.agency_name("PTP") == "Phòng Tư pháp"
    assert catalog.agency_name("Nộp phạt gấp") == UNKNOWN_NAME
    assert catalog.known("TUY_PHONG") and not catalog.known("Nộp phạt gấp")
