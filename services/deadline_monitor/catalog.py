"""Loading the plans the monitor tracks: the shipped plan files and the operator's.

Every file is validated with :func:`services.deadline_monitor.plan.validate_plan_text`;
the service refuses to start on any error and lists them all, one per line as
``FILE:LINE: field: message``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import yaml

from services.deadline_monitor.domain import Catalog, OccurrenceSpec, WorkingDays, plan_occurrence_specs
from services.deadline_monitor.plan import Agencies, Plan, PlanError, load_agencies, validate_plan_text

_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_YMD = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$")
from services.deadline_monitor.settings import MonitorSettings


class PlanLoadError(ValueError):
    """One or more plan files are invalid; ``errors`` lists them all."""

    def __init__(self, errors: Sequence[PlanError | str]) -> None:
        self.errors = [str(e) for e in errors]
        super().__init__("invalid plan files:\n" + "\n".join(self.errors))


def check_plan_text(text: str, *, source: str, agencies: Agencies | None = None) -> list[PlanError]:
    """:func:`validate_plan_text`, and a line-numbered error where it raises instead of reporting.

    PyYAML builds dates while loading, so an impossible date such as
    ``2023-02-30`` raises ``ValueError`` out of ``yaml.safe_load`` inside
    ``validate_plan_text``; such dates are found here by walking the composed
    (not constructed) document.
    """
    try:
        return validate_plan_text(text, source=source, agencies=agencies)
    except ValueError as exc:
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError:
            root = None
        found = sorted(_impossible_dates(root, ""), key=lambda e: e[0]) if root is not None else []
        if not found:
            return [PlanError(line=None, field="", message=f"cannot be read: {exc}", source=source)]
        return [PlanError(line=line, field=field, message="not a real date", source=source) for line, field in found]


def _impossible_dates(node: yaml.Node, path: str) -> Iterator[tuple[int, str]]:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else "?"
            yield from _impossible_dates(value, f"{path}.{name}" if path else name)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _impossible_dates(item, f"{path}[{index}]")
    elif isinstance(node, yaml.ScalarNode) and node.tag == _TIMESTAMP:
        match = _YMD.match(node.value.strip())
        if match:
            try:
                dt.date(*(int(g) for g in match.groups()))
            except ValueError:
                yield node.start_mark.line + 1, path


def load_catalog(files: Sequence[Path], *, agencies: Agencies | None = None) -> Catalog:
    """Validate and load ``files``; a plan id used by two files is an error too."""
    agencies = agencies or load_agencies()
    errors: list[PlanError | str] = []
    plans: dict[str, Plan] = {}
    origin: dict[str, Path] = {}
    for path in files:
        text = path.read_text(encoding="utf-8")
        found = check_plan_text(text, source=str(path), agencies=agencies)
        if found:
            errors += found
            continue
        plan = Plan.model_validate(yaml.safe_load(text))
        if plan.plan_id in plans:
            errors.append(f"{path}: plan_id: {plan.plan_id!r} is also the plan_id of {origin[plan.plan_id]}")
            continue
        plans[plan.plan_id] = plan
        origin[plan.plan_id] = path
    if errors:
        raise PlanLoadError(errors)
    return Catalog(agencies=agencies, plans=plans)


def catalog_from_settings(settings: MonitorSettings) -> Catalog:
    agencies = load_agencies(settings.agencies_file) if settings.agencies_file else load_agencies()
    return load_catalog(settings.plan_files(), agencies=agencies)


def occurrence_specs(catalog: Catalog, *, calendar: WorkingDays, settings: MonitorSettings) -> list[OccurrenceSpec]:
    """Every tracked occurrence of every loaded plan, over the configured window."""
    specs: list[OccurrenceSpec] = []
    for plan in catalog.plans.values():
        specs += plan_occurrence_specs(
            plan,
            agencies=catalog.agencies,
            calendar=calendar,
            window_from=settings.plan_window_from,
            window_to=settings.plan_window_to,
            extend_recurring=settings.plan_extend_recurring,
        )
    return specs
