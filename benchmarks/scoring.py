"""Scoring benchmark: aggregate update rate against dossier_tracker, and scrape cost vs stored dossiers.

1. Pipeline (same run, same machine, one embedded nats-server): N dossier
   status events (N/5 dossiers, five events each) are prepublished to
   ``tthc.dossier.events``; dossier_tracker drains them (SQLite) and publishes
   its state snapshots; then scoring drains those snapshots (its own SQLite).
   Printed: both rates and ``ratio = tracker time / scoring time`` for the
   same workload (target >= 1: scoring absorbs what the tracker produces
   faster than the tracker produces it, so it is never the bottleneck).
   The two run one after the other, so neither steals the other's CPU.
   Each runs with its own default batch size; ``--batch N`` sets both to N
   (a tracker batch coalesces a dossier's events into one snapshot, so a
   smaller tracker batch publishes more snapshots an event: harder for
   scoring).

2. Scrape: for each stored-dossier count (default 10,000 and 1,000,000), a
   fresh SQLite database is filled with dossier rows by bulk inserts straight
   into ``scoring_dossier`` (executemany of plain tuples: generating and
   loading a million dossiers through NATS would take far longer than the
   scrape being measured), the aggregates are computed by ``rebuild-scores``
   (timed too). Then a full /metrics payload (``generate_latest`` on the
   service's registry) is timed on every size in turn, round robin, so load
   from other processes on the machine hits every size alike. Printed: median
   and p95 per size and ``ratio = median(largest) / median(smallest)``
   (target <= 1.5). Also timed: the figures of a past month (a bounded,
   indexed query on the stored dossiers) per size.

    .venv/bin/python benchmarks/scoring.py                       # 40,000 events; 10k and 1M dossiers
    .venv/bin/python benchmarks/scoring.py --events 10000 --stored 10000,100000   # quick look
    .venv/bin/python benchmarks/scoring.py --postgres postgresql://postgres@127.0.0.1:5432/test
    .venv/bin/python benchmarks/scoring.py --stored 10000 --batch 500   # both services in batches of 500
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import nats
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import func, select, text

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from services.dossier_tracker.app import create_app as create_tracker  # noqa: E402
from services.dossier_tracker.settings import TrackerSettings  # noqa: E402
from services.scoring.app import create_app as create_scoring  # noqa: E402
from services.scoring.board import Scoreboard, load_directory  # noqa: E402
from services.scoring.domain import IndexConfig, Period  # noqa: E402
from services.scoring.metrics import ScoringCollector  # noqa: E402
from services.scoring.settings import ScoringSettings  # noqa: E402
from services.scoring.store import DOSSIER, ScoringStore, create_schema  # noqa: E402
from shared.db import make_engine  # noqa: E402
from shared.embedded import free_port, start_nats_server, stop_process  # noqa: E402
from shared.settings import CommonSettings  # noqa: E402
from shared.testing import (  # noqa: E402
    create_database,
    district_day,
    drop_database,
    machine_description,
    prepublish_dossier_events,
)

VN = dt.timezone(dt.timedelta(hours=7))
NOW = dt.datetime(2026, 11, 20, 3, 0, tzinfo=dt.timezone.utc)  # 10:00 on 20/11/2026 in Vietnam
TODAY = dt.date(2026, 11, 20)
AGENCIES = [a.code for a in load_directory().agencies]


def clock() -> dt.datetime:
    return NOW


# -- 1. pipeline -----------------------------------------------------------------------------


def generate_events(n_events: int, *, seed: int = 146) -> list[bytes]:
    return district_day(n_events, agencies=AGENCIES, days=70, seed=seed)


async def consumer_left(url: str, stream: str, durable: str) -> int:
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().consumer_info(stream, durable)
        return int(info.num_pending + info.num_ack_pending)
    except nats.js.errors.NotFoundError:
        return -1
    finally:
        await nc.close()


async def drain(url: str, stream: str, durable: str, *, timeout: float = 3600) -> None:
    started = time.perf_counter()
    while (left := await consumer_left(url, stream, durable)) != 0:
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"{durable}: {left} messages left after {timeout}s")
        await asyncio.sleep(0.05)


async def stream_messages(url: str, stream: str) -> int:
    nc = await nats.connect(url)
    try:
        return int((await nc.jetstream().stream_info(stream)).state.messages)
    finally:
        await nc.close()


async def pipeline(
    url: str, *, tracker_db: str, scoring_db: str, n_events: int, tracker_batch: int, scoring_batch: int
) -> dict[str, float]:
    run = uuid.uuid4().hex[:6]
    tracker, _ = create_tracker(
        CommonSettings(nats_url=url, database_url=tracker_db),
        TrackerSettings(durable=f"tracker_{run}", batch_size=tracker_batch),
        clock=clock,
    )
    started = time.perf_counter()
    await tracker.start()
    await drain(url, "TTHC_DOSSIER", f"tracker_{run}")
    tracker_time = time.perf_counter() - started
    await tracker.stop()
    snapshots = await stream_messages(url, "PARWATCH_DOSSIER_STATE")

    scoring, _ = create_scoring(
        CommonSettings(nats_url=url, database_url=scoring_db),
        ScoringSettings(durable=f"scoring_{run}", batch_size=scoring_batch, evaluate_interval=3600),
        clock=clock,
    )
    # scoring's consumer reads the whole state stream: exactly what this tracker published.
    started = time.perf_counter()
    await scoring.start()
    await drain(url, "PARWATCH_DOSSIER_STATE", f"scoring_{run}_state")
    scoring_time = time.perf_counter() - started
    await scoring.stop()
    return {"events": n_events, "tracker_s": tracker_time, "snapshots": snapshots, "scoring_s": scoring_time}






# -- 2. scrape ---------------------------------------------------------------------------------

FIRST_DAY = dt.date(2025, 1, 1)


def dossier_rows(n: int, *, seed: int = 766):
    """Plain tuples in scoring_dossier's column order: two years of a district, ~3% open at TODAY."""
    rng = random.Random(seed)
    span = (TODAY - FIRST_DAY).days
    updated = NOW.strftime("%Y-%m-%d %H:%M:%S.000000")
    for i in range(n):
        receipt = FIRST_DAY + dt.timedelta(days=rng.randrange(span + 1))
        due = receipt + dt.timedelta(days=rng.randint(3, 20))
        age = (TODAY - receipt).days
        open_ = age < 30 and rng.random() < 0.7 or rng.random() < 0.002
        ended = None if open_ else min(TODAY, receipt + dt.timedelta(days=rng.randint(1, 25)))
        timeliness = None
        if ended is not None:
            timeliness = "early" if ended < due else "on_time" if ended == due else "late"
        paused = open_ and rng.random() < 0.1
        yield (
            f"BENCH-{i:08d}", 5, AGENCIES[i % len(AGENCIES)], True, receipt.isoformat(), due.isoformat(), paused,
            (receipt + dt.timedelta(days=2)).isoformat() if paused else None, int(paused) + (rng.random() < 0.01),
            ended.isoformat() if ended else None, timeliness, rng.choice([1, 2, 2, 3]), rng.random() < 0.4,
            rng.random() < 0.6, rng.random() < 0.9, updated,
        )


