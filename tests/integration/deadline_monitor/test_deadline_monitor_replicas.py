"""Two replicas of the deadline monitor on one PostgreSQL database (the only database replicas run on): a row
one replica is changing is not changed by the other in the meantime, two ticks share the due rows instead of
settling them twice, and racing replicas fire every alert once."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy import select, text

from services.deadline_monitor.domain import Catalog, Policy
from services.deadline_monitor.plan import load_agencies
from services.deadline_monitor.service import MonitorService
from services.deadline_monitor.store import DOSSIERS, OUTBOX, MonitorStore, create_schema
from shared.backoff import is_retryable
from shared.calendar import VN_TZ, load_calendar
from shared.db import make_engine
from shared.events import DossierStateChanged

CAL = load_calendar()
T = TypeVar("T")


def make_service(url: str) -> MonitorService:
    engine = make_engine(url)
    create_schema(engine)
    return MonitorService(
        store=MonitorStore(engine),
        catalog=Catalog(agencies=load_agencies(), plans={}),
        calendar=CAL,
        policy=Policy(),
        clock=lambda: dt.datetime.now(VN_TZ),
    )


def at(text_: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text_).replace(tzinfo=VN_TZ)


def snapshot(code: str, revision: int, due: dt.date, *, ended: bool = False) -> DossierStateChanged:
    return DossierStateChanged(
        dossier_code=code, revision=revision, agency_code="PTP", procedure_code="1.004227", field_code="HOTICH",
        status=10 if ended else 4, counted=True, due_day=due, ended_on=due if ended else None,
        updated_at=at("2026-11-20T08:00"),
    )


def waiting_for_a_lock(url: str, *, timeout: float = 10.0) -> None:
    """Return once a session of the database waits for a row lock (fail after ``timeout``)."""
    engine = make_engine(url)
    deadline = time.monotonic() + timeout
    with engine.connect() as conn:
        while conn.execute(text("SELECT count(*) FROM pg_locks WHERE NOT granted")).scalar_one() == 0:
            assert time.monotonic() < deadline, "no transaction waited for the locked row"
            conn.rollback()
            time.sleep(0.02)
    engine.dispose()


def test_a_dossier_row_being_changed_is_read_by_the_other_replica_once_committed(postgres_url: str) -> None:
    first, second = make_service(postgres_url), make_service(postgres_url)
    asyncio.run(first.record_states([snapshot("H1", 1, dt.date(2026, 12, 10))], now=at("2026-11-20T08:00")))
    seen: list[int] = []

    def other_replica() -> None:
        with second.store.transaction() as work:
            seen.append(work.dossiers(["H1"])["H1"].revision)

    with first.store.transaction() as work:
        row = work.dossiers(["H1"])["H1"]
        work.save_dossier(snapshot("H1", 2, dt.date(2026, 12, 10)), row, is_open=True, now=at("2026-11-20T09:00"))
        reader = threading.Thread(target=other_replica)
        reader.start()
        waiting_for_a_lock(postgres_url)
    reader.join(timeout=10)
    assert seen == [2]  # not the revision 1 it would have read beside the uncommitted change


def test_two_ticks_take_different_rows(postgres_url: str) -> None:
    first, second = make_service(postgres_url), make_service(postgres_url)
    due = dt.date(2026, 11, 23)
    states = [snapshot(f"H{i}", 1, due) for i in range(10)]
    asyncio.run(first.record_states(states, now=at("2026-11-01T08:00")))  # due far ahead: level 0, no alert
    with first.store.transaction() as one:
        taken = one.at_level(DOSSIERS, level=0, bound=due, limit=4)
        with second.store.transaction() as other:
            rest = other.at_level(DOSSIERS, level=0, bound=due, limit=10)
    assert len(taken) == 4 and len(rest) == 6
    assert {r.dossier_code for r in taken}.isdisjoint({r.dossier_code for r in rest})


async def retried(call: Callable[[], Awaitable[T]]) -> T:
    """As the consumer and the periodic loop do: a lost race (a unique key both inserted) is tried again."""
    for attempt in range(20):
        try:
            return await call()
        except Exception as exc:
            if not is_retryable(exc) or attempt == 19:
                raise
            await asyncio.sleep(0.01 * attempt)
    raise AssertionError("unreachable")


async def test_racing_replicas_fire_and_resolve_each_alert_once(postgres_url: str) -> None:
    replicas = [make_service(postgres_url), make_service(postgres_url)]
    codes = [f"H{i:03d}" for i in range(300)]
    due, now = dt.date(2026, 11, 19), at("2026-11-21T08:00")  # overdue since the 20th
    # One replica: each dossier's overdue alert fires, then resolves as the dossier ends.
    await replicas[0].record_states([snapshot(c, 1, due) for c in codes], now=now)
    await replicas[1].record_states([snapshot(c, 2, due, ended=True) for c in codes], now=now)
    # Then later events reopen every dossier, revision 3 delivered to one replica and 4 to the other at the same
    # time: each must fire the alert again once (its second generation), not once a replica.
    await asyncio.gather(
        retried(lambda: replicas[0].record_states([snapshot(c, 3, due) for c in codes], now=now)),
        retried(lambda: replicas[1].record_states([snapshot(c, 4, due) for c in codes], now=now)),
    )
    # And two ticks at once, a working day later, find nothing more to do between them.
    later = at("2026-11-24T08:00")
    await asyncio.gather(*(retried(lambda r=r: r.run_steps(r.tick_steps(later))) for r in replicas))

    with replicas[0].store.engine.connect() as conn:
        ids = list(conn.execute(select(OUTBOX.c.message_id).where(OUTBOX.c.topic == "tthc.alerts")).scalars())
        rows = conn.execute(text("SELECT count(*), min(revision), max(revision) FROM monitor_dossier")).one()
    assert [i for i, n in Counter(ids).items() if n > 1] == []  # each transition's event once
    assert len(ids) == 3 * len(codes)  # fired, resolved, fired again: per dossier
    assert tuple(rows) == (300, 4, 4)  # every dossier at its highest revision
