"""Plan files: the tasks a PAR plan assigns, their owners and due rules.

A plan file (YAML, documented in ``docs/plan-schema.md``) turns a plan such as
Plan 146/KH-UBND (Tuy Phong, 16/6/2023) into data. This module is pure: no
clock, no environment, no I/O except reading a file in :func:`load_plan` and
:func:`load_agencies`.

- The pydantic models check the *shape* of a plan (fields, types, due-rule
  forms, impossible days such as 30 February).
- :func:`validate_plan_text` checks shape *and meaning* (agency codes from
  ``shared/data/agencies.yaml``, unique ids, due dates inside the plan's
  validity, known target metrics) and reports every error with its YAML line
  and a dotted field path such as ``tasks[3].due.day``.
- :func:`occurrences` expands a task's due rule into dated occurrences. A due
  day that falls on a day off moves forward to the next working day (Civil
  Code: a period ending on a day off ends on the next working day); the
  occurrence keeps the period key of the day the rule names.
"""

from __future__ import annotations

import calendar as _gregorian
import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol, Union

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from shared import agencies as _shared_agencies
from shared.plans import Ident, Number, PlanDate, Target, Title, plain_date  # shared with scoring (KPI targets)

DEFAULT_AGENCIES = _shared_agencies.DEFAULT_FILE

Group = Literal["all", "departments", "communes"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: Longest day of each month; 29 February is allowed and falls on 28 February in common years.
_MONTH_DAYS = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30, 12: 31}


# -- scalar types (dates, numbers, ids and titles: shared.plans, which scoring reads too) --------------


def _one_or_many(value: object) -> object:
    return [value] if isinstance(value, str) else value


Code = Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]*$")]
Codes = Annotated[tuple[Code, ...], BeforeValidator(_one_or_many)]

Day = Annotated[int, Field(strict=True, ge=1, le=31)]
Month = Annotated[int, Field(strict=True, ge=1, le=12)]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


# -- due rules ----------------------------------------------------------------


class OnDate(_Frozen):
    """One-shot: due on ``date``."""

    date: PlanDate


class _Recurring(_Frozen):
    """Bounds of a recurring rule: the scheduled days lie in [start, end]."""

    start: PlanDate | None = None
    end: PlanDate | None = None

    @field_validator("end")
    @classmethod
    def _end_not_before_start(cls, end: dt.date | None, info: ValidationInfo) -> dt.date | None:
        start = info.data.get("start")
        if end is not None and start is not None and end < start:
            raise PydanticCustomError("rule_bounds", "end {end} is before start {start}", {"end": end, "start": start})
        return end


class Weekly(_Recurring):
    every: Literal["week"]
    weekday: Weekday


class Monthly(_Recurring):
    every: Literal["month"]
    day: Day


class Yearly(_Recurring):
    every: Literal["year"]
    month: Month
    day: Day

    @field_validator("day")
    @classmethod
    def _day_exists(cls, day: int, info: ValidationInfo) -> int:
        month = info.data.get("month")
        if month is not None and day > _MONTH_DAYS[month]:
            raise PydanticCustomError("no_such_day", "month {month} has no day {day}", {"month": month, "day": day})
        return day


class Continuous(_Frozen):
    """Ongoing duty (thường xuyên): no occurrence, never overdue, can be reported on."""

    continuous: Literal[True]


#: A parsed due rule.
Rule = Union[OnDate, Weekly, Monthly, Yearly, Continuous]
_TAGS: dict[type, str] = {
    OnDate: "@date", Weekly: "@week", Monthly: "@month", Yearly: "@year", Continuous: "@continuous",
}
_DUE_FORMS = "{date: YYYY-MM-DD}, {every: week|month|year, ...} or {continuous: true}"


def _due_form(value: Any) -> str | None:
    if isinstance(value, BaseModel):
        return _TAGS.get(type(value))
    if not isinstance(value, dict):
        return None
    if "continuous" in value:
        return "@continuous"
    if "date" in value:
        return "@date"
    every = value.get("every")
    return f"@{every}" if every in ("week", "month", "year") else None


DueRule = Annotated[
    Annotated[OnDate, Tag("@date")] | Annotated[Weekly, Tag("@week")] | Annotated[Monthly, Tag("@month")] | Annotated[Yearly, Tag("@year")] | Annotated[Continuous, Tag("@continuous")],
    Discriminator(
        _due_form,
        custom_error_type="due_form",
        custom_error_message=f"due must be one of {_DUE_FORMS}",
    ),
]
_DUE_ADAPTER: TypeAdapter[Any] = TypeAdapter(DueRule)