COLUMNS = [
    "dossier_code", "revision", "agency_code", "counted", "receipt_day", "due_day", "paused", "pause_started_on",
    "supplement_requests", "ended_on", "timeliness", "channel", "online_payment", "digitized", "synced_national",
    "updated_at",
]


def load_sqlite(path: Path, n: int) -> float:
    started = time.perf_counter()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    sql = f"INSERT INTO scoring_dossier ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
    rows = dossier_rows(n)
    while chunk := [r for _, r in zip(range(50_000), rows, strict=False)]:
        conn.executemany(sql, chunk)
    conn.commit()
    conn.close()
    return time.perf_counter() - started


def load_postgres(url: str, n: int) -> float:
    import psycopg

    started = time.perf_counter()
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        with conn.cursor().copy(f"COPY scoring_dossier ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            for row in dossier_rows(n):
                r = list(row)
                r[-1] = NOW
                copy.write_row(r)
        conn.execute("ANALYZE scoring_dossier")
    return time.perf_counter() - started


@dataclass
class ScrapeCase:
    """One loaded database of ``n`` stored dossiers, ready to be scraped."""

    label: str
    url: str
    engine: object
    registry: CollectorRegistry
    board: Scoreboard
    info: dict[str, float]
    scrapes: list[float] = field(default_factory=list)
    pasts: list[float] = field(default_factory=list)


def prepare_case(label: str, database_url: str, n: int, *, loader) -> ScrapeCase:
    engine = make_engine(database_url)
    create_schema(engine)
    load_s = loader(n)
    store = ScoringStore(engine)
    started = time.perf_counter()
    result = store.rebuild()
    rebuild_s = time.perf_counter() - started
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))  # what autovacuum would reach; not timed
    board = Scoreboard(store, config=IndexConfig(), district="TUY_PHONG")
    registry = CollectorRegistry()
    registry.register(ScoringCollector(board, clock=clock))
    with engine.connect() as conn:
        stored = conn.execute(select(func.count()).select_from(DOSSIER)).scalar_one()
    payload = generate_latest(registry)
    for _ in range(3):  # warm-up: connection pool, query plans, imports
        generate_latest(registry)
    info = {"stored": stored, "load_s": load_s, "rebuild_s": rebuild_s, "period_cells": result.period_cells,
            "open_cells": result.open_cells, "payload_bytes": len(payload)}
    return ScrapeCase(label, database_url, engine, registry, board, info)


def measure_interleaved(cases: list[ScrapeCase], *, rounds: int) -> None:
    """Round-robin over the sizes, so background load on the machine hits every size alike."""
    october = Period.parse("2026-10")
    for i in range(rounds):
        for case in cases:
            started = time.perf_counter()
            generate_latest(case.registry)
            case.scrapes.append(time.perf_counter() - started)
            if i % 3 == 0:
                started = time.perf_counter()
                case.board.table(october, today=TODAY)
                case.pasts.append(time.perf_counter() - started)


def ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))] * 1000




async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=40_000, help="dossier events through the pipeline (0: skip)")
    parser.add_argument("--stored", default="10000,1000000", help="stored-dossier counts for the scrape (comma list)")
    parser.add_argument("--scrapes", type=int, default=60, help="scrapes timed per size (interleaved)")
    parser.add_argument("--postgres", default=None, help="admin URL of a PostgreSQL: also run both parts on it")
    parser.add_argument("--batch", type=int, default=0,
                        help="both services' batch size (default: each service's own default)")
    args = parser.parse_args()
    tracker_batch = args.batch or TrackerSettings().batch_size
    scoring_batch = args.batch or ScoringSettings().batch_size

    print(f"machine: {machine_description()}")
    print(f"date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC")
    with tempfile.TemporaryDirectory(prefix="parwatch-bench-scoring-") as tmp:
        work = Path(tmp)
        if args.events:
            payloads = generate_events(args.events)
            backends = [("SQLite", f"sqlite:///{work / 'tracker.db'}", f"sqlite:///{work / 'scoring.db'}")]
            if args.postgres:
                backends.append(("PostgreSQL", create_database(args.postgres), create_database(args.postgres)))
            for label, tracker_db, scoring_db in backends:
                # A fresh nats-server per backend: the state stream then holds this run's snapshots only.
                port = free_port()
                server = start_nats_server(store_dir=work / f"nats-{label}", port=port)
                url = f"nats://127.0.0.1:{port}"
                try:
                    took = await prepublish_dossier_events(url, payloads)
                    print(f"prepublished {len(payloads):,} events ({len(payloads) // 5:,} dossiers) in {took:.1f} s")
                    r = await pipeline(url, tracker_db=tracker_db, scoring_db=scoring_db, n_events=args.events,
                                       tracker_batch=tracker_batch, scoring_batch=scoring_batch)
                finally:
                    stop_process(server)
                    if label == "PostgreSQL":
                        drop_database(args.postgres, tracker_db)
                        drop_database(args.postgres, scoring_db)
                print(
                    f"pipeline {label} (batches: tracker {tracker_batch}, scoring {scoring_batch}): "
                    f"dossier_tracker {r['events']:,} events in {r['tracker_s']:.1f} s "
                    f"({r['events'] / r['tracker_s']:,.0f} ev/s) -> {r['snapshots']:,} state snapshots; scoring "
                    f"applied them in {r['scoring_s']:.1f} s ({r['snapshots'] / r['scoring_s']:,.0f} snapshots/s, "
                    f"{r['events'] / r['scoring_s']:,.0f} input ev/s); "
                    f"ratio tracker time / scoring time = {r['tracker_s'] / r['scoring_s']:.2f} (target >= 1)"
                )
            del payloads

        sizes = [int(s) for s in args.stored.split(",") if s.strip()]
        backends: list[tuple[str, str | None]] = [("SQLite", None)]
        if args.postgres:
            backends.append(("PostgreSQL", args.postgres))
        for label, admin in backends:
            cases = []
            try:
                for n in sizes:
                    if admin is None:
                        path = work / f"scrape-{n}.db"
                        case = prepare_case(label, f"sqlite:///{path}", n, loader=lambda k, p=path: load_sqlite(p, k))
                    else:
                        url = create_database(admin)
                        case = prepare_case(label, url, n, loader=lambda k, u=url: load_postgres(u, k))
                    cases.append(case)
                    i = case.info
                    print(
                        f"scrape {label} {i['stored']:,} dossiers: loaded in {i['load_s']:.1f} s, rebuild-scores "
                        f"{i['rebuild_s']:.1f} s ({i['period_cells']:,} period cells, {i['open_cells']:,} open "
                        f"cells); /metrics {i['payload_bytes']:,} bytes"
                    )
                measure_interleaved(cases, rounds=args.scrapes)
                for case in cases:
                    print(
                        f"scrape {label} {case.info['stored']:,} dossiers: /metrics median "
                        f"{ms(case.scrapes, 0.5):.1f} ms, p95 {ms(case.scrapes, 0.95):.1f} ms "
                        f"({len(case.scrapes)} scrapes); past month figures median {ms(case.pasts, 0.5):.1f} ms"
                    )
                if len(cases) >= 2:
                    lo, hi = cases[0], cases[-1]
                    print(
                        f"scrape {label} ratio median({hi.info['stored']:,}) / median({lo.info['stored']:,}) = "
                        f"{statistics.median(hi.scrapes) / statistics.median(lo.scrapes):.2f} (target <= 1.5)"
                    )
            finally:
                for case in cases:
                    case.engine.dispose()  # type: ignore[attr-defined]
                    if admin is not None:
                        drop_database(admin, case.url)

if __name__ == "__main__":
    asyncio.run(main())
