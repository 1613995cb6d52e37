"""Deadline monitor: CPU an event to store dossier state facts and settle their alerts.

Feeds batches of dossier state facts straight to the monitor's service layer
(``MonitorService._record_states`` in one store transaction a batch, as the
consumer's handler does, without NATS): live-like input, 4,000 dossiers each
advancing through revisions, a quarter of them ended, due days from 3 days
ago to 20 ahead (so alerts fire and resolve). Prints CPU and wall time an
event for each batch size. Run it on two checkouts to compare a change:

    .venv/bin/python benchmarks/monitor_states.py
    .venv/bin/python benchmarks/monitor_states.py --database-url postgresql://postgres@127.0.0.1:5432/bench
    .venv/bin/python benchmarks/monitor_states.py --code /tmp/other-checkout   # that checkout's code
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file in a temp folder")
    parser.add_argument("--code", type=Path, default=REPO, help="the checkout whose code runs (default: this one)")
    parser.add_argument("--batches", type=int, default=40)
    args = parser.parse_args()
    sys.path.insert(0, str(args.code))

    from sqlalchemy import text

    from services.deadline_monitor.domain import Catalog, Policy
    from services.deadline_monitor.plan import load_agencies
    from services.deadline_monitor.service import MonitorService
    from services.deadline_monitor.store import MonitorStore, create_schema
    from shared.calendar import VN_TZ, load_calendar
    from shared.db import make_engine
    from shared.events import DossierStateChanged
    from shared.testing import machine_description

    tmp = tempfile.TemporaryDirectory(prefix="parwatch-monitor-")
    engine = make_engine(args.database_url or f"sqlite:///{Path(tmp.name) / 'monitor.db'}")
    with engine.begin() as conn:
        for table in ("monitor_outbox", "monitor_alert", "monitor_dossier", "monitor_occurrence", "monitor_plan_report"):
            conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
    create_schema(engine)
    service = MonitorService(store=MonitorStore(engine), catalog=Catalog(agencies=load_agencies(), plans={}),
                             calendar=load_calendar(), policy=Policy(), clock=lambda: dt.datetime.now(VN_TZ))
    rnd = random.Random(146)
    today = dt.date.today()
    revisions: dict[str, int] = {}

    def state() -> DossierStateChanged:
        code = f"H{rnd.randrange(4000):05d}"
        revision = revisions[code] = revisions.get(code, 0) + 1
        ended = revision >= 4
        now = dt.datetime.now(dt.UTC)
        return DossierStateChanged(
            dossier_code=code, revision=revision, agency_code="VP_HDND_UBND", procedure_code="P.1", field_code="F.1",
            status=10 if ended else 2, counted=True, due_day=today + dt.timedelta(days=rnd.randint(-3, 20)),
            ended_on=today if ended else None, updated_at=now, occurred_at=now,
        )

    print(f"machine: {machine_description()}")
    print(f"database: {engine.dialect.name}; code: {args.code}; date: {today.isoformat()}")
    now = dt.datetime.now(VN_TZ)
    for _ in range(5):  # warm-up
        service._transaction(service._record_states, [state() for _ in range(200)], now=now, settle=True)
    for size in (20, 200):
        batches = [[state() for _ in range(size)] for _ in range(args.batches)]
        cpu, wall = time.process_time(), time.perf_counter()
        for batch in batches:
            service._transaction(service._record_states, batch, now=now, settle=True)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        events = size * args.batches
        print(f"batches of {size:>3}: {cpu / events * 1e6:6.0f} µs CPU an event, {wall / events * 1e6:6.0f} µs wall")
    engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
