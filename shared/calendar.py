"""Vietnamese working-day calendar (contract rules 1-3).

Working days are Monday to Friday minus Vietnam's public holidays and
compensatory days off (from the ``holidays`` package, country VN), plus the
make-up working Saturdays the package knows, corrected by an operator's
override file::

    days_off: [2026-01-02]        # days off, whatever the library says
    working_days: [2026-01-10]    # working days, whatever the library says

Pure: no clock, no environment. Build one with :func:`load_calendar`.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo

import holidays
import yaml

VN_TZ = ZoneInfo("Asia/Ho_Chi_Minh")

#: Office hours of the one-stop desks: two sessions a day.
MORNING = (dt.time(7, 0), dt.time(11, 30))
AFTERNOON = (dt.time(13, 30), dt.time(17, 0))
#: A receipt after this time counts from the next working day (rule 1).
RECEIPT_CUTOFF = dt.time(17, 0)
#: Working hours in a working day (4.5 + 3.5).
HOURS_PER_DAY = 8.0

DEFAULT_OVERRIDES = Path(__file__).parent / "data" / "calendar_overrides.yaml"


class CalendarOverrideError(ValueError):
    """The override file is not what the contract says it should be."""


@dataclass(frozen=True)
class CalendarOverrides:
    days_off: frozenset[dt.date] = frozenset()
    working_days: frozenset[dt.date] = frozenset()

    @classmethod
    def from_yaml(cls, text: str, *, source: str = "<overrides>") -> CalendarOverrides:
        try:
            # BaseLoader keeps scalars as text, so a bad date is reported by
            # its key and index rather than as a YAML constructor error.
            raw = yaml.load(text, Loader=yaml.BaseLoader) or {}
        except yaml.YAMLError as exc:
            raise CalendarOverrideError(f"{source}: not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise CalendarOverrideError(f"{source}: expected a mapping with days_off and working_days")
        unknown = set(raw) - {"days_off", "working_days"}
        if unknown:
            raise CalendarOverrideError(f"{source}: unknown keys {sorted(unknown)}; allowed: days_off, working_days")
        days_off = _dates(raw.get("days_off"), key="days_off", source=source)
        working = _dates(raw.get("working_days"), key="working_days", source=source)
        both = days_off & working
        if both:
            listed = ", ".join(d.isoformat() for d in sorted(both))
            raise CalendarOverrideError(f"{source}: {listed} listed both as days_off and working_days")
        return cls(days_off=days_off, working_days=working)

    @classmethod
    def from_file(cls, path: str | Path) -> CalendarOverrides:
        path = Path(path)
        return cls.from_yaml(path.read_text(encoding="utf-8"), source=str(path))


def _dates(value: object, *, key: str, source: str) -> frozenset[dt.date]:
    if value is None:
        return frozenset()
    if not isinstance(value, list):
        raise CalendarOverrideError(f"{source}: {key} must be a list of dates (YYYY-MM-DD)")
    out: set[dt.date] = set()
    for i, item in enumerate(value):
        if isinstance(item, dt.datetime) or not isinstance(item, (dt.date, str)):
            raise CalendarOverrideError(f"{source}: {key}[{i}] must be a date (YYYY-MM-DD)")
        if isinstance(item, str):
            try:
                item = dt.date.fromisoformat(item)
            except ValueError:
                raise CalendarOverrideError(f"{source}: {key}[{i}] must be a date (YYYY-MM-DD)") from None
        out.add(item)
    return frozenset(out)


@dataclass(frozen=True)
class WorkingCalendar:
    overrides: CalendarOverrides = field(default_factory=CalendarOverrides)

    # -- days -------------------------------------------------------------
    # The calendar is immutable, so day arithmetic is memoised: ingest asks
    # the same few hundred questions for every dossier.
    @lru_cache(maxsize=8192)  # noqa: B019 - the instance is immutable and long-lived
    def is_working_day(self, day: dt.date) -> bool:
        return _is_working_day(self.overrides, day)

    @lru_cache(maxsize=8192)  # noqa: B019
    def next_working_day(self, day: dt.date) -> dt.date:
        """The first working day strictly after ``day``."""
        day += dt.timedelta(days=1)
        while not self.is_working_day(day):
            day += dt.timedelta(days=1)
        return day

    def on_or_after(self, day: dt.date) -> dt.date:
        """``day`` if it is a working day, else the next working day."""
        return day if self.is_working_day(day) else self.next_working_day(day)

    @lru_cache(maxsize=16384)  # noqa: B019
    def add_working_days(self, day: dt.date, n: int) -> dt.date:
        """The ``n``-th working day after ``day`` (``day`` itself not counted)."""
        if n < 0:
            raise ValueError("n must be >= 0")
        for _ in range(n):
            day = self.next_working_day(day)
        return day

    def working_days_between(self, start: dt.date, end: dt.date) -> int:
        """Working days in the half-open interval (start, end]."""
        if end <= start:
            return 0
        return sum(1 for i in range(1, (end - start).days + 1) if self.is_working_day(start + dt.timedelta(days=i)))

    def working_days_in(self, days: Iterable[dt.date]) -> int:
        return sum(1 for d in days if self.is_working_day(d))

    # -- receipt and due days (rules 1 and 3) ------------------------------
    def receipt_day(self, received_at: dt.datetime) -> dt.date:
        """Rule 1: the local date; after 17:00 or on a day off, the next working day."""
        local = to_local(received_at)
        day = local.date()
        if not self.is_working_day(day):
            return self.next_working_day(day)
        if local.timetz().replace(tzinfo=None) > RECEIPT_CUTOFF:
            return self.next_working_day(day)
        return day

    def due_after_working_days(self, receipt_day: dt.date, n: float) -> dt.date:
        """``working_days`` N: the N-th working day after the receipt day.

        A fractional N is rounded up: a part of a working day still ends on a
        working day.
        """
        return self.add_working_days(receipt_day, math.ceil(n))

    def due_after_calendar_days(self, receipt_day: dt.date, n: float) -> dt.date:
        """``days`` N: receipt day + N days, moved forward off a day off."""
        return self.on_or_after(receipt_day + dt.timedelta(days=math.ceil(n)))

    def add_working_hours(self, start: dt.datetime, hours: float) -> dt.datetime:
        """``hours`` N: N working hours from ``start`` (07:00-11:30, 13:30-17:00).

        Returns an aware datetime in Asia/Ho_Chi_Minh. Counting starts at the
        next working moment when ``start`` is outside working hours.
        """
        if hours < 0:
            raise ValueError("hours must be >= 0")
        local = to_local(start).replace(tzinfo=None)
        remaining = dt.timedelta(hours=hours)
        day = local.date()
        cursor = local.time()
        while True:
            if self.is_working_day(day):
                for begin, end in (MORNING, AFTERNOON):
                    if cursor >= end:
                        continue
                    seg_start = max(cursor, begin)
                    avail = _combine(day, end) - _combine(day, seg_start)
                    if remaining <= avail:
                        return (_combine(day, seg_start) + remaining).replace(tzinfo=VN_TZ)
                    remaining -= avail
                    cursor = end
            day += dt.timedelta(days=1)
            cursor = dt.time(0, 0)

    def due_day(self, *, received_at: dt.datetime, value: float, unit: str) -> dt.date:
        """Rule 3 from a statutory duration."""
        receipt = self.receipt_day(received_at)
        if unit == "working_days":
            return self.due_after_working_days(receipt, value)
        if unit == "days":
            return self.due_after_calendar_days(receipt, value)
        if unit == "hours":
            local = to_local(received_at)
            start = local if local.date() == receipt else _combine(receipt, MORNING[0]).replace(tzinfo=VN_TZ)
            return self.add_working_hours(start, value).date()
        raise ValueError(f"unknown duration unit {unit!r}")


def _combine(day: dt.date, t: dt.time) -> dt.datetime:
    return dt.datetime.combine(day, t)


def to_local(moment: dt.datetime) -> dt.datetime:
    """An aware datetime in Asia/Ho_Chi_Minh; naive datetimes are refused."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("naive datetime: a time needs an offset")
    return moment.astimezone(VN_TZ)


