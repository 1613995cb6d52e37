"""Plan 146/KH-UBND (Tuy Phong, 16/6/2023) as data: every task of the seed is in the plan file.

The expected tasks are counted from the seed's OCR text, not copied from the
plan file. The rule for what counts as a task (the plan file's header says
the same):

- Section II ("II. Nhiệm vụ"): every "-" bullet of II.1 "Nhiệm vụ chung" and
  of II.2 "Nhiệm vụ, chỉ tiêu cụ thể" is a task; its section is the
  subsection plus the bullet's letter in order: II.1.a, II.1.b, ...
- Section III ("III. Nhiệm vụ cụ thể của các phòng, ban, ngành ... và UBND
  các xã, thị trấn"): the numbered items 1..8 name the owner; every numbered
  sub-item that has no numbered sub-items of its own is a task (III.2.2.3,
  III.5.4, ...). A sub-item that has numbered sub-items is a heading that only
  groups them ("2.2. Tập trung triển khai ... ở các nội dung sau:") and is not
  a task. An owner item with no numbered sub-items (III.1) has "-" bullets
  instead, lettered like section II: III.1.a, III.1.b.
- One source item may yield several tasks (different due rules or
  recipients); they all carry that item's section.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from pathlib import Path

import pytest
import yaml

from services.deadline_monitor.plan import (
    Continuous,
    Monthly,
    OnDate,
    Plan,
    Weekly,
    Yearly,
    load_agencies,
    load_plan,
    occurrences,
    resolve_owners,
    validate_plan_text,
)
from shared.calendar import load_calendar

REPO = Path(__file__).resolve().parents[3]
HANDBOOK = REPO.parent / "shared"
SEED = HANDBOOK / "seed" / "plan-146-KH-UBND-2023-tuy-phong.txt"
PLAN_FILE = REPO / "services" / "deadline_monitor" / "plans" / "plan-146-2023.yaml"
AGENCIES = load_agencies()
PLAN: Plan = load_plan(PLAN_FILE)

# Headings of the seed, matched on the text folded to ASCII lower case (the
# OCR turns "II." into "I1." and "III." into "II1.").
SECTION_II = re.compile(r"^\S{1,4}\.\s*nhiem vu\s*$")
SECTION_II_1 = re.compile(r"^1\.\s*nhiem vu chung")
SECTION_II_2 = re.compile(r"^2\.\s*nhiem vu, chi tieu cu the")
SECTION_III = re.compile(r"^\S{1,4}\.\s*nhiem vu cu the")
CLOSING = re.compile(r"^tren day (la|1a) ke hoach")
BULLET = re.compile(r"^-\s+\S")
# "2.2.3. ...", "4.4, ..." (OCR comma), "54. ..." (OCR dropped the dot of 5.4).
NUMBERED = re.compile(r"^(\d{1,2}(?:[.,]\d{1,2})*)[.,]\s+\S")


def _fold(line: str) -> str:
    decomposed = unicodedata.normalize("NFKD", line)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).strip().lower()


def _seed_lines() -> list[str]:
    if not HANDBOOK.is_dir():
        pytest.skip(f"the team handbook folder {HANDBOOK} is not beside the repo: no seed text to check against")
    if not SEED.is_file():
        pytest.skip(f"the seed text {SEED} is missing from the handbook: the plan cannot be checked against it")
    return [_fold(line) for line in SEED.read_text(encoding="utf-8").splitlines()]


def _index(lines: list[str], pattern: re.Pattern[str], *, after: int = 0) -> int:
    hits = [i for i, line in enumerate(lines) if i >= after and pattern.search(line)]
    assert hits, f"heading {pattern.pattern!r} not found in the seed"
    return hits[0]


def _regions(lines: list[str]) -> dict[str, list[str]]:
    ii = _index(lines, SECTION_II)
    ii_1 = _index(lines, SECTION_II_1, after=ii)
    ii_2 = _index(lines, SECTION_II_2, after=ii_1)
    iii = _index(lines, SECTION_III, after=ii_2)
    end = _index(lines, CLOSING, after=iii)
    return {"II.1": lines[ii_1 + 1 : ii_2], "II.2": lines[ii_2 + 1 : iii], "III": lines[iii + 1 : end]}


def _lettered(region: list[str], prefix: str) -> list[str]:
    count = sum(1 for line in region if BULLET.match(line))
    return [f"{prefix}.{chr(ord('a') + i)}" for i in range(count)]


def _section_iii_items(region: list[str]) -> list[tuple[str, list[str]]]:
    """(item number, its lines) in order, with OCR-damaged numbers repaired."""
    items: list[tuple[str, list[str]]] = []
    top = 0
    for line in region:
        match = NUMBERED.match(line)
        if not match:
            if items:
                items[-1][1].append(line)
            continue
        parts = re.split(r"[.,]", match.group(1))
        if len(parts) == 1 and len(parts[0]) == 2 and int(parts[0]) > top + 1:
            parts = list(parts[0])  # "54." is 5.4: the OCR dropped the dot
        if len(parts) == 1:
            top = int(parts[0])
        assert int(parts[0]) == top, f"item {'.'.join(parts)} outside owner item {top}"
        items.append((".".join(parts), [line]))
    return items


def _section_iii_tasks(region: list[str]) -> tuple[list[str], list[str]]:
    """(task sections, grouping headings) of section III."""
    items = _section_iii_items(region)
    numbers = [number for number, _ in items]
    tasks: list[str] = []
    groups: list[str] = []
    for number, lines in items:
        has_children = any(other.startswith(number + ".") for other in numbers)
        if "." not in number and not has_children:
            tasks += _lettered(lines, f"III.{number}")  # an owner item with bullets only
        elif "." in number and has_children:
            groups.append(number)
        elif "." in number:
            tasks.append(f"III.{number}")
    return tasks, groups


def _expected_sections() -> dict[str, list[str]]:
    regions = _regions(_seed_lines())
    tasks_iii, _ = _section_iii_tasks(regions["III"])
    return {
        "II.1": _lettered(regions["II.1"], "II.1"),
        "II.2": _lettered(regions["II.2"], "II.2"),
        "III": tasks_iii,
    }


# -- the seed, as this test reads it --------------------------------------------


def test_seed_reading_finds_the_known_shape() -> None:
    """Guards the reader: 6 + 12 bullets in section II, 43 task items in III."""
    expected = _expected_sections()
    assert len(expected["II.1"]) == 6
    assert len(expected["II.2"]) == 12
    assert len(expected["III"]) == 43
    assert expected["III"][:2] == ["III.1.a", "III.1.b"]


def test_section_iii_grouping_headings_only_group() -> None:
    regions = _regions(_seed_lines())
    _, groups = _section_iii_tasks(regions["III"])
    assert groups == ["2.2", "5.2", "6.5"]
    items = dict(_section_iii_items(regions["III"]))
    for number in groups:
        # "... ở các nội dung sau:" ("ndi dung sau:" in the OCR) and nothing else
        assert re.search(r"\bn\S{0,2}i dung sau:\s*$", " ".join(items[number]).strip()), number


def test_ocr_damaged_item_numbers_are_repaired_and_5_2_4_is_absent() -> None:
    numbers = [n for n, _ in _section_iii_items(_regions(_seed_lines())["III"])]
    assert "5.4" in numbers  # printed "54."
    assert "4.4" in numbers and "6.2" in numbers  # printed "4.4," and "6.2,"
    assert "5.2.4" not in numbers  # the text goes from 5.2.3 to 5.2.5
    assert numbers.index("5.2.3") + 1 == numbers.index("5.2.5")
    assert not [t for t in PLAN.tasks if t.section == "III.5.2.4"]


# -- the plan file against the seed ---------------------------------------------


@pytest.mark.parametrize("part", ["II.1", "II.2", "III"])
def test_every_task_of_the_seed_is_in_the_plan(part: str) -> None:
    expected = _expected_sections()[part]
    sections = {task.section for task in PLAN.tasks}
    missing = [s for s in expected if s not in sections]
    assert not missing, f"seed tasks of {part} with no plan task: {missing}"


def test_the_plan_invents_no_section() -> None:
    expected = {s for sections in _expected_sections().values() for s in sections}
    invented = sorted({t.section for t in PLAN.tasks} - expected)
    assert not invented, f"plan tasks citing sections the seed does not have: {invented}"


def test_task_counts_per_section() -> None:
    per_part = {"II.1": 0, "II.2": 0, "III": 0}
    for task in PLAN.tasks:
        part = "III" if task.section.startswith("III.") else task.section[:4]
        per_part[part] += 1
    assert per_part == {"II.1": 8, "II.2": 14, "III": 46}


# -- the plan file on its own -----------------------------------------------------


def test_plan_file_validates_without_error() -> None:
    assert validate_plan_text(PLAN_FILE.read_text(encoding="utf-8"), source=str(PLAN_FILE)) == []


def test_task_ids_are_unique_ascii_and_derived_from_the_section() -> None:
    ids = [t.id for t in PLAN.tasks]
    assert len(ids) == len(set(ids))
    for task in PLAN.tasks:
        assert task.id.isascii()
        assert task.id == task.section or task.id.startswith(task.section + "-"), task.id


VIETNAMESE_LETTERS = set(
    "abcdefghijklmnopqrstuvwxyz"
    "àáảãạăằắẳẵặâầấẩẫậèéẻẽẹêềếểễệìíỉĩịòóỏõọôồốổỗộơờớởỡợùúủũụưừứửữựỳýỷỹỵđ"
)


@pytest.mark.parametrize("task", PLAN.tasks, ids=lambda t: t.id)
def test_titles_are_real_vietnamese(task) -> None:
    for text in (task.title, task.description or ""):
        assert unicodedata.is_normalized("NFC", text)
        strange = {c for c in text if c.isalpha() and c.lower() not in VIETNAMESE_LETTERS}
        assert not strange, f"{task.id}: letters outside the Vietnamese alphabet (OCR noise?): {strange}"
    assert any(c.isalpha() and not c.isascii() for c in task.title), f"{task.id}: title without diacritics"
    assert len(task.title) <= 200


def test_no_personal_data_from_the_seed() -> None:
    text = PLAN_FILE.read_text(encoding="utf-8")
    assert "@" not in text
    assert "Trung Trực" not in text and "Trung Truc" not in text


@pytest.mark.parametrize("task", PLAN.tasks, ids=lambda t: t.id)
def test_every_owner_and_recipient_is_a_known_agency(task) -> None:
    owners = resolve_owners(task, AGENCIES)
    assert owners and set(owners) <= AGENCIES.codes
    assert set(task.collaborators) <= AGENCIES.codes
    assert set(task.report_to) | set(task.copy_to) <= AGENCIES.codes | {AGENCIES.district_code}


def test_owner_groups_of_section_iii() -> None:
    owners = {
        "III.1": set(AGENCIES.codes),  # department heads and commune chairs
        "III.2": {"VP_HDND_UBND"},
        "III.3": {"PTP"},
        "III.4": {"PTCKH"},
        "III.5": {"PVHTT"},
        "III.6": {"PNV"},
        "III.7": {"PTNMT"},
        "III.8": set(AGENCIES.members("communes")),
    }
    for task in PLAN.tasks:
        head = ".".join(task.section.split(".")[:2])
        if head in owners:
            assert set(resolve_owners(task, AGENCIES)) == owners[head], task.id


def test_targets_of_the_plan() -> None:
    wanted = {
        "task_completion": ("gt", 0.95, None),
        "on_time_ratio": ("gt", 0.98, None),
        "online_procedures": ("ge", 1.0, None),
        "national_sync": ("ge", 1.0, dt.date(2023, 8, 30)),
        "par_initiatives": ("ge", 1, None),
        "dx_key_tasks": ("ge", 1, None),
    }
    for target_id, (op, value, by) in wanted.items():
        target = PLAN.target(target_id)
        assert (target.op, target.value, target.by) == (op, value, by), target_id


# -- the dated and recurring tasks named in the handbook ---------------------------

ALL = set(AGENCIES.codes)
COMMUNES = set(AGENCIES.members("communes"))
DEPARTMENTS = set(AGENCIES.members("departments"))

DATED = [
    # (task id, owners, due day as the text names it)
    ("II.1.a", ALL, dt.date(2023, 6, 20)),  # dissemination of the 2022 results, to Home Affairs
    ("II.1.f-plan", ALL, dt.date(2023, 6, 20)),  # each agency's plan, to Home Affairs
    ("III.8.4", COMMUNES, dt.date(2023, 6, 15)),  # plans, budgets, poor-household lists
    ("II.2.f", DEPARTMENTS, dt.date(2023, 6, 20)),  # review of information to disclose
    ("III.5.2.1", {"PVHTT"}, dt.date(2023, 6, 30)),  # data services connected 100%
    ("III.8.3", COMMUNES, dt.date(2023, 6, 30)),  # propaganda
    ("III.2.2.3-backlog", {"VP_HDND_UBND"}, dt.date(2023, 7, 30)),  # backlog of late dossiers
    ("III.6.4", {"PNV"}, dt.date(2023, 6, 20)),  # inspection plan
    ("III.5.3", {"PVHTT"}, dt.date(2023, 8, 30)),  # 100% sync to the national portal
    ("III.5.2.5", {"PVHTT"}, dt.date(2023, 6, 30)),  # QR-code disclosure within 6/2023
]


@pytest.mark.parametrize(("task_id", "owners", "day"), DATED, ids=[d[0] for d in DATED])
def test_dated_tasks_of_the_handbook(task_id: str, owners: set[str], day: dt.date) -> None:
    task = PLAN.task(task_id)
    assert set(resolve_owners(task, AGENCIES)) == owners
    assert task.due == OnDate(date=day)


def test_reports_to_home_affairs_and_sync_collaboration() -> None:
    assert PLAN.task("II.1.a").report_to == ("PNV",)
    assert PLAN.task("II.1.f-plan").report_to == ("PNV",)
    sync = PLAN.task("III.5.3")
    assert sync.collaborators == ("VP_HDND_UBND",)
    assert sync.target is not None and (sync.target.metric, sync.target.value) == ("national_sync", 1.0)


def test_weekly_late_dossier_reviews() -> None:
    office = PLAN.task("III.2.2.3-review")
    communes = PLAN.task("III.8.6-review")
    assert resolve_owners(office, AGENCIES) == ["VP_HDND_UBND"]
    assert set(resolve_owners(communes, AGENCIES)) == COMMUNES
    for task in (office, communes):
        assert isinstance(task.due, Weekly)


def test_monthly_par_reports_and_meeting() -> None:
    every_agency = PLAN.task("II.2.e")
    assert isinstance(every_agency.due, Monthly) and set(resolve_owners(every_agency, AGENCIES)) == ALL
    communes = PLAN.task("III.8.6-report")
    assert isinstance(communes.due, Monthly) and set(resolve_owners(communes, AGENCIES)) == COMMUNES
    assert communes.report_to == (AGENCIES.district_code,)
    assert set(communes.copy_to) == {"PTNMT", "VP_HDND_UBND", "PNV"}
    meeting = PLAN.task("III.6.2")
    assert isinstance(meeting.due, Monthly) and resolve_owners(meeting, AGENCIES) == ["PNV"]


def test_land_report_before_15_november_each_year() -> None:
    task = PLAN.task("III.7.2")
    assert resolve_owners(task, AGENCIES) == ["PTNMT"]
    assert isinstance(task.due, Yearly) and (task.due.month, task.due.day) == (11, 15)
    assert task.report_to == ("PNV",)


def test_undated_tasks_are_continuous() -> None:
    continuous = [t for t in PLAN.tasks if isinstance(t.due, Continuous)]
    assert len(continuous) > len(PLAN.tasks) // 2
    for task in continuous:
        assert occurrences(task, start=PLAN.valid_from, end=dt.date(2030, 12, 31), calendar=load_calendar()) == []


# -- occurrences of the plan over its validity ----------------------------------------


def test_occurrences_over_the_plan_year() -> None:
    calendar = load_calendar()
    window = {"start": PLAN.valid_from, "end": dt.date(2024, 1, 31), "calendar": calendar}
    backlog = occurrences(PLAN.task("III.2.2.3-backlog"), **window)
    assert [o.due_day for o in backlog] == [dt.date(2023, 7, 31)]  # 30/7/2023 is a Sunday
    monthly = occurrences(PLAN.task("II.2.e"), **window)
    assert [o.period for o in monthly] == [f"2023-{m:02d}" for m in range(6, 13)]
    assert monthly[3].due_day == dt.date(2023, 10, 2)  # 30/9/2023 is a Saturday
    assert monthly[-1].due_day == dt.date(2024, 1, 2)  # 31/12/2023 Sunday, 1/1/2024 holiday
    weekly = occurrences(PLAN.task("III.8.6-review"), **window)
    assert weekly[0].period == "2023-W24" and weekly[-1].period == "2023-W52"
    land = occurrences(PLAN.task("III.7.2"), **window)
    assert [(o.period, o.due_day) for o in land] == [("2023", dt.date(2023, 11, 15))]


def test_plan_file_is_plain_yaml_without_duplicate_keys() -> None:
    data = yaml.safe_load(PLAN_FILE.read_text(encoding="utf-8"))
    assert data["plan_id"] == PLAN.plan_id == "KH-146-2023-TP"
    assert len(data["tasks"]) == len(PLAN.tasks)


@pytest.mark.parametrize("title", ["dòng một\ndòng hai", "Kế hoạch\u202e giả", "Kế hoạch\x1b[31m", "Kế\u200bhoạch"])
def test_titles_that_reach_alerts_are_one_line_of_plain_text(title: str) -> None:
    plan = yaml.safe_load(PLAN_FILE.read_text(encoding="utf-8"))
    plan["title"] = title
    plan["tasks"][0]["title"] = title
    errors = validate_plan_text(yaml.safe_dump(plan, allow_unicode=True), source="plan.yaml")
    assert [(e.field, e.message) for e in errors] == [
        ("tasks[0].title", "one line of plain text: no line break, control or bidirectional character"),
        ("title", "one line of plain text: no line break, control or bidirectional character"),
    ]
