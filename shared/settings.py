"""Settings common to every service, from the environment (prefix ``PARWATCH_``).

Read once in each service's ``create_app`` and passed down; nothing else
reads the environment.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.backoff import Backoff
from shared.consumer import RetryPolicy

EMBEDDED_NATS_URL = "nats://127.0.0.1:14222"


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PARWATCH_", extra="ignore", frozen=True)

    nats_url: str = Field(default=EMBEDDED_NATS_URL, description="NATS server URL(s), comma separated")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite per service under data_dir")
    data_dir: Path = Field(default=Path("var"), description="folder for SQLite files and embedded NATS data")
    calendar_overrides: Path | None = Field(default=None, description="YAML override file of days off and working days")
    http_host: str = Field(default="127.0.0.1", description="address every service's HTTP server binds")
    log_level: str = Field(default="INFO")
    log_format: str = Field(default="text", pattern="^(text|json)$")
    stream_replicas: int = Field(default=1, ge=1, le=5, description="JetStream replicas for streams (3 in a cluster)")

    @field_validator("calendar_overrides")
    @classmethod
    def _overrides_exist(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"calendar override file {value} does not exist")
        return value

    def nats_servers(self) -> list[str]:
        return [u.strip() for u in self.nats_url.split(",") if u.strip()]

    def database_url_for(self, service: str) -> str:
        """The configured URL, or a SQLite file of the service's own under data_dir."""
        if self.database_url:
            return self.database_url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{(self.data_dir / f'{service}.db').resolve()}"


class ConsumerSettings(BaseSettings):
    """How a service consumes its streams; each service's settings inherit these
    fields under its own env prefix (e.g. ``PARWATCH_TRACKER_BATCH_SIZE``)."""

    batch_size: int = Field(
        default=200, ge=1, le=5000, description="most messages handled in one call (one transaction) under load"
    )
    max_deliver: int = Field(default=12, ge=2, description="deliveries before a failing message is dead-lettered")
    ack_wait: float = Field(
        default=60.0, gt=0, description="seconds before an unacked message (a crashed consumer's) is redelivered"
    )
    retry_first_delay: float = Field(default=1.0, gt=0, description="delay before the first redelivery; doubles")
    retry_max_delay: float = Field(default=120.0, gt=0, description="longest delay between redeliveries")

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_deliver=self.max_deliver,
            backoff=Backoff(first=self.retry_first_delay, cap=max(self.retry_first_delay, self.retry_max_delay)),
            ack_wait=self.ack_wait,
        )
