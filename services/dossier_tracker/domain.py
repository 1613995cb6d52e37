"""A dossier's state as a pure function of its events (contract rules 1-6).

No I/O, no clock: the state is derived from the dossier's whole event history
sorted by ``sequence`` (else ``occurred_at``), so the result is the same
whatever the arrival order, and an event arriving late simply re-derives it.

Two implementations, checked against each other by property tests:

* :func:`derive_state` reads as the rules do, over the whole sorted history
  (the reference);
* :class:`Fold` carries the same computation as a running value, so an event
  that sorts after every event already applied is folded onto the stored
  fold in O(1) (the tracker's hot path). An event that sorts before the last
  one applied, or that changes the ordering key (a first event without
  ``sequence``), needs the whole history folded again (:meth:`Fold.accepts`).
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Literal, NamedTuple

from shared import rules
from shared.calendar import WorkingCalendar, local_date
from shared.events import END_STATUSES, PAUSE_STATUSES, RECEIVED, SUPPLEMENT, DossierStatusChanged
from shared.rules import OpenState

Timeliness = Literal["early", "on_time", "late"]
TIMELINESS: tuple[Timeliness, ...] = ("early", "on_time", "late")


class RecordedEvent(NamedTuple):
    """One accepted status event, as stored (the contract's fields, nothing more)."""

    source: str
    event_id: str
    dossier_code: str
    sequence: int | None
    status: int
    occurred_at: dt.datetime
    agency_code: str
    procedure_code: str
    field_code: str
    received_at: dt.datetime | None = None
    due_at: dt.datetime | None = None
    duration_value: float | None = None
    duration_unit: str | None = None
    channel: int | None = None
    online_payment: bool | None = None
    digitized: bool | None = None
    synced_national: bool | None = None

    @classmethod
    def from_contract(cls, data: DossierStatusChanged, *, source: str, event_id: str) -> RecordedEvent:
        """The event as the history keeps it."""
        duration = data.statutory_duration
        return cls(
            source=source,
            event_id=event_id,
            dossier_code=data.dossier_code,
            sequence=data.sequence,
            status=data.status,
            occurred_at=data.occurred_at,
            agency_code=data.agency_code,
            procedure_code=data.procedure_code,
            field_code=data.field_code,
            received_at=data.received_at,
            due_at=data.due_at,
            duration_value=duration.value if duration else None,
            duration_unit=duration.unit if duration else None,
            channel=data.channel,
            online_payment=data.online_payment,
            digitized=data.digitized,
            synced_national=data.synced_national,
        )


class DossierState(NamedTuple):
    """A dossier's derived state."""

    dossier_code: str
    revision: int
    agency_code: str
    procedure_code: str
    field_code: str
    status: int
    counted: bool
    received_at: dt.datetime | None
    receipt_day: dt.date | None
    due_day: dt.date | None
    due_from_source: bool
    paused: bool
    pause_started_on: dt.date | None
    supplement_requests: int
    ended_on: dt.date | None
    end_status: int | None
    timeliness: Timeliness | None
    channel: int | None
    online_payment: bool | None
    digitized: bool | None
    synced_national: bool | None
    #: How many times the dossier's history was folded again from its start (a late event that sorts before
    #: events already folded): its revisions from then on may repeat numbers told before, with other states.
    generation: int = 0

    @property
    def is_open(self) -> bool:
        return self.counted and self.ended_on is None


def order_events(events: Iterable[RecordedEvent]) -> list[RecordedEvent]:
    """Sort by ``sequence`` when every event has one, else by ``occurred_at``.

    Ties are broken by the other key and then by (source, id), so the order is
    total and does not depend on arrival.
    """
    events = list(events)
    if all(e.sequence is not None for e in events):
        return sorted(events, key=lambda e: (e.sequence, e.occurred_at, e.source, e.event_id))
    return sorted(events, key=lambda e: (e.occurred_at, e.sequence or 0, e.source, e.event_id))


def _latest(values: Iterable[object]) -> object:
    found = None
    for v in values:
        if v is not None:
            found = v
    return found


def derive_state(events: Sequence[RecordedEvent], *, calendar: WorkingCalendar) -> DossierState:
    """Apply rules 1-5 to a dossier's whole history."""
    if not events:
        raise ValueError("a dossier needs at least one event")
    history = order_events(events)
    last = history[-1]

    receipt_index = next((i for i, e in enumerate(history) if e.status == RECEIVED), None)
    counted = receipt_index is not None
    received_at = history[receipt_index].received_at if receipt_index is not None else None
    receipt_day = calendar.receipt_day(received_at) if received_at else None

    paused_working_days = 0
    pause_started: dt.date | None = None
    supplements = 0
    end: RecordedEvent | None = None
    for e in history[receipt_index:] if receipt_index is not None else ():
        if e.status in PAUSE_STATUSES:
            supplements += e.status == SUPPLEMENT
            if pause_started is None:
                pause_started = local_date(e.occurred_at)
            continue
        if pause_started is not None:
            paused_working_days += calendar.working_days_between(pause_started, local_date(e.occurred_at))
            pause_started = None
        if e.status in END_STATUSES:
            end = e
            break

    due_at = _latest(e.due_at for e in history)
    due_day: dt.date | None = None
    due_from_source = False
    if isinstance(due_at, dt.datetime):
        due_day, due_from_source = local_date(due_at), True
    elif received_at is not None:
        duration = _latest_duration(history)
        if duration is not None:
            base = calendar.due_day(received_at=received_at, value=duration[0], unit=duration[1])
            due_day = calendar.add_working_days(base, paused_working_days)

    ended_on = local_date(end.occurred_at) if end else None
    timeliness: Timeliness | None = None
    if ended_on is not None:
        timeliness = classify(ended_on=ended_on, due_day=due_day, supplement_requests=supplements)

    return DossierState(
        dossier_code=last.dossier_code,
        revision=len(history),
        agency_code=last.agency_code,
        procedure_code=last.procedure_code,
        field_code=last.field_code,
        status=last.status,
        counted=counted,
        received_at=received_at,
        receipt_day=receipt_day,
        due_day=due_day,
        due_from_source=due_from_source,
        paused=end is None and pause_started is not None,
        pause_started_on=pause_started if end is None else None,
        supplement_requests=supplements,
        ended_on=ended_on,
        end_status=end.status if end else None,
        timeliness=timeliness,
        channel=_latest(e.channel for e in history),  # type: ignore[arg-type]
        online_payment=_latest(e.online_payment for e in history),  # type: ignore[arg-type]
        digitized=_latest(e.digitized for e in history),  # type: ignore[arg-type]
        synced_national=_latest(e.synced_national for e in history),  # type: ignore[arg-type]
    )


def _latest_duration(history: Sequence[RecordedEvent]) -> tuple[float, str] | None:
    found = None
    for e in history:
        if e.duration_value is not None and e.duration_unit is not None:
            found = (e.duration_value, e.duration_unit)
    return found


def classify(*, ended_on: dt.date, due_day: dt.date | None, supplement_requests: int) -> Timeliness | None:
    """Rule 5 (and rule 4's second supplement). None when no due day is known."""
    if supplement_requests >= 2:
        return "late"
    if due_day is None:
        return None
    if ended_on < due_day:
        return "early"
    if ended_on == due_day:
        return "on_time"
    return "late"


def open_state(
    *,
    paused: bool,
    due_day: dt.date | None,
    today: dt.date,
    calendar: WorkingCalendar,
    pause_started_on: dt.date | None = None,
    supplement_requests: int = 0,
) -> OpenState:
    """Rule 6 for an open dossier at ``today``: :func:`shared.rules.open_state`, due soon up to the next
    working day. Without ``pause_started_on`` a pause counts as begun on or before the due day."""
    facts = rules.OpenFacts(due_day, paused, pause_started_on, supplement_requests)
    return rules.open_state(facts, day=today, soon=calendar.next_working_day(today))


OrderKey = tuple[object, ...]

#: The event's optional facts of which the latest one sent stands (what ``derive_state`` reads with ``_latest``).
LATEST_WINS = ("channel", "online_payment", "digitized", "synced_national")


def sequence_key(e: RecordedEvent) -> OrderKey:
    return (e.sequence, e.occurred_at, e.source, e.event_id)


def _month(t: dt.datetime) -> tuple[int, int]:
    day = local_date(t)
    return day.year, day.month


def last_day_of_month(day: dt.date) -> dt.date:
    first_of_next = (day.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return first_of_next - dt.timedelta(days=1)


class MonthEnd(NamedTuple):
    """A dossier's fold as it stood at the end of ``day``, the last day of a month its events crossed;
    ``occurred_at`` is the latest occurrence among the events folded by then."""

    fold: Fold
    day: dt.date
    occurred_at: dt.datetime

    def told(self, *, calendar: WorkingCalendar) -> tuple[DossierState, dt.date, dt.datetime]:
        """What the tracker publishes of it: the dossier's state then, the day, the latest occurrence by then."""
        return self.fold.state(calendar=calendar), self.day, self.occurred_at


def time_key(e: RecordedEvent) -> OrderKey:
    return (e.occurred_at, e.sequence or 0, e.source, e.event_id)


@dataclass
class Fold:
    """derive_state's walk over a sorted history, kept as a value between events.

    ``by_sequence`` says whether every event so far had a ``sequence`` (the
    history is then ordered by it, else by ``occurred_at``), and ``last_*``
    hold the ordering key of the last event applied. Everything else is what
    the walk has gathered so far; :meth:`state` turns it into the dossier's
    state with the calendar.
    """

    dossier_code: str = ""
    count: int = 0
    by_sequence: bool = True
    last_sequence: int | None = None
    last_occurred_at: dt.datetime | None = None
    last_source: str = ""
    last_event_id: str = ""
    agency_code: str = ""
    procedure_code: str = ""
    field_code: str = ""
    status: int = 0
    counted: bool = False
    received_at: dt.datetime | None = None
    paused_working_days: int = 0
    pause_started_on: dt.date | None = None
    supplement_requests: int = 0
    ended_on: dt.date | None = None
    end_status: int | None = None
    source_due_day: dt.date | None = None
    duration_value: float | None = None
    duration_unit: str | None = None
    channel: int | None = None
    online_payment: bool | None = None
    digitized: bool | None = None
    synced_national: bool | None = None
    generation: int = 0

    @classmethod
    def of(cls, events: Iterable[RecordedEvent], *, calendar: WorkingCalendar, generation: int = 0) -> Fold:
        """The fold of a whole history, in any order."""
        fold = cls(generation=generation)
        for e in order_events(events):
            fold._step(e, calendar)
        return fold

    def last_key(self) -> OrderKey:
        if self.by_sequence:
            return (self.last_sequence, self.last_occurred_at, self.last_source, self.last_event_id)
        return (self.last_occurred_at, self.last_sequence or 0, self.last_source, self.last_event_id)

    def accepts(self, events: Sequence[RecordedEvent]) -> bool:
        """Whether ``events`` all sort after the last event applied, under the same ordering key."""
        if self.count == 0:
            return True
        if self.by_sequence and any(e.sequence is None for e in events):
            return False  # the whole history is now ordered by occurred_at
        key = sequence_key if self.by_sequence else time_key
        last = self.last_key()
        return all(key(e) > last for e in events)  # type: ignore[operator]

    def extend(self, events: Sequence[RecordedEvent], *, calendar: WorkingCalendar) -> Fold:
        """A new fold with ``events`` applied; only when :meth:`accepts` said so."""
        return self.extend_across_months(events, calendar=calendar)[0]

    def extend_across_months(
        self, events: Sequence[RecordedEvent], *, calendar: WorkingCalendar
    ) -> tuple[Fold, list[MonthEnd]]:
        """:meth:`extend`, and the fold as it stood at the end of each month the events cross (in Vietnam's
        time): a batch that holds events of a month and of the next (a history sent at once, a batch that
        straddles a month's last midnight) still tells what the dossier was at that month's end, which a closed
        month, quarter or year counts. A month end before the first of ``events`` is the stored state's."""
        if not self.accepts(events):
            raise ValueError("events sort before the folded history: fold the whole history again")
        fold = copy.copy(self)
        month_ends: list[MonthEnd] = []
        latest: dt.datetime | None = None  # the latest occurrence among the events applied from ``events``
        ordered = order_events(events) if self.count == 0 else sorted(
            events, key=sequence_key if self.by_sequence else time_key
        )  # a first batch may mix events with and without a sequence: ordered as a whole history is
        for e in ordered:
            if latest is not None and e.occurred_at > latest:
                if _month(e.occurred_at) > _month(latest):
                    month_ends.append(MonthEnd(copy.copy(fold), last_day_of_month(local_date(latest)), latest))
                latest = e.occurred_at
            fold._step(e, calendar)
            latest = latest or e.occurred_at
        return fold, month_ends

    @classmethod
    def month_ends_of(
        cls, history: Sequence[RecordedEvent], *, calendar: WorkingCalendar, since: dt.datetime, generation: int = 0
    ) -> list[MonthEnd]:
        """The month ends a whole ``history`` crosses, from the end of the month of ``since`` on: those a batch
        whose earliest event occurred at ``since`` told when it was first stored (and maybe later batches'), told
        again when it comes a second time (its facts may never have been published)."""
        first = last_day_of_month(local_date(since))
        ends = cls(generation=generation).extend_across_months(history, calendar=calendar)[1]
        return [end for end in ends if end.day >= first]

    def _step(self, e: RecordedEvent, calendar: WorkingCalendar) -> None:
        self.count += 1
        self.by_sequence = self.by_sequence and e.sequence is not None
        self.dossier_code = e.dossier_code
        self.last_sequence, self.last_occurred_at = e.sequence, e.occurred_at
        self.last_source, self.last_event_id = e.source, e.event_id
        self.agency_code, self.procedure_code, self.field_code = e.agency_code, e.procedure_code, e.field_code
        self.status = e.status
        if not self.counted:
            if e.status == RECEIVED:  # rule 1: the first receipt starts the dossier's clock
                self.counted = True
                self.received_at = e.received_at
        elif self.ended_on is None:
            if e.status in PAUSE_STATUSES:
                self.supplement_requests += e.status == SUPPLEMENT
                if self.pause_started_on is None:
                    self.pause_started_on = local_date(e.occurred_at)
            else:
                if self.pause_started_on is not None:
                    self.paused_working_days += calendar.working_days_between(
                        self.pause_started_on, local_date(e.occurred_at)
                    )
                    self.pause_started_on = None
                if e.status in END_STATUSES:
                    self.ended_on = local_date(e.occurred_at)
                    self.end_status = e.status
        if e.due_at is not None:
            self.source_due_day = local_date(e.due_at)
        if e.duration_value is not None and e.duration_unit is not None:
            self.duration_value, self.duration_unit = e.duration_value, e.duration_unit
        for name in LATEST_WINS:
            value = getattr(e, name)
            if value is not None:
                setattr(self, name, value)

    def state(self, *, calendar: WorkingCalendar) -> DossierState:
        if self.count == 0:
            raise ValueError("a dossier needs at least one event")
        received_at = self.received_at
        due_day: dt.date | None = None
        due_from_source = False
        if self.source_due_day is not None:
            due_day, due_from_source = self.source_due_day, True
        elif received_at is not None and self.duration_value is not None and self.duration_unit is not None:
            base = calendar.due_day(received_at=received_at, value=self.duration_value, unit=self.duration_unit)
            due_day = calendar.add_working_days(base, self.paused_working_days)
        timeliness: Timeliness | None = None
        if self.ended_on is not None:
            timeliness = classify(ended_on=self.ended_on, due_day=due_day, supplement_requests=self.supplement_requests)
        ended = self.ended_on is not None
        return DossierState(
            dossier_code=self.dossier_code,
            revision=self.count,
            agency_code=self.agency_code,
            procedure_code=self.procedure_code,
            field_code=self.field_code,
            status=self.status,
            counted=self.counted,
            received_at=received_at,
            receipt_day=calendar.receipt_day(received_at) if received_at else None,
            due_day=due_day,
            due_from_source=due_from_source,
            paused=not ended and self.pause_started_on is not None,
            pause_started_on=None if ended else self.pause_started_on,
            supplement_requests=self.supplement_requests,
            ended_on=self.ended_on,
            end_status=self.end_status,
            timeliness=timeliness,
            channel=self.channel,
            online_payment=self.online_payment,
            digitized=self.digitized,
            synced_national=self.synced_national,
            generation=self.generation,
        )


FOLD_FIELDS = tuple(f.name for f in fields(Fold))
