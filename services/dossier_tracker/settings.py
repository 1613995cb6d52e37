"""dossier_tracker settings (env prefix ``PARWATCH_TRACKER_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ConsumerSettings


class TrackerSettings(ConsumerSettings):
    model_config = SettingsConfigDict(env_prefix="PARWATCH_TRACKER_", extra="ignore", frozen=True)

    port: int = Field(default=9101, ge=0, le=65535)
    durable: str = Field(default="dossier_tracker", description="durable consumer name prefix")
    batch_size: int = Field(
        default=2000,
        ge=1,
        le=5000,
        description="most events stored in one transaction under load (larger than other consumers: a batch's"
        " cost grows with the index pages it touches, not with its events)",
    )
