"""Helpers for tests and benchmarks: contract events, metric reading, polling.

Nothing here is used by the services at run time.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import inspect
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from shared.events import CONTENT_TYPE, DOSSIER_TYPE
from shared.nats_auth import NatsAuth


def metric_samples(source: CollectorRegistry | str | bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a registry or of a /metrics text, keyed by (name, labels)."""
    if isinstance(source, CollectorRegistry):
        source = generate_latest(source)
    if isinstance(source, bytes):
        source = source.decode()
    out = {}
    for family in text_string_to_metric_families(source):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def metric_value(source: CollectorRegistry | str | bytes, name: str, **labels: str) -> float | None:
    """One sample's value, or None when the series does not exist."""
    return metric_samples(source).get((name, frozenset(labels.items())))


async def _poll(check: Callable[[], Any], *, timeout: float, interval: float) -> Any:
    """What ``check`` returns (awaited when it is awaitable) once it is truthy, else its last value after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(interval)


async def wait_until(
    predicate: Callable[[], Awaitable[bool] | bool], *, timeout: float = 15.0, interval: float = 0.05
) -> None:
    if not await _poll(predicate, timeout=timeout, interval=interval):
        raise TimeoutError(f"condition not met within {timeout}s")


async def eventually(check: Callable[[], Any], *, timeout: float = 20.0, what: str = "condition") -> Any:
    """The first truthy value of ``check`` (a function or a coroutine function), polled every 50 ms; a test's
    AssertionError naming ``what`` after ``timeout`` seconds."""
    value = await _poll(check, timeout=timeout, interval=0.05)
    if not value:
        raise AssertionError(f"timed out waiting for {what}")
    return value


def dossier_event(
    code: str,
    status: int,
    occurred_at: str,
    *,
    seq: int | None = None,
    agency: str = "PTP",
    event_id: str | None = None,
    source: str = "motcua.test",
    **data: Any,
) -> dict[str, Any]:
    """A contract ``vn.tthc.dossier.status_changed`` CloudEvent as a dict."""
    body: dict[str, Any] = {
        "dossier_code": code,
        "status": status,
        "occurred_at": occurred_at,
        "agency_code": agency,
        "procedure_code": "1.004227",
        "field_code": "HOTICH",
    }
    if seq is not None:
        body["sequence"] = seq
    if status == 2 and "received_at" not in data:
        data["received_at"] = occurred_at
    body.update(data)
    return {
        "specversion": "1.0",
        "id": event_id or str(uuid.uuid4()),
        "source": source,
        "type": DOSSIER_TYPE,
        "time": occurred_at,
        "subject": code,
        "datacontenttype": "application/json",
        "data": body,
    }


async def publish_event(js: Any, subject: str, event: Mapping[str, Any] | bytes, *, msg_id: str | None = None) -> None:
    """Publish like an integrating system: JetStream, CloudEvents content type, Nats-Msg-Id."""
    if isinstance(event, (bytes, bytearray)):
        payload = bytes(event)
        headers = {"Content-Type": CONTENT_TYPE}
        if msg_id:
            headers["Nats-Msg-Id"] = msg_id
    else:
        payload = json.dumps(event).encode()
        headers = {"Content-Type": CONTENT_TYPE, "Nats-Msg-Id": msg_id or str(event["id"])}
    await js.publish(subject, payload, headers=headers)


@contextlib.asynccontextmanager
async def jetstream(url: str) -> AsyncIterator[Any]:
    """A JetStream context on its own connection to ``url``, the streams ensured; closed at the end."""
    import nats

    from shared.streams import ensure_streams

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        yield js
    finally:
        await nc.close()


@contextlib.asynccontextmanager
async def started(service: Any) -> AsyncIterator[Any]:
    """A service made by its ``create_app``, started, and stopped at the end."""
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


async def drain_outbox(outbox: Any) -> list[Any]:
    """Every event waiting in a :class:`shared.outbox.Outbox`, parsed, in the order its relay delivers them (then
    deleted, as after the stream's acks)."""
    from shared.events import parse_event
    from shared.outbox import Delivered, Relay

    sent: list[Any] = []

    async def deliver(pending: Any) -> Delivered:
        sent.append(parse_event(pending.payload))
        return Delivered()

    relay = Relay(outbox, deliver, clock=lambda: dt.datetime.now(dt.UTC))
    while await relay.once():
        pass
    return sent


def create_database(admin_url: str, *, prefix: str = "pw") -> str:
    """A new, empty PostgreSQL database next to ``admin_url``'s; returns its URL."""
    import uuid as _uuid

    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from shared.db import make_engine

    name = f"{prefix}_{_uuid.uuid4().hex[:12]}"
    engine = make_engine(admin_url)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(engine.url).set(database=name).render_as_string(hide_password=False)
    engine.dispose()
    return url


def drop_database(admin_url: str, url: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from shared.db import make_engine

    name = make_url(url).database
    engine = make_engine(admin_url)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def alertmanager_example(instance: str) -> dict[str, Any]:
    """Alertmanager's documented webhook payload (version 4), its one alert parwatch's ``ParwatchServiceDown`` for
    the service at ``instance`` (``scoring:9103``): fingerprint ``1a30ba71cca2921f``, firing since 08:52 on
    25/11/2026 (UTC+7). A new dict on each call."""
    service = instance.split(":")[0]
    down = f"Dịch vụ parwatch-{service} không phản hồi."
    return {
        "receiver": "parwatch-notifier",
        "status": "firing",
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "ParwatchServiceDown", "instance": instance, "job": f"parwatch-{service}",
                       "service": service, "severity": "critical", "district": "tuy_phong"},
            "annotations": {"summary": down, "description": f"Prometheus cannot scrape {instance}."},
            "startsAt": "2026-11-25T08:52:26.739266876+07:00",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph?g0.expr=up%7Bjob%3D~%22parwatch-.%2B%22%7D+%3D%3D+0&g0.tab=1",
            "fingerprint": "1a30ba71cca2921f",
        }],
        "groupLabels": {"alertname": "ParwatchServiceDown", "instance": instance},
        "commonLabels": {"alertname": "ParwatchServiceDown", "severity": "critical"},
        "commonAnnotations": {"summary": down},
        "externalURL": "http://127.0.0.1:9093",
        "version": "4",
        "groupKey": f'{{}}:{{alertname="ParwatchServiceDown", instance="{instance}"}}',
        "truncatedAlerts": 0,
    }


