"""Database helpers shared by services: engines and error classification."""

from __future__ import annotations

import datetime as dt
import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    Connection,
    Date,
    DateTime,
    Dialect,
    Engine,
    Executable,
    Integer,
    Table,
    TypeDecorator,
    bindparam,
    create_engine,
    delete,
    event,
    insert,
    inspect,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy import exc as sa_exc

log = logging.getLogger(__name__)


def make_engine(url: str, *, pool_size: int = 5, checkpoint_every: float | None = None) -> Engine:
    """A SQLAlchemy engine tuned for SQLite (WAL, busy timeout) or PostgreSQL.

    ``checkpoint_every`` (SQLite, for a process that writes much): the WAL is
    copied back into the database by a thread of its own every so many
    seconds, not by the transaction that crosses SQLite's threshold, which
    then waits for it (see :func:`_checkpoint_in_background`).
    """
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            if checkpoint_every:
                cur.execute("PRAGMA wal_autocheckpoint=0")
            cur.close()

        if checkpoint_every:
            _checkpoint_in_background(engine, every=checkpoint_every)
        return engine
    if url.startswith("postgresql") and "+" not in url.split("://", 1)[0]:
        url = url.replace("postgresql://", "postgresql+psycopg://", 1)
    return create_engine(url, pool_size=pool_size, max_overflow=5, pool_pre_ping=True, pool_recycle=1800)


def _checkpoint_in_background(engine: Engine, *, every: float) -> None:
    """Copy the WAL back every ``every`` seconds from a daemon thread (SQLite releases the interpreter lock
    while it does). A page rewritten by many transactions in between is copied once, and no transaction waits
    for a checkpoint: with SQLite's own, every ~4 MB of WAL, the one that crossed the line did (docs/benchmarks.md)."""

    def run() -> None:
        while True:
            time.sleep(every)
            try:
                with engine.connect() as conn:
                    conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
            except Exception:  # the next one will try again; a WAL that grows meanwhile loses nothing
                log.warning("WAL checkpoint failed", exc_info=True)

    threading.Thread(target=run, name="sqlite-checkpoint", daemon=True).start()


def add_missing_columns(engine: Engine, table: Table) -> list[str]:
    """Add the nullable columns of ``table`` that an older database lacks; returns their names.

    ``create_all`` creates missing tables but never alters one. This covers
    the only schema change parwatch makes in place: a new nullable column,
    which readers treat as "not known yet".
    """
    present = {c["name"] for c in inspect(engine).get_columns(table.name)}
    added = []
    for column in table.columns:
        if column.name in present:
            continue
        if not column.nullable or column.primary_key:
            raise RuntimeError(f"{table.name}.{column.name} is missing and cannot be added in place")
        kind = column.type.compile(dialect=engine.dialect)
        preparer = engine.dialect.identifier_preparer
        name = f"{preparer.format_table(table)} ADD COLUMN {preparer.format_column(column)}"
        with engine.begin() as conn:
            conn.execute(text(f"ALTER TABLE {name} {kind}"))
        added.append(column.name)
        log.info("column added table=%s column=%s", table.name, column.name)
    return added


def widen_to_bigint(engine: Engine, table: Table) -> list[str]:
    """On PostgreSQL, make BIGINT the INTEGER columns of an existing table that the model declares BIGINT; returns
    their names.

    Older parwatch versions stored sequences (a source's ``sequence``, a
    stream sequence, an outbox id) in 32-bit columns, which the contract's
    values up to 2^53 overflow. The change rewrites the table once, under a
    lock, at the first start of the newer version. SQLite's integers are
    64-bit whatever the declared type: nothing to do there.
    """
    if engine.dialect.name != "postgresql":
        return []
    present = {c["name"]: c["type"] for c in inspect(engine).get_columns(table.name)}
    preparer = engine.dialect.identifier_preparer
    widened = []
    for column in table.columns:
        found = present.get(column.name)
        if not isinstance(column.type, BigInteger) or found is None:
            continue
        if isinstance(found, BigInteger) or not isinstance(found, Integer):
            continue
        with engine.begin() as conn:
            conn.execute(text(f"ALTER TABLE {preparer.format_table(table)} ALTER COLUMN "
                              f"{preparer.format_column(column)} TYPE BIGINT"))
        widened.append(column.name)
        log.warning("column widened to 64 bits table=%s column=%s", table.name, column.name)
    return widened


