"""The monitor's pure decisions: conditions, transitions, alert texts, plan occurrences and reports."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.deadline_monitor import domain
from services.deadline_monitor.domain import (
    DOSSIER_APOLOGY_DUE,
    DOSSIER_DUE_SOON,
    DOSSIER_KINDS,
    DOSSIER_OVERDUE,
    PLAN_KINDS,
    PLAN_TASK_DUE_SOON,
    PLAN_TASK_OVERDUE,
    DossierFacts,
    OccurrenceFacts,
    Policy,
    ReportFacts,
)
from services.deadline_monitor.plan import Plan, Task, load_agencies
from shared.calendar import VN_TZ, load_calendar, local_date
from shared.events import DeadLetter, DossierStateChanged

CAL = load_calendar()  # the shipped overrides: 2/1/2026 is a day off
POLICY = Policy()
NOW = dt.datetime(2026, 11, 27, 8, 0, tzinfo=dt.timezone.utc)


def d(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def h(today: str, policy: Policy = POLICY) -> domain.Horizons:
    return domain.horizons(d(today), calendar=CAL, policy=policy)


def dossier(due: str | None, **kw: object) -> DossierFacts:
    values: dict[str, object] = {
        "dossier_code": "H1.2",
        "agency_code": "PTP",
        "procedure_code": "1.001",
        "field_code": "HT",
        "is_open": True,
        "due_day": d(due) if due else None,
    }
    values.update(kw)
    return DossierFacts(**values)  # type: ignore[arg-type]


# -- horizons and dossier conditions -----------------------------------------------------------


def test_horizons_on_a_friday_reach_monday() -> None:
    fri = h("2026-11-27")
    assert fri.soon == d("2026-11-30")
    assert fri.apology == d("2026-11-29")  # due Sat or Sun: the apology goes out on Friday
    assert fri.yesterday == d("2026-11-26")
    assert fri.plan_soon == d("2026-12-02")


@pytest.mark.parametrize(
    ("today", "due", "held"),
    [
        ("2026-11-25", "2026-11-27", set()),  # Wed, due Fri: 2 working days ahead
        ("2026-11-26", "2026-11-27", {DOSSIER_DUE_SOON}),  # the next working day
        ("2026-11-27", "2026-11-30", {DOSSIER_DUE_SOON}),  # Fri, due Mon
        ("2026-11-28", "2026-11-30", {DOSSIER_DUE_SOON}),  # Sat, due Mon
        ("2026-11-27", "2026-11-27", {DOSSIER_DUE_SOON, DOSSIER_APOLOGY_DUE}),  # the due day
        ("2026-11-30", "2026-11-27", {DOSSIER_DUE_SOON, DOSSIER_APOLOGY_DUE, DOSSIER_OVERDUE}),
        ("2026-11-28", "2026-11-27", {DOSSIER_DUE_SOON, DOSSIER_APOLOGY_DUE, DOSSIER_OVERDUE}),  # a Saturday
    ],
)
def test_dossier_conditions_by_day(today: str, due: str, held: set[str]) -> None:
    assert domain.dossier_conditions(dossier(due), h(today)) == held


def test_due_day_after_tet_is_due_soon_on_the_last_working_day_before_tet() -> None:
    # 14-22/2/2026 are days off (Tết Bính Ngọ and the weekends around it).
    due = dossier("2026-02-23")
    assert domain.dossier_conditions(due, h("2026-02-12")) == set()
    assert domain.dossier_conditions(due, h("2026-02-13")) == {DOSSIER_DUE_SOON}
    assert domain.dossier_conditions(due, h("2026-02-18")) == {DOSSIER_DUE_SOON}
    assert domain.dossier_conditions(due, h("2026-02-23")) == {DOSSIER_DUE_SOON, DOSSIER_APOLOGY_DUE}


def test_due_day_falling_in_tet_needs_the_apology_before_tet() -> None:
    # A source's due_at on 17/2/2026 (Tết): the letter must go out by 13/2, the last working day.
    due = dossier("2026-02-17")
    assert domain.dossier_conditions(due, h("2026-02-12")) == set()
    assert domain.dossier_conditions(due, h("2026-02-13")) == {DOSSIER_DUE_SOON, DOSSIER_APOLOGY_DUE}
    assert DOSSIER_OVERDUE in domain.dossier_conditions(due, h("2026-02-18"))


def test_apology_lead_of_one_working_day() -> None:
    policy = Policy(apology_working_days=1)
    assert domain.dossier_conditions(dossier("2026-11-30"), h("2026-11-26", policy)) == set()
    assert domain.dossier_conditions(dossier("2026-11-30"), h("2026-11-27", policy)) == {
        DOSSIER_DUE_SOON,
        DOSSIER_APOLOGY_DUE,
    }


def test_apology_lead_longer_than_due_soon_lead_is_refused() -> None:
    with pytest.raises(ValueError):
        Policy(due_soon_working_days=1, apology_working_days=2)


def test_second_supplement_request_needs_the_apology_at_once_even_paused() -> None:
    late = dossier("2026-12-31", paused=True, pause_started_on=d("2026-11-20"), supplement_requests=2)
    assert domain.dossier_conditions(late, h("2026-11-27")) == {DOSSIER_APOLOGY_DUE}
    assert not domain.dossier_watched(late)


def test_a_dossier_awaiting_supplement_raises_nothing() -> None:
    paused = dossier("2026-11-20", paused=True, pause_started_on=d("2026-11-18"), supplement_requests=1)
    assert domain.dossier_conditions(paused, h("2026-11-27")) == set()


def test_a_pause_begun_after_the_due_day_does_not_stop_the_overdue() -> None:
    # Rule 7: a paused dossier is not overdue only if its pause began on or before its due day.
    paused = dossier("2026-11-20", paused=True, pause_started_on=d("2026-11-24"))
    assert DOSSIER_OVERDUE in domain.dossier_conditions(paused, h("2026-11-27"))
    assert domain.dossier_watched(paused)


def test_ended_or_uncounted_dossiers_hold_nothing() -> None:
    assert domain.dossier_conditions(dossier("2026-11-20", is_open=False), h("2026-11-27")) == set()
    assert domain.dossier_conditions(dossier(None), h("2026-11-27")) == set()


# -- transitions: firing once, the most severe first, resolving ---------------------------------------

ALL = frozenset(DOSSIER_KINDS)


def test_the_most_severe_held_kind_fires() -> None:
    move = domain.transitions(ALL, frozenset(), order=DOSSIER_KINDS)
    assert move.fire == DOSSIER_OVERDUE and move.resolve == ()


def test_a_firing_kind_does_not_fire_again() -> None:
    assert not domain.transitions(ALL, frozenset({DOSSIER_OVERDUE}), order=DOSSIER_KINDS)
    assert not domain.transitions(frozenset({DOSSIER_DUE_SOON}), frozenset({DOSSIER_DUE_SOON}), order=DOSSIER_KINDS)


def test_day_by_day_each_kind_fires_once_in_turn() -> None:
    firing: set[str] = set()
    fired = []
    for today in ("2026-11-25", "2026-11-26", "2026-11-26", "2026-11-27", "2026-11-30", "2026-12-01"):
        held = domain.dossier_conditions(dossier("2026-11-27"), h(today))
        move = domain.transitions(held, frozenset(firing), order=DOSSIER_KINDS)
        assert move.resolve == ()
        if move.fire:
            fired.append((today, move.fire))
            firing.add(move.fire)
    assert fired == [
        ("2026-11-26", DOSSIER_DUE_SOON),
        ("2026-11-27", DOSSIER_APOLOGY_DUE),
        ("2026-11-30", DOSSIER_OVERDUE),
    ]


def test_a_monitor_down_across_the_due_day_sends_only_the_overdue() -> None:
    held = domain.dossier_conditions(dossier("2026-11-27"), h("2026-11-30"))
    firing: frozenset[str] = frozenset()
    first = domain.transitions(held, firing, order=DOSSIER_KINDS)
    assert first.fire == DOSSIER_OVERDUE
    second = domain.transitions(held, frozenset({DOSSIER_OVERDUE}), order=DOSSIER_KINDS)
    assert not second  # the missed due-soon and apology alerts never follow


def test_everything_firing_resolves_when_the_dossier_ends() -> None:
    ended = dossier("2026-11-27", is_open=False)
    move = domain.transitions(domain.dossier_conditions(ended, h("2026-11-30")), ALL, order=DOSSIER_KINDS)
    assert move.fire is None and move.resolve == DOSSIER_KINDS


def test_a_new_later_due_day_resolves_the_overdue_and_keeps_nothing_stale() -> None:
    extended = dossier("2026-12-10")
    firing = frozenset({DOSSIER_DUE_SOON, DOSSIER_APOLOGY_DUE, DOSSIER_OVERDUE})
    move = domain.transitions(domain.dossier_conditions(extended, h("2026-11-30")), firing, order=DOSSIER_KINDS)
    assert move.fire is None and move.resolve == DOSSIER_KINDS


def test_may_fire_false_raises_nothing_but_still_resolves() -> None:
    move = domain.transitions(frozenset(), frozenset({PLAN_TASK_DUE_SOON}), order=PLAN_KINDS, may_fire=False)
    assert move.resolve == (PLAN_TASK_DUE_SOON,)
    assert domain.transitions(frozenset(PLAN_KINDS), frozenset(), order=PLAN_KINDS, may_fire=False).fire is None


def test_tick_level_follows_the_most_severe_firing_kind() -> None:
    assert domain.tick_level(watched=True, firing=(), order=DOSSIER_KINDS) == 0
    assert domain.tick_level(watched=True, firing=(DOSSIER_DUE_SOON,), order=DOSSIER_KINDS) == 1
    assert domain.tick_level(watched=True, firing=(DOSSIER_DUE_SOON, DOSSIER_APOLOGY_DUE), order=DOSSIER_KINDS) == 2
    assert domain.tick_level(watched=True, firing=(DOSSIER_OVERDUE,), order=DOSSIER_KINDS) is None
    assert domain.tick_level(watched=False, firing=(), order=DOSSIER_KINDS) is None


def test_settling_a_dossier_gives_the_transition_the_bits_and_the_next_tick_level() -> None:
    bits = domain.bits_of
    due_soon = domain.settle_dossier(dossier("2026-11-27"), 0, h("2026-11-26"))
    assert (due_soon.move.fire, due_soon.move.resolve) == (DOSSIER_DUE_SOON, ())
    assert (due_soon.firing, due_soon.tick_level) == (bits({DOSSIER_DUE_SOON}, DOSSIER_KINDS), 1)
    overdue = domain.settle_dossier(dossier("2026-11-27"), due_soon.firing, h("2026-11-30"))
    assert overdue.move.kinds == (DOSSIER_OVERDUE,)
    assert (overdue.firing, overdue.tick_level) == (bits({DOSSIER_DUE_SOON, DOSSIER_OVERDUE}, DOSSIER_KINDS), None)
    ended = domain.settle_dossier(dossier("2026-11-27", is_open=False), overdue.firing, h("2026-12-01"))
    assert ended.move.kinds == (DOSSIER_DUE_SOON, DOSSIER_OVERDUE) and ended.move.fire is None
    assert (ended.firing, ended.tick_level) == (0, None)
    # a kind firing already does not fire again: the bits keep it, the level follows it
    again = domain.settle_dossier(dossier("2026-11-27"), due_soon.firing, h("2026-11-26"))
    assert not again.move and (again.firing, again.tick_level) == (due_soon.firing, 1)


def test_settling_an_occurrence_gives_its_state_first() -> None:
    state, fresh = domain.settle_occurrence(occ("2026-02-23"), 0, h("2026-02-24"), POLICY)
    assert state == "overdue" and fresh.move.fire == PLAN_TASK_OVERDUE and fresh.tick_level is None
    state, old = domain.settle_occurrence(occ("2026-02-23"), 0, h("2026-03-10"), POLICY)
    assert state == "overdue" and not old.move and old.firing == 0  # too old to alert; its state still counts
    state, done = domain.settle_occurrence(occ("2026-02-23", "2026-02-24"), fresh.firing, h("2026-02-25"), POLICY)
    assert state == "done_late" and done.move.kinds == (PLAN_TASK_OVERDUE,) and done.tick_level is None
    state, open_ = domain.settle_occurrence(occ("2026-02-23"), 0, h("2026-02-10"), POLICY)
    assert state == "open" and not open_.move and open_.tick_level == 0


def test_the_highest_revision_of_each_dossier_is_kept() -> None:
    def state(code: str, revision: int, **kw: object) -> DossierStateChanged:
        values: dict[str, object] = dict(
            dossier_code=code, revision=revision, agency_code="PTP", procedure_code="p", field_code="f", status=4,
            counted=True, updated_at=NOW,
        )
        return DossierStateChanged(**(values | kw))  # type: ignore[arg-type]

    first, later, other = state("A", 2), state("A", 3), state("B", 1)
    assert domain.latest_states([first, other, later, state("A", 3, status=5)]) == {"A": later, "B": other}
    # A state at a month's end (told for closed periods) is not the dossier's current state, even alone.
    month_end = state("C", 2, period_end=d("2026-11-30"))
    assert domain.latest_states([month_end]) == {}
    assert domain.latest_states([month_end, state("C", 3, ended_on=d("2026-12-01"))])["C"].revision == 3
    assert domain.is_open(later)
    assert not domain.is_open(state("A", 4, ended_on=d("2026-11-27")))
    assert not domain.is_open(state("A", 4, counted=False))


@given(st.sets(st.sampled_from(DOSSIER_KINDS)))
def test_bits_round_trip(kinds: set[str]) -> None:
    assert domain.kinds_of(domain.bits_of(kinds, DOSSIER_KINDS), DOSSIER_KINDS) == kinds


# -- alert texts -------------------------------------------------------------------------------------------


def test_dossier_alerts_name_the_dossier_agency_due_day_and_what_to_do() -> None:
    facts = dossier("2026-11-27")
    today = h("2026-11-27")
    soon = domain.dossier_alert(DOSSIER_DUE_SOON, facts, agency_name="Phòng Tư pháp", h=today, starts_at=NOW)
    apology = domain.dossier_alert(DOSSIER_APOLOGY_DUE, facts, agency_name="Phòng Tư pháp", h=today, starts_at=NOW)
    overdue = domain.dossier_alert(
        DOSSIER_OVERDUE, facts, agency_name="Phòng Tư pháp", h=h("2026-11-30"), starts_at=NOW
    )
    assert apology.summary == (
        "Hồ sơ H1.2 của Phòng Tư pháp sẽ trễ hạn ngày 27/11/2026: gửi phiếu xin lỗi và hẹn lại ngày trả kết quả trước hạn."
    )
    assert "đến hạn trả kết quả ngày 27/11/2026" in soon.summary
    assert "đã quá hạn trả kết quả ngày 27/11/2026" in overdue.summary
    assert [a.severity for a in (soon, apology, overdue)] == ["warning", "warning", "critical"]
    assert [a.alert_key for a in (soon, apology, overdue)] == [
        "dossier_due_soon:H1.2",
        "dossier_apology_due:H1.2",
        "dossier_overdue:H1.2",
    ]
    assert overdue.ref == "H1.2" and overdue.agency_code == "PTP"
    assert overdue.labels == {"due_day": "2026-11-27", "procedure_code": "1.001", "field_code": "HT"}
    assert apology.labels["reason"] == "due_day"


def test_apology_for_a_second_supplement_request_says_why() -> None:
    facts = dossier("2026-12-31", paused=True, pause_started_on=d("2026-11-20"), supplement_requests=2)
    alert = domain.dossier_alert(
        DOSSIER_APOLOGY_DUE, facts, agency_name="Xã Chí Công", h=h("2026-11-27"), starts_at=NOW
    )
    assert "yêu cầu bổ sung giấy tờ 2 lần nên bị tính trễ hạn (hạn trả kết quả ngày 31/12/2026)" in alert.summary
    assert alert.labels["reason"] == "supplements"


def test_deadletter_alert_for_the_district() -> None:
    letter = DeadLetter(
        stream="TTHC_DOSSIER",
        stream_seq=42,
        subject="tthc.dossier.events",
        reason="data.status: Field required",
        received_at=NOW,
    )
    alert = domain.deadletter_alert(letter, district_code="TUY_PHONG", starts_at=NOW)
    assert alert.alert_key == "deadletter:TTHC_DOSSIER:42"
    assert alert.ref == "TTHC_DOSSIER:42" and alert.agency_code == "TUY_PHONG" and alert.severity == "warning"
    assert "Tin nhắn số 42 của luồng TTHC_DOSSIER" in alert.summary and "data.status: Field required" in alert.summary


def test_event_ids_are_stable_per_transition_and_generation_and_fit_the_contract() -> None:
    assert domain.alert_event_id("dossier_overdue:H1", "firing", 1) == "dossier_overdue:H1:firing:1"
    assert domain.alert_event_id("dossier_overdue:H1", "firing", 2) != domain.alert_event_id(
        "dossier_overdue:H1", "firing", 1
    )
    long = domain.alert_event_id("k" * 300, "resolved", 1)
    assert len(long) <= 256 and long == domain.alert_event_id("k" * 300, "resolved", 1)


# -- plans ---------------------------------------------------------------------------------------------------

PLAN = Plan.model_validate(
    {
        "plan_id": "KH-TEST",
        "number": "9/KH-UBND",
        "title": "Kế hoạch thử",
        "issued_on": "2025-12-20",
        "issuer": "TUY_PHONG",
        "valid_from": "2026-01-01",
        "valid_until": "2026-12-31",
        "tasks": [
            {
                "id": "weekly",
                "title": "Rà soát hồ sơ trễ hạn hằng tuần",
                "section": "A.1",
                "owner": ["PNV"],
                "due": {"every": "week", "weekday": "fri"},
            },
            {
                "id": "monthly",
                "title": "Báo cáo cải cách hành chính hằng tháng",
                "section": "A.2",
                "owner": {"group": "communes"},
                "due": {"every": "month", "day": 31},
            },
            {
                "id": "yearly",
                "title": "Báo cáo lĩnh vực đất đai",
                "section": "A.3",
                "owner": "PTNMT",
                "due": {"every": "year", "month": 11, "day": 15},
            },
            {
                "id": "once",
                "title": "Xây dựng kế hoạch",
                "section": "A.4",
                "owner": ["PNV", "PTP"],
                "due": {"date": "2026-02-17"},
            },
            {"id": "always", "title": "Tuyên truyền", "section": "A.5", "owner": ["PNV"], "due": {"continuous": True}},
        ],
    }
)
AGENCIES = load_agencies()


def task(task_id: str) -> Task:
    return PLAN.task(task_id)


@pytest.mark.parametrize(
    ("task_id", "period", "reported_on", "expected"),
    [
        ("weekly", None, "2026-01-04", "2026-W01"),  # Sunday 4/1/2026 is in ISO week 1 (29/12/2025-4/1/2026)
        ("weekly", "2026-W05", "2026-02-20", "2026-W05"),
        ("weekly", "2026-02", "2026-02-20", None),  # a month is not a week
        ("monthly", None, "2026-02-20", "2026-02"),  # in Tết: the February occurrence, due 23/2
        ("monthly", None, "2024-02-29", "2024-02"),  # a leap day belongs to February
        ("monthly", "2026-01", "2026-02-03", "2026-01"),  # a late report names its period
        ("yearly", None, "2026-11-16", "2026"),
        ("yearly", "2026-W10", "2026-11-16", None),
        ("once", "2026-02", "2026-03-01", ""),  # one occurrence: the period is ignored
        ("always", None, "2026-03-01", None),  # continuous: no occurrence
    ],
)
def test_report_period(task_id: str, period: str | None, reported_on: str, expected: str | None) -> None:
    assert domain.report_period(task(task_id), period=period, reported_on=d(reported_on)) == expected


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=VN_TZ)


def test_done_on_takes_the_first_done_and_a_later_report_reopens() -> None:
    done = ReportFacts("done", at("2026-03-02T09:00"), "s", "1")
    again = ReportFacts("done", at("2026-03-05T09:00"), "s", "2")
    reopened = ReportFacts("in_progress", at("2026-03-06T09:00"), "s", "3")
    final = ReportFacts("done", at("2026-03-09T09:00"), "s", "4")
    assert domain.done_on([done, again], local_date=local_date) == d("2026-03-02")
    assert domain.done_on([done, reopened], local_date=local_date) is None
    assert domain.done_on([final, reopened, again, done], local_date=local_date) == d("2026-03-09")
    # after 17:00 in Asia/Ho_Chi_Minh it is still that day; UTC midnight is 07:00 local
    late = ReportFacts("done", dt.datetime(2026, 3, 2, 18, 30, tzinfo=dt.timezone.utc), "s", "5")
    assert domain.done_on([late], local_date=local_date) == d("2026-03-03")


report_strategy = st.builds(
    ReportFacts,
    state=st.sampled_from(["done", "in_progress", "blocked"]),
    reported_at=st.datetimes(
        min_value=dt.datetime(2026, 1, 1), max_value=dt.datetime(2026, 3, 1), timezones=st.just(VN_TZ)
    ),
    source=st.sampled_from(["a", "b"]),
    event_id=st.text(alphabet="0123456789", min_size=1, max_size=3),
)


# (source, id) is a primary key: two reports never share it.
@given(st.lists(report_strategy, max_size=8, unique_by=lambda r: (r.source, r.event_id)), st.randoms())
def test_done_on_does_not_depend_on_arrival_order(reports: list[ReportFacts], rnd) -> None:  # type: ignore[no-untyped-def]
    shuffled = list(reports)
    rnd.shuffle(shuffled)
    assert domain.done_on(shuffled, local_date=local_date) == domain.done_on(reports, local_date=local_date)


def occ(due: str, done: str | None = None) -> OccurrenceFacts:
    return OccurrenceFacts("KH-TEST", "monthly", "XA_CHI_CONG", "2026-02", d(due), d(done) if done else None)


@pytest.mark.parametrize(
    ("due", "done", "today", "state"),
    [
        ("2026-02-23", None, "2026-02-23", "open"),
        ("2026-02-23", None, "2026-02-24", "overdue"),
        ("2026-02-23", "2026-02-23", "2026-03-10", "done"),
        ("2026-02-23", "2026-02-24", "2026-03-10", "done_late"),
    ],
)
def test_occurrence_state(due: str, done: str | None, today: str, state: str) -> None:
    assert domain.occurrence_state(occ(due, done), d(today)) == state


def test_occurrence_conditions_with_a_lead_of_three_working_days() -> None:
    o = occ("2026-02-23")  # February's day 31 rule moved out of Tết
    assert domain.occurrence_conditions(o, h("2026-02-10")) == set()
    assert domain.occurrence_conditions(o, h("2026-02-12")) == {PLAN_TASK_DUE_SOON}  # 13/2, 23/2, 24/2
    assert domain.occurrence_conditions(o, h("2026-02-24")) == {PLAN_TASK_DUE_SOON, PLAN_TASK_OVERDUE}
    assert domain.occurrence_conditions(occ("2026-02-23", "2026-02-24"), h("2026-02-25")) == set()


def test_old_overdue_occurrences_raise_no_new_alert() -> None:
    o = occ("2026-02-23")
    assert domain.occurrence_may_raise(o, h("2026-03-09"), POLICY)  # 14 days
    assert not domain.occurrence_may_raise(o, h("2026-03-10"), POLICY)


def test_plan_alert_texts() -> None:
    o = OccurrenceFacts("KH-TEST", "weekly", "PNV", "2026-W01", d("2026-01-05"))
    alert = domain.occurrence_alert(
        PLAN_TASK_OVERDUE, o, task=task("weekly"), plan=PLAN, agency_name="Phòng Nội vụ", starts_at=NOW
    )
    assert alert.alert_key == "plan_task_overdue:KH-TEST:weekly:PNV:2026-W01"
    assert alert.summary == (
        "Nhiệm vụ weekly «Rà soát hồ sơ trễ hạn hằng tuần» của Kế hoạch 9/KH-UBND, kỳ tuần 1/2026, giao Phòng Nội vụ, "
        "đã quá hạn ngày 05/01/2026: hoàn thành ngay và báo cáo kết quả."
    )
    assert alert.ref == "weekly" and alert.severity == "critical"
    assert alert.labels == {
        "due_day": "2026-01-05",
        "plan_id": "KH-TEST",
        "task_id": "weekly",
        "period": "2026-W01",
        "section": "A.1",
    }
    once = OccurrenceFacts("KH-TEST", "once", "PTP", "", d("2026-02-23"))
    soon = domain.occurrence_alert(
        PLAN_TASK_DUE_SOON, once, task=task("once"), plan=PLAN, agency_name="Phòng Tư pháp", starts_at=NOW
    )
    assert soon.alert_key == "plan_task_due_soon:KH-TEST:once:PTP"
    assert "đến hạn ngày 23/02/2026" in soon.summary and "kỳ" not in soon.summary and soon.severity == "warning"


def test_occurrence_specs_expand_owners_and_open_with_their_period() -> None:
    specs = domain.plan_occurrence_specs(PLAN, agencies=AGENCIES, calendar=CAL)
    by_task = {
        k: list(g) for k, g in itertools.groupby(sorted(specs, key=lambda s: s.task_id), key=lambda s: s.task_id)
    }
    assert "always" not in by_task
    communes = AGENCIES.members("communes")
    assert len(by_task["monthly"]) == 12 * len(communes)
    feb = next(s for s in by_task["monthly"] if s.period == "2026-02" and s.agency_code == communes[0])
    # day 31 in February is Saturday 28/2/2026: due Monday 2/3, still the February occurrence
    assert (feb.due_day, feb.opens_on) == (d("2026-03-02"), d("2026-02-01"))
    once = [s for s in by_task["once"]]
    assert {s.agency_code for s in once} == {"PNV", "PTP"}
    assert {(s.period, s.due_day, s.opens_on) for s in once} == {("", d("2026-02-23"), d("2026-01-01"))}
    weekly = [s for s in by_task["weekly"]]
    # the rule's end (valid_until 31/12/2026) bounds the scheduled days: Friday 1/1/2027 of week 53 is not one
    assert len(weekly) == 52 and weekly[-1].period == "2026-W52" and weekly[-1].due_day == d("2026-12-25")
    first = min(weekly, key=lambda s: s.due_day)
    assert first.period == "2026-W01" and first.due_day == d("2026-01-05") and first.opens_on == d("2026-01-01")


def test_occurrence_specs_never_leave_the_plans_validity() -> None:
    """A window set wider than the plan tracks nothing outside it: the plan's validity bounds what is tracked
    (recurring duties stop at valid_until; a duty moved forward off days off stays tracked to the closing day)."""
    wide = domain.plan_occurrence_specs(PLAN, agencies=AGENCIES, calendar=CAL, window_from=d("2025-01-01"),
                                        window_to=d("2027-03-31"))
    plain = domain.plan_occurrence_specs(PLAN, agencies=AGENCIES, calendar=CAL)
    assert sorted(s.key for s in wide) == sorted(s.key for s in plain)
    assert max(s.period for s in wide if s.task_id == "monthly") == "2026-12"
    assert min(s.due_day for s in wide) >= PLAN.valid_from
    assert max(s.due_day for s in wide) <= domain.plan_closes_on(PLAN)
    narrow = domain.plan_occurrence_specs(PLAN, agencies=AGENCIES, calendar=CAL, window_to=d("2026-06-30"))
    assert max(s.period for s in narrow if s.task_id == "monthly") == "2026-06"  # a narrower window is kept


def test_a_closed_plan_is_frozen_raises_nothing_and_resolves_what_fires() -> None:
    closes = domain.plan_closes_on(PLAN)
    assert closes == PLAN.valid_until + dt.timedelta(days=31)
    assert not domain.plan_closed(PLAN, closes) and domain.plan_closed(PLAN, closes + dt.timedelta(days=1))
    o = domain.OccurrenceFacts(plan_id=PLAN.plan_id, task_id="monthly", agency_code="PNV", period="2026-12",
                               due_day=d("2026-12-31"))
    policy = domain.Policy()
    firing = domain.bits_of([domain.PLAN_TASK_OVERDUE], domain.PLAN_KINDS)
    day = closes + dt.timedelta(days=1)
    h = domain.horizons(day, calendar=CAL, policy=policy)
    state, settled = domain.settle_occurrence(o, firing, h, policy, closed=True)
    assert state == "overdue"  # its final state, kept
    assert settled.move.fire is None and settled.move.resolve == (domain.PLAN_TASK_OVERDUE,)
    assert settled.firing == 0 and settled.tick_level is None  # never read by a tick again
    # in force, the same occurrence a week after its due day would fire
    h_open = domain.horizons(d("2027-01-08"), calendar=CAL, policy=policy)
    _, live = domain.settle_occurrence(o, 0, h_open, policy)
    assert live.move.fire == domain.PLAN_TASK_OVERDUE


