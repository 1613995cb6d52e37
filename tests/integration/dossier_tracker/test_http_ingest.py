"""dossier_tracker's HTTP ingest (POST /events) served by uvicorn, against a real nats-server and database.

Clients nobody here wrote: the official CloudEvents SDK (``cloudevents``, its v2 core API) makes the
structured and binary requests; it has no batch mode, so a batch is the SDK's structured JSON of each event in
a JSON array. Plain httpx sends the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from services.dossier_tracker.api_keys import KeyStore, create_key_schema
from services.dossier_tracker.app import create_app
from services.dossier_tracker.http_ingest import BATCH, PATH, STRUCTURED
from services.dossier_tracker.settings import TrackerSettings
from shared.db import make_engine
from shared.embedded import free_port, start_nats_server, stop_process
from shared.events import RATING_TYPE, parse_event
from shared.settings import CommonSettings
from shared.streams import DEADLETTER, DOSSIER_EVENTS, RATING_EVENTS, stream_for
from shared.testing import dossier_event, jetstream, metric_samples, publish_event, wait_until
from tests.integration.dossier_tracker.tracker import running_tracker, value

SOURCE = "motcua.tuyphong"
FIGURES = ("parwatch_events_total", "parwatch_dossiers_ended_total", "parwatch_dossiers_open")


@pytest.fixture
def second_nats(tmp_path: Path) -> Iterator[str]:
    """Another nats-server of this test's own: the same events sent on NATS go there, to a tracker of their own."""
    port = free_port()
    proc = start_nats_server(store_dir=tmp_path / "nats2", port=port, log_file=tmp_path / "nats2.log")
    yield f"nats://127.0.0.1:{port}"
    stop_process(proc)


def add_key(database_url: str, source: str) -> tuple[str, str]:
    engine = make_engine(database_url)
    create_key_schema(engine)
    try:
        return KeyStore(engine).add(source, now=dt.datetime.now(dt.UTC))
    finally:
        engine.dispose()