# -- plan ---------------------------------------------------------------------


class Owner(_Frozen):
    """Who must do a task: a group of agencies, agency codes, or both.

    In YAML, ``owner: PNV`` and ``owner: [PNV, PTP]`` are short for
    ``owner: {codes: [...]}``.
    """

    group: Group | None = None
    codes: tuple[Code, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, (str, list, tuple)):
            return {"codes": _one_or_many(value)}
        return value

    @model_validator(mode="after")
    def _someone(self) -> Owner:
        if self.group is None and not self.codes:
            raise PydanticCustomError("owner_empty", "owner needs a group or at least one agency code")
        return self


class TaskTarget(_Frozen):
    """The plan target a task serves; ``value`` overrides the target's value for this task."""

    metric: Ident
    value: Number | None = None


class Task(_Frozen):
    id: Ident
    title: Title
    description: str | None = None
    section: Ident
    owner: Owner
    collaborators: Codes = ()
    due: DueRule
    target: TaskTarget | None = None
    report_to: Codes = ()
    copy_to: Codes = ()


class Plan(_Frozen):
    plan_id: Ident
    number: str | None = None
    title: Title
    issued_on: PlanDate
    issuer: Code
    valid_from: PlanDate
    valid_until: PlanDate
    copied_from: Ident | None = None
    targets: tuple[Target, ...] = ()
    tasks: tuple[Task, ...]

    @field_validator("valid_until")
    @classmethod
    def _until_after_from(cls, until: dt.date, info: ValidationInfo) -> dt.date:
        start = info.data.get("valid_from")
        if start is not None and until < start:
            raise PydanticCustomError("validity", "valid_until {until} is before valid_from {start}",
                                      {"until": until, "start": start})
        return until

    @field_validator("tasks", mode="before")
    @classmethod
    def _some_task(cls, tasks: Any) -> Any:
        if isinstance(tasks, (list, tuple)) and not tasks:
            raise PydanticCustomError("no_task", "a plan needs at least one task")
        return tasks

    @field_validator("tasks")
    @classmethod
    def _bind_recurring_rules(cls, tasks: tuple[Task, ...], info: ValidationInfo) -> tuple[Task, ...]:
        """Recurring rules without start/end run over the plan's validity."""
        start, end = info.data.get("valid_from"), info.data.get("valid_until")
        if start is None or end is None:
            return tasks
        return tuple(_bind(task, start=start, end=end) for task in tasks)

    def task(self, task_id: str) -> Task:
        for task in self.tasks:
            if task.id == task_id:
                return task
        raise KeyError(task_id)

    def target(self, target_id: str) -> Target:
        for target in self.targets:
            if target.id == target_id:
                return target
        raise KeyError(target_id)


def _bind(task: Task, *, start: dt.date, end: dt.date) -> Task:
    rule = task.due
    if not isinstance(rule, (Weekly, Monthly, Yearly)):
        return task
    bounded = rule.model_copy(update={"start": rule.start or start, "end": rule.end or end})
    return task.model_copy(update={"due": bounded})


# -- agencies -----------------------------------------------------------------

# The directory is shared by every service (``shared.agencies``); these names stay for the plan code and its callers.
Agency = _shared_agencies.Agency
Agencies = _shared_agencies.AgencyDirectory
parse_agencies = _shared_agencies.parse_agencies


def load_agencies(path: str | Path | None = None, *, extra: str | Path | None = None) -> Agencies:
    """The agencies file at ``path`` (default: ``shared/data/agencies.yaml``), extended by ``extra``."""
    return _shared_agencies.load_agencies(path, extra=extra)


class UnknownAgencyError(ValueError):
    """A plan names an agency code the agencies file does not hold."""


def resolve_owners(task: Task, agencies: Agencies) -> list[str]:
    """The agency codes that own ``task``, in the agencies file's order, each once."""
    unknown = sorted(set(task.owner.codes) - agencies.codes)
    if unknown:
        raise UnknownAgencyError(f"task {task.id}: unknown agency codes {', '.join(unknown)}")
    wanted = set(task.owner.codes)
    if task.owner.group is not None:
        wanted |= set(agencies.members(task.owner.group))
    return [a.code for a in agencies.agencies if a.code in wanted]


# -- occurrences --------------------------------------------------------------


class WorkingDays(Protocol):
    """What occurrences need from ``shared.calendar.WorkingCalendar``."""

    def is_working_day(self, day: dt.date) -> bool: ...

    def on_or_after(self, day: dt.date) -> dt.date: ...


