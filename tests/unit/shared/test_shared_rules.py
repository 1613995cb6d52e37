"""Rule 6 once (``shared.rules``): the table of cases, and the three services agreeing on every open dossier."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from services.deadline_monitor import domain as monitor
from services.dossier_tracker.metrics import DossierCollector
from services.scoring import domain as scoring
from shared import rules
from shared.calendar import load_calendar
from shared.rules import CASES, Case, OpenFacts
from shared.testing import metric_value

CAL = load_calendar()
D = dt.date


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_table_of_cases(case: Case) -> None:
    assert rules.open_state(case.facts, day=case.day, soon=case.soon) == case.state
    assert rules.is_overdue(case.facts, day=case.day) == (case.state == "overdue")


def test_the_table_names_every_state_and_the_hard_cases() -> None:
    assert {c.state for c in CASES} == set(rules.OPEN_STATES)
    names = {c.name for c in CASES}
    assert {"paused after the due day", "second supplement request, paused"} <= names
    assert all(c.soon == CAL.next_working_day(c.day) for c in CASES)


def test_a_pause_begun_after_the_due_day_does_not_stop_the_overdue() -> None:
    facts = OpenFacts(D(2026, 12, 7), paused=True, pause_started_on=D(2026, 12, 9))
    assert rules.clock(facts) is rules.Clock.RUNNING
    assert rules.open_state(facts, day=D(2026, 12, 10), soon=D(2026, 12, 11)) == "overdue"


def test_a_second_supplement_request_is_overdue_even_paused_and_due_later() -> None:
    facts = OpenFacts(D(2027, 1, 20), paused=True, pause_started_on=D(2026, 12, 8), supplement_requests=2)
    assert rules.clock(facts) is rules.Clock.LATE
    assert rules.open_state(facts, day=D(2026, 12, 10), soon=D(2026, 12, 11)) == "overdue"


def test_judged_at_a_day_before_the_pause_began_the_clock_ran() -> None:
    facts = OpenFacts(D(2026, 12, 9), paused=True, pause_started_on=D(2026, 12, 8))
    assert rules.clock(facts, day=D(2026, 12, 7)) is rules.Clock.RUNNING
    assert rules.clock(facts, day=D(2026, 12, 8)) is rules.Clock.STOPPED
    assert rules.clock(facts) is rules.Clock.STOPPED


# -- the three services ------------------------------------------------------------------------


class OneDossierStore:
    """What the tracker's collector reads, for one open dossier of PTP."""

    def __init__(self, facts: OpenFacts) -> None:
        self.facts = facts

    def ended_counts(self) -> list[tuple[str, str, int]]:
        return []

    def open_by_due_day(self) -> list[tuple[str, OpenFacts, int]]:
        return [("PTP", self.facts, 1)]


def tracker_state(facts: OpenFacts, day: dt.date) -> str:
    """The state ``parwatch_dossiers_open`` counts the dossier in at ``day``."""
    noon = dt.datetime.combine(day, dt.time(5, 0), tzinfo=dt.UTC)  # 12:00 in Asia/Ho_Chi_Minh
    registry = CollectorRegistry()
    registry.register(DossierCollector(OneDossierStore(facts), calendar=CAL, clock=lambda: noon,  # type: ignore[arg-type]
                                       label=lambda code: code))
    found = [s for s in rules.OPEN_STATES if metric_value(registry, "parwatch_dossiers_open", agency="PTP", state=s)]
    assert len(found) == 1
    return found[0]


def scoring_overdue_now(facts: OpenFacts, day: dt.date) -> bool:
    """Overdue as the current on-time rate counts it: the open-table cell, judged at ``day``."""
    f = scoring.DossierFacts(dossier_code="H", revision=1, agency_code="PTP", counted=True, due_day=facts.due_day,
                             paused=facts.paused, pause_started_on=facts.pause_started_on,
                             supplement_requests=facts.supplement_requests)
    key = scoring.open_key(f)
    assert key is not None
    due = None if key[1] == scoring.NO_DUE_DAY else key[1]
    return scoring.is_overdue(due_day=due, mode=key[2], day=day)


def scoring_overdue_at(facts: OpenFacts, day: dt.date) -> bool:
    """Overdue as a past period's end counts it (``open_at``, the weekly review)."""
    mode = scoring.open_mode(paused=facts.paused, pause_started_on=facts.pause_started_on, due_day=facts.due_day,
                             supplement_requests=facts.supplement_requests, at=day)
    return scoring.is_overdue(due_day=facts.due_day, mode=mode, day=day)


def monitor_conditions(facts: OpenFacts, day: dt.date) -> frozenset[str]:
    d = monitor.DossierFacts(dossier_code="H", agency_code="PTP", procedure_code="1.001", field_code="HT",
                             is_open=True, due_day=facts.due_day, paused=facts.paused,
                             pause_started_on=facts.pause_started_on, supplement_requests=facts.supplement_requests)
    return monitor.dossier_conditions(d, monitor.horizons(day, calendar=CAL, policy=monitor.Policy()))


DAYS = st.dates(min_value=D(2026, 1, 1), max_value=D(2027, 12, 31))


@st.composite
def open_dossiers(draw: st.DrawFn) -> tuple[OpenFacts, dt.date]:
    """An open dossier as a tracker state can be at ``day``: a pause has begun by then."""
    day = draw(DAYS)
    due = draw(st.none() | st.dates(min_value=day - dt.timedelta(days=20), max_value=day + dt.timedelta(days=20)))
    paused = draw(st.booleans())
    start = draw(st.dates(min_value=day - dt.timedelta(days=30), max_value=day)) if paused else None
    supplements = draw(st.integers(min_value=0, max_value=3))  # a pause may be a financial obligation (6)
    return OpenFacts(due, paused, start, supplements), day


@settings(max_examples=300, deadline=None)
@given(open_dossiers())
def test_tracker_scoring_and_monitor_agree(dossier: tuple[OpenFacts, dt.date]) -> None:
    facts, day = dossier
    state = rules.open_state(facts, day=day, soon=CAL.next_working_day(day))
    assert tracker_state(facts, day) == state
    assert scoring_overdue_now(facts, day) == (state == "overdue")
    assert scoring_overdue_at(facts, day) == (state == "overdue")
    held = monitor_conditions(facts, day)
    if monitor.DOSSIER_OVERDUE in held:
        assert state == "overdue"
    if state == "overdue":  # by its due day, or late by a second supplement request (the apology is asked for)
        assert monitor.DOSSIER_OVERDUE in held or (facts.supplement_requests >= 2 and monitor.DOSSIER_APOLOGY_DUE in held)
    if state == "due_soon":
        assert monitor.DOSSIER_DUE_SOON in held
    if state in ("in_time", "awaiting_supplement"):
        assert held == frozenset()
