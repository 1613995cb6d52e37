"""What more than one service reads of the plan files: where they are, and the targets they set.

deadline_monitor owns the plans (``services/deadline_monitor/plan.py``
validates a whole plan file and tracks its tasks); scoring judges its KPIs
against the same files' ``targets:`` block, read-only. Services never import
each other, so the target model and the files' places live here:

* :class:`Target`, the model of one entry of ``targets:`` (docs/plan-schema.md),
  which ``plan.py`` validates plans with;
* :class:`PlanSources`, the monitor's settings that say which files it loads
  (``PARWATCH_MONITOR_INCLUDE_SHIPPED_PLANS``, ``PARWATCH_MONITOR_PLANS_DIR``),
  read the same way by scoring, so both load the same files;
* :func:`load_plan_targets`, each file's validity and targets (the rest of a
  plan file is the monitor's business and is not read here).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.text import is_unsafe

#: The plan files shipped with parwatch (deadline_monitor's folder; read here as files, never imported).
SHIPPED_PLANS = Path(__file__).resolve().parent.parent / "services" / "deadline_monitor" / "plans"


def plain_date(value: object) -> dt.date:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise PydanticCustomError("plan_date", "must be a date written YYYY-MM-DD")


def _real_number(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PydanticCustomError("plan_number", "must be a number")
    return value


def _plain_line(value: str) -> str:
    if any(is_unsafe(char) for char in value):
        raise PydanticCustomError("plain_line", "one line of plain text: no line break, control or bidirectional character")
    return value


PlanDate = Annotated[dt.date, BeforeValidator(plain_date)]
Number = Annotated[float, BeforeValidator(_real_number)]
Ident = Annotated[str, Field(pattern=r"^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$", max_length=64)]
# A title reaches alert summaries and e-mails: one line of plain text.
Title = Annotated[str, Field(min_length=1, max_length=300), AfterValidator(_plain_line)]
Comparison = Literal["gt", "ge"]


class Target(BaseModel):
    """A KPI target the plan sets (per agency unless ``per: district``).

    ``op``: ``gt`` for "trên 98%" (the value must exceed it), ``ge`` for "100%"
    or "ít nhất" (the value must reach it). ``by``: the target holds from that
    day on (e.g. "100% by 30/8/2023").
    """

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    id: Ident
    title: Title
    unit: Literal["ratio", "count"]
    op: Comparison
    value: Number
    per: Literal["agency", "district"] = "agency"
    period: Literal["year"] | None = None
    by: PlanDate | None = None
    section: Ident | None = None

    @field_validator("value")
    @classmethod
    def _value_fits_unit(cls, value: float, info: ValidationInfo) -> float:
        unit = info.data.get("unit")
        if unit == "ratio" and not 0.0 <= value <= 1.0:
            raise PydanticCustomError("ratio_range", "a ratio lies between 0 and 1 (0.98 means 98%)")
        if unit == "count" and (value < 0 or value != int(value)):
            raise PydanticCustomError("count_range", "a count is a whole number >= 0")
        return value

    def met_by(self, value: float) -> bool:
        """Whether ``value`` meets the target under its comparison."""
        return value > self.value if self.op == "gt" else value >= self.value


class PlanTargets(BaseModel):
    """A plan file as a reader of its targets sees it: its id, validity and ``targets:``."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    plan_id: Ident
    valid_from: PlanDate
    valid_until: PlanDate
    targets: tuple[Target, ...] = ()

    def in_force(self, target: Target, day: dt.date) -> bool:
        """The plan is valid on ``day`` and the target's ``by`` day (if any) has come."""
        return self.valid_from <= day <= self.valid_until and (target.by is None or target.by <= day)


class PlanSources(BaseSettings):
    """Which plan files deadline_monitor loads (its settings, env prefix ``PARWATCH_MONITOR_``)."""

    model_config = SettingsConfigDict(env_prefix="PARWATCH_MONITOR_", extra="ignore", frozen=True)

    include_shipped_plans: bool = Field(default=True, description="load the plan files shipped under plans/")
    plans_dir: Path | None = Field(default=None, description="folder of the operator's own plan files (*.yaml)")

    def files(self) -> list[Path]:
        return plan_files(include_shipped=self.include_shipped_plans, plans_dir=self.plans_dir)


def plan_files(*, include_shipped: bool, plans_dir: Path | None) -> list[Path]:
    """The plan files to load: shipped ones (if included), then the operator's, each sorted by name."""
    files: list[Path] = []
    folders = ([SHIPPED_PLANS] if include_shipped else []) + ([plans_dir] if plans_dir else [])
    for folder in folders:
        if folder.is_dir():
            files += sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    return files


class PlanTargetsError(ValueError):
    """A plan file whose targets cannot be read (the monitor refuses such a file too)."""


def load_plan_targets(files: Sequence[Path]) -> list[PlanTargets]:
    """Each file's validity and targets, in the order given."""
    out: list[PlanTargets] = []
    for path in files:
        try:
            out.append(PlanTargets.model_validate(yaml.safe_load(path.read_text(encoding="utf-8"))))
        except (OSError, yaml.YAMLError, ValueError) as exc:
            raise PlanTargetsError(f"{path}: cannot read the plan's targets: {exc}") from exc
    return out
