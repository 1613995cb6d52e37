"""``parwatch plan copy``: next year's plan from this year's, every date moved and checked by the validator; and the
checks ``parwatch plan report`` makes before it publishes (pure: no broker)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from services.deadline_monitor.catalog import load_catalog
from services.deadline_monitor.cli import REPORT_SOURCE, ReportError, ReportRequest, copy_file, report_event
from services.deadline_monitor.domain import Catalog, plan_occurrence_specs
from services.deadline_monitor.plan import (
    PlanCopyError,
    copy_plan_text,
    load_agencies,
    moved_years,
    validate_plan_text,
)
from shared.calendar import VN_TZ, load_calendar
from shared.plans import SHIPPED_PLANS

PLAN_146 = SHIPPED_PLANS / "plan-146-2023.yaml"
AGENCIES = load_agencies()
CAL = load_calendar()


def d(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def test_plan_146_copied_to_2027_moves_every_date_and_passes_the_validator() -> None:
    source = PLAN_146.read_text(encoding="utf-8")
    text = copy_plan_text(source, year=2027, source=str(PLAN_146), agencies=AGENCIES)
    assert validate_plan_text(text, source="copy", agencies=AGENCIES) == []
    old, new = yaml.safe_load(source), yaml.safe_load(text)
    assert (new["plan_id"], new["copied_from"]) == ("KH-146-2027-TP", "KH-146-2023-TP")
    assert "number" not in new  # the copy is not the signed document 146/KH-UBND
    assert (new["issued_on"], new["valid_from"], new["valid_until"]) == (d("2027-06-16"), d("2027-06-15"),
                                                                         d("2027-12-31"))
    assert "năm 2027" in new["title"] and "năm 2023" not in new["title"]
    assert [t.get("by") for t in new["targets"]] == [
        moved_years(t["by"], 4) if t.get("by") else None for t in old["targets"]
    ]
    assert len(new["tasks"]) == len(old["tasks"])
    for before, after in zip(old["tasks"], new["tasks"], strict=True):
        assert after["id"] == before["id"] and after["title"] == before["title"]  # ids stay: agencies report on them
        for key in ("date", "start", "end"):
            if key in before["due"]:
                assert after["due"][key] == moved_years(before["due"][key], 4), (before["id"], key)
        assert {k: v for k, v in after["due"].items() if k not in ("date", "start", "end")} == {
            k: v for k, v in before["due"].items() if k not in ("date", "start", "end")
        }
    assert PLAN_146.read_text(encoding="utf-8") == source  # the shipped plan stays the 2023 text


def test_the_copy_tracks_the_same_duties_a_year_on() -> None:
    path = PLAN_146
    catalog = load_catalog([path], agencies=AGENCIES)
    [plan] = catalog.plans.values()
    copied = yaml.safe_load(copy_plan_text(path.read_text(encoding="utf-8"), year=2024, source=str(path)))
    from services.deadline_monitor.plan import Plan

    copy = Plan.model_validate(copied)
    before = plan_occurrence_specs(plan, agencies=AGENCIES, calendar=CAL)
    after = plan_occurrence_specs(copy, agencies=AGENCIES, calendar=CAL)
    assert {s.task_id for s in after} == {s.task_id for s in before}
    assert min(s.due_day for s in after).year == 2024 and all(s.period[:4] in ("", "2024") for s in after)


def test_a_leap_day_moves_to_the_28th_and_a_plan_id_without_its_year_gets_one() -> None:
    assert moved_years(d("2024-02-29"), 1) == d("2025-02-28")
    text = """\
plan_id: KH-LEAP
title: Kế hoạch năm 2024
issued_on: 2024-01-02
issuer: TUY_PHONG
valid_from: 2024-01-02
valid_until: 2024-12-31
tasks:
  - {id: T.1, section: A.1, title: Báo cáo, owner: PNV, due: {date: 2024-02-29}}
