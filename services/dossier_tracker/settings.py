"""dossier_tracker settings (env prefix ``PARWATCH_TRACKER_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TrackerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PARWATCH_TRACKER_", extra="ignore", frozen=True)

    port: int = Field(default=9101, ge=0, le=65535)
    batch_size: int = Field(default=200, ge=1, le=5000, description="messages pulled and stored per transaction")
    batch_timeout: float = Field(default=0.2, gt=0, description="seconds to wait to fill a batch")
    max_deliver: int = Field(default=12, ge=2, description="deliveries before a failing message is dead-lettered")
    ack_wait: float = Field(
        default=60.0, gt=0, description="seconds before an unacked message (a crashed consumer's) is redelivered"
    )
    retry_first_delay: float = Field(default=1.0, gt=0)
    retry_max_delay: float = Field(default=120.0, gt=0)
    durable: str = Field(default="dossier_tracker", description="durable consumer name prefix")
