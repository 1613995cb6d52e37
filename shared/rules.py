"""Rule 6 of the contract, once: how an open dossier stands at a given day.

dossier_tracker (the ``parwatch_dossiers_open`` gauge), scoring (the open
dossiers "not overdue" of rule 7's on-time rate, the weekly review) and
deadline_monitor (which dossiers its alerts speak of) all read it from here,
so the Prometheus rule, the on-time rate and the alerts agree. Pure: no
clock, no calendar; ``day`` and the due-soon horizon are passed in.

The rules it joins (contract):

* rule 6: an open dossier is awaiting supplement (paused), overdue (the day
  is after the due day), due soon (due today or on the next working day),
  else in time;
* rule 7: a paused dossier is not overdue if its pause began on or before
  its due day (a pause begun after the due day does not stop the overdue);
* rule 4: a second supplement request makes the dossier late whatever its
  dates: open, it is overdue, even while paused.

A pause counts at ``day`` only once it has begun (a dossier judged at a past
day from its latest state). A dossier with no due day is never overdue by
date.

The cases, in the order they are decided (:data:`CASES` holds them as data,
and ``tests/unit/shared/test_shared_rules.py`` checks each one):

====================  ===========  ============================  ===================
supplement requests   paused       due day against the day       state
====================  ===========  ============================  ===================
2 or more             any          any (or none)                 overdue
under 2               no           before the day                overdue
under 2               since after  before the day                overdue
                      the due day
under 2               since on or  any (or none)                 awaiting_supplement
                      before the
                      due day
under 2               not yet      as if not paused              (as if not paused)
                      begun
under 2               no           the day or the next working   due_soon
                                   day (``soon``)
under 2               no           later, or no due day          in_time
====================  ===========  ============================  ===================

A paused dossier with no due day is awaiting supplement; a pause begun after
the due day, while the day is not yet after it, cannot happen at a day on or
after the pause (the pause would be after the day).

scoring aggregates open dossiers by (agency, due day, :class:`Clock`), the
part of the classification that does not depend on the day, and asks
:func:`overdue` of each cell: :func:`open_state` is built on the same two
functions.
"""

from __future__ import annotations

import datetime as dt
from enum import IntEnum
from typing import Literal, NamedTuple, Protocol

OpenState = Literal["in_time", "due_soon", "awaiting_supplement", "overdue"]
OPEN_STATES: tuple[OpenState, ...] = ("in_time", "due_soon", "awaiting_supplement", "overdue")


class OpenDossier(Protocol):
    """What the rule reads of an open dossier (the tracker's state, scoring's and the monitor's facts)."""

    @property
    def due_day(self) -> dt.date | None: ...

    @property
    def paused(self) -> bool: ...

    @property
    def pause_started_on(self) -> dt.date | None: ...

    @property
    def supplement_requests(self) -> int: ...


class OpenFacts(NamedTuple):
    """An :class:`OpenDossier` built from a row's columns."""

    due_day: dt.date | None
    paused: bool = False
    pause_started_on: dt.date | None = None
    supplement_requests: int = 0


class Clock(IntEnum):
    """How an open dossier's clock stands, whatever the day (scoring stores the value in its open table)."""

    RUNNING = 0  # overdue once the day is after the due day
    STOPPED = 1  # paused, the pause began on or before the due day: never overdue (rule 7)
    LATE = 2  # a second supplement request: overdue whatever its dates (rule 4)


def late_by_supplements(d: OpenDossier) -> bool:
    """Rule 4: a second supplement request makes the dossier late, whatever its dates."""
    return d.supplement_requests >= 2


def pause_begun(d: OpenDossier, *, day: dt.date | None = None) -> bool:
    """Paused at ``day`` (None: now, whenever the pause began). A pause of unknown start counts."""
    if not d.paused:
        return False
    return day is None or d.pause_started_on is None or d.pause_started_on <= day


def pause_stops_clock(d: OpenDossier, *, day: dt.date | None = None) -> bool:
    """Rule 7: paused at ``day``, the pause having begun on or before the due day (unknown start: it counts)."""
    if not pause_begun(d, day=day) or d.due_day is None:
        return False
    return d.pause_started_on is None or d.pause_started_on <= d.due_day


