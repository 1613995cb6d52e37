"""Database helpers shared by services: engines and error classification."""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import DateTime, Dialect, Engine, TypeDecorator, create_engine, event, text
from sqlalchemy import exc as sa_exc

log = logging.getLogger(__name__)


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    """A SQLAlchemy engine tuned for SQLite (WAL, busy timeout) or PostgreSQL."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    if url.startswith("postgresql") and "+" not in url.split("://", 1)[0]:
        url = url.replace("postgresql://", "postgresql+psycopg://", 1)
    return create_engine(url, pool_size=pool_size, max_overflow=5, pool_pre_ping=True, pool_recycle=1800)


def is_transient(exc: BaseException) -> bool:
    """True for failures that may pass by themselves: lost connections, locks, timeouts."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError, sa_exc.DisconnectionError)):
        return True
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    return False


def is_conflict(exc: BaseException) -> bool:
    """A concurrent writer won a race (unique key): retrying the work is safe."""
    return isinstance(exc, sa_exc.IntegrityError)


class UtcDateTime(TypeDecorator[dt.datetime]):
    """Aware datetimes stored in UTC, returned aware, on SQLite and PostgreSQL alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime: parwatch stores aware datetimes only")
        return value.astimezone(dt.timezone.utc)

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)


class StatisticsKeeper:
    """ANALYZE a service's busiest tables each time they have about doubled (PostgreSQL).

    A fresh database filled by a backfill keeps the planner's idea of "empty
    tables" until autovacuum comes round (after a minute, or never where it is
    off), and with it sequential scans for every batch's lookups. Doubling
    keeps the cost logarithmic in the table size. A no-op on SQLite, whose
    planner does not depend on statistics for these lookups.
    """

    def __init__(self, engine: Engine, *, tables: list[str], first_after: int = 20_000) -> None:
        self.engine = engine
        self.tables = tables
        self.first_after = first_after
        self.enabled = engine.dialect.name == "postgresql"
        self._written = 0
        self._threshold = first_after

    def wrote(self, rows: int) -> None:
        if not self.enabled:
            return
        self._written += rows
        if self._written < self._threshold:
            return
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f"ANALYZE {', '.join(self.tables)}"))
            total = conn.execute(
                text("SELECT COALESCE(SUM(reltuples), 0) FROM pg_class WHERE relname = ANY(:names)"),
                {"names": self.tables},
            ).scalar_one()
        self._written = 0
        self._threshold = max(self.first_after, int(total))
        log.info("statistics refreshed tables=%s rows=%d", ",".join(self.tables), int(total))