def delete_chunk(engine: Engine, table: Table, where: ColumnElement[bool], *, limit: int) -> int:
    """Delete at most ``limit`` rows of ``table`` that match ``where``, in one short transaction; returns how many.

    The rows are chosen by primary key in a subquery (``DELETE .. WHERE key IN
    (SELECT key .. LIMIT n) AND where``), so a cleanup never holds a long
    transaction and never binds an unbounded list of values; ``where`` is
    checked again on each row deleted, so a row a concurrent transaction has
    just changed (PostgreSQL re-reads it after that commit) stays if it no
    longer matches.
    """
    key = list(table.primary_key.columns)
    chosen = select(*key).where(where).limit(limit)
    target = key[0] if len(key) == 1 else tuple_(*key)
    with engine.begin() as conn:
        return int(conn.execute(delete(table).where(target.in_(chosen), where)).rowcount)


def delete_with_children(
    conn: Connection,
    parent: Column[Any],
    where: ColumnElement[bool],
    *,
    children: Sequence[Column[Any]],
    keys: Sequence[Any],
    chunk: int = 400,
) -> tuple[int, int]:
    """Delete the rows of ``parent``'s table whose key is one of ``keys`` and still matches ``where``, and the rows
    of ``children`` (columns naming the parent's key) that belong to them; returns (parents, children) deleted.

    In the caller's transaction, ``chunk`` keys a statement; ``where`` is checked again with each parent, so one
    a concurrent transaction has just changed stays, and so do its children.
    """
    parents = kids = 0
    for start in range(0, len(keys), chunk):
        part = keys[start : start + chunk]
        still = select(parent).where(parent.in_(part), where)
        for child in children:
            kids += int(conn.execute(delete(child.table).where(child.in_(still))).rowcount)
        parents += int(conn.execute(delete(parent.table).where(parent.in_(part), where)).rowcount)
    return parents, kids


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


