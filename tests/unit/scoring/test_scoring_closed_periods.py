"""Closed periods stay closed: a past period counts each dossier as it stood at the period's last day, from its
history of snapshots (each with the event time of the events behind it). Pure rules, fixed data."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from services.scoring.domain import (
    FOREVER,
    SINCE_EVER,
    DossierFacts,
    dossier_contributions,
    dossier_history,
    history_contributions,
    state_at,
)

UTC = dt.timezone.utc
D = dt.date


def at(day: dt.date, hour_utc: int = 3) -> dt.datetime:
    """An instant on ``day``: 03:00 UTC is 10:00 in Vietnam, the same local day."""
    return dt.datetime.combine(day, dt.time(hour_utc), tzinfo=UTC)


def snap(revision: int, occurred: dt.datetime | None, **kw) -> DossierFacts:
    base = dict(dossier_code="H1", revision=revision, agency_code="PTP", counted=True, receipt_day=D(2026, 10, 5),
                due_day=D(2026, 10, 20), occurred_at=occurred)
    return DossierFacts(**(base | kw))


def cells(history_snaps: list[DossierFacts], period: str) -> dict[tuple[str, str], int]:
    """(agency, figure) -> count of one period."""
    out = history_contributions(dossier_history(history_snaps))
    return {(a, f): n for (p, a, f), n in out.items() if p == period and n}


def test_each_snapshot_stands_from_the_day_its_events_had_occurred_to_the_next_ones() -> None:
    history = dossier_history([
        snap(3, at(D(2026, 11, 3))), snap(1, at(D(2026, 10, 5))), snap(2, at(D(2026, 10, 20))),
    ])
    assert [(e.facts.revision, e.valid_from, e.valid_to) for e in history] == [
        (1, SINCE_EVER, D(2026, 10, 20)),  # the first stands for every earlier day too (its dates say the rest)
        (2, D(2026, 10, 20), D(2026, 11, 3)),
        (3, D(2026, 11, 3), FOREVER),
    ]
    assert state_at(history, D(2026, 10, 31)).revision == 2
    assert state_at(history, D(2026, 10, 19)).revision == 1
    assert state_at(history, D(2026, 11, 30)).revision == 3


def test_days_turn_at_midnight_in_vietnam() -> None:
    # 17:30 UTC on 31/10 is 00:30 on 1/11 in Vietnam: the snapshot is November's, not October's.
    history = dossier_history([snap(1, at(D(2026, 10, 5))), snap(2, at(D(2026, 10, 31), 17), paused=True,
                                                                      pause_started_on=D(2026, 11, 1))])
    assert history[1].valid_from == D(2026, 11, 1)
    assert state_at(history, D(2026, 10, 31)).revision == 1


def test_events_after_a_period_do_not_change_it_and_the_running_period_sees_them() -> None:
    received = snap(1, at(D(2026, 10, 5)))  # received 5/10, due 20/10, nothing known of sync or channel
    # In November: resolved late, the sync flag and the channel arrive, and the dossier moves to another unit.
    later = snap(2, at(D(2026, 11, 4)), agency_code="PNV", ended_on=D(2026, 11, 4), timeliness="late",
                 synced_national=True, channel=2)
    assert cells([received, later], "2026-10") == {("PTP", "received"): 1}
    assert cells([received, later], "2026-11") == {("PNV", "ended_late"): 1}
    # The running year counts the latest snapshot, as before histories.
    assert cells([received, later], "2026") == {
        ("PNV", "received"): 1, ("PNV", "channel_reported"): 1, ("PNV", "filed_online"): 1,
        ("PNV", "sync_reported"): 1, ("PNV", "synced"): 1, ("PNV", "ended_late"): 1,
    }


def test_a_late_event_that_occurred_inside_the_period_changes_it() -> None:
    received = snap(1, at(D(2026, 10, 5)))
    # Resolved on time on 20/10, the fact arriving in November (no later event of the dossier).
    resolved = snap(2, at(D(2026, 10, 20)), ended_on=D(2026, 10, 20), timeliness="on_time")
    assert cells([received], "2026-10") == {("PTP", "received"): 1}
    assert cells([received, resolved], "2026-10") == {("PTP", "received"): 1, ("PTP", "ended_on_time"): 1}


def test_a_late_event_behind_events_of_a_later_period_cannot_be_seen_on_its_own() -> None:
    # Known limit (docs/scoring.md): the snapshot of the late event also folds the later events, so no snapshot
    # is the state at the period's end with it; the period keeps the last one whose events all occurred by then.
    received = snap(1, at(D(2026, 10, 5)))
    november = snap(2, at(D(2026, 11, 4)), paused=True, pause_started_on=D(2026, 11, 4), supplement_requests=1)
    late = snap(3, at(D(2026, 10, 25)), paused=True, pause_started_on=D(2026, 11, 4), supplement_requests=2)
    history = dossier_history([received, november, late])
    assert history[2].valid_from == D(2026, 11, 4)  # it took effect when the November events had occurred
    assert state_at(history, D(2026, 10, 31)).revision == 1


def test_one_snapshot_folding_several_months_counts_by_its_dates() -> None:
    # A backfill: received 5/10 and ended 4/11 folded into one fact whose event time is November's.
    backfilled = snap(1, at(D(2026, 11, 4)), ended_on=D(2026, 11, 4), timeliness="late")
    assert cells([backfilled], "2026-10") == {("PTP", "received"): 1}
    assert cells([backfilled], "2026-11") == {("PTP", "ended_late"): 1}


def test_a_snapshot_superseded_the_same_day_never_stands() -> None:
    history = dossier_history([snap(1, at(D(2026, 10, 5))), snap(2, at(D(2026, 10, 7))),
                               snap(3, at(D(2026, 10, 7), 9))])
    assert not history[1].ever_holds
    assert [e.facts.revision for e in history if e.ever_holds] == [1, 3]


def test_a_copy_of_a_revision_is_one_snapshot_and_agencies_make_it_inter_agency() -> None:
    first = snap(1, at(D(2026, 10, 5)))
    moved = snap(2, at(D(2026, 10, 9)), agency_code="PNV")
    history = dossier_history([first, moved, first])
    assert [e.facts.revision for e in history] == [1, 2]
    assert [e.facts.inter_agency for e in history] == [False, True]


days = st.dates(min_value=D(2026, 9, 25), max_value=D(2027, 1, 10))


@given(receipt=days, end=st.none() | days, occurred=st.none() | days, flag=st.sampled_from([None, True, False]))
def test_a_dossier_of_one_snapshot_counts_as_before_histories(receipt, end, occurred, flag) -> None:
    """Whatever its event time: one snapshot contributes what the latest state did before histories."""
    one = snap(1, None if occurred is None else at(occurred), receipt_day=receipt,
               ended_on=None if end is None or end < receipt else end,
               timeliness=None if end is None or end < receipt else "on_time", digitized=flag)
    assert history_contributions(dossier_history([one])) == dossier_contributions(one)
