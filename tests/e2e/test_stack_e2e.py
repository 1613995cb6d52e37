"""The whole stack started as `make run` starts it, driven only through the contract.

`parwatch up` runs in a subprocess in a temporary working directory, with its
data folder, the embedded NATS port and every service port moved to free
ports through the environment. The test publishes CloudEvents with plain
nats-py JetStream, reads the figures from `/metrics` over HTTP, stops the
stack with SIGTERM (exit code 0), starts it again on the same data folder and
checks that it resumed: nothing counted twice, nothing lost, a new event
counted.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import nats
import pytest
from prometheus_client.parser import text_string_to_metric_families

from parwatch.testing import Ready, Stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

PARWATCH = Path(sys.executable).parent / "parwatch"

EVENT_WAIT = 45.0
SOURCE = "e2e/one-stop-shop"
STREAM = "TTHC_DOSSIER"


def start_stack(tmp_path: Path, name: str, env: dict[str, str]) -> tuple[Stack, Ready]:
    stack = Stack(data_dir=tmp_path / "var", log=tmp_path / f"{name}.log", env=env)
    stack.start(cwd=tmp_path)
    try:
        return stack, stack.wait_ready()
    except (RuntimeError, TimeoutError) as exc:
        stack.kill()
        pytest.fail(str(exc))


# -- events, as a one-stop-shop system sends them ------------------------------------


def dossier_event(code: str, *, seq: int, status: int, at: str, agency: str, **extra: object) -> dict:
    data = {
        "dossier_code": code,
        "sequence": seq,
        "status": status,
        "occurred_at": at,
        "agency_code": agency,
        "procedure_code": "1.001193",
        "field_code": "HO_TICH",
        "statutory_duration": {"value": 5, "unit": "working_days"},
        "channel": 2,
        **extra,
    }
    return {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": SOURCE,
        "type": "vn.tthc.dossier.status_changed",
        "time": at,
        "subject": code,
        "data": data,
    }


async def publish(nats_url: str, messages: list[tuple[bytes, str | None]]) -> list[bool]:
    """Publish with JetStream acks; returns each ack's `duplicate` flag."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        dups = []
        for body, msg_id in messages:
            headers = {"Content-Type": "application/cloudevents+json"}
            if msg_id is not None:
                headers["Nats-Msg-Id"] = msg_id
            ack = await js.publish("tthc.dossier.events", body, headers=headers)
            assert ack.stream == STREAM
            dups.append(bool(ack.duplicate))
        return dups
    finally:
        await nc.close()


def as_message(event: dict, *, with_msg_id: bool = True) -> tuple[bytes, str | None]:
    return json.dumps(event).encode(), event["id"] if with_msg_id else None


async def wait_consumers_settled(nats_url: str, stream: str, *, timeout: float = EVENT_WAIT) -> None:
    """Every consumer of the stream has taken and acknowledged every message."""
    nc = await nats.connect(nats_url)
    try:
        jsm = nc.jsm()
        deadline = time.monotonic() + timeout
        while True:
            infos = await jsm.consumers_info(stream)
            if infos and all(i.num_pending == 0 and i.num_ack_pending == 0 for i in infos):
                return
            if time.monotonic() > deadline:
                pytest.fail(f"consumers of {stream} still have work after {timeout}s: {infos}")
            await asyncio.sleep(0.1)
    finally:
        await nc.close()


async def stream_messages(nats_url: str, stream: str) -> int:
    nc = await nats.connect(nats_url)
    try:
        info = await nc.jsm().stream_info(stream)
        return info.state.messages
    finally:
        await nc.close()


# -- metrics ---------------------------------------------------------------------------


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = httpx.get(url, timeout=5.0)
    response.raise_for_status()
    out = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def events(samples: dict, result: str) -> float:
    return value(samples, "parwatch_events_total", stream=STREAM, result=result)


def wait_for_events(url: str, *, total: int, timeout: float = EVENT_WAIT) -> dict:
    """Scrape until the tracker has counted `total` dossier events (any result), then once more.

    A scrape is not a snapshot across collectors: the figures read from the
    database may have been read a moment before the event counter, so the
    scrape that first shows the count may not show what those events stored
    yet. The scrape after it reads the database after the count was made,
    which is after the events' commit.
    """
    deadline = time.monotonic() + timeout
    while True:
        counted = sum(events(scrape(url), r) for r in ("accepted", "duplicate", "rejected"))
        if counted >= total or time.monotonic() > deadline:
            return scrape(url)
        time.sleep(0.2)