def clock(d: OpenDossier, *, day: dt.date | None = None) -> Clock:
    """The dossier's clock at ``day`` (None: now)."""
    if late_by_supplements(d):
        return Clock.LATE
    if pause_stops_clock(d, day=day):
        return Clock.STOPPED
    return Clock.RUNNING


def overdue(c: Clock, *, due_day: dt.date | None, day: dt.date) -> bool:
    """Whether a dossier whose clock is ``c`` at ``day`` is overdue then."""
    if c is Clock.LATE:
        return True
    if c is Clock.STOPPED or due_day is None:
        return False
    return day > due_day


def open_state(d: OpenDossier, *, day: dt.date, soon: dt.date) -> OpenState:
    """Rule 6 for an open dossier at ``day`` (the table of the module docstring).

    ``soon``: the last due day that is "due soon" at ``day``, the next working
    day after it (``calendar.next_working_day(day)``; deadline_monitor's lead
    setting may widen it).
    """
    if overdue(clock(d, day=day), due_day=d.due_day, day=day):
        return "overdue"
    if pause_begun(d, day=day):
        return "awaiting_supplement"
    if d.due_day is not None and d.due_day <= soon:
        return "due_soon"
    return "in_time"


def is_overdue(d: OpenDossier, *, day: dt.date) -> bool:
    """:func:`open_state` is ``overdue`` (the due-soon horizon plays no part in it)."""
    return overdue(clock(d, day=day), due_day=d.due_day, day=day)


class Case(NamedTuple):
    """One row of the table: a dossier, the day it is judged, the next working day, the state."""

    name: str
    facts: OpenFacts
    day: dt.date
    soon: dt.date
    state: OpenState


_D = dt.date
#: Judged on Thursday 10/12/2026 (next working day Friday 11/12), due day as named.
_THU, _FRI = _D(2026, 12, 10), _D(2026, 12, 11)

CASES: tuple[Case, ...] = (
    Case("due later", OpenFacts(_D(2026, 12, 20)), _THU, _FRI, "in_time"),
    Case("no due day", OpenFacts(None), _THU, _FRI, "in_time"),
    Case("due the next working day", OpenFacts(_FRI), _THU, _FRI, "due_soon"),
    Case("due today", OpenFacts(_THU), _THU, _FRI, "due_soon"),
    Case("due yesterday", OpenFacts(_D(2026, 12, 9)), _THU, _FRI, "overdue"),
    Case("paused before the due day", OpenFacts(_D(2026, 12, 9), True, _D(2026, 12, 8)), _THU, _FRI,
         "awaiting_supplement"),
    Case("paused on the due day", OpenFacts(_D(2026, 12, 9), True, _D(2026, 12, 9)), _THU, _FRI,
         "awaiting_supplement"),
    Case("paused, due later", OpenFacts(_D(2026, 12, 20), True, _D(2026, 12, 8)), _THU, _FRI,
         "awaiting_supplement"),
    Case("paused, no due day", OpenFacts(None, True, _D(2026, 12, 8)), _THU, _FRI, "awaiting_supplement"),
    Case("paused after the due day", OpenFacts(_D(2026, 12, 7), True, _D(2026, 12, 9)), _THU, _FRI, "overdue"),
    Case("second supplement request, paused", OpenFacts(_D(2026, 12, 20), True, _D(2026, 12, 8), 2), _THU, _FRI,
         "overdue"),
    Case("second supplement request, resumed", OpenFacts(_D(2026, 12, 20), False, None, 2), _THU, _FRI, "overdue"),
    Case("second supplement request, no due day", OpenFacts(None, False, None, 3), _THU, _FRI, "overdue"),
    Case("one supplement request, resumed", OpenFacts(_D(2026, 12, 20), False, None, 1), _THU, _FRI, "in_time"),
    Case("pause not yet begun at the day", OpenFacts(_FRI, True, _D(2026, 12, 14)), _THU, _FRI, "due_soon"),
)