@contextlib.asynccontextmanager
async def serving_tracker(nats_url: str, database_url: str, **overrides: Any) -> AsyncIterator[tuple[Any, str]]:
    """The tracker as its process runs it: create_app's app served by uvicorn, whose lifespan starts the service."""
    settings = TrackerSettings(**({"retry_first_delay": 0.2, "retry_max_delay": 0.5, "port": free_port()}
                                  | overrides))
    service, app = create_app(CommonSettings(nats_url=nats_url, database_url=database_url), settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_config=None,
                                           access_log=False, lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        await wait_until(lambda: server.started or task.done(), timeout=60)
        if task.done():
            task.result()
        yield service, f"http://127.0.0.1:{settings.port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=60)


def figures(service: Any) -> dict[Any, float]:
    return {k: v for k, v in metric_samples(service.registry).items() if k[0] in FIGURES}


def histories(source: str = SOURCE) -> list[list[dict[str, Any]]]:
    """Dossiers of three units, received Monday 2/11/2026 with three working days (due Thursday 5/11): ended
    early, on time, late, and open."""
    out = []
    for i, (agency, end) in enumerate([("PTP", "2026-11-04T09:00:00+07:00"), ("PNV", "2026-11-05T16:00:00+07:00"),
                                        ("PYT", "2026-11-09T10:00:00+07:00"), ("PTP", None), ("PNV", None)]):
        code = f"H.HTTP.{i}"
        steps = [
            dossier_event(code, 2, "2026-11-02T08:00:00+07:00", seq=1, agency=agency, source=source,
                          statutory_duration={"value": 3, "unit": "working_days"}, channel=2),
            dossier_event(code, 4, "2026-11-02T10:00:00+07:00", seq=2, agency=agency, source=source),
        ]
        if end is not None:
            steps.append(dossier_event(code, 10, end, seq=3, agency=agency, source=source))
        out.append(steps)
    return out


def rating(source: str = SOURCE) -> dict[str, Any]:
    return {"specversion": "1.0", "id": "rating-H.HTTP.0", "source": source, "type": RATING_TYPE,
            "time": "2026-11-05T10:00:00+07:00", "subject": "H.HTTP.0",
            "data": {"dossier_code": "H.HTTP.0", "agency_code": "PTP", "rated_at": "2026-11-05T10:00:00+07:00",
                     "overall": "satisfied", "criteria": {"c1": 2, "c9": 1}}}


def sdk_event(event: dict[str, Any]) -> Any:
    """The same event as the SDK's own object (its time a datetime, as the SDK requires)."""
    from cloudevents.core.v1.event import CloudEvent as SdkEvent

    attributes = {k: v for k, v in event.items() if k != "data"}
    attributes["time"] = dt.datetime.fromisoformat(attributes["time"])
    attributes["datacontenttype"] = "application/json"
    return SdkEvent(attributes=attributes, data=event["data"])


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def on_subject(js: Any, subject: str) -> list[bytes]:
    info = await js.stream_info(stream_for(subject).name)
    if not info.state.messages:
        return []
    msgs = [await js.get_msg(info.config.name, s) for s in range(info.state.first_seq, info.state.last_seq + 1)]
    return [m.data for m in msgs if m.subject == subject]


async def test_the_sdk_in_three_modes_gives_the_figures_of_the_same_events_on_nats(
    own_nats_server, second_nats: str, tmp_path: Path
) -> None:
    """Structured and binary mode are the SDK's own requests (``to_structured``, ``to_binary``). The SDK (2.x)
    has no batch mode: the batch request is a JSON array of events each written by the SDK's ``JSONFormat``,
    sent with httpx under ``application/cloudevents-batch+json``. The same events on NATS give the same
    figures."""
    pytest.importorskip("cloudevents", minversion="2.1",
                        reason="the CloudEvents SDK of the test extra is missing: pip install -e '.[test]'")
    from cloudevents.core.bindings.http import to_binary, to_structured
    from cloudevents.core.formats.json import JSONFormat

    http_db, nats_db = f"sqlite:///{tmp_path / 'http.db'}", f"sqlite:///{tmp_path / 'nats.db'}"
    _, key = add_key(http_db, SOURCE)
    dossiers = histories()
    everything = [e for h in dossiers for e in h] + [rating()]
    fmt = JSONFormat()

    async with serving_tracker(own_nats_server.url, http_db) as (svc, url), httpx.AsyncClient(base_url=url) as http:
        answers = []
        for event in dossiers[0] + [rating()]:  # structured mode, one request an event
            msg = to_structured(sdk_event(event), fmt)
            answers.append(await http.post(PATH, content=msg.body, headers=msg.headers | auth(key)))
        for event in dossiers[1]:  # binary mode: ce-* headers, the data as the body
            msg = to_binary(sdk_event(event), fmt)
            sent = {k.lower(): v for k, v in msg.headers.items()}
            assert "ce-id" in sent and sent["content-type"] == "application/json"
            answers.append(await http.post(PATH, content=msg.body, headers=msg.headers | auth(key)))
        batch = [json.loads(fmt.write(sdk_event(e))) for h in dossiers[2:] for e in h]
        answers.append(await http.post(PATH, content=json.dumps(batch), headers={"Content-Type": BATCH} | auth(key)))
        assert [a.status_code for a in answers] == [202] * len(answers), [a.text for a in answers]
        assert [e["outcome"] for e in answers[-1].json()["events"]] == ["stored"] * len(batch)
        assert [e["index"] for e in answers[-1].json()["events"]] == list(range(len(batch)))
        # 202 means stored: the input stream holds every event already, nothing waited for.
        async with jetstream(own_nats_server.url) as js:
            assert len(await on_subject(js, DOSSIER_EVENTS)) == len(everything) - 1
            assert len(await on_subject(js, RATING_EVENTS)) == 1
        await wait_until(lambda: value(svc, "parwatch_events_total", stream="TTHC_DOSSIER", result="accepted")
                         == len(everything) - 1)
        await wait_until(lambda: value(svc, "parwatch_events_total", stream="TTHC_RATING", result="accepted") == 1)
        over_http = figures(svc)

    async with jetstream(second_nats) as js, running_tracker(second_nats, nats_db, port=0) as svc:
        for event in everything:
            await publish_event(js, RATING_EVENTS if event["type"] == RATING_TYPE else DOSSIER_EVENTS, event)
        await wait_until(lambda: value(svc, "parwatch_events_total", stream="TTHC_DOSSIER", result="accepted")
                         == len(everything) - 1)
        await wait_until(lambda: value(svc, "parwatch_events_total", stream="TTHC_RATING", result="accepted") == 1)
        over_nats = figures(svc)

    assert over_http == over_nats
    ended = {k[1]: v for k, v in over_http.items() if k[0] == "parwatch_dossiers_ended_total"}
    assert ended[frozenset({("agency", "PTP"), ("timeliness", "early")})] == 1
    assert ended[frozenset({("agency", "PNV"), ("timeliness", "on_time")})] == 1
    assert ended[frozenset({("agency", "PYT"), ("timeliness", "late")})] == 1


async def test_refusals_and_a_repeated_event_counted_once(own_nats_server, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'tracker.db'}"
    _, key = add_key(db, SOURCE)
    revoked_id, revoked = add_key(db, SOURCE)
    _, kiosk = add_key(db, "kiosk.ptp")
    engine = make_engine(db)
    KeyStore(engine).revoke(revoked_id, now=dt.datetime.now(dt.UTC))
    engine.dispose()
    good = histories()[0]

    async with serving_tracker(own_nats_server.url, db, http_max_batch=5, http_burst=50,
                               http_max_batch_bytes=96 * 1024) as (svc, url), \
            httpx.AsyncClient(base_url=url) as http, jetstream(own_nats_server.url) as js:

        async def post(body: Any, *, key: str | None = key, content_type: str = STRUCTURED, **headers: str
                       ) -> httpx.Response:
            content = body if isinstance(body, (bytes, str)) or hasattr(body, "__aiter__") else json.dumps(body)
            sent = {"Content-Type": content_type} | (auth(key) if key else {}) | headers
            return await http.post(PATH, content=content, headers=sent)

        async def stored() -> int:
            return len(await on_subject(js, DOSSIER_EVENTS))

        # 401: no key, a key that is no key, a wrong secret, a revoked key.
        for answer in [await post(good[0], key=None), await post(good[0], key="letmein"),
                       await post(good[0], key=key[:-2] + ("xx" if not key.endswith("xx") else "yy")),
                       await post(good[0], key=revoked)]:
            assert answer.status_code == 401
            assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        # 403: a key publishes as its own source only, also inside a batch.
        assert (await post(good[0], key=kiosk)).status_code == 403
        answer = await post([good[0], histories(source="kiosk.ptp")[1][0]], content_type=BATCH)
        assert answer.status_code == 403
        assert [e["outcome"] for e in answer.json()["events"]] == ["not_sent", "rejected"]
        assert await stored() == 0
        # 415: not a CloudEvents mode.
        assert (await post(good[0], content_type="text/plain")).status_code == 415
        # 413: over the size, declared or streamed without a length.
        big = dict(good[0], subject="x" * 70_000)
        assert (await post(big)).status_code == 413

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(80):
                yield b" " * 1024

        assert (await post(chunks())).status_code == 413
        assert (await post([good[0]] * 6, content_type=BATCH)).json()["error"] == "batch holds 6 events; the limit is 5"
        # A batch's body has its own limit, http_max_batch_bytes (96 KiB here), not one event's 64 KiB: 84 kB is
        # read (and refused for its count), 104 kB is not, declared or streamed.
        padded = json.dumps([good[0]] * 6) + " " * 80_000
        assert 64 * 1024 < len(padded) < 96 * 1024
        assert (await post(padded, content_type=BATCH)).json()["error"] == "batch holds 6 events; the limit is 5"
        over = padded + " " * 20_000
        answer = await post(over, content_type=BATCH)
        assert (answer.status_code, answer.json()["error"]) == (413, f"body over {96 * 1024} bytes")

        async def streamed() -> AsyncIterator[bytes]:
            for start in range(0, len(over), 4096):
                yield over[start : start + 4096].encode()

        assert (await post(streamed(), content_type=BATCH)).status_code == 413
        assert await stored() == 0

        # 400: the reason the same bytes get as a dead letter on NATS, word for word, no value in it.
        bad = dossier_event("H.BAD.1", 4, "2026-11-23T10:00:00", seq=2, source=SOURCE)  # a time without offset
        bad["data"]["citizen_name"] = "Trần Thị B"
        answer = await post(bad)
        assert answer.status_code == 400
        reason = answer.json()["events"][0]["reason"]
        assert "Trần" not in answer.text and "citizen" not in answer.text
        await publish_event(js, DOSSIER_EVENTS, bad)
        letters = [parse_event(raw).data for raw in await _wait_for(js, DEADLETTER, 1)]
        assert [d.reason for d in letters] == [reason]
        # A batch with one bad event publishes nothing, and says which.
        before = await stored()
        answer = await post([good[0], bad, good[1]], content_type=BATCH)
        assert answer.status_code == 400
        assert [(e["outcome"], e.get("reason")) for e in answer.json()["events"]] == [
            ("not_sent", None), ("rejected", reason), ("not_sent", None)]
        assert await stored() == before

        # The same event twice over HTTP: stored once by the broker; once more on NATS under the event's own id
        # (another broker id): counted once by the tracker.
        assert [e["outcome"] for e in (await post(good[:2], content_type=BATCH)).json()["events"]] == ["stored"] * 2
        again = await post(good[0])
        assert again.status_code == 202 and again.json()["events"] == [{"index": 0, "outcome": "duplicate"}]
        await publish_event(js, DOSSIER_EVENTS, good[0])
        await wait_until(lambda: value(svc, "parwatch_events_total", stream="TTHC_DOSSIER", result="duplicate") == 1)
        assert value(svc, "parwatch_events_total", stream="TTHC_DOSSIER", result="accepted") == 2
        assert value(svc, "parwatch_events_total", stream="TTHC_DOSSIER", result="rejected") == 1  # the NATS one


async def test_over_the_rate_a_source_waits_and_others_do_not(own_nats_server, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'tracker.db'}"
    _, key = add_key(db, SOURCE)
    _, other = add_key(db, "kiosk.ptp")
    events = [e for h in histories() for e in h]
    async with serving_tracker(own_nats_server.url, db, http_rate=2.0, http_burst=5, http_max_batch=5) as (_, url), \
            httpx.AsyncClient(base_url=url) as http:
        headers = {"Content-Type": BATCH} | auth(key)
        assert (await http.post(PATH, content=json.dumps(events[:5]), headers=headers)).status_code == 202
        refused = await http.post(PATH, content=json.dumps(events[5:7]), headers=headers)
        assert refused.status_code == 429
        wait = int(refused.headers["Retry-After"])
        assert wait >= 1
        kiosk = histories(source="kiosk.ptp")[0]
        assert (await http.post(PATH, content=json.dumps(kiosk), headers={"Content-Type": BATCH} | auth(other))
                ).status_code == 202
        await asyncio.sleep(wait)
        assert (await http.post(PATH, content=json.dumps(events[5:7]), headers=headers)).status_code == 202


async def _wait_for(js: Any, subject: str, n: int) -> list[bytes]:
    async def enough() -> bool:
        return len(await on_subject(js, subject)) >= n

    await wait_until(enough)
    return await on_subject(js, subject)
