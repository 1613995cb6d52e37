"""`parwatch deadletters list|replay` against a real nats-server and the real tracker.

Replay selects dead letters by reason and by time, replays every match in one command, says how many and why the
others could not be; list prints what came from outside through safe_text.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from typing import Any

import pytest

from parwatch.cli import main as parwatch_main
from services.dossier_tracker import cli
from services.dossier_tracker.app import create_app
from services.dossier_tracker.settings import TrackerSettings
from shared.events import CONTENT_TYPE, DEADLETTER_TYPE
from shared.settings import CommonSettings
from shared.streams import DEADLETTER, DOSSIER_EVENTS
from shared.testing import dossier_event, jetstream, metric_value, publish_event, started, wait_until


def running_tracker(nats_url: str, database_url: str) -> contextlib.AbstractAsyncContextManager[Any]:
    settings = TrackerSettings(retry_first_delay=0.2, retry_max_delay=0.5)
    return started(create_app(CommonSettings(nats_url=nats_url, database_url=database_url), settings)[0])



def rejected(service: Any) -> float:
    return metric_value(service.registry, "parwatch_events_total", stream="TTHC_DOSSIER", result="rejected") or 0.0


def bad_status(n: int) -> dict[str, Any]:
    event = dossier_event(f"H.BAD.{n}", 4, "2026-11-23T10:00:00+07:00", seq=2)
    event["data"]["status"] = 42
    return event


def invented_field(n: int) -> dict[str, Any]:
    event = dossier_event(f"H.EXTRA.{n}", 4, "2026-11-23T10:00:00+07:00", seq=2)
    event["data"]["citizen_name"] = "Tran Thi B"
    return event


async def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """The command as an operator runs it (its own event loop, in a thread), and what it printed."""
    code = await asyncio.to_thread(parwatch_main, argv)
    return code, capsys.readouterr().out


async def test_replay_by_reason_and_time_replays_every_match_and_says_how_many(
    own_nats_server, sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PARWATCH_NATS_URL", own_nats_server.url)
    async with jetstream(own_nats_server.url) as js, running_tracker(own_nats_server.url, sqlite_url) as svc:
        for n in range(3):
            await publish_event(js, DOSSIER_EVENTS, bad_status(n))
        await publish_event(js, DOSSIER_EVENTS, invented_field(0))
        await wait_until(lambda: rejected(svc) == 4)
        between = dt.datetime.now(dt.UTC)
        for n in range(3, 5):
            await publish_event(js, DOSSIER_EVENTS, bad_status(n))
        await publish_event(js, DOSSIER_EVENTS, invented_field(1))
        await wait_until(lambda: rejected(svc) == 7)

        # By reason (any case) and time: the two later bad statuses, nothing else.
        code, out = await run(["deadletters", "replay", "--reason", "DATA.STATUS", "--since", between.isoformat()],
                              capsys)
        assert code == 0
        assert out.splitlines()[-1] == "replayed 2 of 2 matching message(s)"
        assert sorted(line.split()[1] for line in out.splitlines()[:-1]) == ["TTHC_DOSSIER:5", "TTHC_DOSSIER:6"]
        await wait_until(lambda: rejected(svc) == 9)  # the replays are the same bad messages: rejected again

        # By time only, before the first replay: the four earliest; one is gone from its stream.
        await js.delete_msg("TTHC_DOSSIER", 2)
        code, out = await run(["deadletters", "replay", "--until", between.isoformat()], capsys)
        assert code == 1
        assert out.splitlines()[-1] == (
            "replayed 3 of 4 matching message(s); 1 could not be: "
            "1 no longer in their stream (retention or limits removed them)")
        await wait_until(lambda: rejected(svc) == 12)

        # The same selection at once: the broker's duplicate window knows those three.
        code, out = await run(["deadletters", "replay", "--until", between.isoformat()], capsys)
        assert code == 1 and "3 already replayed within the broker's duplicate window" in out

        # Every letter saying so, the replays' letters included (seq 4, its replay 12, and 7); newest first.
        letters = await cli._fetch_letters(100, cli.Selection(reason="unexpected field"))
        assert [d["stream_seq"] for d in letters] == [12, 7, 4]
        assert all(d["reason"] == "unexpected field in data" for d in letters)
        assert "citizen_name" not in json.dumps([d["reason"] for d in await cli._fetch_letters(100)])

        # STREAM SEQ still works, and says what it did.
        code, out = await run(["deadletters", "replay", "TTHC_DOSSIER", "7"], capsys)
        assert code == 0 and out.splitlines() == ["replayed TTHC_DOSSIER:7 on tthc.dossier.events",
                                                  "replayed 1 of 1 matching message(s)"]
        code, out = await run(["deadletters", "replay", "--reason", "no such reason"], capsys)
        assert code == 0 and out.strip() == "no dead letter matches; nothing replayed"


async def test_list_prints_what_came_from_outside_safely(
    own_nats_server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A dead letter written before the schema's text rules (or by another writer) holds escape sequences and
    bidirectional controls: list shows it, without them."""
    monkeypatch.setenv("PARWATCH_NATS_URL", own_nats_server.url)
    legacy = {
        "specversion": "1.0", "id": "deadletter:TTHC_DOSSIER:77", "source": "parwatch/old", "type": DEADLETTER_TYPE,
        "data": {"stream": "TTHC_DOSSIER", "stream_seq": 77, "subject": "tthc.dossier.events\x1b]0;pwned\x07",
                 "reason": "data.\x1b[2J\x1b[31mCông dân Trần Thị B\u202e\n2026 ERROR forged: Extra inputs",
                 "received_at": "2026-11-23T10:00:00+07:00"},
    }
    async with jetstream(own_nats_server.url) as js:
        await js.publish(DEADLETTER, json.dumps(legacy).encode(), headers={"Content-Type": CONTENT_TYPE})
        await js.publish(DEADLETTER, b"not a dead letter at all", headers={"Content-Type": CONTENT_TYPE})
    code, out = await run(["deadletters", "list"], capsys)
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 1
    assert "TTHC_DOSSIER:77" in lines[0] and "2026-11-23T10:00:00+07:00" in lines[0]
    for char in ("\x1b", "\x07", "\u202e", "\r"):
        assert char not in out
    code, out = await run(["deadletters", "list", "--reason", "forged", "--since", "2026-11-24"], capsys)
    assert code == 0 and out.strip() == "no dead letter matches"
