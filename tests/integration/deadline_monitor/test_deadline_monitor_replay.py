"""A month of a district's history replayed into a fresh dossier_tracker and deadline_monitor on a real nats-server:
the dossier alerts published on ``tthc.alerts`` are exactly for the dossiers due or overdue at the end, and none
fired and resolved on the way.

The history: dossiers received over the last 30 days in office hours, each processed, most of them ended (many
late: each of those is overdue for a while during the replay, the alert a backlog used to raise and resolve),
up to yesterday afternoon; now is 08:30 the next working morning. The reference comes from the events with the
shared rule 6 (:func:`shared.rules.open_state`). It is published as fast as a publisher can, and, in a second
variant, at about 400 events a second (the consumers keep up: nothing waits on them, only event time tells it is
history). That the monitor is done is read from the broker and its store (both consumers drained, nothing left
unsettled, its outbox empty), never from a wait.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import uuid
from pathlib import Path
from typing import Any

import nats
import pytest

from services.deadline_monitor.app import create_app as create_monitor
from services.deadline_monitor.settings import MonitorSettings
from services.dossier_tracker.app import create_app as create_tracker
from services.dossier_tracker.settings import TrackerSettings
from shared import rules
from shared.agencies import load_agencies
from shared.calendar import load_calendar, local_date
from shared.events import DOSSIER_TYPE, END_STATUSES, RECEIVED, parse_event
from shared.settings import CommonSettings
from shared.streams import ALERTS
from shared.testing import prepublish_dossier_events, wait_until

VN = dt.timezone(dt.timedelta(hours=7))
NOW = dt.datetime(2026, 11, 25, 8, 30, tzinfo=VN)  # a Wednesday morning in Tuy Phong
HISTORY_END = dt.datetime(2026, 11, 24, 17, 0, tzinfo=VN)  # yesterday afternoon: the last event replayed
DOSSIER_KINDS = {"dossier_due_soon", "dossier_apology_due", "dossier_overdue"}
AGENCIES = sorted(load_agencies().codes)


class Clock:
    def __call__(self) -> dt.datetime:
        return NOW


def office_time(rng: random.Random, day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(7, 30), tzinfo=VN) + dt.timedelta(minutes=rng.randint(0, 9 * 60))


def raw_event(code: str, seq: int, status: int, at: dt.datetime, *, agency: str, **data: Any) -> tuple[dt.datetime, bytes]:
    body = {"dossier_code": code, "sequence": seq, "status": status, "occurred_at": at.isoformat(),
            "agency_code": agency, "procedure_code": "1.004227", "field_code": "HOTICH", **data}
    event = {"specversion": "1.0", "id": str(uuid.uuid4()), "source": "motcua.replay", "type": DOSSIER_TYPE,
             "time": at.isoformat(), "subject": code, "datacontenttype": "application/json", "data": body}
    return at, json.dumps(event).encode()


def dossier_history(rng: random.Random, i: int) -> list[tuple[dt.datetime, bytes]]:
    """Received (with its due day), processed, then, for most, resolved and returned: before or after the due
    day. Only what happened by :data:`HISTORY_END` is kept."""
    code, agency = f"000.00.20.H{i % 97:02d}-{i:08d}", AGENCIES[i % len(AGENCIES)]
    received = office_time(rng, HISTORY_END.date() - dt.timedelta(days=rng.randint(0, 30)))
    due = received + dt.timedelta(days=rng.choice([1, 3, 5, 10, 15]))
    events = [raw_event(code, 1, RECEIVED, received, agency=agency, received_at=received.isoformat(),
                        due_at=due.isoformat())]
    processed = received + dt.timedelta(hours=rng.randint(1, 30))
    events.append(raw_event(code, 2, 4, processed, agency=agency))
    if rng.random() < 0.9:
        resolved = processed + dt.timedelta(hours=rng.randint(2, 24 * 10))
        events.append(raw_event(code, 3, 9, resolved, agency=agency))
        events.append(raw_event(code, 4, 10, resolved + dt.timedelta(hours=rng.randint(1, 24)), agency=agency))
    return [(at, raw) for at, raw in events if at <= HISTORY_END]


def history(dossiers: int, *, seed: int = 146) -> list[bytes]:
    """The district's events of the last 30 days, in time order."""
    rng = random.Random(seed)
    timeline = sorted((e for i in range(dossiers) for e in dossier_history(rng, i)), key=lambda e: e[0])
    return [raw for _, raw in timeline]


