"""The incremental Fold against the reference derive_state: same state for any history and any arrival."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.dossier_tracker.domain import Fold, RecordedEvent, derive_state, last_day_of_month, order_events
from services.dossier_tracker.service import state_fact
from shared.calendar import load_calendar, local_date
from shared.events import DossierStateEvent, encode, parse_event

CAL = load_calendar()
ICT = dt.timezone(dt.timedelta(hours=7))
START = dt.datetime(2026, 12, 28, 8, 0, tzinfo=ICT)  # crosses the new year and Tet-free weeks

# Status codes: 1 pre-receipt, 2 received, 3/7/8/9/10 end, 4 processing, 5 supplement, 6 financial obligation.
STATUSES = st.sampled_from([1, 2, 2, 3, 4, 4, 4, 5, 5, 6, 7, 8, 9, 10])


@st.composite
def histories(draw: Any) -> list[RecordedEvent]:
    n = draw(st.integers(min_value=1, max_value=9))
    use_sequence = draw(st.sampled_from(["all", "none", "some"]))
    moment = START
    events = []
    for i in range(n):
        moment += dt.timedelta(minutes=draw(st.integers(min_value=0, max_value=5 * 24 * 60)))  # ties possible
        status = draw(STATUSES)
        has_seq = use_sequence == "all" or (use_sequence == "some" and draw(st.booleans()))
        extra: dict[str, Any] = {}
        if status == 2 and draw(st.booleans()):
            extra["received_at"] = moment
        if draw(st.integers(0, 5)) == 0:
            extra["due_at"] = moment + dt.timedelta(days=draw(st.integers(0, 20)), hours=draw(st.integers(0, 23)))
        if draw(st.integers(0, 3)) == 0:
            extra["duration_value"] = float(draw(st.sampled_from([0.5, 1, 3, 5, 15])))
            extra["duration_unit"] = draw(st.sampled_from(["working_days", "days", "hours"]))
        for name, values in (("channel", [1, 2]), ("online_payment", [True, False]), ("digitized", [True, False]),
                             ("synced_national", [True, False])):
            if draw(st.integers(0, 3)) == 0:
                extra[name] = draw(st.sampled_from(values))
        events.append(RecordedEvent(
            source=draw(st.sampled_from(["motcua", "dvc"])),
            event_id=f"e{i}",
            dossier_code="H1",
            sequence=draw(st.integers(1, 12)) if has_seq else None,
            status=status,
            occurred_at=moment,
            agency_code=draw(st.sampled_from(["PTP", "PTNMT"])),
            procedure_code="1.0001",
            field_code="HT",
            **extra,
        ))
    return events


@settings(max_examples=400, deadline=None)
@given(history=histories())
def test_fold_of_a_history_gives_the_reference_state(history: list[RecordedEvent]) -> None:
    state = Fold.of(history, calendar=CAL).state(calendar=CAL)
    assert state == derive_state(history, calendar=CAL)
    # Its fact, as published, is read back by the strict contract model as the same state.
    fact = parse_event(encode(state_fact(state, now=START)))
    assert isinstance(fact, DossierStateEvent) and fact.id == f"H1:{state.revision}"
    assert fact.data.model_dump(exclude={"updated_at", "occurred_at", "period_end", "rewrites_from"}) == state._asdict()
    assert fact.data.period_end is None  # a current state


@settings(max_examples=400, deadline=None)
@given(history=histories(), data=st.data())
def test_folding_batches_as_they_arrive_gives_the_reference_state(history: list[RecordedEvent], data: Any) -> None:
    """What the store does: extend the stored fold when a batch sorts after it, else fold everything again."""
    arrival = data.draw(st.permutations(history))
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(arrival) - 1)), max_size=len(arrival))))
    batches = [arrival[a:b] for a, b in zip([0, *cuts], [*cuts, len(arrival)], strict=True) if arrival[a:b]]
    seen: list[RecordedEvent] = []
    fold: Fold | None = None
    for batch in batches:
        seen.extend(batch)
        if fold is not None and fold.accepts(batch):
            fold = fold.extend(batch, calendar=CAL)
            assert fold == Fold.of(seen, calendar=CAL)  # the whole running value, not just the state
        else:
            fold = Fold.of(seen, calendar=CAL)
        assert fold.state(calendar=CAL) == derive_state(seen, calendar=CAL)


@settings(max_examples=400, deadline=None)
@given(history=histories(), data=st.data())
def test_a_batch_tells_the_state_at_the_end_of_each_month_it_crosses(history: list[RecordedEvent], data: Any) -> None:
    """Ordered by time (no sequence), the state at a month's end is that of every event that occurred by then:
    the reference derives it from those events alone."""
    timed = order_events([e._replace(sequence=None) for e in history])
    split = data.draw(st.integers(0, len(timed) - 1))
    stored, batch = timed[:split], timed[split:]
    fold = Fold.of(stored, calendar=CAL) if stored else Fold()
    final, ends = fold.extend_across_months(batch, calendar=CAL)
    assert final == Fold.of(timed, calendar=CAL)
    month = [(local_date(e.occurred_at).year, local_date(e.occurred_at).month) for e in batch]
    crossed = [i for i in range(1, len(batch)) if month[i] > month[i - 1]]  # the first event of a later month
    assert [end.day for end in ends] == [last_day_of_month(local_date(batch[i - 1].occurred_at)) for i in crossed]
    for end, i in zip(ends, crossed, strict=True):
        occurred_by_then = [*stored, *batch[:i]]
        assert end.fold.state(calendar=CAL) == derive_state(occurred_by_then, calendar=CAL)
        assert end.occurred_at == batch[i - 1].occurred_at
        assert all(local_date(e.occurred_at) <= end.day for e in occurred_by_then)
        assert all(local_date(e.occurred_at) > end.day for e in batch[i:])


@settings(max_examples=400, deadline=None)
@given(history=histories(), data=st.data())
def test_a_new_dossier_s_first_batch_folds_as_its_whole_history(history: list[RecordedEvent], data: Any) -> None:
    """What the store does with a new dossier's first batch: extend the empty fold, in any arrival order, events
    with and without a sequence mixed (ordered as a whole history is, never compared None against a number); its
    month ends, told again from the stored history for a batch delivered twice, are the same."""
    arrival = data.draw(st.permutations(history))
    final, ends = Fold().extend_across_months(arrival, calendar=CAL)
    assert final == Fold.of(history, calendar=CAL)
    since = min(e.occurred_at for e in history)
    assert Fold.month_ends_of(history, calendar=CAL, since=since) == ends


def test_a_batch_straddling_a_month_s_last_midnight_in_vietnam() -> None:
    """23:50 on 31/12 and 00:10 on 1/1 in Vietnam (16:50 and 17:10 UTC on 31/12): one month end, 31/12."""
    before = dt.datetime(2026, 12, 31, 23, 50, tzinfo=ICT)
    batch = [event(None, 0, 2, received_at=START),
             event(None, int((before - START).total_seconds() // 60)),
             event(None, int((before - START).total_seconds() // 60) + 20, 10)]
    final, ends = Fold().extend_across_months(batch, calendar=CAL)
    assert [(end.day, end.fold.count, end.occurred_at) for end in ends] == [(dt.date(2026, 12, 31), 2, before)]
    assert final.count == 3
    assert end_state_is_open(ends[0].fold) and final.state(calendar=CAL).ended_on == dt.date(2027, 1, 1)
    _, none = Fold().extend_across_months(batch[:2], calendar=CAL)
    assert none == []  # within one month


def end_state_is_open(fold: Fold) -> bool:
    return fold.state(calendar=CAL).ended_on is None


def event(seq: int | None, minute: int, status: int = 4, **extra: Any) -> RecordedEvent:
    return RecordedEvent(source="motcua", event_id=f"x{seq}-{minute}", dossier_code="H1", sequence=seq, status=status,
                         occurred_at=START + dt.timedelta(minutes=minute), agency_code="PTP",
                         procedure_code="1.0001", field_code="HT", **extra)


class TestAccepts:
    def test_a_later_sequence_is_accepted_an_earlier_one_is_not(self) -> None:
        fold = Fold.of([event(1, 0, 2, received_at=START), event(3, 10)], calendar=CAL)
        assert fold.accepts([event(4, 5)])  # sequence orders, not time
        assert not fold.accepts([event(2, 20)])

    def test_an_event_without_sequence_changes_the_order_so_it_is_not_accepted(self) -> None:
        fold = Fold.of([event(1, 0, 2, received_at=START)], calendar=CAL)
        assert not fold.accepts([event(None, 60)])

    def test_without_sequence_time_orders(self) -> None:
        fold = Fold.of([event(None, 0, 2, received_at=START), event(None, 30)], calendar=CAL)
        assert fold.accepts([event(7, 31)]) and not fold.accepts([event(7, 29)])

    def test_extend_refuses_what_accepts_refuses(self) -> None:
        fold = Fold.of([event(2, 0, 2, received_at=START)], calendar=CAL)
        with pytest.raises(ValueError):
            fold.extend([event(1, 5)], calendar=CAL)

    def test_an_empty_fold_has_no_state(self) -> None:
        with pytest.raises(ValueError):
            Fold().state(calendar=CAL)
