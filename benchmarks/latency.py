"""Latency benchmark: how long until a user sees what an event changed, at steady rates.

Starts the stack as ``make run`` starts it (``parwatch up`` in a data folder of
its own, on free ports; SQLite, or PostgreSQL with ``--postgres URL`` or
TEST_DATABASE_URL), then, for each rate (1, 20, 200 and 2,000 events/s by
default, ``--seconds`` each, 20 at least), publishes dossier events with
nats-py as a one-stop-shop system would, each for a new dossier, and times:

(a) event -> its dossier's state fact on ``parwatch.dossier.state``;
(b) event -> the dossier counted on the tracker's ``/metrics``
    (``parwatch_dossiers_open``, read from the database at scrape time),
    scraped every 50 ms; an event is visible once the count reaches its place
    in the sequence (the k-th event of the run is visible when k of them are
    counted). (b) is "within one scrape of (a)" when the first scrape that
    starts after an event's fact has arrived already counts it: the share of
    events for which that holds is printed (target: all of them at p99, i.e.
    at least 99 %), with the number of scrapes an event waited beyond that
    one; (b) - (a) is printed too, against one scrape interval plus one
    scrape's duration.
    Twenty scrapes a second cost the tracker up to a core at 2,000 events/s
    (a scrape counts the open dossiers in the database), where Prometheus
    scrapes every 15 s (deploy/prometheus): so each rate runs twice, first
    as in production, scraped every 15 s, for (a) and (c), then with the
    50 ms probe for (b), whose run prints its own (a) beside it;
(c) event -> its ``dossier_overdue`` alert on ``tthc.alerts``, for events of
    dossiers whose due day is already past when they arrive (received ten
    days ago, one working day to resolve): every other event at 1 and 20/s,
    ten a second at 200 and 2,000/s (a district does not see hundreds of
    dossiers a second that are already late).

All times are taken in this process (``time.perf_counter``) from just before
the publish to the moment the fact, alert or scrape came back. Prints
p50/p95/p99/max per rate and measure, the rate achieved, the CPU each
process used during the rate (µs of CPU an event: each process of the
stack, PostgreSQL's backends serving its database, and this benchmark, which
publishes and times), and how busy the whole machine was (cores).

    .venv/bin/python benchmarks/latency.py                     # SQLite, 1/20/200/2000 ev/s, 20 s each
    .venv/bin/python benchmarks/latency.py --postgres postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import httpx
import nats
import psutil
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from parwatch.testing import Stack  # noqa: E402
from shared.streams import ALERTS, DOSSIER_EVENTS, DOSSIER_STATE  # noqa: E402
from shared.testing import create_database, drop_database, machine_description  # noqa: E402

ICT = dt.timezone(dt.timedelta(hours=7))
AGENCY = "PTP"  # in the shipped directory: a label of its own on /metrics
RATES = (1, 20, 200, 2000)
TICK = 0.005  # the publisher's clock: events due in a tick go out together
SCRAPE_EVERY = 0.05  # the probe of (b)
PROMETHEUS_EVERY = 15.0  # deploy/prometheus/prometheus.yml's scrape_interval


def percentiles(values: Sequence[float]) -> str:
    if not values:
        return "no sample"
    ms = sorted(v * 1000 for v in values)
    q = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else ms * 99
    return f"p50 {q[49]:7.1f}  p95 {q[94]:7.1f}  p99 {q[98]:7.1f}  max {ms[-1]:7.1f} ms  (n={len(ms)})"


def event(code: str, *, overdue: bool) -> bytes:
    now = dt.datetime.now(ICT)
    received = now - dt.timedelta(days=10) if overdue else now
    data = {
        "dossier_code": code, "sequence": 1, "status": 2, "occurred_at": received.isoformat(),
        "received_at": received.isoformat(), "agency_code": AGENCY, "procedure_code": "1.004227",
        "field_code": "HOTICH", "statutory_duration": {"value": 1 if overdue else 15, "unit": "working_days"},
        "channel": 2,
    }
    return json.dumps({
        "specversion": "1.0", "id": str(uuid.uuid4()), "source": "bench.latency",
        "type": "vn.tthc.dossier.status_changed", "time": received.isoformat(), "subject": code, "data": data,
    }).encode()


class Run:
    """One rate's worth of publishing and the arrivals it caused."""

    def __init__(self, rate: int, seconds: float, *, tag: str) -> None:
        self.rate = rate
        self.seconds = seconds
        self.tag = tag
        self.overdue_every = max(2, rate // 10)
        self.published: dict[str, float] = {}  # code -> publish time
        self.order: list[str] = []  # codes in publish order
        self.fact: dict[str, float] = {}
        self.alert: dict[str, float] = {}
        self.visible: dict[int, float] = {}  # k -> when k of this run's events were counted
        self.scraped: list[tuple[float, int]] = []  # (when a scrape started, how many of the run's events it counted)

    def on_fact(self, code: str, at: float) -> None:
        if code in self.published and code not in self.fact:
            self.fact[code] = at

    def on_alert(self, code: str, at: float) -> None:
        if code in self.published and code not in self.alert:
            self.alert[code] = at


async def publish(js, run: Run) -> float:  # type: ignore[no-untyped-def]
    """Publish ``rate`` events a second for ``seconds``; returns the rate achieved."""
    total = int(run.rate * run.seconds)
    acks = []
    started = time.perf_counter()
    i = 0
    while i < total:
        due = min(total, int((time.perf_counter() - started) * run.rate) + 1)
        while i < due:
            overdue = i % run.overdue_every == 0
            code = f"BENCH-{run.tag}-{'O' if overdue else 'N'}{i:06d}"
            body = event(code, overdue=overdue)
            run.published[code] = time.perf_counter()
            run.order.append(code)
            acks.append(await js.publish_async(DOSSIER_EVENTS, body, headers={
                "Content-Type": "application/cloudevents+json", "Nats-Msg-Id": code}))
            i += 1
        await asyncio.sleep(TICK)
    await asyncio.gather(*acks)
    return total / (time.perf_counter() - started)


async def scrape_open(client: httpx.AsyncClient, url: str) -> tuple[float, float]:
    """The agency's open dossiers on the tracker's /metrics, and how long the scrape took."""
    started = time.perf_counter()
    text = (await client.get(url)).text
    took = time.perf_counter() - started
    total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name == "parwatch_dossiers_open":
            total += sum(s.value for s in family.samples if s.labels.get("agency") == AGENCY)
    return total, took


def stack_cpu(root: int, database: str | None = None) -> dict[str, float]:
    """CPU seconds so far of every process of the stack, by name (a service, its store's process, nats-server),
    with the PostgreSQL server's backends serving ``database`` and this process (the publisher and timer)."""
    out: dict[str, float] = {}
    procs = [(p, None) for p in psutil.Process(root).children(recursive=True)]
    procs.append((psutil.Process(), "benchmark (this process)"))
    if database:
        procs += [(p, "PostgreSQL backends") for p in psutil.process_iter(["name"])
                  if (p.info["name"] or "").startswith("postgres")]
    for proc, named in procs:
        try:
            cmd = proc.cmdline()
            times = proc.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if named == "PostgreSQL backends" and not any(database in part for part in cmd):
            continue
        name = named or (cmd[cmd.index("-m") + 1] if "-m" in cmd else Path(cmd[0]).name).removeprefix("services.")
        out[name] = out.get(name, 0.0) + times.user + times.system
    return out


def machine_busy() -> float:
    """CPU seconds so far of the whole machine, every core, idle and I/O wait left out."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


async def one_run(js, client: httpx.AsyncClient, metrics: str, run: Run, *, root: int,  # type: ignore[no-untyped-def]
                  every: float, database: str | None) -> None:
    """Publish at the run's rate while /metrics is scraped ``every`` seconds; wait for what it caused; report."""
    base, _ = await scrape_open(client, metrics)
    scrapes: list[float] = []
    stop = asyncio.Event()

    async def scraper() -> None:
        while not stop.is_set():
            counted, took = await scrape_open(client, metrics)
            at = time.perf_counter()
            scrapes.append(took)
            # Overdue dossiers count too: every event of the run adds one open dossier.
            k = int(counted - base)
            run.scraped.append((at - took, k))
            for j in range(len(run.visible) + 1, k + 1):
                run.visible[j] = at
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=every)

    scraping = asyncio.create_task(scraper())
    cpu_before, busy_before, started = stack_cpu(root, database), machine_busy(), time.perf_counter()
    achieved = await publish(js, run)
    deadline = time.perf_counter() + 30
    while time.perf_counter() < deadline and (
        len(run.fact) < len(run.published)
        or (every == SCRAPE_EVERY and len(run.visible) < len(run.published))
        or len(run.alert) < sum(1 for c in run.published if "-O" in c)
    ):
        await asyncio.sleep(0.1)
    stop.set()
    await scraping
    cpu = {k: v - cpu_before.get(k, 0.0) for k, v in stack_cpu(root, database).items()}
    busy = (machine_busy() - busy_before) / (time.perf_counter() - started)
    report(run, achieved, scrapes, cpu, busy=busy, probe=every == SCRAPE_EVERY)


