"""Every formula of scoring, from dossier facts to figures and index points (pure, fixed days)."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest

from services.scoring.domain import (
    ALWAYS_OVERDUE,
    NEVER_OVERDUE,
    NO_DUE_DAY,
    NORMAL,
    DossierFacts,
    IndexConfig,
    RatingFacts,
    TaskFacts,
    compute_figures,
    dossier_contributions,
    is_overdue,
    natural_key,
    open_key,
    open_mode,
    rating_contributions,
    roll_up,
    task_contributions,
)

UTC = dt.timezone.utc
D = dt.date
CONFIG = IndexConfig()
TODAY = D(2026, 11, 20)


def dossier(code: str, **kw) -> DossierFacts:
    base = dict(dossier_code=code, revision=1, agency_code="PTP", counted=True, receipt_day=D(2026, 11, 2))
    return DossierFacts(**(base | kw))


def counts_for(facts, period: str, *, today: dt.date = TODAY, agency: str = "PTP", ratings=(), tasks=()) -> Counter:
    """What the store sums for the running period: the period's cells plus the open table judged today."""
    cells: Counter = Counter()
    for f in facts:
        cells.update(dossier_contributions(f))
    by_dossier: dict[str, list[RatingFacts]] = {}
    for r in ratings:
        by_dossier.setdefault(r.dossier_code, []).append(r)
    for history in by_dossier.values():
        cells.update(rating_contributions(history))
    for t in tasks:
        cells.update(task_contributions(t))
    out = Counter({fig: n for (p, a, fig), n in cells.items() if p == period and a == agency})
    for f in facts:
        key = open_key(f)
        if key is not None and key[0] == agency:
            out["open"] += 1
            out["overdue"] += is_overdue(due_day=None if key[1] == NO_DUE_DAY else key[1], mode=key[2], day=today)
    return out


# -- rule 7 --------------------------------------------------------------------------------

def test_on_time_rate_counts_ended_and_open_not_overdue() -> None:
    facts = [
        dossier("E1", due_day=D(2026, 11, 10), ended_on=D(2026, 11, 9), timeliness="early"),
        dossier("E2", due_day=D(2026, 11, 12), ended_on=D(2026, 11, 12), timeliness="on_time"),
        dossier("E3", due_day=D(2026, 11, 5), ended_on=D(2026, 11, 9), timeliness="late"),
        dossier("O1", due_day=D(2026, 11, 25)),  # open, in time
        dossier("O2", due_day=D(2026, 11, 19)),  # open, overdue (today is the 20th)
        dossier("O3", due_day=D(2026, 11, 20)),  # open, due today: not overdue
    ]
    f = compute_figures(counts_for(facts, "2026-11"), config=CONFIG)
    assert (f.ended_early, f.ended_on_time, f.ended_late, f.open, f.overdue) == (1, 1, 1, 3, 1)
    assert f.on_time_ratio == pytest.approx(4 / 6)


def test_no_dossier_means_no_value_never_zero_or_one() -> None:
    f = compute_figures({}, config=CONFIG)
    assert f.on_time_ratio is None
    assert f.satisfaction_ratio is None
    assert f.plan_completion_ratio is None
    assert f.online_filing_ratio is None and f.national_sync_ratio is None
    assert f.online_payment_ratio is None and f.digitized_ratio is None
    assert all(p.points is None for p in f.index)
    assert not f.has_data


def test_dossier_never_received_counts_nowhere() -> None:
    facts = [dossier("N1", counted=False, receipt_day=None, due_day=D(2026, 11, 1))]
    assert counts_for(facts, "2026-11") == Counter()
    assert open_key(facts[0]) is None


def test_ended_without_due_day_is_in_neither_part_of_the_rate() -> None:
    facts = [dossier("U1", ended_on=D(2026, 11, 3), timeliness=None)]
    f = compute_figures(counts_for(facts, "2026-11"), config=CONFIG)
    assert f.ended_unclassified == 1
    assert f.on_time_ratio is None
    assert f.has_data  # the agency received a dossier this month


def test_open_without_due_day_is_never_overdue() -> None:
    f = dossier("O1", due_day=None)
    assert open_key(f) == ("PTP", NO_DUE_DAY, NORMAL)
    assert not is_overdue(due_day=None, mode=NORMAL, day=D(2099, 1, 1))