"""
    new = yaml.safe_load(copy_plan_text(text, year=2025, source="leap.yaml", agencies=AGENCIES))
    assert (new["plan_id"], new["copied_from"], new["title"]) == ("KH-LEAP-2025", "KH-LEAP", "Kế hoạch năm 2025")
    assert new["tasks"][0]["due"] == {"date": d("2025-02-28")}


def test_a_copy_the_validator_refuses_is_not_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(PlanCopyError) as caught:  # validity set after a dated duty: the duty falls outside
        copy_plan_text(PLAN_146.read_text(encoding="utf-8"), year=2027, source=str(PLAN_146), agencies=AGENCIES,
                       valid_from=d("2027-07-01"))
    assert caught.value.errors and all("outside the plan's validity" in e.message for e in caught.value.errors)
    out = tmp_path / "plans" / "copy.yaml"
    assert copy_file(PLAN_146, year=2027, out_path=out, valid_from=d("2027-07-01")) == 1
    assert not out.exists() and "outside the plan's validity" in capsys.readouterr().err
    assert copy_file(PLAN_146, year=2027, out_path=out) == 0
    assert out.is_file() and validate_plan_text(out.read_text(encoding="utf-8"), source="x", agencies=AGENCIES) == []


def test_an_invalid_source_is_refused_with_its_errors() -> None:
    text = PLAN_146.read_text(encoding="utf-8").replace("owner: [PNV]", "owner: [NOPE]", 1)
    with pytest.raises(PlanCopyError) as caught:
        copy_plan_text(text, year=2027, source="bad.yaml", agencies=AGENCIES)
    assert "unknown agency code 'NOPE'" in str(caught.value)


# -- what `parwatch plan report` checks ----------------------------------------------------------


def catalog_2027() -> Catalog:
    text = copy_plan_text(PLAN_146.read_text(encoding="utf-8"), year=2027, source=str(PLAN_146), agencies=AGENCIES)
    from services.deadline_monitor.plan import Plan

    old = Plan.model_validate(yaml.safe_load(PLAN_146.read_text(encoding="utf-8")))
    new = Plan.model_validate(yaml.safe_load(text))
    return Catalog(agencies=AGENCIES, plans={old.plan_id: old, new.plan_id: new})


NOW = dt.datetime(2027, 9, 15, 10, 0, tzinfo=VN_TZ)


def test_a_report_names_the_plan_in_force_and_has_a_deterministic_id() -> None:
    request = ReportRequest(task_id="III.2.2.3-review", agency_code="VP_HDND_UBND", period="2027-W36",
                            done_on=d("2027-09-10"))
    event = report_event(request, catalog=catalog_2027(), calendar=CAL, now=NOW)
    again = report_event(request, catalog=catalog_2027(), calendar=CAL, now=NOW + dt.timedelta(hours=3))
    assert event.id == again.id  # the same command later that day: one report
    assert event.source == REPORT_SOURCE and event.subject == "III.2.2.3-review"
    data = event.data
    assert (data.plan_id, data.period, data.state) == ("KH-146-2027-TP", "2027-W36", "done")
    assert data.reported_at == dt.datetime(2027, 9, 10, 17, 0, tzinfo=VN_TZ)  # dated the day it was done
    other = report_event(ReportRequest(task_id="III.2.2.3-review", agency_code="VP_HDND_UBND", period="2027-W36",
                                       state="blocked"), catalog=catalog_2027(), calendar=CAL, now=NOW)
    assert other.id != event.id


@pytest.mark.parametrize(
    ("request_", "says"),
    [
        (ReportRequest(task_id="III.2.2.3-review", agency_code="PVHTT"), "--agency: this agency is not an owner"),
        (ReportRequest(task_id="III.2.2.3-review", agency_code="VP_HDND_UBND", period="2027-05"),
         "--period: this task's periods are written YYYY-Www"),
        (ReportRequest(task_id="III.2.2.3-review", agency_code="VP_HDND_UBND", period="2027-W10"),
         "--period: task III.2.2.3-review has no occurrence 2027-W10"),  # before valid_from 15/6/2027
        (ReportRequest(task_id="III.2.2.3-review", agency_code="VP_HDND_UBND", plan_id="KH-146-2023-TP"),
         "--plan: the plan closed after 2024-01-31"),
        (ReportRequest(task_id="NO.SUCH", agency_code="VP_HDND_UBND"), "TASK: no loaded plan has a task 'NO.SUCH'"),
        (ReportRequest(task_id="III.2.2.3-review", agency_code="VP_HDND_UBND", done_on=d("2027-09-16")), "--done-on"),
    ],
)
def test_a_report_the_plans_refuse_is_not_built(request_: ReportRequest, says: str) -> None:
    with pytest.raises(ReportError) as caught:
        report_event(request_, catalog=catalog_2027(), calendar=CAL, now=NOW)
    assert says in str(caught.value)


def test_only_closed_plans_hold_the_task_says_to_copy_the_plan() -> None:
    catalog = catalog_2027()
    only_old = Catalog(agencies=AGENCIES, plans={"KH-146-2023-TP": catalog.plans["KH-146-2023-TP"]})
    with pytest.raises(ReportError, match="parwatch plan copy"):
        report_event(ReportRequest(task_id="III.2.2.3-review", agency_code="VP_HDND_UBND"), catalog=only_old, calendar=CAL,
                     now=NOW)