def assert_health(ready: Ready) -> None:
    """dossier_tracker must be up; every other service the supervisor reported up must answer too."""
    assert ready.services["dossier_tracker"].status == "up", ready
    for name, urls in ready.services.items():
        if urls.status == "up":
            r = httpx.get(urls.health, timeout=5.0)
            assert r.status_code == 200, (name, r.text)
            assert r.json()["status"] == "ok"


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def wait_until(condition, *, what: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.1)


# -- the test -------------------------------------------------------------------------------


def test_stack_counts_events_stops_cleanly_and_resumes(tmp_path: Path, database_url: str) -> None:
    """With SQLite files in the data folder (what `make run` does), and on PostgreSQL when one is available."""
    env = Stack.environment(tmp_path / "var")
    if database_url.startswith("postgresql"):
        env["PARWATCH_DATABASE_URL"] = database_url
    received, resolved = "2025-03-03T09:00:00+07:00", "2025-03-04T10:00:00+07:00"  # due day 2025-03-10

    d1_received = dossier_event("E2E-PTP-0001", seq=1, status=2, at=received, agency="PTP", received_at=received)
    d1_resolved = dossier_event("E2E-PTP-0001", seq=2, status=9, at=resolved, agency="PTP")
    d2_received = dossier_event(
        "E2E-VH-0002", seq=1, status=2, at=received, agency="XA_VINH_HAO", received_at=received
    )
    naive_time = dossier_event("E2E-PTP-0003", seq=1, status=4, at="2025-03-03T09:00:00", agency="PTP")

    stack, ready = start_stack(tmp_path, "run1", env)
    try:
        assert_health(ready)
        tracker = ready.services["dossier_tracker"].metrics
        dup_flags = asyncio.run(
            publish(
                ready.nats_url,
                [
                    as_message(d1_received),
                    as_message(d1_resolved),
                    as_message(d2_received),
                    as_message(d1_received),  # same Nats-Msg-Id: the broker drops it
                    as_message(d1_received, with_msg_id=False),  # resent without the header: the tracker dedups
                    (b'{"specversion": "1.0", "id": ', str(uuid.uuid4())),  # not JSON
                    as_message(naive_time),  # a time without an offset
                ],
            )
        )
        assert dup_flags == [False, False, False, True, False, False, False]

        samples = wait_for_events(tracker, total=6)
        assert events(samples, "accepted") == 3
        assert events(samples, "duplicate") == 1
        assert events(samples, "rejected") == 2
        assert value(samples, "parwatch_dossiers_ended_total", agency="PTP", timeliness="early") == 1
        assert value(samples, "parwatch_dossiers_ended_total", agency="PTP", timeliness="on_time") == 0
        assert value(samples, "parwatch_dossiers_ended_total", agency="PTP", timeliness="late") == 0
        assert value(samples, "parwatch_dossiers_open", agency="XA_VINH_HAO", state="overdue") == 1
        assert value(samples, "parwatch_dossiers_open", agency="PTP", state="overdue") == 0
        asyncio.run(wait_consumers_settled(ready.nats_url, STREAM))
        assert asyncio.run(stream_messages(ready.nats_url, "TTHC_DEADLETTER")) == 2

        assert stack.stop() == 0, stack.text()[-4000:]
    finally:
        stack.kill()
    assert "parwatch stopped cleanly" in stack.text()

    # Started again on the same data folder: it resumes where it stopped.
    again, ready = start_stack(tmp_path, "run2", env)
    try:
        assert_health(ready)
        tracker = ready.services["dossier_tracker"].metrics

        # A service that dies is started again by the supervisor.
        pid = int(re.findall(r"started dossier_tracker pid=(\d+)", again.text())[-1])
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: "restarted dossier_tracker" in again.text(), what="the supervisor restarts the tracker")
        wait_until(lambda: answers(ready.services["dossier_tracker"].health), what="the restarted tracker answers")
        d2_resolved = dossier_event(
            "E2E-VH-0002", seq=2, status=9, at="2025-03-20T10:00:00+07:00", agency="XA_VINH_HAO"
        )
        asyncio.run(publish(ready.nats_url, [as_message(d2_resolved)]))

        samples = wait_for_events(tracker, total=1)
        assert events(samples, "accepted") == 1  # the new event; nothing from before is delivered again
        assert events(samples, "duplicate") == 0
        assert events(samples, "rejected") == 0
        assert value(samples, "parwatch_dossiers_ended_total", agency="PTP", timeliness="early") == 1
        assert value(samples, "parwatch_dossiers_ended_total", agency="XA_VINH_HAO", timeliness="late") == 1
        assert value(samples, "parwatch_dossiers_open", agency="XA_VINH_HAO", state="overdue") == 0

        assert again.stop() == 0, again.text()[-4000:]
    finally:
        again.kill()


