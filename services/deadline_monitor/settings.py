"""deadline_monitor settings (env prefix ``PARWATCH_MONITOR_``).

Read once in :func:`services.deadline_monitor.app.create_app` (and by the
CLI) and passed down; nothing else reads the environment.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from shared.plans import plan_files
from shared.settings import BacklogSettings, ConsumerSettings

#: The paths that must exist when set: what each must be, and how an error names it.
_MUST_EXIST: dict[str, tuple[Callable[[Path], bool], str]] = {
    "plans_dir": (Path.is_dir, "plans folder"),
    "agencies_file": (Path.is_file, "agencies file"),
}


class MonitorSettings(ConsumerSettings, BacklogSettings):
    model_config = SettingsConfigDict(env_prefix="PARWATCH_MONITOR_", extra="ignore", frozen=True)

    port: int = Field(default=9102, ge=0, le=65535, description="HTTP port of /health and /metrics")
    linger: float = Field(
        default=0.1, ge=0, le=5, description="seconds a call waits for a full batch once something has arrived"
        " (an alert a tenth of a second later; batches of a few facts cost a transaction each)"
    )
    api_token: SecretStr | None = Field(
        default=None,
        description="bearer token the officials' web page (scoring) sends to /plan/occurrences, /plan/report and"
                    " /dossiers/open; without it, only clients on this machine (loopback) may call them",
    )

    # -- time -----------------------------------------------------------------------
    tick_interval: float = Field(default=30.0, gt=0, description="seconds between two ticks")
    tick_chunk: int = Field(default=1000, ge=1, le=20000, description="rows handled per tick transaction")
    due_soon_working_days: int = Field(
        default=1, ge=0, le=30, description="dossier_due_soon: due within this many working days (rule 6: 1)"
    )
    apology_working_days: int = Field(
        default=0,
        ge=0,
        le=30,
        description="dossier_apology_due fires this many working days before the due day (0: on the due day)",
    )
    plan_due_soon_working_days: int = Field(
        default=3, ge=0, le=60, description="plan_task_due_soon: due within this many working days"
    )
    plan_alert_max_age_days: int = Field(
        default=14,
        ge=0,
        description="no new plan_task_overdue alert for an occurrence overdue by more days than this (its state still counts)",
    )
    deadletter_resolve_after_hours: float = Field(
        default=24.0, ge=0, description="a deadletter alert resolves after this many hours (0: never)"
    )
    unknown_agency_resolve_after_hours: float = Field(
        default=24.0,
        ge=0,
        description="the unknown_agency alert resolves after this many hours without an event for a code outside"
        " the agency directory (0: never)",
    )

    # -- plans ----------------------------------------------------------------------
    include_shipped_plans: bool = Field(default=True, description="load the plan files shipped under plans/")
    plans_dir: Path | None = Field(default=None, description="folder of the operator's own plan files (*.yaml)")
    agencies_file: Path | None = Field(
        default=None,
        description="agencies YAML for the monitor alone; default PARWATCH_AGENCIES_FILE, else shared/data's",
    )
    plan_window_from: dt.date | None = Field(
        default=None, description="first due day tracked; default (and at the earliest) each plan's valid_from"
    )
    plan_window_to: dt.date | None = Field(
        default=None,
        description="last due day tracked; default (and at the latest) each plan's closing day, valid_until + 31 days",
    )

    # -- consumers and outbox ---------------------------------------------------------------
    durable: str = Field(default="deadline_monitor", pattern=r"^[A-Za-z0-9_-]+$", description="durable name prefix")
    outbox_interval: float = Field(
        default=1.0,
        gt=0,
        description="seconds between outbox polls when idle; the first delay before a failed publication is retried",
    )
    outbox_batch: int = Field(default=500, ge=1, le=10000, description="events published per outbox pass")

    @field_validator(*_MUST_EXIST)
    @classmethod
    def _exists(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        is_there, what = _MUST_EXIST[str(info.field_name)]
        if value is not None and not is_there(value):
            raise ValueError(f"{what} {value} does not exist")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> MonitorSettings:
        if self.apology_working_days > self.due_soon_working_days:
            raise ValueError(
                "apology_working_days must not exceed due_soon_working_days: the apology alert follows the due-soon one"
            )
        if self.plan_window_from and self.plan_window_to and self.plan_window_to < self.plan_window_from:
            raise ValueError("plan_window_to is before plan_window_from")
        return self

    def plan_files(self) -> list[Path]:
        """The plan files to load: shipped ones (if included), then the operator's, each sorted by name (the same
        files scoring reads its targets from, :func:`shared.plans.plan_files`)."""
        return plan_files(include_shipped=self.include_shipped_plans, plans_dir=self.plans_dir)