def reference(payloads: list[bytes]) -> tuple[set[str], set[str]]:
    """(dossiers overdue at the end, dossiers due soon at the end), by rule 6 from the events themselves."""
    received: dict[str, dt.date] = {}
    ended: set[str] = set()
    for raw in payloads:
        data = json.loads(raw)["data"]
        if data["status"] == RECEIVED:
            received[data["dossier_code"]] = local_date(dt.datetime.fromisoformat(data["due_at"]))
        if data["status"] in END_STATUSES:
            ended.add(data["dossier_code"])
    calendar = load_calendar(None)
    today = local_date(NOW)
    soon = calendar.next_working_day(today)
    states = {code: rules.open_state(rules.OpenFacts(due), day=today, soon=soon)
              for code, due in received.items() if code not in ended}
    return ({c for c, s in states.items() if s == "overdue"}, {c for c, s in states.items() if s == "due_soon"})


async def publish_paced(url: str, payloads: list[bytes], *, per_second: int) -> None:
    """Publish in slices of a tenth of a second's worth, each slice acked before the next."""
    step = max(1, per_second // 10)
    for i in range(0, len(payloads), step):
        await prepublish_dossier_events(url, payloads[i : i + step])
        await asyncio.sleep(0.1)


async def alerts_published(js: Any) -> list[tuple[str, str, str]]:
    """(transition, kind, ref) of every dossier alert on ``tthc.alerts``, in order."""
    info = await js.stream_info("TTHC_ALERTS")
    sub = await js.pull_subscribe(ALERTS, durable=None, stream="TTHC_ALERTS")
    out: list[tuple[str, str, str]] = []
    while len(out) < info.state.messages:
        for msg in await sub.fetch(min(500, info.state.messages - len(out)), timeout=5):
            event = parse_event(msg.data)
            out.append((event.type.rsplit(".", 1)[-1], event.data.kind, event.data.ref))
            await msg.ack()
    return [a for a in out if a[1] in DOSSIER_KINDS]


@pytest.mark.parametrize(("dossiers", "per_second"), [(1500, None), (500, 400)], ids=["as-fast-as-possible", "paced"])
async def test_a_replayed_month_alerts_only_for_dossiers_due_or_overdue_at_the_end(
    own_nats_server, tmp_path: Path, dossiers: int, per_second: int | None
) -> None:
    payloads = history(dossiers)
    overdue, due_soon = reference(payloads)
    assert overdue and due_soon and len(overdue) < dossiers // 4  # a history with both, most dossiers ended

    def common(name: str) -> CommonSettings:
        return CommonSettings(nats_url=own_nats_server.url, database_url=f"sqlite:///{tmp_path / name}.db",
                              data_dir=tmp_path)

    tracker, _ = create_tracker(common("tracker"), TrackerSettings(port=0), clock=Clock())
    monitor, monitor_app = create_monitor(
        common("monitor"),
        MonitorSettings(port=0, include_shipped_plans=False, tick_interval=3600, backlog_idle_seconds=2.0),
        clock=Clock(),
    )
    store = monitor_app.state.store
    nc = await nats.connect(own_nats_server.url)
    try:
        for service in (tracker, monitor):
            await service.start()
        if per_second is None:
            await prepublish_dossier_events(own_nats_server.url, payloads)
        else:
            await publish_paced(own_nats_server.url, payloads, per_second=per_second)
        js = nc.jetstream()

        async def done() -> bool:
            upstream = await js.consumer_info("TTHC_DOSSIER", "dossier_tracker")
            own = await js.consumer_info("PARWATCH_DOSSIER_STATE", "deadline_monitor_dossiers")
            if upstream.delivered.stream_seq < len(payloads) or upstream.num_pending or upstream.num_ack_pending:
                return False
            if own.num_pending or own.num_ack_pending or own.delivered.stream_seq == 0:
                return False
            with store.transaction() as work:
                unsettled = work.unsettled(limit=1)
            return not unsettled and store.outbox_size() == 0

        await wait_until(done, timeout=50, interval=0.2)
        alerts = await alerts_published(js)
    finally:
        for service in (monitor, tracker):
            await service.stop()
        await nc.close()

    assert [a for a in alerts if a[0] == "resolved"] == []  # nothing fired and resolved during the replay
    fired = [(kind, ref) for _, kind, ref in alerts]
    assert len(fired) == len(set(fired))
    assert {ref for kind, ref in fired if kind == "dossier_overdue"} == overdue
    assert {ref for _, ref in fired} == overdue | due_soon
