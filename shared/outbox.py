"""The one outbox: messages committed with the state that caused them, delivered after the commit.

A service's store writes the messages its service layer decided on
(:class:`Message`: where to, in which order, what) in the same transaction as
the state change (:meth:`Outbox.add`), so a crash never loses one and never
sends one for a change that was rolled back. :class:`Relay` delivers them
later through a function the service gives it (publish to JetStream, send an
e-mail), and deletes each one once delivered:

* messages of one ``key`` go out in the order they were added: one that
  fails holds back the later ones of its key, which wait with it;
* a failure the delivery says may pass is retried under the shared
  :class:`~shared.backoff.Backoff`, for as long as it takes (an outage must
  not lose an alert); one it says will not pass is dropped and logged;
* a delivery may ask for its own bookkeeping to be written in the
  transaction that deletes the message (the notifier's notification log), so
  "sent" and "recorded as sent" cannot part.

A message delivered and not yet deleted when the process dies is delivered
again: deliveries must be idempotent (a JetStream publish carries a stable
``Nats-Msg-Id``; the notifier checks its log before it sends).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    func,
    inspect,
    select,
    text,
    update,
)

from shared.backoff import Backoff
from shared.db import UtcDateTime
from shared.periodic import Wake

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Message:
    """What a service layer decided to send: ``topic`` (a subject, a channel), ``key`` (order), ``payload``."""

    topic: str
    key: str
    payload: str
    message_id: str | None = None  # the receiver's dedup id (a CloudEvent id)


@dataclass(frozen=True)
class Pending:
    """A message waiting in the outbox."""

    id: int
    topic: str
    key: str
    payload: str
    message_id: str | None
    attempts: int
    created_at: dt.datetime


Record = Callable[[Connection], None]


@dataclass(frozen=True)
class Delivered:
    """Sent. ``record`` runs in the transaction that deletes the message."""

    record: Record | None = None


@dataclass(frozen=True)
class Retry:
    """Not sent; may pass (a channel down, the broker away): try again later."""

    reason: str


@dataclass(frozen=True)
class GiveUp:
    """Not sent and never will be: drop it. ``record`` runs in the transaction that deletes it."""

    reason: str
    record: Record | None = None


Result = Delivered | Retry | GiveUp
Deliver = Callable[[Pending], Awaitable[Result]]


def outbox_table(prefix: str, metadata: MetaData) -> Table:
    """The outbox table of a service whose tables are named ``{prefix}_...``."""
    return Table(
        f"{prefix}_outbox",
        metadata,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
        Column("topic", String(128), nullable=False),
        Column("key", String(256), nullable=False),
        Column("payload", Text, nullable=False),
        Column("message_id", String(256), nullable=True),
        Column("created_at", UtcDateTime, nullable=False),
        Column("attempts", Integer, nullable=False, server_default=text("0")),
        Column("next_attempt_at", UtcDateTime, nullable=False),
        Column("last_error", String(500), nullable=True),
        Index(f"ix_{prefix}_outbox_due", "next_attempt_at", "id"),
        Index(f"ix_{prefix}_outbox_key", "key", "id"),
        sqlite_autoincrement=True,  # ids never repeat, also once the outbox was empty
    )


class Outbox:
    """The SQL of one service's outbox table."""

    def __init__(self, engine: Engine, table: Table) -> None:
        self.engine = engine
        self.table = table

    def create(self) -> None:
        """Create the table; an older table of the same name with other columns is set aside first
        (renamed ``{name}_legacy``, its indexes dropped: their names may be the new table's)."""
        existing = inspect(self.engine)
        if existing.has_table(self.table.name):
            columns = {c["name"] for c in existing.get_columns(self.table.name)}
            if not {c.name for c in self.table.columns} <= columns:
                legacy = f"{self.table.name}_legacy"
                indexes = [i["name"] for i in existing.get_indexes(self.table.name) if i["name"]]
                with self.engine.begin() as conn:
                    for name in indexes:
                        conn.execute(text(f"DROP INDEX {name}"))
                    conn.execute(text(f"ALTER TABLE {self.table.name} RENAME TO {legacy}"))
                log.warning("outbox table of an older layout renamed table=%s to=%s", self.table.name, legacy)
        self.table.create(self.engine, checkfirst=True)

    def add(self, conn: Connection, messages: Sequence[Message], *, now: dt.datetime) -> None:
        """Inside the caller's transaction: the messages to deliver once it commits."""
        if not messages:
            return
        conn.execute(
            self.table.insert(),
            [
                {
                    "topic": m.topic,
                    "key": m.key,
                    "payload": m.payload,
                    "message_id": m.message_id,
                    "created_at": now,
                    "attempts": 0,
                    "next_attempt_at": now,
                }
                for m in messages
            ],
        )

    def due(self, *, now: dt.datetime, limit: int) -> list[Pending]:
        t = self.table
        stmt = (
            select(t.c.id, t.c.topic, t.c.key, t.c.payload, t.c.message_id, t.c.attempts, t.c.created_at)
            .where(t.c.next_attempt_at <= now)
            .order_by(t.c.id)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [Pending(*row) for row in conn.execute(stmt)]

    def settle(
        self,
        results: Sequence[tuple[Pending, Result]],
        *,
        now: dt.datetime,
        backoff: Backoff,
    ) -> None:
        """Delete what was delivered or given up (with its records), reschedule what may pass."""
        t = self.table
        done = [p.id for p, r in results if not isinstance(r, Retry)]
        with self.engine.begin() as conn:
            for p, r in results:
                if isinstance(r, (Delivered, GiveUp)) and r.record is not None:
                    r.record(conn)
                elif isinstance(r, Retry):
                    attempts = p.attempts + 1
                    later = backoff.after(attempts, now)
                    conn.execute(
                        update(t)
                        .where(t.c.id == p.id)
                        .values(attempts=attempts, next_attempt_at=later, last_error=r.reason[:500])
                    )
                    # The later messages of its key wait for it: they go out after it, never before.
                    conn.execute(
                        update(t)
                        .where(t.c.key == p.key, t.c.id > p.id, t.c.next_attempt_at < later)
                        .values(next_attempt_at=later)
                    )
            for start in range(0, len(done), 500):
                conn.execute(delete(t).where(t.c.id.in_(done[start : start + 500])))

    def size(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(self.table)).scalar_one())

    def topics(self) -> dict[str, int]:
        """Messages waiting, by topic."""
        t = self.table
        with self.engine.connect() as conn:
            return {topic: int(n) for topic, n in conn.execute(select(t.c.topic, func.count()).group_by(t.c.topic))}


