"""scoring settings (env prefix ``PARWATCH_SCORING_``), read once in ``create_app``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.scoring.alerts import PLAN_TARGET_KPIS, Hysteresis
from services.scoring.domain import KPIS, IndexConfig
from shared.settings import BacklogSettings, ConsumerSettings

Kpi = Literal["on_time", "plan_completion", "online_filing", "national_sync", "online_service"]


class ScoringSettings(ConsumerSettings, BacklogSettings):
    model_config = SettingsConfigDict(env_prefix="PARWATCH_SCORING_", extra="ignore", frozen=True)

    port: int = Field(default=9103, ge=0, le=65535)

    # -- the officials' web page (/web/, services.scoring.web; docs/web.md) ------------------------------
    web_secret: SecretStr | None = Field(
        default=None, description="key that signs the page's session cookies; default: one kept in the data folder"
    )
    web_session_hours: float = Field(default=12.0, gt=0, le=24 * 30, description="how long a sign-in lasts")
    web_open_read_on_loopback: bool = Field(
        default=True, description="pages may be read without signing in by a browser on this machine (loopback);"
        " false: every page needs a sign-in (set it behind a reverse proxy on the same machine)"
    )
    web_secure_cookies: bool | None = Field(
        default=None, description="mark the session cookie Secure; default: when the request came over https"
    )
    web_notifier_url: str | None = Field(
        default=None, description="the notifier's HTTP API; default http://127.0.0.1:$PARWATCH_NOTIFIER_PORT"
    )
    web_monitor_url: str | None = Field(
        default=None, description="deadline_monitor's HTTP API; default http://127.0.0.1:$PARWATCH_MONITOR_PORT"
    )
    durable: str = Field(default="scoring", description="durable consumer name prefix (shared by replicas)")
    # catching up on a backlog: shared.settings.BacklogSettings
    agencies_file: Path | None = Field(
        default=None,
        description="agency directory YAML for scoring alone; default PARWATCH_AGENCIES_FILE, else shared/data's",
    )
    procedure_catalog: Path | None = Field(
        default=None,
        description="the procedure catalog (CSV, docs/scoring.md): which procedures each unit offers as full online"
        " public services; unset: the online-service share has no value (the shipped sample is synthetic)",
    )
    linger: float = Field(
        default=0.2, ge=0, le=5, description="seconds a call waits for a full batch once something has arrived"
        " (figures are scraped every 15 s: a fifth of a second costs nobody, and batches of a few facts cost a"
        " transaction each)"
    )
    batch_size: int = Field(
        default=500,
        ge=1,
        le=5000,
        description="most facts applied in one transaction under load (more than other consumers take: scoring"
        " must keep up with the tracker's bursts, and a batch's cost is mostly its transaction)",
    )

    # -- targets and alerts (the targets themselves: the plan files' targets, see docs/scoring.md) -----------
    plan_target_kpis: dict[str, Kpi] = Field(
        default_factory=lambda: dict(PLAN_TARGET_KPIS),
        description="which plan target (by its id in the plan files' targets:) each KPI is judged against, as JSON",
    )
    alert_kpis: list[Kpi] = Field(default_factory=lambda: list(KPIS), description="KPIs that raise kpi_below_target")
    alert_periods: list[Literal["month", "quarter", "year"]] = Field(
        default_factory=lambda: ["month"], description="current periods the alerts watch"
    )
    alert_district: bool = Field(default=True, description="also alert on the district roll-up")
    evaluate_interval: float = Field(default=60.0, gt=0, description="seconds between alert evaluations")
    resolve_margin: float = Field(default=0.005, ge=0, le=0.5, description="resolve at min(1, target + margin)")
    fire_after: int = Field(default=2, ge=1, description="consecutive evaluations below target before firing")
    resolve_after: int = Field(default=3, ge=1, description="consecutive evaluations at/above the threshold to resolve")
    min_denominator: int = Field(
        default=1, ge=1, description="fewest plan-task occurrences (done or overdue) plan_completion needs to be judged"
    )
    min_dossiers: int = Field(
        default=20,
        ge=1,
        description="fewest dossiers in a dossier KPI's denominator (for a share of a flag: those whose flag is known)"
        " before it can alert: a commune's handful of dossiers in the first days of a month says little",
    )

    # -- Decision 766 points (configurable; see docs/scoring.md) -------------------------------
    index_online_filing_points: float = Field(default=6.0, ge=0, le=22)
    index_online_filing_full_at: float = Field(default=0.5, gt=0, le=1)
    index_sync_points: float = Field(default=6.0, ge=0, le=18)
    index_sync_full_at: float = Field(default=1.0, gt=0, le=1)

    def hysteresis(self) -> Hysteresis:
        return Hysteresis(
            margin=self.resolve_margin,
            fire_after=self.fire_after,
            resolve_after=self.resolve_after,
            min_denominator=self.min_denominator,
            min_dossiers=self.min_dossiers,
        )

    def index_config(self) -> IndexConfig:
        return IndexConfig(
            online_filing_points=self.index_online_filing_points,
            online_filing_full_at=self.index_online_filing_full_at,
            sync_points=self.index_sync_points,
            sync_full_at=self.index_sync_full_at,
        )


class PeerSettings(BaseSettings):
    """What the officials' page needs of the notifier's and deadline_monitor's settings: their ports and the API
    tokens they expect (the same variables those services read)."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    notifier_port: int = Field(default=9104, validation_alias=AliasChoices("PARWATCH_NOTIFIER_PORT"))
    notifier_api_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("PARWATCH_NOTIFIER_API_TOKEN"))
    monitor_port: int = Field(default=9102, validation_alias=AliasChoices("PARWATCH_MONITOR_PORT"))
    monitor_api_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("PARWATCH_MONITOR_API_TOKEN"))