@dataclass(frozen=True)
class Occurrence:
    """One due instance of a task. ``period`` is None for a one-shot task."""

    task_id: str
    period: str | None
    due_day: dt.date


def period_key(rule: Rule, day: dt.date) -> str | None:
    """The period a scheduled day belongs to: ``2023-W27``, ``2023-07``, ``2023``; None for one-shot rules."""
    if isinstance(rule, Weekly):
        iso = day.isocalendar()
        return f"{iso.year}-W{iso.week:02d}"
    if isinstance(rule, Monthly):
        return f"{day.year}-{day.month:02d}"
    if isinstance(rule, Yearly):
        return f"{day.year}"
    return None


def occurrences(task: Task, *, start: dt.date, end: dt.date, calendar: WorkingDays) -> list[Occurrence]:
    """The task's occurrences whose due day (moved off days off) lies in [start, end], by due day.

    The rule's own ``start``/``end`` bound the scheduled days, not the due
    days: a rule ending 31/12/2023, a Sunday, still falls due on 2/1/2024.
    """
    rule = task.due
    if end < start or isinstance(rule, Continuous):
        return []
    lo, hi = _first_scheduled_day(start, calendar), end
    if isinstance(rule, (Weekly, Monthly, Yearly)):
        lo = max(lo, rule.start) if rule.start else lo
        hi = min(hi, rule.end) if rule.end else hi
    found = []
    for day in _scheduled_days(rule, lo=lo, hi=hi):
        due = calendar.on_or_after(day)
        if start <= due <= end:
            found.append(Occurrence(due_day=due, task_id=task.id, period=period_key(rule, day)))
    return found


def _first_scheduled_day(start: dt.date, calendar: WorkingDays) -> dt.date:
    """The earliest scheduled day whose due day can be on or after ``start``.

    That is the day after the last working day before ``start``: scheduled
    days in between are days off and move forward to ``start`` or later.
    """
    day = start - dt.timedelta(days=1)
    for _ in range(366):
        if calendar.is_working_day(day):
            return day + dt.timedelta(days=1)
        day -= dt.timedelta(days=1)
    raise ValueError(f"no working day in the year before {start}")


def _scheduled_days(rule: Rule, *, lo: dt.date, hi: dt.date) -> Iterator[dt.date]:
    if isinstance(rule, OnDate):
        days: Iterator[dt.date] = iter([rule.date])
    elif isinstance(rule, Weekly):
        days = _weekly(WEEKDAYS.index(rule.weekday), lo=lo, hi=hi)
    elif isinstance(rule, Monthly):
        days = (_clamped(y, m, rule.day) for y, m in _months(lo, hi))
    elif isinstance(rule, Yearly):
        days = (_clamped(y, rule.month, rule.day) for y in range(lo.year, hi.year + 1))
    else:
        days = iter(())
    return (d for d in days if lo <= d <= hi)


def _weekly(weekday: int, *, lo: dt.date, hi: dt.date) -> Iterator[dt.date]:
    day = lo + dt.timedelta(days=(weekday - lo.weekday()) % 7)
    while day <= hi:
        yield day
        day += dt.timedelta(days=7)


def _months(lo: dt.date, hi: dt.date) -> Iterator[tuple[int, int]]:
    for index in range(lo.year * 12 + lo.month - 1, hi.year * 12 + hi.month):
        year, month0 = divmod(index, 12)
        yield year, month0 + 1


def _clamped(year: int, month: int, day: int) -> dt.date:
    """``day`` of the month, or its last day when the month is shorter (31 April is 30 April)."""
    return dt.date(year, month, min(day, _gregorian.monthrange(year, month)[1]))


# -- validation ---------------------------------------------------------------

PathPart = Union[str, int]


@dataclass(frozen=True, order=True)
class PlanError:
    """One problem in a plan file: its 1-based line (None if unknown) and dotted field path."""

    line: int | None
    field: str
    message: str
    source: str = ""

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line is not None else self.source
        return f"{where}: {self.field or '(file)'}: {self.message}"


class PlanValidationError(ValueError):
    def __init__(self, errors: Sequence[PlanError]) -> None:
        self.errors = list(errors)
        super().__init__("invalid plan file:\n" + "\n".join(str(e) for e in self.errors))


