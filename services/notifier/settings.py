"""Settings of the notifier, from the environment (prefix ``PARWATCH_NOTIFIER_``).

Read once in :func:`services.notifier.app.create_app` (and by the CLI) and
passed down; nothing else reads the environment. Durations accept ``30s``,
``5m``, ``4h``, ``2d`` or a number of seconds.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.notifier.domain.model import EscalationPolicy, Timing, parse_duration
from shared.backoff import Backoff

EXAMPLE_DIRECTORY = Path(__file__).parent / "directory.example.yaml"


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class NotifierSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PARWATCH_NOTIFIER_", extra="ignore", frozen=True)

    port: int = Field(default=9104, ge=1, le=65535, description="HTTP port of /health and /metrics")
    directory: Path | None = Field(
        default=None, description="directory and routes YAML; default: the shipped example (log channel only)"
    )

    # -- grouping, repeats, escalation, quiet hours ------------------------------
    group_wait: dt.timedelta = Field(default=dt.timedelta(seconds=30), description="wait for siblings of a new alert")
    group_interval: dt.timedelta = Field(
        default=dt.timedelta(minutes=20),
        description="least time between two notices of a group: at most three an hour (docs/notifier.md, noise budget)",
    )
    repeat_interval: dt.timedelta = Field(
        default=dt.timedelta(hours=24), description="remind of a still-firing alert after"
    )
    escalate_head_after_hours: float = Field(
        default=8.0, ge=0, description="working hours of firing before the agency head hears of it (0: never)"
    )
    escalate_leadership_after_hours: float = Field(
        default=24.0, ge=0, description="working hours of firing before district leadership hears of it (0: never)"
    )
    escalate_min_severity: Literal["info", "warning", "critical"] = "warning"
    quiet_hours: bool = Field(default=True, description="hold non-critical notices outside working hours")

    # -- loops and retries ---------------------------------------------------------
    tick_interval: float = Field(default=2.0, gt=0, description="seconds between dispatch passes")
    delivery_interval: float = Field(default=1.0, gt=0, description="seconds between delivery passes")
    retry_first_delay: dt.timedelta = Field(
        default=dt.timedelta(seconds=10), description="delay before a notice a channel refused is tried again"
    )
    retry_max_delay: dt.timedelta = Field(default=dt.timedelta(minutes=15), description="the delay doubles up to this")
    delivery_batch: int = Field(default=50, ge=1, le=1000, description="notices taken from the outbox in one pass")
    consumer_batch: int = Field(default=100, ge=1, le=1000, description="most alert events recorded in one call")
    consumer_linger: float = Field(
        default=0.5, ge=0, le=5, description="seconds a call waits for a full batch of alert events once one has"
        " arrived (notices wait GROUP_WAIT anyway; each call is a transaction)"
    )
    durable: str = Field(default="notifier", pattern=r"^[A-Za-z0-9_-]+$")

    # -- digests ---------------------------------------------------------------------
    weekly_digest: bool = True
    monthly_digest: bool = True
    digest_time: dt.time = Field(default=dt.time(7, 30), description="local time of the digest on its working day")

    # -- acknowledgements ----------------------------------------------------------------
    ack_secret: SecretStr | None = Field(
        default=None, description="HMAC key of the e-mails' acknowledge links; default: one kept in the data folder"
    )
    ack_link_ttl: dt.timedelta = Field(default=dt.timedelta(days=7), description="how long an acknowledge link works")
    public_url: str | None = Field(
        default=None, description="the notifier's HTTP API as officials reach it (links); default http://localhost:PORT"
    )
    api_token: SecretStr | None = Field(
        default=None,
        description="bearer token the web page's back end sends to POST /alerts/{key}/ack; without it, only clients"
                    " on this machine (loopback) may acknowledge through the JSON API",
    )
    alertmanager_token: SecretStr | None = Field(
        default=None,
        description="bearer token Alertmanager sends to POST /alertmanager (its webhook's credentials_file);"
                    " without it, the API token, else only clients on this machine (loopback)",
    )

    # -- SMTP ------------------------------------------------------------------------
    smtp_host: str | None = Field(default=None, description="no host: e-mail notices go to the log channel")
    smtp_port: int | None = Field(default=None, ge=1, le=65535, description="default 587 (starttls), 465 (tls), 25")
    smtp_security: Literal["starttls", "tls", "none"] = "starttls"
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_password_file: Path | None = None
    smtp_from: str = Field(default="parwatch@example.invalid")
    smtp_ca_file: Path | None = Field(default=None, description="CA bundle to verify the server (default: system CAs)")
    smtp_timeout: float = Field(default=30.0, gt=0)

    # -- webhooks --------------------------------------------------------------------
    webhook_secret: SecretStr | None = Field(default=None, description="HMAC key for every webhook")
    webhook_secret_file: Path | None = None
    webhook_secrets: dict[str, SecretStr] = Field(
        default_factory=dict, description="HMAC key per official id (JSON object), over webhook_secret"
    )
    webhook_timeout: float = Field(default=10.0, gt=0)
    webhook_ca_file: Path | None = None

    @field_validator(
        "group_wait", "group_interval", "repeat_interval", "retry_first_delay", "retry_max_delay", "ack_link_ttl",
        mode="before",
    )
    @classmethod
    def _duration(cls, value: Any) -> Any:
        if isinstance(value, str):
            return parse_duration(value)
        return value

    @field_validator("directory", "smtp_password_file", "smtp_ca_file", "webhook_secret_file", "webhook_ca_file")
    @classmethod
    def _file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"file {value} does not exist")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> NotifierSettings:
        if self.smtp_host and self.smtp_security == "none" and not is_loopback_host(self.smtp_host):
            raise ValueError("smtp_security=none is allowed only for a loopback SMTP host; use starttls or tls")
        if self.smtp_password is not None and self.smtp_password_file is not None:
            raise ValueError("set smtp_password or smtp_password_file, not both")
        if self.webhook_secret is not None and self.webhook_secret_file is not None:
            raise ValueError("set webhook_secret or webhook_secret_file, not both")
        if self.retry_first_delay <= dt.timedelta(0):
            raise ValueError("retry_first_delay must be more than 0")
        if self.retry_max_delay < self.retry_first_delay:
            raise ValueError("retry_max_delay must be at least retry_first_delay")
        if self.ack_link_ttl <= dt.timedelta(0):
            raise ValueError("ack_link_ttl must be more than 0")
        if self.public_url is not None and urlsplit(self.public_url).scheme not in ("http", "https"):
            raise ValueError("public_url is an http:// or https:// URL")
        return self

    # -- derived -----------------------------------------------------------------------
    def timing(self) -> Timing:
        return Timing(group_wait=self.group_wait, group_interval=self.group_interval,
                      repeat_interval=self.repeat_interval)

    def escalation(self) -> EscalationPolicy:
        return EscalationPolicy(head_after_hours=self.escalate_head_after_hours,
                                leadership_after_hours=self.escalate_leadership_after_hours,
                                min_severity=self.escalate_min_severity)

    def delivery_backoff(self) -> Backoff:
        """The outbox relay's delay before a notice a channel refused is tried again."""
        return Backoff(first=self.retry_first_delay.total_seconds(), cap=self.retry_max_delay.total_seconds())

    def alertmanager_token_value(self) -> str | None:
        """The token of Alertmanager's receiver: its own, else the API token, else none (loopback only)."""
        token = self.alertmanager_token if self.alertmanager_token is not None else self.api_token
        return token.get_secret_value() if token is not None else None

    def ack_secret_value(self) -> bytes | None:
        return self.ack_secret.get_secret_value().encode() if self.ack_secret is not None else None

    def public_base_url(self) -> str:
        return self.public_url or f"http://localhost:{self.port}"

    def directory_path(self) -> Path:
        return self.directory or EXAMPLE_DIRECTORY

    def smtp_port_or_default(self) -> int:
        if self.smtp_port:
            return self.smtp_port
        return {"starttls": 587, "tls": 465, "none": 25}[self.smtp_security]

    def smtp_password_value(self) -> str | None:
        if self.smtp_password is not None:
            return self.smtp_password.get_secret_value()
        if self.smtp_password_file is not None:
            return self.smtp_password_file.read_text(encoding="utf-8").strip()
        return None

    def webhook_secret_for(self, official_id: str) -> bytes | None:
        if official_id in self.webhook_secrets:
            return self.webhook_secrets[official_id].get_secret_value().encode()
        if self.webhook_secret is not None:
            return self.webhook_secret.get_secret_value().encode()
        if self.webhook_secret_file is not None:
            return self.webhook_secret_file.read_text(encoding="utf-8").strip().encode()
        return None
