"""A dossier's state as a pure function of its events (contract rules 1-6).

No I/O, no clock: the state is derived from the dossier's whole event history
sorted by ``sequence`` (else ``occurred_at``), so the result is the same
whatever the arrival order, and an event arriving late simply re-derives it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from shared.calendar import WorkingCalendar, local_date
from shared.events import END_STATUSES, PAUSE_STATUSES, RECEIVED, SUPPLEMENT, DossierStatusChanged

Timeliness = Literal["early", "on_time", "late"]
OpenState = Literal["in_time", "due_soon", "awaiting_supplement", "overdue"]
OPEN_STATES: tuple[OpenState, ...] = ("in_time", "due_soon", "awaiting_supplement", "overdue")
TIMELINESS: tuple[Timeliness, ...] = ("early", "on_time", "late")


@dataclass(frozen=True)
class RecordedEvent:
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


@dataclass(frozen=True)
class DossierState:
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
    *, paused: bool, due_day: dt.date | None, today: dt.date, calendar: WorkingCalendar
) -> OpenState:
    """Rule 6 for an open dossier at ``today``."""
    if paused:
        return "awaiting_supplement"
    if due_day is None:
        return "in_time"
    if today > due_day:
        return "overdue"
    if due_day <= calendar.next_working_day(today):
        return "due_soon"
    return "in_time"
