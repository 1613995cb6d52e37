"""dossier_tracker settings (env prefix ``PARWATCH_TRACKER_``)."""

from __future__ import annotations

from pydantic import Field, model_validator
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

    # -- the HTTP door (POST /events, services/dossier_tracker/http_ingest.py) ----------------------------------------
    http_max_batch: int = Field(default=100, ge=1, le=1000, description="most events of one batch-mode request")
    http_max_batch_bytes: int = Field(
        default=1024 * 1024, ge=64 * 1024, le=16 * 1024 * 1024, description="largest batch-mode body (bytes)"
    )
    http_rate: float = Field(default=50.0, gt=0, description="events a second each source may send over HTTP")
    http_burst: int = Field(
        default=500, ge=1, description="events a source may send at once over HTTP (at least http_max_batch)"
    )

    @model_validator(mode="after")
    def _batch_within_burst(self) -> TrackerSettings:
        if self.http_burst < self.http_max_batch:
            raise ValueError("http_burst must be at least http_max_batch: a full batch would never pass")
        return self
