"""Quiet hours: outside working hours only new critical alerts go out.

Working hours here are 07:00-17:00 on working days of the Vietnamese
calendar (the lunch break is not quiet: a notice at noon harms nobody).
Held notices go out at the next working moment.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

from shared.calendar import AFTERNOON, MORNING, to_local


class WorkingDays(Protocol):
    def is_working_day(self, day: dt.date) -> bool: ...


def is_quiet(now: dt.datetime, calendar: WorkingDays) -> bool:
    local = to_local(now)
    if not calendar.is_working_day(local.date()):
        return True
    t = local.time()
    return not (MORNING[0] <= t < AFTERNOON[1])


def bypasses_quiet(*, severity: str, state: str, repeat: int = 0) -> bool:
    """A new critical alert goes out at once; reminders and resolved notices wait for working hours."""
    return severity == "critical" and state == "firing" and repeat == 0