# -- paused dossiers and the second supplement ---------------------------------------------

def test_paused_before_due_day_is_not_overdue() -> None:
    f = dossier("P1", due_day=D(2026, 11, 18), paused=True, pause_started_on=D(2026, 11, 13), supplement_requests=1)
    key = open_key(f)
    assert key == ("PTP", D(2026, 11, 18), NEVER_OVERDUE)
    assert not is_overdue(due_day=key[1], mode=key[2], day=TODAY)


def test_paused_on_the_due_day_is_not_overdue() -> None:
    mode = open_mode(paused=True, pause_started_on=D(2026, 11, 18), due_day=D(2026, 11, 18), supplement_requests=1)
    assert mode == NEVER_OVERDUE


def test_paused_after_due_day_is_overdue() -> None:
    f = dossier("P2", due_day=D(2026, 11, 10), paused=True, pause_started_on=D(2026, 11, 12), supplement_requests=1)
    key = open_key(f)
    assert key[2] == NORMAL
    assert is_overdue(due_day=key[1], mode=key[2], day=TODAY)
    figures = compute_figures(counts_for([f], "2026-11"), config=CONFIG)
    assert (figures.open, figures.overdue, figures.on_time_ratio) == (1, 1, 0.0)


def test_pause_judged_at_a_past_day_counts_only_if_it_had_begun() -> None:
    kw = dict(paused=True, pause_started_on=D(2026, 11, 3), due_day=D(2026, 11, 5), supplement_requests=1)
    assert open_mode(**kw, at=D(2026, 11, 3)) == NEVER_OVERDUE
    assert open_mode(**kw, at=D(2026, 11, 2)) == NORMAL


def test_second_supplement_makes_an_open_dossier_late_whatever_its_dates() -> None:
    f = dossier("S2", due_day=D(2026, 12, 30), paused=True, pause_started_on=D(2026, 11, 13), supplement_requests=2)
    key = open_key(f)
    assert key[2] == ALWAYS_OVERDUE
    assert is_overdue(due_day=key[1], mode=key[2], day=D(2026, 11, 14))
    figures = compute_figures(counts_for([f, dossier("OK", due_day=D(2026, 12, 1))], "2026-11"), config=CONFIG)
    assert (figures.open, figures.overdue, figures.on_time_ratio) == (2, 1, 0.5)


def test_first_supplement_alone_does_not_make_it_late() -> None:
    f = dossier("S1", due_day=D(2026, 12, 30), supplement_requests=1)
    assert open_key(f)[2] == NORMAL


# -- ratings -------------------------------------------------------------------------------

def rating(code: str, overall: str, at: dt.datetime, event_id: str, agency: str = "PTP", **criteria) -> RatingFacts:
    return RatingFacts(dossier_code=code, agency_code=agency, rated_at=at, event_id=event_id, overall=overall,
                       criteria=criteria)


def test_later_rating_replaces_the_earlier_one_whatever_the_arrival_order() -> None:
    first = rating("D1", "very_satisfied", dt.datetime(2026, 11, 3, 2, tzinfo=UTC), "a")
    later = rating("D1", "unsatisfied", dt.datetime(2026, 11, 4, 2, tzinfo=UTC), "b")
    other = rating("D2", "satisfied", dt.datetime(2026, 11, 4, 2, tzinfo=UTC), "c")
    for order in ([first, later, other], [later, first, other], [other, later, first]):
        f = compute_figures(counts_for([], "2026-11", ratings=order), config=CONFIG)
        assert (f.rated, f.rated_satisfied, f.rated_unsatisfied) == (2, 1, 1)
        assert f.satisfaction_ratio == 0.5


def test_rating_tie_on_time_is_broken_by_event_id() -> None:
    at = dt.datetime(2026, 11, 3, 2, tzinfo=UTC)
    a = rating("D1", "unsatisfied", at, "evt-a")
    b = rating("D1", "satisfied", at, "evt-b")
    for order in ([a, b], [b, a]):
        cells = rating_contributions(order)
        assert cells[("2026-11", "PTP", "rated_satisfied")] == 1 and ("2026-11", "PTP", "rated_unsatisfied") not in cells