async def measure(ready, rates: Sequence[int], seconds: float, root: int,  # type: ignore[no-untyped-def]
                  database: str | None) -> None:
    nc = await nats.connect(ready.nats_url)
    js = nc.jetstream()
    runs: list[Run] = []

    async def facts(msg) -> None:  # type: ignore[no-untyped-def]
        at = time.perf_counter()
        code = json.loads(msg.data)["subject"]
        for run in runs[-1:]:
            run.on_fact(code, at)

    async def alerts(msg) -> None:  # type: ignore[no-untyped-def]
        at = time.perf_counter()
        body = json.loads(msg.data)
        if body["type"] == "vn.tthc.alert.firing" and body["data"]["kind"] == "dossier_overdue":
            for run in runs[-1:]:
                run.on_alert(body["data"]["ref"], at)

    await nc.subscribe(DOSSIER_STATE, cb=facts)
    await nc.subscribe(ALERTS, cb=alerts)
    metrics = ready.services["dossier_tracker"].metrics
    async with httpx.AsyncClient(timeout=30) as client:
        # Warm up (first imports, first connections), not measured.
        runs.append(Run(20, 3, tag="warm"))
        await publish(js, runs[-1])
        await asyncio.sleep(3)
        for rate in rates:
            for probe in (False, True):
                run = Run(rate, seconds, tag=f"r{rate}{'p' if probe else ''}")
                runs.append(run)
                await one_run(js, client, metrics, run, root=root, every=SCRAPE_EVERY if probe else PROMETHEUS_EVERY,
                              database=database)
    await nc.close()


