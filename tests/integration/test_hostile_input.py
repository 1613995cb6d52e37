"""Hostile input through a real nats-server into the real dossier_tracker (issue 11).

Hypothesis builds CloudEvents that are valid envelopes carrying hostile keys,
codes, times, numbers and text (NUL, ESC, newlines, U+202E, the issue's own
examples), and sizes up to the message limit, and publishes them on the
public input subjects. Every generated key and value holds a canary marker.
The properties:

* every message ends accepted (or duplicate) or dead-lettered, counted by
  ``parwatch_events_total`` and by the dead letters stored, never lost and
  never retried as a processing failure (every value the schema accepts is
  stored, on SQLite and PostgreSQL);
* no dead-letter reason and no log line holds the canary, and every log
  record renders as one line;
* the service keeps running (healthy, and a good event after it all is
  accepted).

Hypothesis runs in a worker thread and hands each example to the test's event
loop, where the tracker runs for the whole test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

import nats
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from services.dossier_tracker.app import create_app
from services.dossier_tracker.settings import TrackerSettings
from shared.agencies import UNKNOWN, load_agencies
from shared.events import CONTENT_TYPE, MAX_MESSAGE_BYTES, PLAN_TYPE, RATING_TYPE, DeadLetterEvent, parse_event
from shared.logs import JsonFormatter, OneLineFormatter
from shared.settings import CommonSettings
from shared.streams import DEADLETTER, DOSSIER_EVENTS, PLAN_EVENTS, RATING_EVENTS, ensure_streams, stream_for
from shared.testing import dossier_event, metric_value, started, wait_until
from shared.text import is_unsafe

CANARY = "CANARY7f3"
INPUTS = {DOSSIER_EVENTS: "TTHC_DOSSIER", RATING_EVENTS: "TTHC_RATING", PLAN_EVENTS: "TTHC_PLAN"}
RESULTS = ("accepted", "duplicate", "rejected")
EXAMPLES = 25  # per database; each example is one to four messages

# -- what a hostile sender sends -----------------------------------------------------------------------------------

HOSTILE_CHARS = ["\x00", "\x1b[31m", "\x1b]0;pwned\x07", "\n", "\r\n", "\u202e", "\u2066", "\u200b", "\x85",
                 "\u2028", "\x7f", "\ufeff", "\t"]
ISSUE_KEY = f"Công dân Trần Thị B, CCCD 079301234567 {CANARY} https://evil.example/fix"
FORGED_LINE = f"{CANARY}\n2026-01-01 00:00:00 ERROR notifier forged: send money"

# Text that always holds the canary: with control or bidirectional characters, or printable (then a valid code).
marked = st.one_of(
    st.builds(lambda a, bad, b: f"{a}{CANARY}{bad}{b}", st.text(max_size=12), st.sampled_from(HOSTILE_CHARS),
              st.text(max_size=12)),
    st.builds(lambda a: f"{CANARY} {a}", st.text(max_size=30)),
    st.sampled_from([f"{CANARY}-OK.1", f"{CANARY}/X_2", ISSUE_KEY, FORGED_LINE, f"{CANARY}" + "é" * 80]),
)
any_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), marked),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(marked, inner, max_size=3)),
    max_leaves=6,
)
times = st.one_of(
    st.sampled_from(["9999-12-31T23:00:00-05:00", "0001-01-01T00:00:00+05:00", "2026-11-23T10:00:00",
                     "1999-12-31T23:59:59Z", "2100-01-01T00:00:00Z", "2026-11-23T10:00:00+23:59"]),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    marked,
)
numbers = st.one_of(st.integers(), st.sampled_from([2**31, 2**53, 2**53 + 1, 2**63, 2**64, -1, 0]),
                    st.floats(allow_nan=True, allow_infinity=True))


def dossier() -> dict[str, Any]:
    return dossier_event(f"H.HOSTILE.{uuid.uuid4().hex[:12]}", 2, "2026-11-23T08:00:00+07:00", seq=1,
                         statutory_duration={"value": 3, "unit": "working_days"})


def dossier_with(**data: Any) -> bytes:
    event = dossier()
    event["data"] |= data
    return json.dumps(event).encode()


def rating() -> dict[str, Any]:
    return {"specversion": "1.0", "id": str(uuid.uuid4()), "source": "kiosk.test", "type": RATING_TYPE,
            "data": {"dossier_code": "H1", "agency_code": "PTP", "rated_at": "2026-11-26T09:00:00+07:00",
                     "overall": "satisfied", "criteria": {"c1": 2}}}


def plan_report() -> dict[str, Any]:
    return {"specversion": "1.0", "id": str(uuid.uuid4()), "source": "pnv.test", "type": PLAN_TYPE,
            "data": {"plan_id": "KH-146-2023-TP", "task_id": "III.6.2", "agency_code": "PNV", "state": "done",
                     "reported_at": "2026-11-26T09:00:00+07:00", "note": "Đã hoàn thành."}}


BASES: dict[str, Callable[[], dict[str, Any]]] = {DOSSIER_EVENTS: dossier, RATING_EVENTS: rating,
                                                  PLAN_EVENTS: plan_report}
Change = Callable[[dict[str, Any]], None]


def _set(where: Callable[[dict[str, Any]], dict[str, Any]], key: str, value: Any) -> Change:
    def change(event: dict[str, Any]) -> None:
        target = where(event)
        if isinstance(target, dict):
            target[key] = value

    return change


def _data(e: dict[str, Any]) -> dict[str, Any]:
    return e["data"]


CODE_FIELDS = ["agency_code", "procedure_code", "field_code", "dossier_code", "plan_id", "task_id"]
changes = st.one_of(
    st.builds(lambda k, v: _set(_data, k, v), marked, any_json),  # an invented key in data
    st.builds(lambda k, v: _set(lambda e: e, k, v), marked, any_json),  # ... in the envelope
    st.builds(lambda k, v: _set(lambda e: e["data"].get("statutory_duration") or {}, k, v), marked, any_json),
    st.builds(lambda k: _set(lambda e: e["data"].get("criteria") or {}, k, 1), marked),  # a key of a map
    st.builds(lambda f, v: _set(_data, f, v), st.sampled_from(CODE_FIELDS), marked),
    st.builds(lambda f, v: _set(_data, f, v),
              st.sampled_from(["occurred_at", "received_at", "due_at", "rated_at", "reported_at"]), times),
    st.builds(lambda t: _set(lambda e: e, "time", t), times),
    st.builds(lambda f, v: _set(_data, f, v), st.sampled_from(["status", "sequence", "channel"]), numbers),
    st.builds(lambda f, v: _set(lambda e: e, f, v), st.sampled_from(["id", "source", "subject"]), marked),
    st.builds(lambda v: _set(_data, "note", v), marked),
    st.builds(lambda t: _set(lambda e: e, "type", t), marked),  # an unknown type
    st.builds(lambda n: _set(_data, f"{CANARY}-pad", "x" * n), st.integers(min_value=1000, max_value=60_000)),
)
RAW = [f'{{"id": "{CANARY}\x1b[2J'.encode(), b"[" * 5000, f'{{"type": "\\ud800{CANARY}"}}'.encode(),
       f'{{"specversion": "1.0", "{CANARY}": NaN}}'.encode(), "\u202e{CANARY}".encode()]


@st.composite
def messages(draw: st.DrawFn) -> list[tuple[str, bytes]]:
    """One to four (subject, payload) pairs: mutated valid events, or raw bytes."""
    out = []
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        subject = draw(st.sampled_from(list(BASES)))
        if draw(st.integers(min_value=0, max_value=9)) == 9:  # one in ten: raw bytes (the simplest is an event)
            out.append((subject, draw(st.sampled_from(RAW))))
            continue
        event = BASES[subject]()
        for change in draw(st.lists(changes, min_size=0, max_size=3)):
            change(event)
        payload = json.dumps(event, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
        out.append((subject, payload[: MAX_MESSAGE_BYTES - 1024]))  # within the stream's limit, headers included
    return out


# -- the tracker, and one example through it -------------------------------------------------------------------------


def running_tracker(nats_url: str, database_url: str) -> contextlib.AbstractAsyncContextManager[Any]:
    settings = TrackerSettings(retry_first_delay=0.2, retry_max_delay=0.5, max_deliver=3)
    return started(create_app(CommonSettings(nats_url=nats_url, database_url=database_url), settings)[0])


def handled(service: Any) -> float:
    return sum(metric_value(service.registry, "parwatch_events_total", stream=s, result=r) or 0.0
               for s in INPUTS.values() for r in RESULTS)


def rejected(service: Any) -> float:
    return sum(metric_value(service.registry, "parwatch_events_total", stream=s, result="rejected") or 0.0
               for s in INPUTS.values())


async def dead_letters(js: Any) -> list[bytes]:
    stream = stream_for(DEADLETTER).name
    info = await js.stream_info(stream)
    if not info.state.messages:
        return []
    return [(await js.get_msg(stream, seq)).data for seq in range(info.state.first_seq, info.state.last_seq + 1)]


async def through_the_tracker(js: Any, service: Any, batch: list[tuple[str, bytes]]) -> None:
    """Publish ``batch`` and wait until every message is accounted for: handled once, each rejection a dead letter
    of the contract whose reason holds no canary and is plain text."""
    before, rejected_before, letters_before = handled(service), rejected(service), len(await dead_letters(js))
    for subject, payload in batch:
        ack = await js.publish(subject, payload, headers={"Content-Type": CONTENT_TYPE,
                                                          "Nats-Msg-Id": str(uuid.uuid4())})
        assert not ack.duplicate
    await wait_until(lambda: handled(service) >= before + len(batch), timeout=30)
    assert handled(service) == before + len(batch)
    letters = [parse_event(raw) for raw in (await dead_letters(js))[letters_before:]]
    assert len(letters) == rejected(service) - rejected_before  # each rejection stored as its dead letter, once
    for letter in letters:
        assert isinstance(letter, DeadLetterEvent)
        reason = letter.data.reason
        assert CANARY not in reason and CANARY not in letter.data.subject, reason
        assert not any(is_unsafe(c) for c in reason), repr(reason)
        # A contract rejection, never a storage failure retried and given up.
        assert not reason.startswith(("processing failed", "transient failure")), reason


@pytest.mark.timeout(300)
async def test_hostile_input_is_accepted_or_dead_lettered_and_never_echoed(
    own_nats_server, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    loop = asyncio.get_running_loop()
    nc = await nats.connect(own_nats_server.url)
    js = nc.jetstream()
    await ensure_streams(js)
    try:
        async with running_tracker(own_nats_server.url, database_url) as service:

            def through(batch: list[tuple[str, bytes]]) -> None:
                asyncio.run_coroutine_threadsafe(through_the_tracker(js, service, batch), loop).result(timeout=60)

            @settings(max_examples=EXAMPLES, deadline=None, database=None,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
            @given(batch=messages())
            # The issue's repros: its key, a forged log line, a NUL code (PostgreSQL's DataError), years that
            # overflow once moved to UTC, a 48 KB key, an unknown type; and the largest sequence, stored 64-bit.
            # Also one id of one source for two dossiers (found here: it failed its batch until b33529f).
            @example(batch=[(DOSSIER_EVENTS, dossier_with(**{ISSUE_KEY: 1}))])
            @example(batch=[(DOSSIER_EVENTS, dossier_with(**{FORGED_LINE: 1}))])
            @example(batch=[(DOSSIER_EVENTS, dossier_with(agency_code=f"{CANARY}\x00"))])
            @example(batch=[(DOSSIER_EVENTS, dossier_with(occurred_at="9999-12-31T23:00:00-05:00",
                                                          received_at="0001-01-01T00:00:00+05:00"))])
            @example(batch=[(DOSSIER_EVENTS, dossier_with(**{f"{CANARY}-big": "x" * 48_000}))])
            @example(batch=[(DOSSIER_EVENTS, json.dumps(dossier() | {"type": f"vn.{CANARY}\x1b[31m"}).encode())])
            @example(batch=[(DOSSIER_EVENTS, dossier_with(sequence=2**53, agency_code=f"{CANARY}-OK.1"))])
            @example(batch=[(DOSSIER_EVENTS, json.dumps(dossier() | {"id": f"{CANARY} "}).encode()),
                            (DOSSIER_EVENTS, json.dumps(dossier() | {"id": f"{CANARY} "}).encode())])
            def hostile(batch: list[tuple[str, bytes]]) -> None:
                through(batch)

            await asyncio.to_thread(hostile)

            # The service keeps running: healthy, and a good event after it all is accepted.
            assert all((await service.healthy()).values())
            accepted = metric_value(service.registry, "parwatch_events_total", stream="TTHC_DOSSIER",
                                    result="accepted") or 0.0
            await through_the_tracker(js, service, [(DOSSIER_EVENTS, json.dumps(dossier()).encode())])
            assert metric_value(service.registry, "parwatch_events_total", stream="TTHC_DOSSIER",
                                result="accepted") == accepted + 1
            assert rejected(service) > 0  # the suite did reach the door's refusals

            # -- labels bounded by the agency directory (issue 11, item 3) -----------------------------------------
            # Accepted events name invented units ("CANARY7f3-OK.1" and the like): none becomes a label value, and
            # the series stay as many as the directory allows, whatever was generated.
            directory = load_agencies()
            series = [(m.name, s.labels) for m in service.registry.collect() for s in m.samples]
            agencies = {labels["agency"] for _, labels in series if "agency" in labels}
            assert agencies <= directory.codes | {directory.district_code, UNKNOWN}, agencies
            assert UNKNOWN in agencies  # the invented units were counted, under the one value
            assert not any(CANARY in value for _, labels in series for value in labels.values())
            per_agency = [name for name, labels in series if "agency" in labels]
            assert len(per_agency) <= (len(directory.codes) + 2) * 7  # 3 timeliness + 4 open states a unit
    finally:
        await nc.close()

    # No log line holds a generated key or value, and every record renders as one line, text or JSON.
    text, json_lines = OneLineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"), JsonFormatter()
    assert caplog.records, "the tracker logged its rejections"
    for record in caplog.records:
        for line in (text.format(record), json_lines.format(record)):
            assert CANARY not in line, line[:300]
            assert "\n" not in line and "\r" not in line
