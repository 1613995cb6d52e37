"""Deployed for real: a 3-node NATS cluster with the deploy config's settings, two replicas of every service on
one PostgreSQL, one NATS node and one replica of each service killed with SIGKILL in the middle of the stream and
started again; the figures, alerts and notifications equal those of a single-instance run of the same input.

**The input** is the demo's synthetic district (:class:`parwatch.demo.DistrictFeed`, a fixed seed): 30 days of
Tuy Phong's dossiers (more than 20,000 status events), the applicants' ratings, plan reports on Plan 146 copied to
this year (done before their due day, some late, a few never), and a few malformed messages (dead letters). The
history ends four hours before now, so the whole of it is a backlog for deadline_monitor, and the dossiers
received in its last days are open, some due soon or overdue: those alert.

**The reference** is one `parwatch up` as `make run` starts it (its embedded nats-server, no credential), on a
fresh PostgreSQL database of its own, given the same messages. It runs beside the cluster (in a thread: the
machine mostly waits otherwise), sharing nothing with it but the CPU.

**The cluster**: ``parwatch nats-config`` (:func:`parwatch.nats_config.write_deployment`) writes the deployment for
three nodes on three loopback addresses (127.0.0.1, .2 and .3, the same free client, route and monitoring ports on
each): the PARWATCH account with an nkey per role, TLS on client and route ports (routes verify each other),
JetStream on file storage with ``sync_interval: always``. Each node runs the generator's config rendered for its
own address and folders (:func:`parwatch.nats_config.render_server_conf`; on one host the nodes cannot share a
listen address), with the node's certificate, as compose mounts them. ``parwatch streams ensure`` creates the
streams with 3 replicas with the admin's credential.

**Two replicas of every service, each with its own credential.** ``parwatch up`` passes the environment, so one
credential, to every service it starts (docs/running.md, "Accounts and permissions"). So each replica of each
service is a `parwatch up` of its own (``PARWATCH_SERVICES=<service>``) given that service's seed, eight
supervisors in all: no product change, and the supervisor's restart of a dead service is what brings a killed
replica back. Every process talks TLS to the three nodes' URLs; the services share one fresh PostgreSQL database.

**The faults**, while the stream is flowing: after the first part of the input is published, the node that leads
``TTHC_DOSSIER`` and replica A of dossier_tracker, deadline_monitor and scoring are killed (SIGKILL); the second
part is published while the node is down (the publisher, with the publisher credential over TLS, resends what
failed with the same ``Nats-Msg-Id``); the node is started again on its config and store; the third part follows.
The notifier replica that makes the first webhook delivery is killed in the middle of it, the webhook receiver
holding the request until the sender is dead. The supervisors start the killed services again.

**Done** is read from positive signals only: every killed process back (the supervisor's "restarted" line, the
node's streams current on all three peers), every consumer of every stream with nothing pending and nothing
unacknowledged, no dossier left unsettled in the monitor, every outbox empty, no notice waiting, all of it twice
in a row, a notifier tick apart. Before any input, both runs wait the same way for the start of the day to
settle: the monitor's first tick fires the plan duties overdue or due soon before any report came, and the
notifier tells of them (a report arriving before that tick would make the set depend on the race).

**Compared with the reference** (what is deterministic: both runs are on the same day, asserted, and every rule is
a day's): dossier_tracker's ``parwatch_dossiers_ended_total`` and ``parwatch_dossiers_open`` (read from the
database), deadline_monitor's ``parwatch_plan_tasks``, scoring's figures (``GET /figures/{agency}``) of every
agency and the district for the running month, quarter and year; the alert events on ``tthc.alerts`` (each
(``alert_key``, type, ``starts_at``) once; the stream's duplicate window could hide a second publish with the same
``Nats-Msg-Id``, so the services' own records are compared too: the monitor's alerts with their generations,
scoring's transitions, the notifier's alerts and its notification log); the notifications, as the officials'
webhook received them: each (official, alert, state) in exactly one delivery. A ``deadletter`` alert's key names
the rejected message's stream sequence, which depends on the order the publisher's retries landed in: both runs'
keys are mapped to the message's ``Nats-Msg-Id`` before comparing, and their ``starts_at`` (the moment of the
rejection) is left out.

The notifier may send a notice twice when it dies during a delivery (docs/notifier.md, "Delivery": the log is
written when a pass ends; webhooks carry a stable ``X-Parwatch-Delivery`` so that receivers drop the copy). The
officials' notices are counted as a receiver that does so counts them; the copies are printed.

KPI rounds are held off in both runs (``PARWATCH_SCORING_EVALUATE_INTERVAL`` one hour): a round counts a history
half published, whenever it comes. Escalation, quiet hours and digests are off and notices are grouped for one
second: each depends on the minute the run takes place.

PostgreSQL: ``TEST_DATABASE_URL``, else a testcontainers server, else the test skips and says why.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import httpx
import nats
import psutil
import pytest
import yaml
from sqlalchemy import text

from parwatch.demo import DistrictFeed, FeedMessage, current_plan_copy, load_agencies, plan_occurrences
from parwatch.nats_config import Request, ServerLayout, node_files, publisher_role, render_server_conf, write_deployment
from parwatch.testing import Ready, Stack
from shared.calendar import load_calendar
from shared.db import make_engine
from shared.embedded import free_port, nats_server_binary, stop_process, wait_for_port
from shared.testing import NatsDeployment, create_database, drop_database, metric_samples

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.postgres, pytest.mark.timeout(300)]

VN = dt.timezone(dt.timedelta(hours=7))
SEED = 146
HISTORY_DAYS = 30
DOSSIERS_PER_DAY = 255.0  # about 23,000 dossier events in 30 days (21 or 22 working days)
MIN_DOSSIER_EVENTS = 20_000
HISTORY_LAG = dt.timedelta(hours=4)  # older than the monitor's BACKLOG_LAG (3 h): the whole input is a backlog
DISTRICT = "TUY_PHONG"
SERVICES = ("dossier_tracker", "deadline_monitor", "scoring", "notifier")
NODES = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
PUBLISHER = "e2e.cluster"
WEBHOOK_SECRET = "cluster-e2e-webhook-secret"
SETTLE_TIMEOUT = 240.0
PARWATCH = Path(sys.executable).parent / "parwatch"

#: Settings of both runs (reference and cluster).
COMMON_ENV = {
    "PARWATCH_SCORING_EVALUATE_INTERVAL": "3600",  # no KPI round on half a history
    "PARWATCH_NOTIFIER_GROUP_WAIT": "1s",
    "PARWATCH_NOTIFIER_GROUP_INTERVAL": "1s",
    "PARWATCH_NOTIFIER_ESCALATE_HEAD_AFTER_HOURS": "0",
    "PARWATCH_NOTIFIER_ESCALATE_LEADERSHIP_AFTER_HOURS": "0",
    "PARWATCH_NOTIFIER_QUIET_HOURS": "false",
    "PARWATCH_NOTIFIER_WEEKLY_DIGEST": "false",
    "PARWATCH_NOTIFIER_MONTHLY_DIGEST": "false",
    "PARWATCH_NOTIFIER_WEBHOOK_SECRET": WEBHOOK_SECRET,
    "PARWATCH_NOTIFIER_ACK_SECRET": "cluster-e2e-ack-secret",
    "PARWATCH_NOTIFIER_TICK_INTERVAL": "0.5",
    "PARWATCH_LOG_LEVEL": "INFO",
    # The monitor settles a backlog once no fact has come for this long and nothing waits upstream. The runs share
    # the machine's two cores: a pause of the reference's input must not end its history either.
    "PARWATCH_MONITOR_BACKLOG_IDLE_SECONDS": "25",
}
#: Settings of the cluster's replicas only. With a node and the tracker killed the input pauses for seconds: the
#: monitor's idle while (above) is longer than the pause, else it would judge half a history as the end of it.
#: A killed replica's unacknowledged batch comes back after ack_wait: shorter than that while, too.
CLUSTER_ENV = {
    "PARWATCH_STREAM_REPLICAS": "3",
    "PARWATCH_TRACKER_ACK_WAIT": "15",
    "PARWATCH_MONITOR_ACK_WAIT": "15",
    "PARWATCH_SCORING_ACK_WAIT": "15",
    "PARWATCH_NOTIFIER_ACK_WAIT": "15",
}


def vn_today() -> dt.date:
    return dt.datetime.now(VN).date()


# -- the input ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Input:
    messages: list[FeedMessage]
    plan_file: Path


def district_history(tmp_path: Path) -> tuple[list[FeedMessage], Path]:
    now = dt.datetime.now(VN)
    history_end = now - HISTORY_LAG
    plan_file = current_plan_copy(tmp_path / "plans", year=now.year)
    calendar = load_calendar(None)
    feed = DistrictFeed(
        seed=SEED, start=history_end - dt.timedelta(days=HISTORY_DAYS), run_tag="C146", calendar=calendar,
        agencies=load_agencies(), dossiers_per_day=DOSSIERS_PER_DAY,
        occurrences=plan_occurrences(plan_file, calendar=calendar),
    )
    return feed.advance(history_end), plan_file


def webhook_directory(path: Path, *, port: int) -> Path:
    """The shipped example directory, every official reached by a webhook of the test's own (and no e-mail)."""
    from services.notifier.settings import EXAMPLE_DIRECTORY

    directory = yaml.safe_load(EXAMPLE_DIRECTORY.read_text(encoding="utf-8"))
    for agency in directory["agencies"]:
        for official in agency["officials"]:
            official.pop("email", None)
            official["webhook"] = f"http://127.0.0.1:{port}/{official['id']}"
    path.write_text(yaml.safe_dump(directory, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


class Webhook:
    """The officials' webhook: records every POST (official, delivery id, body). A trap set with :meth:`arm` runs
    in the handler of the next request, before it is answered, with the client's port (to find the sender)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        self.trap: Callable[[int], None] | None = None
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with hook.lock:
                    trap, hook.trap = hook.trap, None
                    hook.requests.append((self.path.strip("/"), self.headers.get("X-Parwatch-Delivery", ""),
                                          json.loads(body)))
                if trap is not None:
                    trap(self.client_address[1])
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def arm(self, trap: Callable[[int], None]) -> None:
        with self.lock:
            self.trap = trap

    def snapshot(self) -> list[tuple[str, str, dict[str, Any]]]:
        with self.lock:
            return list(self.requests)


# -- the NATS cluster ---------------------------------------------------------------------------------------------


def port_free_everywhere(port: int) -> bool:
    for host in NODES:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def free_cluster_port() -> int:
    while True:
        port = free_port()
        if port_free_everywhere(port):
            return port


@dataclass
class Cluster(NatsDeployment):
    layout: ServerLayout
    work: Path
    procs: dict[int, subprocess.Popen[bytes] | None] = field(default_factory=dict)

    @classmethod
    def write(cls, work: Path) -> Cluster:
        layout = ServerLayout(client_port=free_cluster_port(), cluster_port=free_cluster_port(),
                              http_port=free_cluster_port(), listen=NODES[0], max_file_store="8GB")
        out = work / "deployment"
        write_deployment(out, Request(nodes=NODES, publishers=(PUBLISHER,), layout=layout))
        cluster = cls(out=out, layout=layout, work=work)
        for i, node in enumerate(NODES):
            conf_dir = cluster.conf_dir(i)
            for rel, src in node_files(out, node).items():
                (conf_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(src, conf_dir / rel)
            # The generator's config, rendered for this node's address and folders (nodes on one host).
            own = replace(layout, conf_dir=str(conf_dir), store_dir=str(work / f"store-{i}"), listen=node)
            (conf_dir / "nats-cluster.conf").write_text(render_server_conf(nodes=NODES, layout=own))
        return cluster

    def conf_dir(self, i: int) -> Path:
        return self.work / f"node-{i}"

    @property
    def urls(self) -> str:
        return ",".join(f"nats://{node}:{self.layout.client_port}" for node in NODES)

    def start(self, i: int) -> None:
        log = open(self.work / f"nats-{i}.log", "ab")  # noqa: SIM115 - handed to the child
        self.procs[i] = subprocess.Popen(
            [nats_server_binary(), "-c", str(self.conf_dir(i) / "nats-cluster.conf")], stdout=log,
            stderr=subprocess.STDOUT, env=os.environ | {"SERVER_NAME": f"nats-{i}"})
        log.close()
        wait_for_port(NODES[i], self.layout.client_port)

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        assert proc is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        self.procs[i] = None

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc is not None:
                stop_process(proc)

    def connect_options(self, role: str) -> dict[str, Any]:
        return self.auth(role).connect_options()


# -- publishing and reading -----------------------------------------------------------------------------------------


async def publish(servers: str, messages: Sequence[FeedMessage], *, options: dict[str, Any], window: int = 1000) -> int:
    """JetStream publish as an integrating system does: ``Nats-Msg-Id`` = the event id, what failed (a node gone,
    a leader being elected) sent again. Returns how many publishes were retried."""
    nc = await nats.connect(servers.split(","), max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                            connect_timeout=3, **options)
    retried = 0
    try:
        js = nc.jetstream(timeout=10)
        for i in range(0, len(messages), window):
            part = list(messages[i : i + window])
            for attempt in range(120):
                results = await asyncio.gather(*(
                    js.publish(m.subject, m.body, headers={"Content-Type": "application/cloudevents+json",
                                                           "Nats-Msg-Id": m.msg_id})
                    for m in part
                ), return_exceptions=True)
                part = [m for m, r in zip(part, results, strict=True) if isinstance(r, BaseException)]
                if not part:
                    break
                retried += len(part)
                await asyncio.sleep(min(0.25 * (attempt + 1), 2.0))
            else:
                raise RuntimeError(f"{len(part)} messages could not be published in 120 attempts")
    finally:
        await nc.close()
    return retried


async def stream_messages(nc: Any, stream: str) -> list[Any]:
    jsm = nc.jsm()
    info = await jsm.stream_info(stream)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1) if info.state.messages else ():
        out.append(await jsm.get_msg(stream, seq))
    return out


async def consumers_settled(nc: Any) -> bool:
    jsm = nc.jsm()
    for stream in await jsm.streams_info():
        for info in await jsm.consumers_info(stream.config.name):
            if info.num_pending or info.num_ack_pending:
                return False
    return True


async def streams_current(nc: Any) -> bool:
    """Every stream has a leader and its two other replicas are online and caught up."""
    for stream in await nc.jsm().streams_info():
        c = stream.cluster
        if c is None or not c.leader or len(c.replicas or []) != 2:
            return False
        if not all(p.current and not p.offline for p in c.replicas):
            return False
    return True


async def stream_leader(servers: str, options: dict[str, Any], stream: str) -> str:
    nc = await nats.connect(servers.split(","), **options)
    try:
        return str((await nc.jsm().stream_info(stream)).cluster.leader)
    finally:
        await nc.close()


def db_scalar(engine: Any, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(sql)).scalar_one())


def db_rows(engine: Any, sql: str) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql))]


def pipeline_quiet(engine: Any) -> bool:
    """The database's side of done: no dossier unsettled, every outbox empty, no notice waiting."""
    return (
        db_scalar(engine, "SELECT count(*) FROM monitor_dossier WHERE tick_level = -1") == 0
        and all(db_scalar(engine, f"SELECT count(*) FROM {t}_outbox") == 0 for t in ("monitor", "scoring", "notifier"))
        and db_scalar(engine, "SELECT count(*) FROM notifier_assignment WHERE notified_state IS NULL "
                              "AND NOT suppressed AND NOT done") == 0
    )


async def wait_done(servers: str, options: dict[str, Any], engine: Any, *, recovered: Callable[[], bool] | None = None,
                    cluster: bool = False) -> None:
    """Positive signals, twice in a row a notifier tick apart: the killed processes back (``recovered``, the
    streams current on every peer), the database quiet, every consumer drained."""
    nc = await nats.connect(servers.split(","), max_reconnect_attempts=-1, reconnect_time_wait=0.5, **options)

    async def done() -> bool:
        if recovered is not None and not recovered():
            return False
        if cluster and not await streams_current(nc):
            return False
        return await asyncio.to_thread(pipeline_quiet, engine) and await consumers_settled(nc)

    try:
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while True:
            if await done():
                await asyncio.sleep(1.5)
                if await done():
                    return
            if time.monotonic() > deadline:
                pytest.fail(f"after {SETTLE_TIMEOUT:.0f}s, still not every consumer drained, the monitor settled, "
                            "every outbox empty and no notice waiting (or a killed process not back)")
            await asyncio.sleep(0.5)
    finally:
        await nc.close()


def plan_alerts(engine: Any) -> int:
    return db_scalar(engine, "SELECT count(*) FROM monitor_alert WHERE kind LIKE 'plan_task_%'")


async def wait_start_of_day(servers: str, options: dict[str, Any], engine: Any, *, cluster: bool = False) -> int:
    """The monitor's first tick fires the plan duties overdue or due soon before any report came, the notifier
    tells of them: all of it settled before the input, so that no report races the first tick. (How many is
    compared between the runs.)"""
    deadline = time.monotonic() + 90
    while not await asyncio.to_thread(plan_alerts, engine):
        if time.monotonic() > deadline:
            pytest.fail("no plan alert at the start of the day after 90s: the plan copy has a duty overdue or due "
                        "soon on every day of the year, so the monitor's first tick did not come")
        await asyncio.sleep(0.25)
    await wait_done(servers, options, engine, cluster=cluster)
    return await asyncio.to_thread(plan_alerts, engine)


# -- what a run produced ------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    alert_events: Counter[tuple[Any, ...]]
    monitor_alerts: set[tuple[Any, ...]]
    scoring_alerts: set[tuple[Any, ...]]
    notifier_alerts: set[tuple[Any, ...]]
    notifier_log: Counter[tuple[Any, ...]]
    start_alerts: int  # plan alerts fired at the start of the day, before the input
    notices: Counter[tuple[Any, ...]]  # (official, alert key, state, repeat) per distinct delivery
    copies: int  # webhook requests that repeated a delivery id already received
    tracker: dict[Any, float]
    plan_tasks: dict[Any, float]
    figures: dict[tuple[str, str], dict[str, Any]]
    counts: dict[str, int]


def scrape(url: str, *names: str) -> dict[Any, float]:
    r = httpx.get(url, timeout=10)
    r.raise_for_status()
    return {k: v for k, v in metric_samples(r.text).items() if k[0] in names}


async def read_streams(servers: str, options: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The alert events on ``tthc.alerts``, and each dead letter's alert key mapped to the ``Nats-Msg-Id`` of the
    message it rejected (its stream sequence depends on the order the publisher's retries landed in)."""
    nc = await nats.connect(servers.split(","), **options)
    try:
        alerts = [json.loads(m.data) for m in await stream_messages(nc, "TTHC_ALERTS")]
        letters: dict[str, str] = {}
        for letter in await stream_messages(nc, "TTHC_DEADLETTER"):
            data = json.loads(letter.data)["data"]
            original = await nc.jsm().get_msg(data["stream"], data["stream_seq"])
            letters[f"deadletter:{data['stream']}:{data['stream_seq']}"] = (
                f"deadletter:{data['stream']}:{(original.headers or {}).get('Nats-Msg-Id', '?')}")
        return alerts, letters
    finally:
        await nc.close()


def collect(servers: str, options: dict[str, Any], engine: Any, *, tracker: str, monitor: str, scoring: str,
            webhook: Webhook, start_alerts: int) -> Outcome:
    alerts, letters = asyncio.run(read_streams(servers, options))

    def key(alert_key: str) -> str:
        return letters.get(alert_key, alert_key)

    # An event is its id ({alert_key}:firing|resolved:{generation}, scoring's {alert_key}:{transitions}:...), with
    # what it says. Not starts_at: an apology-due alert starts when the monitor settled the dossier.
    events: Counter[tuple[Any, ...]] = Counter()
    for e in alerts:
        d = e["data"]
        assert e["id"].startswith(d["alert_key"]), e["id"]
        events[(key(d["alert_key"]), e["id"].removeprefix(d["alert_key"]), e["type"], d["kind"], d["severity"],
                d["agency_code"])] += 1

    notices: Counter[tuple[Any, ...]] = Counter()
    seen: dict[str, tuple[str, list[Any]]] = {}
    copies = 0
    for official, delivery, body in webhook.snapshot():
        if delivery in seen:  # sent again after a crash: the same notice, as its delivery id says
            assert seen[delivery] == (official, body.get("alerts")), f"delivery {delivery} came back different"
            copies += 1
            continue
        seen[delivery] = (official, body.get("alerts"))
        for a in body.get("alerts", []):
            notices[(official, key(a["alert_key"]), a["state"], a.get("repeat"))] += 1

    agencies = [a["code"] for a in httpx.get(f"{scoring}/agencies", timeout=10).json()]
    today = vn_today()
    periods = (f"{today:%Y-%m}", f"{today.year}-Q{(today.month - 1) // 3 + 1}", f"{today.year}")

    def figures_of(period: str, agency: str) -> dict[str, Any]:
        r = httpx.get(f"{scoring}/figures/{agency}", params={"period": period}, timeout=30)
        assert r.status_code == 200, r.text
        return dict(r.json())

    with ThreadPoolExecutor(max_workers=4) as pool:
        asked = {(p, a): pool.submit(figures_of, p, a) for p in periods for a in agencies}
        figures = {k: f.result() for k, f in asked.items()}

    return Outcome(
        alert_events=events,
        monitor_alerts={(key(k), kind, state, gen) for k, kind, state, gen in
                        db_rows(engine, "SELECT alert_key, kind, state, generation FROM monitor_alert")},
        scoring_alerts=set(db_rows(engine, "SELECT alert_key, firing, transitions FROM scoring_alert "
                                           "WHERE transitions > 0")),
        notifier_alerts={(key(k), state) for k, state in
                         db_rows(engine, "SELECT alert_key, state FROM notifier_alert")},
        notifier_log=Counter((r, c, key(k), s) for r, c, k, s in
                             db_rows(engine, "SELECT receiver_id, channel, alert_key, state FROM notifier_log")),
        start_alerts=start_alerts,
        notices=notices,
        copies=copies,
        tracker=scrape(tracker, "parwatch_dossiers_ended_total", "parwatch_dossiers_open"),
        plan_tasks=scrape(monitor, "parwatch_plan_tasks"),
        figures=figures,
        counts={
            "dead letters": len(letters),
            "tracker dossiers": db_scalar(engine, "SELECT count(*) FROM tracker_dossier"),
            "tracker dossier events": db_scalar(engine, "SELECT count(*) FROM tracker_dossier_event"),
            "tracker seen events": db_scalar(engine, "SELECT count(*) FROM tracker_seen_event"),
            "monitor plan reports": db_scalar(engine, "SELECT count(*) FROM monitor_plan_report"),
            "scoring ratings": db_scalar(engine, "SELECT count(*) FROM scoring_rating"),
        },
    )


def service_url(ready: Ready, name: str) -> str:
    return ready.services[name].metrics.removesuffix("/metrics")


# -- the runs -------------------------------------------------------------------------------------------------------


def start_stacks(stacks: Sequence[Stack], cwd: Path) -> list[Ready]:
    for stack in stacks:
        stack.start(cwd=cwd)
    readies = []
    for stack in stacks:
        try:
            ready = stack.wait_ready(timeout=120)
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(str(exc))
        readies.append(ready)
    deadline = time.monotonic() + 120
    for ready in readies:
        for name, urls in ready.services.items():
            while not healthy(urls.health):
                if time.monotonic() > deadline:
                    pytest.fail(f"{name} never answered {urls.health}")
                time.sleep(0.2)
    return readies


def healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def stop_stacks(stacks: Sequence[Stack]) -> None:
    for stack in stacks:
        if stack.proc is not None and stack.proc.poll() is None:
            stack.proc.send_signal(signal.SIGTERM)
    for stack in stacks:
        try:
            if stack.proc is not None:
                stack.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        stack.kill()


def reference_run(tmp_path: Path, data: Input, database_url: str, timeline: Faults) -> Outcome:
    work = tmp_path / "reference"
    work.mkdir()
    with Webhook() as webhook:
        env = Stack.environment(work / "var") | COMMON_ENV | {
            "PARWATCH_DATABASE_URL": database_url,
            "PARWATCH_MONITOR_PLANS_DIR": str(data.plan_file.parent),
            "PARWATCH_NOTIFIER_DIRECTORY": str(webhook_directory(work / "directory.yaml", port=webhook.port)),
        }
        stack = Stack(data_dir=work / "var", log=work / "up.log", env=env)
        engine = make_engine(database_url)
        try:
            (ready,) = start_stacks([stack], work)
            timeline.note("reference: up")
            start_alerts = asyncio.run(wait_start_of_day(ready.nats_url, {}, engine))
            timeline.note("reference: start of the day settled")
            asyncio.run(publish(ready.nats_url, data.messages, options={}))
            timeline.note("reference: published")
            asyncio.run(wait_done(ready.nats_url, {}, engine))
            timeline.note("reference: done")
            return collect(ready.nats_url, {}, engine, tracker=ready.services["dossier_tracker"].metrics,
                           monitor=ready.services["deadline_monitor"].metrics, scoring=service_url(ready, "scoring"),
                           webhook=webhook, start_alerts=start_alerts)
        finally:
            stop_stacks([stack])
            engine.dispose()


def service_pid(stack: Stack, name: str) -> int:
    """The running service process under a `parwatch up`."""
    assert stack.proc is not None
    for child in psutil.Process(stack.proc.pid).children():
        if f"services.{name}" in " ".join(child.cmdline()):
            return child.pid
    raise LookupError(f"no {name} process under `parwatch up` pid {stack.proc.pid}")


@dataclass
class Faults:
    node: str = ""
    killed: dict[str, int] = field(default_factory=dict)  # service -> pid
    notifier_stack: Stack | None = None
    timeline: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def note(self, what: str) -> None:
        self.timeline.append(f"{time.monotonic() - self.started:6.1f}s {what}")


def cluster_run(tmp_path: Path, data: Input, database_url: str, faults: Faults) -> Outcome:
    work = tmp_path / "cluster"
    work.mkdir()
    cluster = Cluster.write(work)
    stacks: dict[tuple[str, str], Stack] = {}
    engine = make_engine(database_url)
    admin = cluster.connect_options("admin")
    publisher = cluster.connect_options(publisher_role(PUBLISHER))
    try:
        for i in range(len(NODES)):
            cluster.start(i)
        admin_env = {k: v for k, v in os.environ.items() if not k.startswith("PARWATCH_")} | {
            "PARWATCH_NATS_URL": cluster.urls, "PARWATCH_NATS_NKEY_SEED_FILE": str(cluster.seed("admin")),
            "PARWATCH_NATS_TLS_CA_FILE": str(cluster.ca), "PARWATCH_STREAM_REPLICAS": "3"}
        ensure = subprocess.run([str(PARWATCH), "streams", "ensure"], env=admin_env, capture_output=True, text=True,
                                timeout=120, check=False)
        assert ensure.returncode == 0, ensure.stderr
        faults.note("cluster up, streams created with 3 replicas")

        with Webhook() as webhook:
            directory = webhook_directory(work / "directory.yaml", port=webhook.port)
            for replica in ("a", "b"):
                for name in SERVICES:
                    folder = work / f"{replica}-{name}"
                    env = Stack.environment(folder / "var") | COMMON_ENV | CLUSTER_ENV | {
                        "PARWATCH_SERVICES": name,
                        "PARWATCH_NATS_URL": cluster.urls,
                        "PARWATCH_NATS_NKEY_SEED_FILE": str(cluster.seed(name)),
                        "PARWATCH_NATS_TLS_CA_FILE": str(cluster.ca),
                        "PARWATCH_DATABASE_URL": database_url,
                        "PARWATCH_MONITOR_PLANS_DIR": str(data.plan_file.parent),
                        "PARWATCH_NOTIFIER_DIRECTORY": str(directory),
                    }
                    folder.mkdir()
                    stacks[replica, name] = Stack(data_dir=folder / "var", log=folder / "up.log", env=env)
            readies = dict(zip(stacks, start_stacks(list(stacks.values()), work), strict=True))
            faults.note("8 replicas up")

            notifier_stacks = [stacks[r, "notifier"] for r in ("a", "b")]

            def kill_the_sender(client_port: int) -> None:
                """The notifier replica delivering this request dies in the middle of it."""
                for stack in notifier_stacks:
                    try:
                        pid = service_pid(stack, "notifier")
                        ports = {c.laddr.port for c in psutil.Process(pid).net_connections(kind="tcp") if c.laddr}
                    except (LookupError, psutil.Error):
                        continue
                    if client_port in ports:
                        os.kill(pid, signal.SIGKILL)
                        faults.killed["notifier"] = pid
                        faults.notifier_stack = stack
                        faults.note(f"notifier pid {pid} killed in the middle of a webhook delivery")
                        return
                faults.note(f"no notifier process holds the webhook request's port {client_port}")

            # The start of the day settled first (the plan's duties overdue before any report came fire at the
            # first tick, and are notified), as in the reference: what follows is the input's doing.
            plan_alerts_at_start = asyncio.run(wait_start_of_day(cluster.urls, admin, engine, cluster=True))
            faults.note(f"start of the day settled ({len(webhook.snapshot())} webhook deliveries)")
            third = len(data.messages) // 3
            retried = asyncio.run(publish(cluster.urls, data.messages[:third], options=publisher))
            faults.note(f"first part published ({third} messages)")

            leader = asyncio.run(stream_leader(cluster.urls, admin, "TTHC_DOSSIER"))
            victim = int(leader.removeprefix("nats-"))
            faults.node = f"{leader} ({NODES[victim]})"
            cluster.kill(victim)
            faults.note(f"node {faults.node}, leader of TTHC_DOSSIER, killed")
            for name in ("dossier_tracker", "deadline_monitor", "scoring"):
                pid = service_pid(stacks["a", name], name)
                os.kill(pid, signal.SIGKILL)
                faults.killed[name] = pid
                faults.note(f"{name} replica a (pid {pid}) killed")
            webhook.arm(kill_the_sender)  # and the notifier replica that makes the next delivery

            retried += asyncio.run(publish(cluster.urls, data.messages[third : 2 * third], options=publisher))
            faults.note("second part published with the node down")
            cluster.start(victim)
            faults.note(f"node {leader} started again on its config and store")
            retried += asyncio.run(publish(cluster.urls, data.messages[2 * third :], options=publisher))
            faults.note(f"third part published; {retried} publishes were retried")

            def recovered() -> bool:
                if faults.notifier_stack is None and any(t.startswith("no notifier") for t in faults.timeline):
                    pytest.fail("the webhook's request came from no notifier process:\n" + "\n".join(faults.timeline))
                if not all(f"restarted {name}" in stacks["a", name].text()
                           for name in ("dossier_tracker", "deadline_monitor", "scoring")):
                    return False
                return faults.notifier_stack is not None and "restarted notifier" in faults.notifier_stack.text()

            asyncio.run(wait_done(cluster.urls, admin, engine, recovered=recovered, cluster=True))
            faults.note("done")
            node = cluster.procs[victim]
            assert node is not None and node.poll() is None
            outcome = collect(cluster.urls, admin, engine,
                              tracker=readies["b", "dossier_tracker"].services["dossier_tracker"].metrics,
                              monitor=readies["b", "deadline_monitor"].services["deadline_monitor"].metrics,
                              scoring=service_url(readies["b", "scoring"], "scoring"), webhook=webhook,
                              start_alerts=plan_alerts_at_start)
            faults.note("collected")
            return outcome
    finally:
        stop_stacks(list(stacks.values()))
        cluster.stop()
        engine.dispose()


@pytest.fixture
def databases(postgres_admin_url: str) -> Iterator[tuple[str, str]]:
    reference, cluster = create_database(postgres_admin_url), create_database(postgres_admin_url)
    try:
        yield reference, cluster
    finally:
        drop_database(postgres_admin_url, reference)
        drop_database(postgres_admin_url, cluster)


# -- the test ---------------------------------------------------------------------------------------------------------


def differences(got: Any, want: Any, what: str, limit: int = 15) -> list[str]:
    if isinstance(got, Counter | dict):
        keys = sorted(set(got) | set(want), key=repr)
        return [f"{what} {k!r}: cluster {got.get(k)!r}, reference {want.get(k)!r}"
                for k in keys if got.get(k) != want.get(k)][:limit]
    return ([f"{what} only in the cluster: {sorted(got - want, key=repr)[:limit]}"] if got - want else []) + (
        [f"{what} only in the reference: {sorted(want - got, key=repr)[:limit]}"] if want - got else [])


def test_a_cluster_with_a_node_and_a_replica_of_each_service_killed_counts_as_one_instance(
    tmp_path: Path, databases: tuple[str, str]
) -> None:
    started = time.monotonic()
    today = vn_today()
    messages, plan_file = district_history(tmp_path)
    kinds = Counter(m.kind for m in messages)
    assert kinds["dossier"] >= MIN_DOSSIER_EVENTS and kinds["rating"] and kinds["plan"] and kinds["malformed"], kinds
    data = Input(messages=messages, plan_file=plan_file)

    # The two runs side by side (each waits on the other's CPU, neither on the other's result): the machine is
    # mostly waiting otherwise, and the test stays within its minutes.
    faults = Faults()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="reference") as pool:
        single = pool.submit(reference_run, tmp_path, data, databases[0], faults)
        got = cluster_run(tmp_path, data, databases[1], faults)
        reference = single.result()
    assert vn_today() == today, "the runs straddled midnight in Vietnam: the day's rules differ; run again"
    print(f"\ninput {dict(kinds)}; whole test {time.monotonic() - started:.0f}s\n" + "\n".join(faults.timeline))
    print(f"alert events {len(reference.alert_events)} ({Counter(k[3] for k in reference.alert_events)}), "
          f"notices {sum(reference.notices.values())}; counts {reference.counts}; "
          f"cluster webhook copies {got.copies}, reference {reference.copies}")

    # The faults happened: a node and one replica of each service died.
    assert set(faults.killed) == set(SERVICES), faults.timeline

    # The pipeline did something worth comparing.
    assert reference.tracker and reference.figures and reference.plan_tasks
    fired = Counter(k[3] for k, n in reference.alert_events.items() if k[2] == "vn.tthc.alert.firing")
    assert fired["dossier_overdue"] and fired["deadletter"], fired
    assert reference.notices
    assert reference.copies == 0  # nothing died there: no delivery came twice

    # Every alert event once, every notice once (as a receiver that drops a repeated delivery id counts them).
    assert [k for k, n in got.alert_events.items() if n > 1] == []
    assert [k for k, n in got.notices.items() if n > 1] == []
    assert [k for k, n in got.notifier_log.items() if n > 1] == []

    # Equal to the single instance.
    mismatches = [
        *differences({"plan alerts at the start": got.start_alerts}, {"plan alerts at the start": reference.start_alerts},
                     "count"),
        *differences(got.counts, reference.counts, "count"),
        *differences(got.tracker, reference.tracker, "dossier_tracker"),
        *differences(got.plan_tasks, reference.plan_tasks, "deadline_monitor"),
        *differences(got.figures, reference.figures, "scoring figures"),
        *differences(set(got.alert_events), set(reference.alert_events), "alert events"),
        *differences(got.monitor_alerts, reference.monitor_alerts, "monitor alerts"),
        *differences(got.scoring_alerts, reference.scoring_alerts, "scoring alerts"),
        *differences(got.notifier_alerts, reference.notifier_alerts, "notifier alerts"),
        *differences(got.notifier_log, reference.notifier_log, "notification log"),
        *differences(got.notices, reference.notices, "notices"),
    ]
    assert mismatches == [], f"{len(mismatches)} differences:\n" + "\n".join(mismatches)
