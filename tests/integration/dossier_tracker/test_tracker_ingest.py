"""dossier_tracker against a real nats-server and a real database."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from services.dossier_tracker.app import create_app
from services.dossier_tracker.domain import RecordedEvent, derive_state
from services.dossier_tracker.settings import TrackerSettings
from services.dossier_tracker.store import TrackerStore
from shared.calendar import load_calendar
from shared.db import make_engine
from shared.embedded import free_port, wait_for_port
from shared.events import DeadLetterEvent, DossierStateEvent, RatingEvent, parse_event
from shared.service import AnotherReplica
from shared.settings import CommonSettings
from shared.streams import (
    ACCEPTED_RATINGS,
    DEADLETTER,
    DOSSIER_EVENTS,
    DOSSIER_STATE,
    RATING_EVENTS,
    stream_for,
)
from shared.testing import dossier_event, jetstream, metric_value, publish_event, wait_until
from tests.integration.dossier_tracker.tracker import running_tracker, value

CAL = load_calendar()
UNITS = ("PTP", "PNV", "PYT")  # units of the shipped directory: labels of their own


async def stream_messages(js: Any, subject: str, *, at_least: int = 1, timeout: float = 10.0) -> list[bytes]:
    """Every message stored on ``subject`` once there are ``at_least``; read by sequence, nothing waited for."""
    stream = stream_for(subject).name

    async def enough() -> bool:
        return len(await _on_subject(js, stream, subject)) >= at_least

    await wait_until(enough, timeout=timeout)
    return await _on_subject(js, stream, subject)


async def _on_subject(js: Any, stream: str, subject: str) -> list[bytes]:
    info = await js.stream_info(stream)
    if not info.state.messages:
        return []
    msgs = [await js.get_msg(stream, seq) for seq in range(info.state.first_seq, info.state.last_seq + 1)]
    return [m.data for m in msgs if m.subject == subject]


def lifecycle(code: str, *, received: str = "2026-11-23T08:00:00+07:00", end: str = "2026-11-25T09:00:00+07:00",
              agency: str = "PTP") -> list[dict[str, Any]]:
    return [
        dossier_event(code, 2, received, seq=1, agency=agency, statutory_duration={"value": 3, "unit": "working_days"}),
        dossier_event(code, 4, "2026-11-23T10:00:00+07:00", seq=2, agency=agency),
        dossier_event(code, 9, end, seq=3, agency=agency),
    ]


async def test_duplicates_are_not_counted_twice(own_nats_server, database_url: str) -> None:
    async with jetstream(own_nats_server.url) as js, running_tracker(own_nats_server.url, database_url) as svc:
        events = lifecycle("H1")
        for e in events:
            await publish_event(js, DOSSIER_EVENTS, e)
        # The same event again under another broker id: only parwatch's own
        # (source, id) dedup can catch it.
        await publish_event(js, DOSSIER_EVENTS, events[2], msg_id="another-broker-id")
        await publish_event(js, DOSSIER_EVENTS, events[0], msg_id="and-another")
        # The source's id again, for another dossier: a duplicate too, neither stored nor dead-lettered.
        await publish_event(js, DOSSIER_EVENTS, lifecycle("H2")[0] | {"id": events[0]["id"]}, msg_id="reused")
        await wait_until(lambda: value(svc, "parwatch_events_total", stream="TTHC_DOSSIER", result="duplicate") == 3)
        assert value(svc, "parwatch_events_total", stream="TTHC_DOSSIER", result="accepted") == 3
        assert value(svc, "parwatch_events_total", stream="TTHC_DOSSIER", result="rejected") == 0
        assert value(svc, "parwatch_dossiers_ended_total", agency="PTP", timeliness="early") == 1
        assert value(svc, "parwatch_dossiers_ended_total", agency="PTP", timeliness="on_time") == 0
    store = TrackerStore(make_engine(database_url), calendar=CAL)
    assert store.get_state("H2") is None
    store.engine.dispose()


async def test_any_arrival_order_gives_the_same_final_state(own_nats_server, database_url: str) -> None:
    rng = random.Random(7)
    histories: dict[str, list[dict[str, Any]]] = {}
    for i in range(30):
        code = f"H.ORDER.{i}"
        steps = [dossier_event(code, 2, "2026-11-23T08:00:00+07:00", seq=1,
                               statutory_duration={"value": 2, "unit": "working_days"})]
        statuses = rng.sample([4, 5, 4, 6, 4], k=rng.randint(1, 5)) + [rng.choice([9, 10, 7])]
        for seq, status in enumerate(statuses, start=2):
            steps.append(dossier_event(code, status, f"2026-11-{23 + seq // 2}T{8 + seq}:00:00+07:00", seq=seq))
        histories[code] = steps
    shuffled = [e for h in histories.values() for e in h]
    rng.shuffle(shuffled)
    async with jetstream(own_nats_server.url) as js, running_tracker(own_nats_server.url, database_url) as svc:
        for e in shuffled:
            await publish_event(js, DOSSIER_EVENTS, e)
        await wait_until(lambda: value(svc, "parwatch_events_total", stream="TTHC_DOSSIER", result="accepted")
                         == len(shuffled))
    store = TrackerStore(make_engine(database_url), calendar=CAL)
    for code, history in histories.items():
        expected = derive_state(
            [RecordedEvent.from_contract(parse_event(json.dumps(e)).data, source=e["source"], event_id=e["id"])
             for e in history],
            calendar=CAL,
        )
        # The generation counts the late events that made the store fold the history again: it depends on the
        # arrival order, the state does not.
        assert store.get_state(code)._replace(generation=0) == expected
    store.engine.dispose()


async def test_poison_messages_go_to_dead_letters_once_and_the_rest_flows(own_nats_server, sqlite_url: str) -> None:
    async with jetstream(own_nats_server.url) as js, running_tracker(own_nats_server.url, sqlite_url) as svc:
        await publish_event(js, DOSSIER_EVENTS, lifecycle("H.GOOD.1")[0])
        await publish_event(js, DOSSIER_EVENTS, b'{"specversion": "1.0", "id": ', msg_id="bad-json")
        unknown = dossier_event("H.BAD.2", 4, "2026-11-23T10:00:00+07:00", seq=2)
        unknown["data"]["citizen_name"] = "Tran Thi B"
        await publish_event(js, DOSSIER_EVENTS, unknown)
        await publish_event(js, DOSSIER_EVENTS, lifecycle("H.GOOD.2")[0])
        await wait_until(lambda: value(svc, "parwatch_events_total", stream="TTHC_DOSSIER", result="accepted") == 2)
        assert value(svc, "parwatch_events_total", stream="TTHC_DOSSIER", result="rejected") == 2
        # Counted once published: the stream holds them all, once each.
        letters = [parse_event(raw) for raw in await stream_messages(js, DEADLETTER)]
        assert len(letters) == 2
        assert all(isinstance(letter, DeadLetterEvent) for letter in letters)
        reasons = sorted(letter.data.reason for letter in letters)
        assert "not valid JSON" in reasons[0]
        assert reasons[1] == "unexpected field in data"  # the contract's words, never the sender's key or value
        assert {letter.data.stream for letter in letters} == {"TTHC_DOSSIER"}
        assert sorted(letter.data.stream_seq for letter in letters) == [2, 3]


async def test_state_facts_are_published_for_other_services(own_nats_server, sqlite_url: str) -> None:
    async with jetstream(own_nats_server.url) as js, running_tracker(own_nats_server.url, sqlite_url):
        for e in lifecycle("H.FACT"):
            await publish_event(js, DOSSIER_EVENTS, e)
        # One fact per batch that touched the dossier: one to three, as the events arrived; the last has all three.
        async def all_folded() -> bool:
            facts = [parse_event(raw) for raw in await _on_subject(js, "PARWATCH_DOSSIER_STATE", DOSSIER_STATE)]
            return any(f.data.revision == 3 for f in facts)

        await wait_until(all_folded, timeout=10)
        facts = [parse_event(raw) for raw in await stream_messages(js, DOSSIER_STATE)]
        assert all(isinstance(f, DossierStateEvent) for f in facts)
        last = max(facts, key=lambda f: f.data.revision)
        assert last.data.timeliness == "early" and last.data.ended_on.isoformat() == "2026-11-25"


async def test_ratings_are_validated_deduplicated_and_relayed(own_nats_server, sqlite_url: str) -> None:
    rating = {
        "specversion": "1.0", "id": "rating-1", "source": "kiosk.lienhuong", "type": "vn.tthc.rating.submitted",
        "data": {"dossier_code": "H1", "agency_code": "TT_LIEN_HUONG", "rated_at": "2026-11-26T09:00:00+07:00",
                 "overall": "satisfied", "criteria": {"c1": 2, "c7": 1}},
    }
    async with jetstream(own_nats_server.url) as js, running_tracker(own_nats_server.url, sqlite_url) as svc:
        await publish_event(js, RATING_EVENTS, rating)
        await publish_event(js, RATING_EVENTS, rating, msg_id="again")
        bad = json.loads(json.dumps(rating)) | {"id": "rating-2"}
        bad["data"]["overall"] = "meh"
        await publish_event(js, RATING_EVENTS, bad)
        await wait_until(lambda: sum(value(svc, "parwatch_events_total", stream="TTHC_RATING", result=r)
                                     for r in ("accepted", "duplicate", "rejected")) == 3)
        assert value(svc, "parwatch_events_total", stream="TTHC_RATING", result="accepted") == 1
        assert value(svc, "parwatch_events_total", stream="TTHC_RATING", result="duplicate") == 1
        assert value(svc, "parwatch_events_total", stream="TTHC_RATING", result="rejected") == 1
        # Both deliveries were republished and acked before they were counted; the broker stored one.
        relayed = [parse_event(raw) for raw in await stream_messages(js, ACCEPTED_RATINGS)]
        assert len(relayed) == 1 and isinstance(relayed[0], RatingEvent) and relayed[0].id == "rating-1"


async def test_a_database_that_comes_back_loses_nothing(own_nats_server, tmp_path: Path, caplog) -> None:
    """The store's process meets a database it cannot open (transient): the batch is held, tried again with delay,
    and stored once the database is back; nothing is dead-lettered."""
    db = tmp_path / "tracker.db"
    async with jetstream(own_nats_server.url) as js, running_tracker(own_nats_server.url, f"sqlite:///{db}") as svc:
        # The service made the schema; the store's process opens its connection at its first batch.
        db.rename(tmp_path / "away.db")
        db.mkdir()
        await publish_event(js, DOSSIER_EVENTS, lifecycle("H.FLAKY")[0])

        await wait_until(lambda: sum("transient failure" in r.getMessage() for r in caplog.records) >= 2, timeout=10)
        db.rmdir()
        (tmp_path / "away.db").rename(db)
        await wait_until(lambda: value(svc, "parwatch_events_total", stream="TTHC_DOSSIER", result="accepted") == 1)
        assert value(svc, "parwatch_events_total", stream="TTHC_DOSSIER", result="rejected") == 0


def _spawn_tracker(nats_url: str, database_url: str, port: int, workdir: Path) -> subprocess.Popen[bytes]:
    env = os.environ | {
        "PARWATCH_NATS_URL": nats_url,
        "PARWATCH_DATABASE_URL": database_url,
        "PARWATCH_TRACKER_PORT": str(port),
        "PARWATCH_TRACKER_BATCH_SIZE": "20",
        "PARWATCH_TRACKER_ACK_WAIT": "3",  # the killed consumer's batch comes back after this
        "PARWATCH_DATA_DIR": str(workdir),
    }
    return subprocess.Popen([sys.executable, "-m", "services.dossier_tracker"], env=env, cwd=Path(__file__).parents[3],
                            stdout=subprocess.DEVNULL, stderr=(workdir / "tracker.log").open("ab"))


async def test_a_consumer_killed_mid_stream_loses_nothing(own_nats_server, database_url: str, tmp_path: Path) -> None:
    dossiers = 1200  # a backlog the tracker cannot drain before the kill lands
    events = [e for i in range(dossiers) for e in lifecycle(f"H.KILL.{i}", agency=UNITS[i % 3])]
    async with jetstream(own_nats_server.url) as js:
        acks = [await js.publish_async(DOSSIER_EVENTS, json.dumps(e).encode(), headers={"Nats-Msg-Id": e["id"]})
                for e in events]
        await asyncio.gather(*acks)
    port = free_port()
    metrics_url = f"http://127.0.0.1:{port}/metrics"

    async def accepted(client: httpx.AsyncClient) -> float:
        try:
            text = (await client.get(metrics_url)).text
        except httpx.HTTPError:
            return 0.0
        return metric_value(text, "parwatch_events_total", stream="TTHC_DOSSIER", result="accepted") or 0.0

    proc = _spawn_tracker(own_nats_server.url, database_url, port, tmp_path)
    try:
        await asyncio.to_thread(wait_for_port, "127.0.0.1", port, timeout=30)
        async with httpx.AsyncClient(timeout=5) as client:
            await wait_until(lambda: _positive(accepted(client)), timeout=30, interval=0.01)
        store_processes = psutil.Process(proc.pid).children(recursive=True)
        assert store_processes, "the store works in a process of its own"
        proc.send_signal(signal.SIGKILL)  # no goodbye: mid-batch, unacked work
        proc.wait(timeout=10)
        # The store's process sees its service gone (the end of its input) and ends too: no orphan.
        _, alive = await asyncio.to_thread(psutil.wait_procs, store_processes, timeout=10)
        assert not alive
    finally:
        if proc.poll() is None:
            proc.kill()
    stored_before_restart = _stored_events(database_url)
    assert 0 < stored_before_restart < len(events), "the kill must land mid-stream"
    proc = _spawn_tracker(own_nats_server.url, database_url, port, tmp_path)
    try:
        await asyncio.to_thread(wait_for_port, "127.0.0.1", port, timeout=30)
        async with httpx.AsyncClient(timeout=5) as client:

            async def all_ended() -> bool:
                text = (await client.get(metrics_url)).text
                total = sum(
                    metric_value(text, "parwatch_dossiers_ended_total", agency=UNITS[a], timeliness=t) or 0.0
                    for a in range(3) for t in ("early", "on_time", "late")
                )
                return total >= dossiers

            await wait_until(all_ended, timeout=60)
            text = (await client.get(metrics_url)).text
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    for a in range(3):
        assert metric_value(text, "parwatch_dossiers_ended_total", agency=UNITS[a], timeliness="early") == dossiers / 3
        assert metric_value(text, "parwatch_dossiers_ended_total", agency=UNITS[a], timeliness="late") == 0
    store = TrackerStore(make_engine(database_url), calendar=CAL)
    for i in range(dossiers):
        state = store.get_state(f"H.KILL.{i}")
        assert state is not None and state.revision == 3 and state.timeliness == "early"
    store.engine.dispose()


def _stored_events(database_url: str) -> int:
    from sqlalchemy import func, select
    from sqlmodel import Session

    from services.dossier_tracker.store import DossierEventRow

    engine = make_engine(database_url)
    with Session(engine) as session:
        n = session.execute(select(func.count()).select_from(DossierEventRow)).scalar_one()
    engine.dispose()
    return int(n)


async def _positive(value: Any) -> bool:
    return (await value) > 0


@pytest.mark.postgres
async def test_two_replicas_sharing_the_consumer_agree(own_nats_server, postgres_url: str) -> None:
    """Replicas share a database that takes several writers: PostgreSQL (on SQLite a second replica refuses)."""
    database_url = postgres_url
    rng = random.Random(11)
    histories = {}
    for i in range(60):
        code = f"H.REPLICA.{i}"
        histories[code] = [
            dossier_event(code, 2, "2026-11-23T08:00:00+07:00", seq=1,
                          statutory_duration={"value": 1, "unit": "working_days"}),
            dossier_event(code, 5, "2026-11-23T09:00:00+07:00", seq=2),
            dossier_event(code, 4, "2026-11-25T09:00:00+07:00", seq=3),
            dossier_event(code, 9, f"2026-11-2{rng.choice([5, 6, 7])}T15:00:00+07:00", seq=4),
        ]
    events = [e for h in histories.values() for e in h]
    rng.shuffle(events)
    async with (
        jetstream(own_nats_server.url) as js,
        running_tracker(own_nats_server.url, database_url, batch_size=7) as a,
        running_tracker(own_nats_server.url, database_url, batch_size=5) as b,
    ):
        for e in events:
            await publish_event(js, DOSSIER_EVENTS, e)

        def handled() -> float:
            return sum(value(s, "parwatch_events_total", stream="TTHC_DOSSIER", result=r)
                       for s in (a, b) for r in ("accepted", "duplicate"))

        await wait_until(lambda: handled() == len(events), timeout=30)
        assert value(a, "parwatch_events_total", stream="TTHC_DOSSIER", result="accepted") > 0
        assert value(b, "parwatch_events_total", stream="TTHC_DOSSIER", result="accepted") > 0
        ended = sum(value(a, "parwatch_dossiers_ended_total", agency="PTP", timeliness=t)
                    for t in ("early", "on_time", "late"))
        assert ended == len(histories)
    store = TrackerStore(make_engine(database_url), calendar=CAL)
    for code, history in histories.items():
        expected = derive_state(
            [RecordedEvent.from_contract(parse_event(json.dumps(e)).data, source=e["source"], event_id=e["id"])
             for e in history],
            calendar=CAL,
        )
        # The generation counts the late events that made the store fold the history again: it depends on the
        # arrival order, the state does not.
        assert store.get_state(code)._replace(generation=0) == expected
    store.engine.dispose()


async def test_operator_lists_and_replays_dead_letters(own_nats_server, sqlite_url: str, monkeypatch, capsys) -> None:
    from services.dossier_tracker import cli

    monkeypatch.setenv("PARWATCH_NATS_URL", own_nats_server.url)
    monkeypatch.setenv("PARWATCH_DATABASE_URL", sqlite_url)
    bad = dossier_event("H.CLI", 4, "2026-11-23T10:00:00+07:00", seq=2)
    bad["data"]["status"] = 42
    async with jetstream(own_nats_server.url) as js, running_tracker(own_nats_server.url, sqlite_url) as svc:
        await publish_event(js, DOSSIER_EVENTS, bad)
        await wait_until(lambda: value(svc, "parwatch_events_total", stream="TTHC_DOSSIER", result="rejected") == 1)
        letters = await cli._fetch_letters(10)
        assert [(d["stream"], d["stream_seq"]) for d in letters] == [("TTHC_DOSSIER", 1)]
        assert "data.status" in letters[0]["reason"]
        subject = await cli._replay_one("TTHC_DOSSIER", 1)
        assert subject == DOSSIER_EVENTS
        await wait_until(lambda: value(svc, "parwatch_events_total", stream="TTHC_DOSSIER", result="rejected") == 2)
        await publish_event(js, DOSSIER_EVENTS, lifecycle("H.CLI.OK")[0])
        await wait_until(lambda: value(svc, "parwatch_events_total", stream="TTHC_DOSSIER", result="accepted") == 1)
    args = type("A", (), {"code": "H.CLI.OK"})()
    assert cli._show(args) == 0
    out = capsys.readouterr().out
    assert "Hồ sơ H.CLI.OK" in out and "Được tiếp nhận" in out


async def test_a_second_replica_on_one_sqlite_database_refuses_to_start(own_nats_server, sqlite_url: str) -> None:
    async with running_tracker(own_nats_server.url, sqlite_url):
        second, _ = create_app(CommonSettings(nats_url=own_nats_server.url, database_url=sqlite_url), TrackerSettings())
        with pytest.raises(AnotherReplica, match="another replica of this service already runs on the SQLite"):
            await second.start()
        await second.stop()
    # Once the first has stopped, the lock is free again.
    async with running_tracker(own_nats_server.url, sqlite_url) as again:
        assert all((await again.healthy()).values())