def report(run: Run, achieved: float, scrapes: list[float], cpu: dict[str, float], *, busy: float,
           probe: bool) -> None:
    a = [run.fact[c] - run.published[c] for c in run.order if c in run.fact]
    b = [run.visible[k] - run.published[c] for k, c in enumerate(run.order, start=1) if k in run.visible]
    b_minus_a = [run.visible[k] - run.fact[c] for k, c in enumerate(run.order, start=1)
                 if k in run.visible and c in run.fact]
    overdue = [c for c in run.order if "-O" in c]
    c_ = [run.alert[c] - run.published[c] for c in overdue if c in run.alert]
    how = f"/metrics probed every {SCRAPE_EVERY * 1000:.0f} ms" if probe else f"scraped every {PROMETHEUS_EVERY:.0f} s"
    print(f"\n{run.rate:,} events/s for {run.seconds:.0f} s, {how}: {len(run.published):,} published at"
          f" {achieved:,.0f}/s")
    print(f"  (a) event -> state fact        {percentiles(a)}")
    if probe:
        print(f"  (b) event -> counted on /metrics {percentiles(b)}")
        print(f"      (b) - (a)                  {percentiles(b_minus_a)}")
        print(f"      one scrape of /metrics     {percentiles(scrapes)}, one every {SCRAPE_EVERY * 1000:.0f} ms")
        print(f"      first scrape after the fact counts it: {first_scrape_counts(run)}")
    print(f"  (c) event -> dossier_overdue   {percentiles(c_)}")
    missing = [(name, len(want) - len(got)) for name, want, got in
               (("facts", run.published, run.fact), ("counted", run.published if probe else run.visible, run.visible),
                ("alerts", overdue, c_)) if len(want) != len(got)]
    if missing:
        print("  missing after 30 s: " + ", ".join(f"{n} {k}" for n, k in missing))
    n = len(run.published)
    print("  CPU an event (µs): " + ", ".join(f"{k} {v / n * 1e6:.0f}" for k, v in sorted(cpu.items()) if v > 0))
    print(f"  machine busy: {busy:.2f} of {psutil.cpu_count()} cores, from the first publish to the last answer")


def first_scrape_counts(run: Run) -> str:
    """The share of events counted by the first scrape that started after their fact arrived, and how many
    scrapes the others waited beyond it."""
    starts = [at for at, _ in run.scraped]
    waited: list[int] = []
    for k, code in enumerate(run.order, start=1):
        if code not in run.fact:
            continue
        first = bisect.bisect_left(starts, run.fact[code])
        later = next((i for i in range(first, len(starts)) if run.scraped[i][1] >= k), None)
        if later is not None:
            waited.append(later - first)
    if not waited:
        return "no sample"
    late = sorted(w for w in waited if w)
    share = 100 * (len(waited) - len(late)) / len(waited)
    return f"{share:.2f} % of {len(waited):,}" + (f"; the others waited {late[0]}-{late[-1]} scrapes more" if late else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", type=int, nargs="+", default=list(RATES))
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--services", default="", help="run only these services (comma separated)")
    parser.add_argument("--postgres", default=os.environ.get("TEST_DATABASE_URL"),
                        help="admin URL of a PostgreSQL: run the stack on a fresh database there")
    args = parser.parse_args()
    if args.seconds < 20:
        parser.error("--seconds: at least 20 a rate")
    print(f"machine: {machine_description()}")
    print(f"date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC")
    with tempfile.TemporaryDirectory(prefix="parwatch-latency-") as tmp:
        env = {"PARWATCH_SERVICES": args.services} if args.services else {}
        database = None
        if args.postgres:
            database = create_database(args.postgres, prefix="latency")
            env["PARWATCH_DATABASE_URL"] = database
        print(f"database: {'PostgreSQL' if database else 'SQLite'}")
        stack = Stack(data_dir=Path(tmp) / "var", log=Path(tmp) / "stack.log", env=env)
        stack.start(cwd=Path(tmp))
        try:
            ready = stack.wait_ready()
            assert stack.proc is not None
            name = database.rsplit("/", 1)[-1] if database else None
            asyncio.run(measure(ready, args.rates, args.seconds, stack.proc.pid, name))
            stack.stop()
        finally:
            stack.kill()
            if database:
                drop_database(args.postgres, database)


if __name__ == "__main__":
    main()
