"""The lease that elects the one replica running a service's outbox relay (shared.lease), on real databases."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from shared.db import make_engine
from shared.lease import Lease, lock_key


def test_one_replica_holds_the_lease_until_it_lets_go(postgres_url: str) -> None:
    first, second = Lease(make_engine(postgres_url), name="parwatch:test"), Lease(make_engine(postgres_url),
                                                                                    name="parwatch:test")
    assert first.held() and first.held()  # taken, then kept
    assert not second.held()
    assert Lease(make_engine(postgres_url), name="parwatch:other").held()  # another service's lease is its own
    first.release()
    assert second.held() and not first.held()


def test_a_replica_whose_connection_dies_loses_the_lease_to_another(postgres_url: str) -> None:
    first, second = Lease(make_engine(postgres_url), name="parwatch:test"), Lease(make_engine(postgres_url),
                                                                                    name="parwatch:test")
    assert first.held()
    admin = make_engine(postgres_url)
    with admin.connect() as conn:  # the holder's session ends, as when its host or network goes
        killed = conn.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND objid = :low"),
            {"low": lock_key("parwatch:test") & 0xFFFFFFFF},
        ).scalars().all()
    assert killed == [True]
    assert second.held()  # free once the session is gone
    assert not first.held()  # and the old holder notices at its next step


def test_steps_run_only_where_the_lease_is_held(postgres_url: str) -> None:
    ran: list[str] = []

    def step(name: str):  # type: ignore[no-untyped-def]
        async def once() -> bool:
            ran.append(name)
            return False
        return once

    first, second = Lease(make_engine(postgres_url), name="parwatch:test"), Lease(make_engine(postgres_url),
                                                                                    name="parwatch:test")

    async def run() -> None:
        await first.only_when_held(step("first"))()
        await second.only_when_held(step("second"))()
        await first.stop()
        await second.only_when_held(step("second"))()

    asyncio.run(run())
    assert ran == ["first", "second"]


def test_on_sqlite_the_one_replica_always_holds_it(sqlite_url: str) -> None:
    assert Lease(make_engine(sqlite_url), name="parwatch:test").held()


def test_a_lease_whose_check_fails_leaves_no_lock_behind_in_the_pool(postgres_url: str) -> None:
    """The check fails on a connection that is still alive (an error, not a disconnect): the lease is given up with
    its session, not returned to the pool holding the lock, where no step could see or release it."""

    class Failing:
        def __init__(self, conn) -> None:  # type: ignore[no-untyped-def]
            self.conn = conn

        def execute(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            raise RuntimeError("the check failed")

        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            return getattr(self.conn, name)

    first, second = Lease(make_engine(postgres_url), name="parwatch:test"), Lease(make_engine(postgres_url),
                                                                                    name="parwatch:test")
    assert first.held()
    first._conn = Failing(first._conn)  # type: ignore[assignment]
    assert first.held()  # lost, then taken again on a fresh connection
    first.release()
    assert second.held()  # nothing of the first holder's lock is left anywhere
    second.release()
    first.engine.dispose()
    second.engine.dispose()
