"""Deadline benchmark: one monitor tick over 1,000,000 open dossiers.

Bulk-inserts N open dossier rows straight into ``monitor_dossier`` (not
through NATS: the point is the tick, not ingest), due days spread over the
working days from 10 days ago to 120 days ahead, 3% awaiting supplement.
Then, on the same database in the same run, it times:

* the baseline: ``SELECT count(*) FROM monitor_dossier WHERE is_open AND
  due_day <= :horizon`` (index ``(is_open, due_day)``, horizon = the
  due-soon horizon), the median of 5 runs after a warm-up;
* a **steady tick**: the tick 30 s after the previous one, the case of every
  tick but one a day: nothing new came due;
* a **day-change tick**: the first tick of a new working day, with the alert
  state as the previous days' ticks left it: it fires due-soon alerts for the
  dossiers due on the next working day, apology alerts for those due today
  and overdue alerts for those due yesterday, each with its outbox event;
* a **cold tick**: the first tick over rows that never had one (a fresh
  monitor in front of a backlog): it fires an alert for every due dossier.

Prints each time, the rows examined, the transitions and the ratio
tick / count(*). The tick's cost follows the dossiers whose alerts change,
never the open ones: see ``services/deadline_monitor/store.py``.

    .venv/bin/python benchmarks/deadlines.py                     # 1,000,000 dossiers on SQLite
    .venv/bin/python benchmarks/deadlines.py --dossiers 100000   # quick look
    .venv/bin/python benchmarks/deadlines.py --database-url postgresql://postgres@127.0.0.1:5432/bench
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy import case, delete, func, insert, select, text, update

from services.deadline_monitor import domain
from services.deadline_monitor.domain import DOSSIER_KINDS, Catalog, DossierFacts, Policy
from services.deadline_monitor.plan import load_agencies
from services.deadline_monitor.service import MonitorService
from services.deadline_monitor.store import (
    OUTBOX,
    AlertRow,
    MonitorDossierRow,
    MonitorStore,
    create_schema,
)
from shared.calendar import VN_TZ, load_calendar
from shared.db import make_engine
from shared.testing import machine_description

AGENCIES = ["PTP", "PNV", "PTNMT", "PLDTBXH", "PKTHT", "TT_LIEN_HUONG", "TT_PHAN_RI_CUA", "XA_VINH_TAN", "XA_PHU_LAC"]
INSERT_CHUNK = 20_000
TODAY = dt.date(2026, 11, 24)  # a Tuesday: yesterday was a working day




def generate(n: int, *, seed: int, calendar, policy: Policy, as_of: dt.date) -> tuple[list[dict], list[dict]]:  # type: ignore[no-untyped-def]
    """Dossier rows and the alert rows of their firing alerts, as the ticks up to ``as_of`` left them."""
    rng = random.Random(seed)
    working = [d for d in (TODAY + dt.timedelta(days=i) for i in range(-10, 121)) if calendar.is_working_day(d)]
    h = domain.horizons(as_of, calendar=calendar, policy=policy)
    stamp = dt.datetime.combine(as_of, dt.time(0, 5), tzinfo=VN_TZ)
    rows, alerts = [], []
    for i in range(n):
        code = f"H{i:07d}"
        due = rng.choice(working)
        paused = rng.random() < 0.03
        facts = DossierFacts(
            dossier_code=code,
            agency_code=rng.choice(AGENCIES),
            procedure_code="1.004227",
            field_code="HOTICH",
            is_open=True,
            due_day=due,
            paused=paused,
            pause_started_on=due - dt.timedelta(days=3) if paused else None,
            supplement_requests=1 if paused else 0,
        )
        firing = domain.dossier_conditions(facts, h)  # each fired in turn on the days before
        rows.append(
            {
                "dossier_code": code,
                "revision": 3,
                "agency_code": facts.agency_code,
                "procedure_code": "1.004227",
                "field_code": "HOTICH",
                "is_open": True,
                "due_day": due,
                "paused": paused,
                "pause_started_on": facts.pause_started_on,
                "supplement_requests": facts.supplement_requests,
                "ended_on": None,
                "firing": domain.bits_of(firing, DOSSIER_KINDS),
                "tick_level": domain.tick_level(
                    watched=domain.dossier_watched(facts), firing=firing, order=DOSSIER_KINDS
                ),
                "updated_at": stamp,
            }
        )
        for kind in firing:
            alerts.append(
                {
                    "alert_key": domain.dossier_alert_key(kind, code),
                    "kind": kind,
                    "severity": domain.SEVERITY[kind],
                    "agency_code": facts.agency_code,
                    "ref": code,
                    "summary": "…",
                    "labels": "{}",
                    "state": "firing",
                    "generation": 1,
                    "starts_at": stamp,
                    "fired_at": stamp,
                }
            )
    return rows, alerts


def bulk(engine, table, rows: list[dict]) -> None:  # type: ignore[no-untyped-def]
    for i in range(0, len(rows), INSERT_CHUNK):
        with engine.begin() as conn:
            conn.execute(insert(table), rows[i : i + INSERT_CHUNK])


def timed(fn):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def count_due(engine, horizon: dt.date) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        stmt = (
            select(func.count())
            .select_from(MonitorDossierRow)
            .where(MonitorDossierRow.is_open.is_(True), MonitorDossierRow.due_day <= horizon)
        )
        return int(conn.execute(stmt).scalar_one())


def load_due(engine, horizon: dt.date) -> int:  # type: ignore[no-untyped-def]
    """Reference only: what a tick that re-read every due dossier would pay."""
    with engine.connect() as conn:
        stmt = select(MonitorDossierRow.__table__).where(
            MonitorDossierRow.is_open.is_(True), MonitorDossierRow.due_day <= horizon
        )
        return len(conn.execute(stmt).all())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dossiers", type=int, default=1_000_000)
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file in a temp folder")
    parser.add_argument("--seed", type=int, default=146)
    args = parser.parse_args()

    calendar = load_calendar()
    policy = Policy()
    tmp = tempfile.TemporaryDirectory(prefix="parwatch-deadlines-")
    url = args.database_url or f"sqlite:///{Path(tmp.name) / 'monitor.db'}"
    engine = make_engine(url)
    with engine.begin() as conn:
        for table in (
            "monitor_outbox",
            "monitor_alert",
            "monitor_dossier",
            "monitor_occurrence",
            "monitor_plan_report",
        ):
            conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
    create_schema(engine)
    store = MonitorStore(engine)
    service = MonitorService(store=store, catalog=Catalog(agencies=load_agencies(), plans={}), calendar=calendar,
                             policy=policy, clock=lambda: dt.datetime.now(VN_TZ))

    loop = asyncio.new_event_loop()  # one loop for every tick, as in the service

    def tick(now: dt.datetime):  # type: ignore[no-untyped-def]
        return loop.run_until_complete(service.run_steps(service.tick_steps(now)))

    yesterday = TODAY - dt.timedelta(days=1)
    print(f"machine: {machine_description()}")
    print(f"database: {engine.dialect.name}; date: {dt.date.today().isoformat()}")
    t_gen, (rows, alerts) = timed(
        lambda: generate(args.dossiers, seed=args.seed, calendar=calendar, policy=policy, as_of=yesterday)
    )
    start = time.perf_counter()
    bulk(engine, MonitorDossierRow, rows)
    bulk(engine, AlertRow, alerts)
    t_ins = time.perf_counter() - start
    print(
        f"bulk-inserted {len(rows):,} open dossier rows and {len(alerts):,} firing alert rows straight into the "
        f"tables in {t_ins:.1f}s (generated in {t_gen:.1f}s)"
    )
    del rows, alerts
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE monitor_dossier"))
            conn.execute(text("VACUUM ANALYZE monitor_alert"))
    else:
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))

    h = service.horizons(dt.datetime.combine(TODAY, dt.time(0, 5), tzinfo=VN_TZ))
    horizon = max(h.soon, h.apology)

    def baseline() -> tuple[float, int]:
        count_due(engine, horizon)  # warm-up
        runs = [timed(lambda: count_due(engine, horizon)) for _ in range(5)]
        return statistics.median(t for t, _ in runs), runs[0][1]

    t_count, due = baseline()
    t_load, loaded = timed(lambda: load_due(engine, horizon))
    print(f"\ndue ones (is_open AND due_day <= {horizon}): {due:,} of {args.dossiers:,}")
    print(f"baseline  SELECT count(*) of the due ones: {t_count * 1000:9.2f} ms (median of 5)")
    print(f"reference SELECT of every due row ({loaded:,} rows, not what the tick does): {t_load * 1000:9.2f} ms")

    results = []
    now = dt.datetime.combine(TODAY, dt.time(0, 5), tzinfo=VN_TZ)
    t, r = timed(lambda: tick(now))
    results.append(("day-change tick (first of the day)", t, r))
    t, r = timed(lambda: tick(now + dt.timedelta(seconds=30)))
    results.append(("steady tick (30 s later)", t, r))
    later = [timed(lambda i=i: tick(now + dt.timedelta(seconds=60 + 30 * i))) for i in range(5)]
    results.append(("steady tick (median of the next 5)", statistics.median(t for t, _ in later), later[0][1]))
    pending = store.outbox_size()

    # A fresh monitor in front of the same backlog: no alert ever fired.
    d = MonitorDossierRow
    watched = d.is_open.is_(True) & d.due_day.is_not(None) & (d.paused.is_(False) | (d.pause_started_on > d.due_day))
    with engine.begin() as conn:
        conn.execute(delete(OUTBOX))
        conn.execute(delete(AlertRow))
        conn.execute(update(d).values(firing=0, tick_level=case((watched, 0), else_=None)))
    t, r = timed(lambda: tick(now + dt.timedelta(minutes=1)))
    results.append(("cold tick (no alert ever fired)", t, r))
    t_count_after, _ = baseline()

    print(f"\n{'tick':38} {'time':>11} {'examined':>9} {'transitions':>12} {'ratio to count(*)':>18}")
    for name, t, r in results:
        print(f"{name:38} {t * 1000:8.2f} ms {r.examined:9,} {r.transitions:12,} {t / t_count:18.2f}")
    print(
        f"\noutbox events after the day-change tick: {pending:,}; count(*) again after the ticks: "
        f"{t_count_after * 1000:.2f} ms"
    )
    steady = max(results[1][1], results[2][1]) / t_count
    print(
        f"target: a tick <= 3 x count(*): steady tick ratio {steady:.3f} -> {'met' if steady <= 3 else 'NOT met'}"
        "; the day-change and cold ticks write one alert and one outbox event per transition"
    )
    loop.close()
    engine.dispose()
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