class Relay:
    """Delivers an outbox's due messages: :meth:`once` is one pass. Run it in the background with
    ``service.every(interval, relay.once, name=..., wake=relay.wake)``; call :attr:`wake` after a commit
    that added messages, so they go out now rather than at the next interval."""

    def __init__(
        self,
        outbox: Outbox,
        deliver: Deliver,
        *,
        clock: Callable[[], dt.datetime],
        batch: int = 500,
        concurrency: int = 64,
        backoff: Backoff = Backoff(first=1.0, cap=300.0),
    ) -> None:
        self.outbox = outbox
        self.deliver = deliver
        self.clock = clock
        self.batch = batch
        self.concurrency = concurrency
        self.backoff = backoff
        self.wake = Wake()

    async def once(self, now: dt.datetime | None = None) -> bool:
        """Deliver one batch of due messages; True when a full batch was due (more may wait)."""
        now = now or self.clock()
        due = await asyncio.to_thread(self.outbox.due, now=now, limit=self.batch)
        if not due:
            return False
        results: list[tuple[Pending, Result]] = []
        held: set[str] = set()  # keys with a message not delivered in this pass
        limit = asyncio.Semaphore(self.concurrency)

        async def attempt(p: Pending) -> tuple[Pending, Result]:
            async with limit:
                try:
                    return p, await self.deliver(p)
                except Exception as exc:  # a delivery bug: keep the message and say so, loudly
                    log.exception("outbox delivery raised topic=%s id=%d", p.topic, p.id)
                    return p, Retry(f"delivery raised {type(exc).__name__}")

        for wave in _waves(due):
            wave = [p for p in wave if p.key not in held]
            for p, r in await asyncio.gather(*(attempt(p) for p in wave)):
                results.append((p, r))
                if isinstance(r, Retry):
                    held.add(p.key)
                    log.warning("outbox delivery deferred topic=%s attempts=%d reason=%s", p.topic,
                                p.attempts + 1, r.reason)
                elif isinstance(r, GiveUp):
                    log.error("outbox message dropped topic=%s id=%d reason=%s", p.topic, p.id, r.reason)
        await asyncio.to_thread(self.outbox.settle, results, now=now, backoff=self.backoff)
        return len(due) >= self.batch


def _waves(rows: Sequence[Pending]) -> list[list[Pending]]:
    """Consecutive groups in which no key appears twice: a wave is delivered at once, waves in order."""
    out: list[list[Pending]] = []
    current: list[Pending] = []
    keys: set[str] = set()
    for row in rows:
        if row.key in keys:
            out.append(current)
            current, keys = [], set()
        current.append(row)
        keys.add(row.key)
    if current:
        out.append(current)
    return out
