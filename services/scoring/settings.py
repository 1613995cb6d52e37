"""scoring settings (env prefix ``PARWATCH_SCORING_``), read once in ``create_app``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from services.scoring.alerts import Hysteresis
from services.scoring.domain import KPIS, IndexConfig
from shared.settings import ConsumerSettings

#: Plan 146/KH-UBND targets (domain.md), the defaults of every agency.
DEFAULT_TARGETS = {"on_time": 0.98, "plan_completion": 0.95, "online_filing": 1.0, "national_sync": 1.0}


class ScoringSettings(ConsumerSettings):
    model_config = SettingsConfigDict(env_prefix="PARWATCH_SCORING_", extra="ignore", frozen=True)

    port: int = Field(default=9103, ge=0, le=65535)
    durable: str = Field(default="scoring", description="durable consumer name prefix (shared by replicas)")
    agencies_file: Path | None = Field(
        default=None,
        description="agency directory YAML for scoring alone; default PARWATCH_AGENCIES_FILE, else shared/data's",
    )
    batch_size: int = Field(
        default=500,
        ge=1,
        le=5000,
        description="most facts applied in one transaction under load (more than other consumers take: scoring"
        " must keep up with the tracker's bursts, and a batch's cost is mostly its transaction)",
    )

    # -- targets and alerts ------------------------------------------------------------------
    target_on_time: float = Field(default=DEFAULT_TARGETS["on_time"], ge=0, le=1)
    target_plan_completion: float = Field(default=DEFAULT_TARGETS["plan_completion"], ge=0, le=1)
    target_online_filing: float = Field(default=DEFAULT_TARGETS["online_filing"], ge=0, le=1)
    target_national_sync: float = Field(default=DEFAULT_TARGETS["national_sync"], ge=0, le=1)
    targets: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description='per-agency targets as JSON, e.g. {"PTP": {"on_time": 0.95}}; the district code sets the roll-up',
    )
    alert_kpis: list[Literal["on_time", "plan_completion", "online_filing", "national_sync"]] = Field(
        default_factory=lambda: list(KPIS), description="KPIs that raise kpi_below_target"
    )
    alert_periods: list[Literal["month", "quarter", "year"]] = Field(
        default_factory=lambda: ["month"], description="current periods the alerts watch"
    )
    alert_district: bool = Field(default=True, description="also alert on the district roll-up")
    evaluate_interval: float = Field(default=60.0, gt=0, description="seconds between alert evaluations")
    resolve_margin: float = Field(default=0.005, ge=0, le=0.5, description="resolve at min(1, target + margin)")
    fire_after: int = Field(default=2, ge=1, description="consecutive evaluations below target before firing")
    resolve_after: int = Field(default=3, ge=1, description="consecutive evaluations at/above the threshold to resolve")
    min_denominator: int = Field(default=1, ge=1, description="fewest dossiers (or tasks) a KPI needs to be judged")

    # -- Decision 766 points (configurable; see docs/scoring.md) -------------------------------
    index_online_filing_points: float = Field(default=6.0, ge=0, le=22)
    index_online_filing_full_at: float = Field(default=0.5, gt=0, le=1)
    index_sync_points: float = Field(default=6.0, ge=0, le=18)
    index_sync_full_at: float = Field(default=1.0, gt=0, le=1)

    @field_validator("targets")
    @classmethod
    def _known_kpis(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for agency, per in value.items():
            for kpi, target in per.items():
                if kpi not in KPIS:
                    raise ValueError(f"targets.{agency}: unknown KPI {kpi!r}; known: {', '.join(KPIS)}")
                if not 0 <= target <= 1:
                    raise ValueError(f"targets.{agency}.{kpi}: a target is a share between 0 and 1")
        return value

    def default_targets(self) -> dict[str, float]:
        return {
            "on_time": self.target_on_time,
            "plan_completion": self.target_plan_completion,
            "online_filing": self.target_online_filing,
            "national_sync": self.target_national_sync,
        }

    def target(self, agency: str, kpi: str) -> float:
        return self.targets.get(agency, {}).get(kpi, self.default_targets()[kpi])

    def hysteresis(self) -> Hysteresis:
        return Hysteresis(
            margin=self.resolve_margin,
            fire_after=self.fire_after,
            resolve_after=self.resolve_after,
            min_denominator=self.min_denominator,
        )

    def index_config(self) -> IndexConfig:
        return IndexConfig(
            online_filing_points=self.index_online_filing_points,
            online_filing_full_at=self.index_online_filing_full_at,
            sync_points=self.index_sync_points,
            sync_full_at=self.index_sync_full_at,
        )