class _PlanLoader(yaml.SafeLoader):
    """SafeLoader that keeps an impossible date (``2023-02-30``) as text.

    PyYAML raises a bare ValueError while building such a date, which would
    hide every other error of the file; kept as text, the schema reports it
    with its line and field like any other bad value.
    """


def _timestamp_or_text(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    try:
        return yaml.SafeLoader.construct_yaml_timestamp(loader, node)
    except ValueError:
        return loader.construct_scalar(node)


_PlanLoader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_or_text)


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_PlanLoader)


def load_plan(path: str | Path, *, agencies: Agencies | None = None) -> Plan:
    """Read, validate and return a plan; raise PlanValidationError listing every error."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    errors = validate_plan_text(text, source=str(path), agencies=agencies)
    if errors:
        raise PlanValidationError(errors)
    return Plan.model_validate(_load_yaml(text))


def validate_plan_text(text: str, *, source: str, agencies: Agencies | None = None) -> list[PlanError]:
    """Every error of a plan file, sorted by line. An empty list means the plan is valid.

    ``agencies`` defaults to ``shared/data/agencies.yaml``.
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = _load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        return [PlanError(line=line, field="", message=f"not valid YAML: {_yaml_problem(exc)}", source=source)]
    if root is None or not isinstance(data, dict):
        line = root.start_mark.line + 1 if root is not None else 1
        return [PlanError(line=line, field="", message="a plan file is a YAML mapping (plan_id, title, ..., tasks)",
                          source=source)]
    found = list(_duplicate_keys(root, ()))
    found += _schema_errors(data)
    found += _meaning_errors(data, agencies or load_agencies())
    errors = {_locate(root, path, message, source=source) for path, message in found}
    return sorted(errors, key=lambda e: (e.line or 0, e.field, e.message))


def _yaml_problem(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None)
    context = getattr(exc, "context", None)
    return " ".join(p for p in (context, problem) if p) or str(exc)


def _schema_errors(data: dict[str, Any]) -> list[tuple[tuple[PathPart, ...], str]]:
    try:
        Plan.model_validate(data)
    except ValidationError as exc:
        return [(tuple(err["loc"]), _message(err)) for err in exc.errors()]
    return []


_MESSAGES = {
    "extra_forbidden": "unknown field",
    "missing": "required field is missing",
    "model_type": "must be a mapping of fields",
    "model_attributes_type": "must be a mapping of fields",
    "tuple_type": "must be a list",
}


def _message(err: Any) -> str:
    return _MESSAGES.get(err["type"], str(err["msg"]))


def _duplicate_keys(node: yaml.Node, path: tuple[PathPart, ...]) -> Iterator[tuple[tuple[PathPart, ...], str]]:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else None
            if name is not None and name in seen:
                yield (*path, name), f"duplicate key (first at line {seen[name]}); YAML would keep only the last"
            elif name is not None:
                seen[name] = key.start_mark.line + 1
            yield from _duplicate_keys(value, (*path, name) if name is not None else path)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _duplicate_keys(item, (*path, index))


