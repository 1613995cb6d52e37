"""Settings common to every service, from the environment (prefix ``PARWATCH_``).

Read once in each service's ``create_app`` and passed down; nothing else
reads the environment.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path

from pydantic import ByteSize, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.backoff import Backoff
from shared.consumer import RetryPolicy
from shared.nats_auth import NatsAuth, public_key_of
from shared.retention import Retention
from shared.streams import STREAM_BY_NAME, StreamSpec, stream_specs

EMBEDDED_NATS_URL = "nats://127.0.0.1:14222"
#: The default data folder, and the demo's inside it (``parwatch demo`` without ``PARWATCH_DATA_DIR``).
DEFAULT_DATA_DIR = Path("var")
DEMO_DATA_DIR = DEFAULT_DATA_DIR / "demo"
#: The log file `parwatch up` keeps in its data folder (every service's output).
STACK_LOG_FILE = "parwatch.log"


def holds_data(folder: Path) -> bool:
    """A stack has run on this folder: it has the embedded NATS store or the stack's log file. (Not a SQLite
    file: an operator command run before any stack creates its service's empty database.)"""
    return (folder / "nats").is_dir() or (folder / STACK_LOG_FILE).is_file()


def demo_data_dir_instead(environ: Mapping[str, str], *, cwd: Path) -> Path | None:
    """The demo's data folder, when an operator command should read it instead of the default.

    That is when no data folder or database is configured (``PARWATCH_DATA_DIR``, ``PARWATCH_DATABASE_URL``),
    ``./var`` holds no data and ``./var/demo`` does: after ``make demo``, ``parwatch notifications`` shows the
    demo's notices without extra settings. A stack of one's own in ``./var`` always wins.
    """
    configured = {k.upper() for k in environ}
    if {"PARWATCH_DATA_DIR", "PARWATCH_DATABASE_URL"} & configured:
        return None
    if holds_data(cwd / DEFAULT_DATA_DIR) or not holds_data(cwd / DEMO_DATA_DIR):
        return None
    return DEMO_DATA_DIR


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PARWATCH_", extra="ignore", frozen=True)

    nats_url: str = Field(default=EMBEDDED_NATS_URL, description="NATS server URL(s), comma separated")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite per service under data_dir")
    data_dir: Path = Field(default=DEFAULT_DATA_DIR, description="folder for SQLite files and embedded NATS data")
    calendar_overrides: Path | None = Field(default=None, description="YAML override file of days off and working days")
    http_host: str = Field(default="127.0.0.1", description="address every service's HTTP server binds")
    log_level: str = Field(default="INFO")
    log_format: str = Field(default="text", pattern="^(text|json)$")
    stream_replicas: int = Field(default=1, ge=1, le=5, description="JetStream replicas for streams (3 in a cluster)")

    # -- NATS credentials and TLS (docs/running.md "Accounts and permissions"); none by default: `make run` ---------
    nats_nkey_seed_file: Path | None = Field(
        default=None, description="this process's NATS nkey seed file (parwatch nats-config writes one per role)"
    )
    nats_tls_ca_file: Path | None = Field(default=None, description="CA bundle that signed the NATS servers' certificates")
    nats_tls_cert_file: Path | None = Field(default=None, description="client certificate, for a server that asks one")
    nats_tls_key_file: Path | None = Field(default=None, description="the client certificate's key")
    nats_manage_streams: bool | None = Field(
        default=None, description="create and reconcile the streams at start (default: only without a credential; "
        "with one, `parwatch streams ensure` does it with the admin credential and a service checks them)",
    )

    # -- limits and retention (docs/running.md "Limits and retention") --------------------------------------------
    stream_max_bytes: dict[str, ByteSize] = Field(
        default_factory=dict,
        description='byte budget of a stream on each server, by stream name, over parwatch\'s (shared/streams.py), '
        'e.g. {"TTHC_DOSSIER": "4GiB"}; applies when parwatch creates the stream or still manages its limit',
    )
    input_retention_days: int = Field(
        default=400, ge=1, le=3650,
        description="days the input streams, and the facts parwatch derives from them, keep messages",
    )
    retention_dedup_days: int = Field(
        default=400, ge=1,
        description="days a consumed event's (source, id) is kept to recognise it again; at least input_retention_days",
    )
    retention_history_days: int = Field(
        default=400, ge=1,
        description="days an ended dossier's history, a resolved alert or a superseded report is kept after its last "
        "change; at least input_retention_days",
    )
    retention_log_days: int = Field(
        default=400, ge=1, description="days the notification log, failed notices and expired silences are kept"
    )
    retention_interval: float = Field(default=3600.0, gt=0, description="seconds between two cleanup passes")
    retention_chunk: int = Field(
        default=500, ge=1, le=5000, description="most rows of a table one cleanup transaction deletes"
    )

    @field_validator("calendar_overrides")
    @classmethod
    def _overrides_exist(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"calendar override file {value} does not exist")
        return value

    @field_validator("nats_nkey_seed_file", "nats_tls_ca_file", "nats_tls_cert_file", "nats_tls_key_file")
    @classmethod
    def _nats_files_exist(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value} does not exist")
        return value

    @field_validator("nats_nkey_seed_file")
    @classmethod
    def _holds_a_seed(cls, value: Path | None) -> Path | None:
        if value is not None:
            public_key_of(value)  # a clear error at start, never the seed itself
        return value

    @model_validator(mode="after")
    def _client_certificate_whole(self) -> CommonSettings:
        if (self.nats_tls_cert_file is None) != (self.nats_tls_key_file is None):
            raise ValueError("nats_tls_cert_file and nats_tls_key_file go together")
        if self.nats_tls_cert_file is not None and self.nats_tls_ca_file is None:
            raise ValueError("nats_tls_cert_file needs nats_tls_ca_file (TLS is on only with the CA that checks "
                             "the servers; a client certificate alone would be ignored)")
        return self

    @field_validator("stream_max_bytes")
    @classmethod
    def _known_streams(cls, value: dict[str, ByteSize]) -> dict[str, ByteSize]:
        unknown = sorted(set(value) - set(STREAM_BY_NAME))
        if unknown:
            raise ValueError(f"unknown stream {', '.join(unknown)}; parwatch's are {', '.join(STREAM_BY_NAME)}")
        small = sorted(name for name, size in value.items() if size < STREAM_BY_NAME[name].max_msg_size)
        if small:
            raise ValueError(f"stream {', '.join(small)}: a budget must hold at least one message of the largest size")
        return value

    @model_validator(mode="after")
    def _keys_outlive_streams(self) -> CommonSettings:
        """A dedup key or a history dropped while its event may still be delivered again (a replay of the stream)
        would count that event twice."""
        for name in ("retention_dedup_days", "retention_history_days"):
            if getattr(self, name) < self.input_retention_days:
                raise ValueError(f"{name} ({getattr(self, name)}) must be at least input_retention_days "
                                 f"({self.input_retention_days}): the streams could deliver again what it forgot")
        return self

    def stream_specs(self) -> tuple[StreamSpec, ...]:
        """parwatch's streams with these settings' budgets and retention (for ``ensure_streams``)."""
        return stream_specs(max_bytes=self.stream_max_bytes, history_days=self.input_retention_days)

    def retention(self) -> Retention:
        return Retention(
            dedup=dt.timedelta(days=self.retention_dedup_days),
            history=dt.timedelta(days=self.retention_history_days),
            log=dt.timedelta(days=self.retention_log_days),
            chunk=self.retention_chunk,
        )

    def nats_servers(self) -> list[str]:
        return [u.strip() for u in self.nats_url.split(",") if u.strip()]

    def manages_streams(self) -> bool:
        """Whether this process creates and reconciles the streams, or only checks them (a narrow credential)."""
        return self.nats_manage_streams if self.nats_manage_streams is not None else self.nats_nkey_seed_file is None

    def nats_auth(self) -> NatsAuth:
        """How this process authenticates to NATS and checks its servers (nothing set: neither, as `make run`)."""
        return NatsAuth.of(seed_file=self.nats_nkey_seed_file, ca_file=self.nats_tls_ca_file,
                           cert_file=self.nats_tls_cert_file, key_file=self.nats_tls_key_file)

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
    linger: float = Field(
        default=0.0, ge=0, le=5, description="seconds a call waits for a full batch once something has arrived"
        " and nothing is being handled (0: at once): fewer, larger transactions under moderate load, that much"
        " later at a quiet hour"
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


class BacklogSettings(BaseSettings):
    """When a consumer of dossier state is catching up on a backlog (``shared.backlog``): deadline_monitor then
    holds its dossier alerts, scoring its KPI rounds. Each service's settings inherit these fields under its own
    env prefix (e.g. ``PARWATCH_SCORING_BACKLOG_LAG``)."""

    catch_up_threshold: int = Field(
        default=1000,
        ge=0,
        description="dossier state facts waiting on the service's consumer (and dossier events on dossier_tracker's)"
        " above which it is catching up and its dossier decisions wait",
    )
    backlog_lag: dt.timedelta = Field(
        default=dt.timedelta(hours=3),
        description=(
            "dossier facts whose event time (the occurred_at of the events they follow from) lags now by more than"
            " this, while they keep coming, are a backlog being replayed: the service's dossier decisions wait until"
            " it has caught up. Hours, not minutes: live events arrive within minutes, and an agency's system that"
            " syncs late only delays its own dossiers; not days: a dossier ending in the last window of a replay"
            " could still be judged on the way. ISO 8601 duration, e.g. PT3H"
        ),
    )
    backlog_idle_seconds: float = Field(
        default=2.0,
        gt=0,
        description="with no dossier fact for this long, a lagging watermark holds nothing: a history with nothing"
        " live after it, one late event, or a quiet district",
    )
    upstream_consumer: str = Field(
        default="TTHC_DOSSIER:dossier_tracker",
        pattern=r"^$|^[A-Za-z0-9_-]+:[A-Za-z0-9_-]+$",
        description=(
            "STREAM:DURABLE of dossier_tracker's consumer; its unread events count toward the backlog, so a tracker"
            " still catching up on history holds the decisions too (empty: only the service's own backlog)"
        ),
    )