def local_date(moment: dt.datetime) -> dt.date:
    return to_local(moment).date()


def period_name(key: str) -> str:
    """A period key as a Vietnamese sentence names it: ``2026-W48`` -> ``tuần 48/2026``, ``2026-11`` ->
    ``tháng 11/2026``, ``2026-Q4`` -> ``quý IV/2026``, ``2026`` -> ``năm 2026``."""
    if "-Q" in key:
        year, quarter = key.split("-Q")
        return f"quý {('I', 'II', 'III', 'IV')[int(quarter) - 1]}/{year}"
    if "-W" in key:
        year, week = key.split("-W")
        return f"tuần {int(week)}/{year}"
    if "-" in key:
        year, month = key.split("-")
        return f"tháng {int(month)}/{year}"
    return f"năm {key}"


@lru_cache(maxsize=64)
def _vn_holidays(year: int) -> tuple[frozenset[dt.date], frozenset[dt.date]]:
    vn = holidays.country_holidays("VN", years=year)
    weekend_workdays = frozenset(d for d in getattr(vn, "weekend_workdays", ()) if d.year == year)
    return frozenset(vn.keys()), weekend_workdays


def _is_working_day(overrides: CalendarOverrides, day: dt.date) -> bool:
    if day in overrides.working_days:
        return True
    if day in overrides.days_off:
        return False
    days_off, weekend_workdays = _vn_holidays(day.year)
    if day in weekend_workdays:
        return True
    if day.weekday() >= 5:
        return False
    return day not in days_off


def load_calendar(path: str | Path | None = None) -> WorkingCalendar:
    """The calendar with the override file at ``path`` (default: the shipped one)."""
    return WorkingCalendar(CalendarOverrides.from_file(path or DEFAULT_OVERRIDES))