class BulkStatement:
    """An INSERT, upsert or UPDATE compiled once and run through the driver's ``executemany``.

    For each row, SQLAlchemy Core builds a parameter dictionary and runs the
    generic parameter processing, which costs the tracker more than SQLite
    spends storing the row (docs/benchmarks.md). This keeps Core's statement
    compilation and the parameters' own bind processors (so a row is stored
    exactly as Core would store it) and only skips the per-row machinery:
    rows are tuples of the values of ``params`` (the statement's bind
    parameter names, column names for an INSERT), in that order.
    """

    def __init__(self, stmt: Executable, params: Sequence[str], dialect: Dialect) -> None:
        compiled = stmt.compile(dialect=dialect)  # type: ignore[attr-defined]
        self.sql: str = compiled.string
        self.params = tuple(params)
        if set(compiled.binds) != set(self.params):
            raise ValueError(f"statement parameters {sorted(compiled.binds)} are not {self.params}")
        #: Where the driver wants each value: by name, or by position in the compiled statement.
        self.positions = [self.params.index(name) for name in compiled.positiontup] if compiled.positional else None
        self.processors = [
            (i, process)
            for i, name in enumerate(self.params)
            if (process := compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)) is not None
        ]

    def execute(self, conn: Connection, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        params: list[Any] = []
        for row in rows:
            values = list(row)
            for i, process in self.processors:
                values[i] = process(values[i])
            if self.positions is None:
                params.append(dict(zip(self.params, values, strict=True)))
            else:
                params.append(tuple(values[i] for i in self.positions))
        conn.exec_driver_sql(self.sql, params)


class BulkSelect:
    """``SELECT columns WHERE key IN (...)`` for many keys, compiled once, rows as plain tuples.

    Core compiles an ``IN`` list again for each new length and builds a row
    object per result row; the tracker looks up a batch's keys several times
    per batch. This compiles the statement once for each of a few list sizes
    (up to ``chunk``); a list is padded to the next size by repeating its
    first key, which ``IN`` ignores, so one key costs one placeholder, not
    ``chunk`` of them (a batch of one event at a quiet hour). The columns' own
    result processors are applied, so values come back as Core would return
    them (test_shared_db checks it).
    """

    SIZES = (1, 8, 64)

    def __init__(self, columns: Sequence[ColumnElement[Any]], key: ColumnElement[Any], dialect: Dialect,
                 *, chunk: int = 400) -> None:
        self.chunk = chunk
        self.statements: dict[int, tuple[str, tuple[str, ...]]] = {}
        for size in sorted({s for s in self.SIZES if s < chunk} | {chunk}):
            names = tuple(f"k{i}" for i in range(size))
            compiled = select(*columns).where(key.in_([bindparam(n) for n in names])).compile(dialect=dialect)
            self.statements[size] = (compiled.string, names)
            self.named = not compiled.positional
        self.key_processor = key.type.dialect_impl(dialect).bind_processor(dialect)
        self.columns = tuple(columns)
        self.dialect = dialect
        self.processors: list[tuple[int, Callable[[Any], Any]]] | None = None  # known at the first result

    def _processors(self, description: Sequence[Sequence[Any]]) -> list[tuple[int, Callable[[Any], Any]]]:
        # As Core does it: a column's processor may depend on the driver's type code (PostgreSQL numerics).
        processors = []
        for i, (column, described) in enumerate(zip(self.columns, description, strict=True)):
            process = column.type.dialect_impl(self.dialect).result_processor(self.dialect, described[1])
            if process is not None:
                processors.append((i, process))
        return processors

    def fetch(self, conn: Connection, keys: Sequence[Any]) -> list[tuple[Any, ...]]:
        """The rows whose key is one of ``keys`` (each row once, in no particular order)."""
        out: list[tuple[Any, ...]] = []
        keys = list(dict.fromkeys(keys))
        for start in range(0, len(keys), self.chunk):
            part = keys[start : start + self.chunk]
            if self.key_processor is not None:
                part = [self.key_processor(k) for k in part]
            size = next(s for s in self.statements if s >= len(part))
            sql, names = self.statements[size]
            part += [part[0]] * (size - len(part))
            params: Any = dict(zip(names, part, strict=True)) if self.named else tuple(part)
            result = conn.exec_driver_sql(sql, params)
            if self.processors is None:
                self.processors = self._processors(result.cursor.description)
            processors = self.processors
            for row in result:
                if processors:
                    values = list(row)
                    for i, process in processors:
                        values[i] = process(values[i])
                    out.append(tuple(values))
                else:
                    out.append(tuple(row))
        return out


class Record(SimpleNamespace):
    """A row of a :class:`Rows` table as a plain object, one attribute a column."""


class Rows:
    """The rows of one table that a transaction reads, adds, changes or deletes: a unit of work on Core.

    ORM objects cost more than the SQL itself where a batch writes hundreds of
    rows (every attribute set runs the ORM's instrumentation; docs/benchmarks.md).
    Here a row read is a :class:`Record`, kept once per primary key (reading it
    again gives the same object), with the values as read beside it. At
    :meth:`flush` the records whose values changed are written with one
    executemany UPDATE of every column, the records added with one executemany
    INSERT, the deleted ones with one executemany DELETE. Nothing is written
    before :meth:`flush`: a query that must see this transaction's changes
    comes after one.
    """

    def __init__(self, table: Table) -> None:
        self.table = table
        self.keys = tuple(c.name for c in table.primary_key.columns)
        self._read: dict[tuple[Any, ...], tuple[Record, dict[str, Any]]] = {}
        self._added: dict[tuple[Any, ...], Record] = {}
        self._deleted: dict[tuple[Any, ...], Record] = {}

    def key_of(self, record: Any) -> tuple[Any, ...]:
        return tuple(getattr(record, k) for k in self.keys)

    def load(self, conn: Connection, stmt: Executable, params: dict[str, Any] | None = None) -> list[Record]:
        """The rows ``stmt`` selects (every column of the table), as this transaction's records."""
        out = []
        for values in conn.execute(stmt, params or {}).mappings():
            key = tuple(values[k] for k in self.keys)
            found = self._known(key)
            if found is None:
                if key in self._deleted:
                    continue
                found = Record(**values)
                self._read[key] = (found, dict(values))
            out.append(found)
        return out

    def _known(self, key: tuple[Any, ...]) -> Record | None:
        if key in self._added:
            return self._added[key]
        read = self._read.get(key)
        return None if read is None else read[0]

    def get(self, conn: Connection, key: tuple[Any, ...], *, for_update: bool = False) -> Record | None:
        """The row with primary key ``key``, or None; ``for_update``: locked until the transaction ends."""
        known = self._known(key)
        if known is not None:
            return known
        if key in self._deleted:
            return None
        c = self.table.c
        stmt = select(self.table).where(*(c[k] == v for k, v in zip(self.keys, key, strict=True)))
        found = self.load(conn, stmt.with_for_update() if for_update else stmt)
        return found[0] if found else None

    def add(self, values: dict[str, Any]) -> Record:
        """A new row, every column given."""
        record = Record(**values)
        self._added[self.key_of(record)] = record
        return record

    def delete(self, record: Record) -> None:
        key = self.key_of(record)
        if self._added.pop(key, None) is None:
            self._read.pop(key, None)
            self._deleted[key] = record

    def flush(self, conn: Connection) -> int:
        """Write what changed since the last flush; the rows written."""
        changed = [r for r, before in self._read.values() if vars(r) != before]
        added = list(self._added.values())
        deleted = list(self._deleted.values())
        if deleted:  # first: a row deleted and added again under its key is a new row, not a conflict
            conn.execute(self._delete, [{f"b_{k}": v for k, v in zip(self.keys, self.key_of(r), strict=True)}
                                        for r in deleted])
        if added:
            conn.execute(insert(self.table), [vars(r) for r in added])
        if changed:
            conn.execute(self._update, [{f"b_{k}": v for k, v in vars(r).items()} for r in changed])
        for record in added + changed:
            self._read[self.key_of(record)] = (record, dict(vars(record)))
        self._added.clear()
        self._deleted.clear()
        return len(added) + len(changed) + len(deleted)

    @functools.cached_property
    def _update(self) -> Executable:
        c = self.table.c
        return (
            update(self.table)
            .where(*(c[k] == bindparam(f"b_{k}") for k in self.keys))
            .values({col.name: bindparam(f"b_{col.name}") for col in self.table.columns if col.name not in self.keys})
        )

    @functools.cached_property
    def _delete(self) -> Executable:
        c = self.table.c
        return delete(self.table).where(*(c[k] == bindparam(f"b_{k}") for k in self.keys))


def _utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("naive datetime: parwatch stores aware datetimes only")
    return value.astimezone(dt.UTC)


class UtcDateTime(TypeDecorator[dt.datetime]):
    """Aware datetimes stored in UTC, returned aware, on SQLite and PostgreSQL alike.

    On SQLite the value is the text SQLAlchemy's DATETIME writes
    (``YYYY-MM-DD HH:MM:SS.ffffff``, UTC), produced and parsed with the
    datetime module's C routines instead of SQLAlchemy's generic format string
    and regular expression: the tracker binds and reads several of these per
    event (test_shared_db checks both give the same text and values).
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        return None if value is None else _utc(value)

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        def process(value: dt.datetime | None) -> str | None:
            return None if value is None else _utc(value).isoformat(" ", "microseconds")[:26]

        return process

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], Any] | None:
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)
        utc = dt.UTC
        parse = dt.datetime.fromisoformat

        def process(value: str | None) -> dt.datetime | None:
            return None if value is None else parse(value).replace(tzinfo=utc)

        return process


class Day(TypeDecorator[dt.date]):
    """A calendar day, stored as SQLAlchemy's DATE stores it; on SQLite, the text is
    written and read with the date type's C routines (tested against SQLAlchemy's)."""

    impl = Date
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        def process(value: dt.date | None) -> str | None:
            return None if value is None else value.isoformat()

        return process

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], Any] | None:
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)
        parse = dt.date.fromisoformat

        def process(value: str | None) -> dt.date | None:
            return None if value is None else parse(value)

        return process


class StatisticsKeeper:
    """ANALYZE a service's busiest tables each time they have about doubled (PostgreSQL).

    A fresh database filled by a backfill keeps the planner's idea of "empty
    tables" until autovacuum comes round (after a minute, or never where it is
    off), and with it sequential scans for every batch's lookups. Doubling
    keeps the cost logarithmic in the table size. The first comes early (1,000
    rows): fed 2,000 events a second from empty, the tracker's first 20,000
    rows under the "empty" plans cost it a 10 s backlog (p99 of event -> fact
    9.1-11.9 s in four runs, against 0.57-1.08 s in five with the first
    ANALYZE at 1,000: docs/benchmarks.md). A no-op on SQLite, whose planner does not
    depend on statistics for these lookups.
    """

    def __init__(self, engine: Engine, *, tables: list[str], first_after: int = 1_000) -> None:
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