def _locate(root: yaml.Node, path: tuple[PathPart, ...], message: str, *, source: str) -> PlanError:
    """Map a validation path to the YAML line of its node and a dotted path as written in the file.

    Parts the file does not spell (union tags such as ``@month``, the implied
    ``codes`` of ``owner: [A, B]``) are dropped; a missing field points at its
    parent's line.
    """
    node: yaml.Node | None = root
    line = root.start_mark.line + 1
    shown: list[PathPart] = []
    for part in path:
        if isinstance(part, str) and part.startswith("@"):
            continue
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            # the last one: YAML keeps the last of duplicate keys
            hits = [(k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == part]
            hit = hits[-1] if hits else None
            shown.append(part)
            if hit is None:
                node = None
                continue
            line, node = hit[0].start_mark.line + 1, hit[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
            shown.append(part)
        elif isinstance(node, (yaml.SequenceNode, yaml.ScalarNode)) and isinstance(part, str):
            continue  # shorthand: owner: [A, B] stands for owner: {codes: [A, B]}
        elif node is None or isinstance(node, yaml.ScalarNode):
            continue
        else:
            shown.append(part)
            node = None
    return PlanError(line=line, field=_dotted(shown), message=message, source=source)


def _dotted(parts: Sequence[PathPart]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


# -- meaning checks (on the raw mapping, so that one bad task hides nothing) ---

Found = list[tuple[tuple[PathPart, ...], str]]


def _meaning_errors(data: dict[str, Any], agencies: Agencies) -> Found:
    found: Found = []
    known = agencies.codes | {agencies.district_code}
    issuer = data.get("issuer")
    if isinstance(issuer, str) and issuer not in known:
        found.append((("issuer",), f"unknown agency code {issuer!r} (see shared/data/agencies.yaml)"))
    validity = _validity(data)
    targets = data.get("targets") if isinstance(data.get("targets"), list) else []
    found += _target_errors(targets, validity)
    target_ids = {t.get("id") for t in targets if isinstance(t, dict)}
    tasks = data.get("tasks") if isinstance(data.get("tasks"), list) else []
    seen: dict[str, int] = {}
    for index, raw in enumerate(tasks):
        if isinstance(raw, dict):
            found += _task_errors(raw, ("tasks", index), agencies=agencies, known=known,
                                  validity=validity, target_ids=target_ids)
            task_id = raw.get("id")
            if isinstance(task_id, str) and task_id in seen:
                found.append((("tasks", index, "id"), f"duplicate task id {task_id!r} (first: tasks[{seen[task_id]}])"))
            elif isinstance(task_id, str):
                seen[task_id] = index
    return found


def _validity(data: dict[str, Any]) -> tuple[dt.date, dt.date] | None:
    try:
        start, end = plain_date(data.get("valid_from")), plain_date(data.get("valid_until"))
    except PydanticCustomError:
        return None
    return (start, end) if start <= end else None


def _target_errors(targets: list[Any], validity: tuple[dt.date, dt.date] | None) -> Found:
    found: Found = []
    seen: set[str] = set()
    for index, raw in enumerate(targets):
        if not isinstance(raw, dict):
            continue
        target_id = raw.get("id")
        if isinstance(target_id, str) and target_id in seen:
            found.append((("targets", index, "id"), f"duplicate target id {target_id!r}"))
        elif isinstance(target_id, str):
            seen.add(target_id)
        found += _date_outside(raw.get("by"), ("targets", index, "by"), validity)
    return found


def _task_errors(raw: dict[str, Any], path: tuple[PathPart, ...], *, agencies: Agencies, known: frozenset[str],
                 validity: tuple[dt.date, dt.date] | None, target_ids: set[Any]) -> Found:
    found: Found = []
    found += _owner_errors(raw.get("owner"), (*path, "owner"), agencies=agencies)
    found += _unknown_codes(raw.get("collaborators"), (*path, "collaborators"), allowed=agencies.codes)
    for key in ("report_to", "copy_to"):
        found += _unknown_codes(raw.get(key), (*path, key), allowed=known)
    found += _due_errors(raw.get("due"), (*path, "due"), validity)
    target = raw.get("target")
    metric = target.get("metric") if isinstance(target, dict) else None
    if isinstance(metric, str) and metric not in target_ids:
        found.append(((*path, "target", "metric"), f"no plan target with id {metric!r} (see targets)"))
    return found


def _owner_errors(owner: Any, path: tuple[PathPart, ...], *, agencies: Agencies) -> Found:
    if isinstance(owner, dict):
        found = _unknown_codes(owner.get("codes"), (*path, "codes"), allowed=agencies.codes)
        group = owner.get("group")
        if group in ("all", "departments", "communes") and not agencies.members(group) and not owner.get("codes"):
            found.append(((*path, "group"), f"group {group!r} has no agency in the agencies file"))
        return found
    return _unknown_codes(owner, path, allowed=agencies.codes)


def _unknown_codes(value: Any, path: tuple[PathPart, ...], *, allowed: frozenset[str]) -> Found:
    items = [(path, value)] if isinstance(value, str) else []
    if isinstance(value, list):
        items = [((*path, i), v) for i, v in enumerate(value)]
    return [(p, f"unknown agency code {v!r} (see shared/data/agencies.yaml)")
            for p, v in items if isinstance(v, str) and v not in allowed]


def _due_errors(raw: Any, path: tuple[PathPart, ...], validity: tuple[dt.date, dt.date] | None) -> Found:
    try:
        rule = _DUE_ADAPTER.validate_python(raw)
    except ValidationError:
        return []  # the schema check reports it
    if isinstance(rule, OnDate):
        return _date_outside(rule.date, (*path, "date"), validity)
    if isinstance(rule, (Weekly, Monthly, Yearly)):
        return _date_outside(rule.start, (*path, "start"), validity) + _date_outside(rule.end, (*path, "end"), validity)
    return []


def _date_outside(value: Any, path: tuple[PathPart, ...], validity: tuple[dt.date, dt.date] | None) -> Found:
    if value is None or validity is None:
        return []
    try:
        day = plain_date(value)
    except PydanticCustomError:
        return []
    start, end = validity
    if start <= day <= end:
        return []
    return [(path, f"{day} is outside the plan's validity {start}..{end} (valid_from..valid_until)")]


# -- copying a plan to another year ---------------------------------------------------


class PlanCopyError(ValueError):
    """The plan cannot be copied (not a plan mapping, or the copy fails the validator: ``errors``)."""

    def __init__(self, message: str, errors: Sequence[PlanError] = ()) -> None:
        self.errors = list(errors)
        super().__init__(message + "".join(f"\n{e}" for e in self.errors))


def moved_years(day: dt.date, years: int) -> dt.date:
    """``day`` moved by whole years; 29 February becomes 28 February in a common year."""
    year = day.year + years
    return dt.date(year, day.month, min(day.day, _gregorian.monthrange(year, day.month)[1]))


def copy_plan_text(
    text: str,
    *,
    year: int,
    source: str,
    agencies: Agencies | None = None,
    valid_from: dt.date | None = None,
    valid_until: dt.date | None = None,
) -> str:
    """The YAML of the plan in ``text`` copied to ``year``: every date moved by the same number of years.

    Moved: ``issued_on``, ``valid_from``, ``valid_until``, each target's ``by``,
    each dated rule's ``date`` and each recurring rule's ``start`` and ``end``.
    The number of years is ``year`` minus the year of ``valid_from``;
    ``valid_from`` / ``valid_until`` may then be set apart (a plan copied for a
    whole calendar year). The copy gets a new ``plan_id`` (the source year in
    it replaced, else ``-{year}`` added), ``copied_from`` = the source plan's
    id, no ``number`` (the copy is not the signed document), and ``năm Y`` in
    the title moved. Task titles and descriptions are kept: they cite
    documents by their dates. The copy passes :func:`validate_plan_text` or
    :class:`PlanCopyError` lists its errors; the source is never changed.
    """
    errors = validate_plan_text(text, source=source, agencies=agencies)
    if errors:
        raise PlanCopyError(f"{source}: the source plan is not valid", errors)
    data = _load_yaml(text)
    first = plain_date(data["valid_from"])
    years = year - first.year
    moved = _moved_plan(data, years=years, year=year, first_year=first.year)
    if valid_from is not None:
        moved["valid_from"] = valid_from
    if valid_until is not None:
        moved["valid_until"] = valid_until
    header = (
        f"# Copied from plan {data['plan_id']} ({Path(source).name}) by `parwatch plan copy --year {year}`:\n"
        f"# every date moved by {years} year(s); task titles and descriptions are as in the source.\n"
        "# Schema: docs/plan-schema.md. Check: `parwatch plan validate FILE`.\n"
    )
    out = header + yaml.safe_dump(moved, allow_unicode=True, sort_keys=False, width=110)
    found = validate_plan_text(out, source=f"copy of {source}", agencies=agencies)
    if found:
        raise PlanCopyError(f"{source}: the copy for {year} is not valid", found)
    return out


def _moved_plan(data: dict[str, Any], *, years: int, year: int, first_year: int) -> dict[str, Any]:
    def move(value: Any) -> Any:
        return moved_years(plain_date(value), years) if value is not None else None

    out: dict[str, Any] = {}
    source_id = str(data["plan_id"])
    for key, value in data.items():
        if key == "number":
            continue  # the copy is not the signed document
        if key == "plan_id":
            new_id = source_id.replace(str(first_year), str(year))
            out["plan_id"] = new_id if new_id != source_id else f"{source_id}-{year}"
            out["copied_from"] = source_id
        elif key == "copied_from":
            continue
        elif key == "title" and isinstance(value, str):
            out[key] = value.replace(f"năm {first_year}", f"năm {year}")
        elif key in ("issued_on", "valid_from", "valid_until"):
            out[key] = move(value)
        elif key == "targets" and isinstance(value, list):
            out[key] = [{**t, "by": move(t["by"])} if isinstance(t, dict) and "by" in t else t for t in value]
        elif key == "tasks" and isinstance(value, list):
            out[key] = [_moved_task(t, move=move) for t in value]
        else:
            out[key] = value
    return out


def _moved_task(task: Any, *, move: Any) -> Any:
    if not isinstance(task, dict) or not isinstance(task.get("due"), dict):
        return task
    due = {k: (move(v) if k in ("date", "start", "end") else v) for k, v in task["due"].items()}
    return {**task, "due": due}
