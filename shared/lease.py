"""Which replica of a service runs the loops that must run once: its outbox relay and its periodic sends.

Replicas of a service share the consumers (a deliver group hands each message
to one of them) and the database; what a service sends from its outbox (an
e-mail, an alert event) must still leave once. :class:`Lease` elects one
replica for that: the one holding a PostgreSQL advisory lock, taken on a
connection of its own and held as long as that connection lives. A replica
that dies, or loses its database connection, loses the lease with it; another
takes it at its next step. Steps wrapped with :meth:`Lease.only_when_held`
run on the holder and are skipped elsewhere.

Between a holder losing its connection and noticing it (its next step), both
may deliver: a message delivered twice is what the outbox's idempotent
deliveries already absorb (a stable ``Nats-Msg-Id``; the notifier's log). On
SQLite there is one replica (:class:`shared.service.SingleWriter`), and it
always holds the lease.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading

from sqlalchemy import Connection, Engine, text

from shared.periodic import Step

log = logging.getLogger(__name__)


def lock_key(name: str) -> int:
    """The advisory lock's key for ``name``: a signed 64-bit number, the same in every replica."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


class Lease:
    """The lease ``name`` (e.g. ``parwatch:notifier``) on ``engine``'s database."""

    def __init__(self, engine: Engine, *, name: str) -> None:
        self.engine = engine
        self.name = name
        self.key = lock_key(name)
        self.shared = engine.dialect.name == "postgresql"  # else one replica: always held
        self._conn: Connection | None = None
        self._guard = threading.Lock()

    def held(self) -> bool:
        """True if this replica holds the lease, taking it if it is free (blocking; call it in a thread)."""
        if not self.shared:
            return True
        with self._guard:
            if self._conn is not None:
                try:
                    self._conn.execute(text("SELECT 1")).scalar_one()
                    return True
                except Exception:  # the connection, and with it the lock, is gone (or must be let go of now)
                    log.warning("lease lost name=%s: its database connection broke", self.name, exc_info=True)
                    self._close(discard=True)
            conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            try:
                taken = conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}).scalar_one()
            except Exception:
                conn.close()
                raise
            if not taken:
                conn.close()
                return False
            self._conn = conn
            log.info("lease taken name=%s: this replica runs its relay and periodic sends", self.name)
            return True

    def only_when_held(self, step: Step) -> Step:
        """``step`` run on the holder; elsewhere nothing to do (False: the periodic loop waits its interval)."""
        async def leased() -> bool:
            if not await asyncio.to_thread(self.held):
                return False
            return await step()

        leased.__name__ = getattr(step, "__name__", "step")
        return leased

    def release(self) -> None:
        """Give the lease up (at stop): another replica takes it at its next step."""
        with self._guard:
            if self._conn is not None:
                try:
                    self._conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
                except Exception:
                    self._close(discard=True)
                    raise
                self._close()

    async def stop(self) -> None:
        """:meth:`release`, for a service's ``on_stop`` hooks (before the engine is disposed)."""
        await asyncio.to_thread(self.release)

    def _close(self, *, discard: bool = False) -> None:
        """Give the connection back; ``discard``: close its database session instead (a lock it may still hold
        ends with it, rather than staying in the pool where no step can see or release it)."""
        if self._conn is not None:
            try:
                if discard:
                    self._conn.invalidate()
                self._conn.close()
            except Exception:  # closing a broken connection: nothing more to do
                log.debug("lease connection close failed name=%s", self.name, exc_info=True)
            self._conn = None
