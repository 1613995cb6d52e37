"""Loading the plans the monitor tracks: the shipped plan files and the operator's.

Every file is validated with :func:`services.deadline_monitor.plan.validate_plan_text`;
the service refuses to start on any error and lists them all, one per line as
``FILE:LINE: field: message``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml

from services.deadline_monitor.domain import Catalog, OccurrenceSpec, WorkingDays, plan_occurrence_specs
from services.deadline_monitor.plan import Agencies, Plan, PlanError, load_agencies, validate_plan_text
from services.deadline_monitor.settings import MonitorSettings
from shared.agencies import AgencySettings


class PlanLoadError(ValueError):
    """One or more plan files are invalid; ``errors`` lists them all."""

    def __init__(self, errors: Sequence[PlanError | str]) -> None:
        self.errors = [str(e) for e in errors]
        super().__init__("invalid plan files:\n" + "\n".join(self.errors))


def load_catalog(files: Sequence[Path], *, agencies: Agencies | None = None) -> Catalog:
    """Validate and load ``files``; a plan id used by two files is an error too."""
    agencies = agencies or load_agencies()
    errors: list[PlanError | str] = []
    plans: dict[str, Plan] = {}
    origin: dict[str, Path] = {}
    for path in files:
        text = path.read_text(encoding="utf-8")
        found = validate_plan_text(text, source=str(path), agencies=agencies)
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


def catalog_from_settings(settings: MonitorSettings, *, agencies: Agencies | None = None) -> Catalog:
    """The plans of ``settings`` against ``agencies`` (default: the shared directory as configured, the monitor's
    own ``agencies_file`` first)."""
    agencies = agencies or AgencySettings().load(override=settings.agencies_file)
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
        )
    return specs