def test_a_rating_replaced_next_month_still_counts_in_the_closed_month() -> None:
    """A later rating replaces the earlier one in the periods both fall in (the quarter, the year); the month of
    the earlier one keeps it: a closed month is judged as of its last day."""
    november = rating("D1", "very_satisfied", dt.datetime(2026, 11, 20, 2, tzinfo=UTC), "a", c1=2)
    december = rating("D1", "unsatisfied", dt.datetime(2026, 12, 2, 2, tzinfo=UTC), "b", c1=0)
    for order in ([november, december], [december, november]):
        cells = rating_contributions(order)
        assert cells[("2026-11", "PTP", "rated_satisfied")] == 1
        assert cells[("2026-11", "PTP", "criterion_sum_c1")] == 2
        assert cells[("2026-12", "PTP", "rated_unsatisfied")] == 1
        for period in ("2026-Q4", "2026"):
            assert cells[(period, "PTP", "rated")] == 1 and cells[(period, "PTP", "rated_unsatisfied")] == 1
            assert (period, "PTP", "rated_satisfied") not in cells


def test_event_ids_compare_in_natural_order() -> None:
    assert natural_key("146:t1:PTP:2026-11:10") > natural_key("146:t1:PTP:2026-11:9")
    assert natural_key("b") > natural_key("a")
    assert sorted(["e10", "e9", "e1"], key=natural_key) == ["e1", "e9", "e10"]


def test_satisfaction_counts_very_satisfied_and_satisfied() -> None:
    at = dt.datetime(2026, 11, 3, 2, tzinfo=UTC)
    ratings = [rating("A", "very_satisfied", at, "1"), rating("B", "satisfied", at, "2"),
               rating("C", "unsatisfied", at, "3"), rating("D", "unsatisfied", at, "4")]
    assert compute_figures(counts_for([], "2026-11", ratings=ratings), config=CONFIG).satisfaction_ratio == 0.5


def test_criterion_averages_cover_the_answers_given() -> None:
    at = dt.datetime(2026, 11, 3, 2, tzinfo=UTC)
    ratings = [rating("A", "satisfied", at, "1", c1=2, c9=1), rating("B", "satisfied", at, "2", c1=1),
               rating("C", "satisfied", at, "3", c1=0, c9=0)]
    f = compute_figures(counts_for([], "2026-11", ratings=ratings), config=CONFIG)
    assert f.criteria == {"c1": 1.0, "c9": 0.5}


# -- shares --------------------------------------------------------------------------------

def test_shares_of_received_dossiers() -> None:
    facts = [
        dossier("A", channel=2, online_payment=True, digitized=True, synced_national=True),
        dossier("B", channel=2, online_payment=False, digitized=True, synced_national=False),
        dossier("C", channel=1, online_payment=None, digitized=False, synced_national=True),
        dossier("D", channel=3, online_payment=None, digitized=None, synced_national=None),
    ]
    f = compute_figures(counts_for(facts, "2026-11"), config=CONFIG)
    assert f.received == 4
    assert f.online_filing_ratio == 0.5
    assert f.online_payment_ratio == 0.5  # 1 paid online of the 2 with a payment reported
    assert f.digitized_ratio == 2 / 3  # D says nothing of digitization: 2 of the 3 that do
    assert f.national_sync_ratio == 2 / 3  # nor of its sync
    assert (f.channel_reported, f.digitized_reported, f.sync_reported) == (4, 3, 3)


def test_a_missing_flag_is_unknown_not_no() -> None:
    facts = [dossier("A", channel=2, synced_national=True), *(dossier(f"N{i}") for i in range(9))]
    f = compute_figures(counts_for(facts, "2026-11"), config=CONFIG)
    assert f.received == 10
    assert f.online_filing_ratio == 1.0 and f.national_sync_ratio == 1.0
    assert f.kpi_denominator("online_filing") == 1 and f.kpi_denominator("national_sync") == 1


def test_a_share_with_nothing_known_has_no_value_never_zero() -> None:
    f = compute_figures(counts_for([dossier(f"N{i}") for i in range(5)], "2026-11"), config=CONFIG)
    assert f.received == 5
    assert f.online_filing_ratio is None and f.national_sync_ratio is None and f.digitized_ratio is None
    assert index(f)["online_filing"].points is None and index(f)["national_sync"].points is None