@dataclass
class NatsDeployment:
    """A folder ``parwatch nats-config`` wrote: the nkey seed of each role and the CA, as a client uses them."""

    out: Path

    def seed(self, role: str) -> Path:
        return self.out / "creds" / f"{role}.nk"

    @property
    def ca(self) -> Path:
        return self.out / "creds" / "ca.pem"

    def auth(self, role: str) -> NatsAuth:
        return NatsAuth.of(seed_file=self.seed(role), ca_file=self.ca)


class EchoWorker:
    """An object for :class:`shared.process.WorkerProcess` tests: answers where it runs, fails on request."""

    def __init__(self, greeting: str) -> None:
        self.greeting = greeting
        self.calls = 0

    def hello(self, name: str, *, punctuation: str = "!") -> tuple[str, int]:
        import os

        self.calls += 1
        return f"{self.greeting}, {name}{punctuation}", os.getpid()

    def fail(self, error: BaseException) -> None:
        raise error

    def slow(self, seconds: float, tag: int) -> int:
        time.sleep(seconds)
        return tag

    def count(self) -> int:
        return self.calls


def machine_description() -> str:
    """Cores, CPU model and versions, for the figures a benchmark prints."""
    import os
    import platform
    import sqlite3
    from pathlib import Path

    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores · {model} · Python {platform.python_version()} · SQLite {sqlite3.sqlite_version}"
    )


def district_day(n_events: int, *, agencies: Sequence[str], days: int = 60, seed: int = 146) -> list[bytes]:
    """``n_events`` dossier events as a district's days interleave them: five a dossier (received, processing,
    processing or a supplement or a financial obligation, resolved, returned), dossiers received over ``days``
    days from 1/9/2026, in time order. For benchmarks."""
    import datetime as dt
    import random

    rng = random.Random(seed)
    start = dt.datetime(2026, 9, 1, 8, 0, tzinfo=dt.timezone(dt.timedelta(hours=7)))
    timeline: list[tuple[dt.datetime, bytes]] = []
    for i in range(n_events // 5):
        code = f"000.00.20.H{i % 97:02d}-{i:08d}"
        agency = agencies[i % len(agencies)]
        t = start + dt.timedelta(minutes=rng.randint(0, 60 * 24 * days))
        statuses = [2, 4, rng.choice([4, 5, 6]), 9, 10]
        for seq, status in enumerate(statuses, start=1):
            data: dict[str, Any] = {
                "dossier_code": code, "sequence": seq, "status": status, "occurred_at": t.isoformat(),
                "agency_code": agency, "procedure_code": f"1.00{i % 40:04d}", "field_code": "HOTICH",
            }
            if status == 2:
                data |= {
                    "received_at": t.isoformat(),
                    "statutory_duration": {"value": rng.choice([1, 3, 5, 15]), "unit": "working_days"},
                    "channel": rng.choice([1, 2, 2]),
                    "online_payment": rng.random() < 0.4,
                }
            if status == 10:
                data["synced_national"] = True
            event = {
                "specversion": "1.0", "id": str(uuid.UUID(int=rng.getrandbits(128))), "source": "bench.motcua",
                "type": DOSSIER_TYPE, "time": t.isoformat(), "subject": code, "data": data,
            }
            timeline.append((t, json.dumps(event).encode()))
            t += dt.timedelta(hours=rng.randint(1, 60))
    timeline.sort(key=lambda x: x[0])
    return [raw for _, raw in timeline]


async def prepublish_dossier_events(
    url: str, payloads: list[bytes], *, window: int = 2000, replicas: int = 1
) -> float:
    """Publish raw dossier events with JetStream acks, ``window`` in flight (the streams made with ``replicas``);
    returns the seconds taken."""
    import time as _time

    import nats

    from shared.streams import DOSSIER_EVENTS, ensure_streams

    nc = await nats.connect(url.split(","))
    try:
        js = nc.jetstream()
        await ensure_streams(js, replicas=replicas)
        started = _time.perf_counter()
        for i in range(0, len(payloads), window):
            batch = payloads[i : i + window]
            headers = {"Content-Type": CONTENT_TYPE}
            await asyncio.gather(*(js.publish(DOSSIER_EVENTS, raw, headers=headers) for raw in batch))
        return _time.perf_counter() - started
    finally:
        await nc.close()