def test_up_refuses_a_busy_nats_port_and_says_which(tmp_path: Path) -> None:
    env = Stack.environment(tmp_path / "var")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env["PARWATCH_EMBEDDED_NATS_PORT"] = str(port)
        result = subprocess.run(
            [str(PARWATCH), "up"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
    assert result.returncode == 1
    assert f"port {port} is in use" in result.stderr
    assert "PARWATCH_EMBEDDED_NATS_PORT" in result.stderr


def test_an_event_is_seen_in_its_fact_and_an_overdue_one_in_its_alert_within_seconds(tmp_path: Path) -> None:
    """Functional bounds (the tight targets are benchmarks/latency.py's): an event's state fact on
    parwatch.dossier.state, and for a dossier already overdue when its event arrives, its dossier_overdue alert on
    tthc.alerts (evaluated on arrival, not at the monitor's next tick)."""
    stack, ready = start_stack(tmp_path, "seen", Stack.environment(tmp_path / "var"))
    try:
        assert ready.services["deadline_monitor"].status == "up", ready
        today = dt.datetime.now(dt.timezone(dt.timedelta(hours=7)))
        fresh = dossier_event("E2E-SEEN-0001", seq=1, status=2, at=today.isoformat(), agency="PTP",
                              received_at=today.isoformat())
        ten_days_ago = (today - dt.timedelta(days=10)).isoformat()
        late = dossier_event("E2E-LATE-0002", seq=1, status=2, at=ten_days_ago, agency="PTP",
                             received_at=ten_days_ago, statutory_duration={"value": 1, "unit": "working_days"})
        fact_after, alert_after = asyncio.run(seen(ready.nats_url, fresh, late))
        assert fact_after < 5.0, f"state fact after {fact_after:.2f}s"
        assert alert_after < 5.0, f"dossier_overdue alert after {alert_after:.2f}s"
        assert stack.stop() == 0, stack.text()[-4000:]
    finally:
        stack.kill()


async def seen(nats_url: str, fresh: dict, late: dict) -> tuple[float, float]:
    """Seconds from publishing ``fresh`` to its state fact, and from publishing ``late`` to its overdue alert."""
    nc = await nats.connect(nats_url)
    try:
        facts: asyncio.Queue[tuple[float, dict]] = asyncio.Queue()
        alerts: asyncio.Queue[tuple[float, dict]] = asyncio.Queue()

        async def on_fact(msg) -> None:  # type: ignore[no-untyped-def]
            await facts.put((time.perf_counter(), json.loads(msg.data)))

        async def on_alert(msg) -> None:  # type: ignore[no-untyped-def]
            await alerts.put((time.perf_counter(), json.loads(msg.data)))

        await nc.subscribe("parwatch.dossier.state", cb=on_fact)
        await nc.subscribe("tthc.alerts", cb=on_alert)
        js = nc.jetstream()

        async def first(queue: asyncio.Queue[tuple[float, dict]], match) -> float:  # type: ignore[no-untyped-def]
            while True:
                at, body = await asyncio.wait_for(queue.get(), timeout=30)
                if match(body):
                    return at

        started = time.perf_counter()
        await js.publish("tthc.dossier.events", json.dumps(fresh).encode(), headers={"Nats-Msg-Id": fresh["id"]})
        fact_at = await first(facts, lambda b: b["subject"] == fresh["subject"])
        fact_after = fact_at - started
        started = time.perf_counter()
        await js.publish("tthc.dossier.events", json.dumps(late).encode(), headers={"Nats-Msg-Id": late["id"]})
        alert_at = await first(alerts, lambda b: b["type"] == "vn.tthc.alert.firing"
                               and b["data"]["kind"] == "dossier_overdue" and b["data"]["ref"] == late["subject"])
        return fact_after, alert_at - started
    finally:
        await nc.close()