# -- plan tasks ----------------------------------------------------------------------------

def task(task_id: str, state: str) -> TaskFacts:
    return TaskFacts(plan_id="146", task_id=task_id, occurrence="2026-11", agency_code="PTP", due_day=D(2026, 11, 15),
                     state=state, updated_at=dt.datetime(2026, 11, 16, tzinfo=UTC), event_id=task_id)


def test_plan_completion_counts_done_and_done_late_among_those_due() -> None:
    tasks = [task("t1", "done"), task("t2", "done_late"), task("t3", "overdue"), task("t4", "open"),
             task("t5", "done")]
    f = compute_figures(counts_for([], "2026-11", tasks=tasks), config=CONFIG)
    assert (f.tasks_done, f.tasks_done_late, f.tasks_overdue, f.tasks_open) == (2, 1, 1, 1)
    assert f.plan_completion_ratio == 0.75


def test_plan_completion_without_a_task_due_has_no_value() -> None:
    f = compute_figures(counts_for([], "2026-11", tasks=[task("t4", "open")]), config=CONFIG)
    assert f.plan_completion_ratio is None


# -- index points (Decision 766) -----------------------------------------------------------

def index(f):
    return {p.part: p for p in f.index}


def test_progress_points_are_twenty_times_the_on_time_rate() -> None:
    f = compute_figures({"ended_on_time": 9, "ended_late": 1}, config=CONFIG)
    assert index(f)["progress"].points == pytest.approx(18.0)


@pytest.mark.parametrize(
    ("on_time", "late", "unsatisfied", "points"),
    [
        (19, 1, 1, 6.0),  # r = 1 - (0.05 + 0.05) = 0.9: full points
        (19, 1, 0, 6.0),  # r = 0.95, capped at 6
        (18, 2, 2, 6 * 0.8 / 0.9),  # r = 0.8
        (0, 20, 20, 0.0),  # r = -1: never below 0
    ],
)
def test_handling_satisfaction_points(on_time: int, late: int, unsatisfied: int, points: float) -> None:
    f = compute_figures({"ended_on_time": on_time, "ended_late": late, "rated": unsatisfied,
                         "rated_unsatisfied": unsatisfied}, config=CONFIG)
    assert index(f)["handling_satisfaction"].points == pytest.approx(points)


@pytest.mark.parametrize(("online", "points"), [(0, 0.0), (25, 3.0), (50, 6.0), (90, 6.0)])
def test_online_filing_points_reach_full_at_half(online: int, points: float) -> None:
    f = compute_figures({"received": 100, "channel_reported": 100, "filed_online": online}, config=CONFIG)
    assert index(f)["online_filing"].points == pytest.approx(points)


def test_online_filing_points_and_scale_are_configurable() -> None:
    f = compute_figures({"received": 100, "channel_reported": 100, "filed_online": 40},
                        config=IndexConfig(online_filing_points=8, online_filing_full_at=0.8))
    assert index(f)["online_filing"].points == pytest.approx(4.0)


def test_sync_points_are_six_times_the_sync_share() -> None:
    f = compute_figures({"received": 4, "sync_reported": 4, "synced": 3}, config=CONFIG)
    assert index(f)["national_sync"].points == pytest.approx(4.5)


def test_parts_without_events_are_not_computable_never_zero() -> None:
    f = compute_figures({"ended_on_time": 1, "received": 1, "sync_reported": 1, "synced": 1, "channel_reported": 1,
                         "filed_online": 1}, config=CONFIG)
    parts = index(f)
    missing = {name for name, p in parts.items() if not p.computable}
    assert missing == {"publicity_other", "online_service_other", "digitization", "satisfaction_other"}
    assert all(parts[name].points is None for name in missing)
    assert all("not computable" in parts[name].note for name in missing)
    assert sum(p.max_points for p in parts.values()) == pytest.approx(100.0)


# -- district roll-up ----------------------------------------------------------------------

def test_roll_up_sums_counts_and_recomputes_ratios() -> None:
    a = Counter({"ended_on_time": 1})
    b = Counter({"ended_late": 3})
    total = compute_figures(roll_up([a, b]), config=CONFIG)
    assert total.on_time_ratio == 0.25  # 1 of 4, not the mean of 1.0 and 0.0
