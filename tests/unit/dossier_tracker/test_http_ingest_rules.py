"""The HTTP ingest's pure parts: the token bucket, decoding the three modes, API keys."""

from __future__ import annotations

import datetime as dt
import json
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.dossier_tracker.api_keys import (
    KeyChecker,
    KeyStore,
    create_key_schema,
    hash_secret,
    secret_matches,
    split_key,
)
from services.dossier_tracker.http_ingest import (
    NOT_ACCEPTED,
    BadRequest,
    SourceLimits,
    TokenBucket,
    check,
    decode_batch,
    decode_binary,
)
from shared.db import make_engine
from shared.events import EventRejected, parse_event
from shared.testing import dossier_event

NOW = dt.datetime(2026, 11, 26, 1, 0, tzinfo=dt.UTC)


# -- the token bucket ------------------------------------------------------------------------------------------


def test_bucket_gives_its_burst_then_says_how_long_to_wait() -> None:
    bucket = TokenBucket(rate=2.0, capacity=10, now=0.0)
    assert bucket.take(10, now=0.0) == 0.0
    assert bucket.take(3, now=0.0) == pytest.approx(1.5)  # 3 tokens at 2 a second
    assert bucket.take(3, now=1.0) == pytest.approx(0.5)  # 2 there, the third in half a second
    assert bucket.take(3, now=1.5) == 0.0


def test_sources_have_buckets_of_their_own() -> None:
    limits = SourceLimits(rate=1.0, burst=5, clock=lambda: 100.0)
    assert limits.take("a", 5) == 0.0
    assert limits.take("a", 1) > 0
    assert limits.take("b", 5) == 0.0


@given(st.lists(st.tuples(st.floats(0, 5), st.integers(1, 10)), max_size=60))
def test_bucket_never_gives_more_than_its_burst_and_its_rate(takes: list[tuple[float, int]]) -> None:
    rate, capacity = 3.0, 10
    bucket = TokenBucket(rate=rate, capacity=capacity, now=0.0)
    now, given_out = 0.0, 0
    for step, n in takes:
        now += step
        if bucket.take(n, now=now) == 0.0:
            given_out += n
        assert given_out <= capacity + rate * now + 1e-9


@given(st.floats(0, 100), st.integers(1, 10))
def test_waiting_what_the_bucket_says_is_enough(start: float, n: int) -> None:
    bucket = TokenBucket(rate=0.7, capacity=10, now=0.0)
    bucket.take(10, now=start)
    wait = bucket.take(n, now=start)
    assert wait > 0
    assert bucket.take(n, now=start + wait + 1e-6) == 0.0


# -- decoding -----------------------------------------------------------------------------------------------------


def _reason(raw: bytes) -> str:
    with pytest.raises(EventRejected) as err:
        parse_event(raw)
    return err.value.reason


def test_structured_refusals_are_the_consumers_reasons_and_never_the_values() -> None:
    event = dossier_event("H1", 2, "2026-11-23T08:00:00+07:00", seq=1)
    event["data"]["citizen_name"] = "Trần Thị B"
    event["data"]["agency_code"] = "<script>"
    raw = json.dumps(event).encode()
    decoded = check(raw)
    assert decoded.event is None
    assert decoded.reason == _reason(raw)
    assert "unexpected field in data" in decoded.reason and "data.agency_code" in decoded.reason
    assert "Trần" not in decoded.reason and "script" not in decoded.reason and "citizen" not in decoded.reason


def test_a_known_type_that_is_no_input_is_refused() -> None:
    alert = {"specversion": "1.0", "id": "a1", "source": "x", "type": "vn.tthc.alert.firing", "data": {
        "alert_key": "k", "kind": "deadletter", "severity": "info", "agency_code": "PTP", "ref": "r",
        "summary": "s", "starts_at": "2026-11-23T08:00:00+07:00"}}
    assert check(json.dumps(alert).encode()).reason == NOT_ACCEPTED
    assert check(json.dumps(dossier_event("H1", 4, "2026-11-23T08:00:00+07:00")).encode()).event is not None


def test_binary_mode_reads_percent_encoded_headers_and_json_data() -> None:
    event = dossier_event("H.B/1", 2, "2026-11-23T08:00:00+07:00", seq=1, source="motcua tuy phong")
    headers = [(f"ce-{k}", quote(str(v), safe="")) for k, v in event.items() if k not in ("data", "datacontenttype")]
    decoded = decode_binary(headers + [("content-type", "application/json")], "application/json; charset=utf-8",
                            json.dumps(event["data"]).encode())
    assert decoded.event is not None
    assert decoded.event == parse_event(json.dumps(event))
    assert decoded.event.source == "motcua tuy phong"


def test_binary_mode_refusals() -> None:
    event = dossier_event("H1", 4, "2026-11-23T08:00:00+07:00")
    headers = [(f"ce-{k}", str(v)) for k, v in event.items() if k not in ("data", "datacontenttype")]
    data = json.dumps(event["data"]).encode()
    assert decode_binary(headers + [("ce-id", "again")], "application/json", data).reason == "id: given twice"
    assert decode_binary(headers, "application/json", b"{not json").reason == "data: body is not valid JSON"
    assert decode_binary(headers, "application/json", b'{"status": NaN}').reason == "data: body is not valid JSON"
    assert "datacontenttype" in (decode_binary(headers, "text/plain", data).reason or "")
    assert "data" in (decode_binary(headers, "application/json", b"").reason or "")
    with_extension = headers + [("ce-applicant", "Nguyễn Văn A")]
    reason = decode_binary(with_extension, "application/json", data).reason or ""
    assert reason == "unexpected field in event" and "Nguyễn" not in reason


def test_batch_limits_and_per_event_reasons() -> None:
    good = dossier_event("H1", 4, "2026-11-23T08:00:00+07:00")
    bad = dossier_event("H2", 4, "2026-11-23T08:00:00")  # no offset
    decoded = decode_batch(json.dumps([good, bad]).encode(), max_events=5)
    assert decoded[0].event is not None
    assert decoded[1].reason == _reason(json.dumps(bad).encode())
    for body, words in ((b"[]", "no event"), (b"{}", "JSON array"), (b"[1,", "not valid JSON"),
                        (json.dumps([good] * 6).encode(), "limit is 5")):
        with pytest.raises(BadRequest, match=words):
            decode_batch(body, max_events=5)


# -- API keys -------------------------------------------------------------------------------------------------------


def test_a_secret_matches_its_hash_only() -> None:
    stored = hash_secret("s3cret")
    assert secret_matches("s3cret", stored)
    assert not secret_matches("s3cret!", stored)
    assert not secret_matches("s3cret", "md5$abc")
    assert hash_secret("s3cret") != stored  # salted


def test_keys_bind_one_source_and_die_when_revoked(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'keys.db'}")
    create_key_schema(engine)
    store = KeyStore(engine)
    key_id, key = store.add("motcua.tuyphong", now=NOW)
    other_id, other = store.add("kiosk.ptp", now=NOW)
    assert split_key(key) == (key_id, key.split(".", 1)[1])
    assert key.split(".", 1)[1] not in store.get(key_id).secret_hash  # only a hash of the secret is kept
    checker = KeyChecker(store)
    assert checker.source_of(key) == "motcua.tuyphong"
    assert checker.source_of(key) == "motcua.tuyphong"  # from the remembered fingerprint
    assert checker.source_of(other) == "kiosk.ptp"
    forged = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert checker.source_of(forged) is None  # right id, wrong secret: the fingerprint does not match either
    assert checker.source_of(f"pwk_{other_id}.{key.split('.', 1)[1]}") is None  # a secret under another id
    assert checker.source_of("pwk_0000000000." + "A" * 43) is None
    assert checker.source_of("Bearer nonsense") is None
    assert store.revoke(key_id, now=NOW)
    assert not store.revoke(key_id, now=NOW)
    assert checker.source_of(key) is None
    assert checker.source_of(other) == "kiosk.ptp"
    with pytest.raises(ValueError, match="source"):
        store.add("bad\nsource", now=NOW)
    engine.dispose()


def test_guessing_under_a_key_id_stops_costing_scrypt_but_its_client_goes_on(tmp_path, monkeypatch) -> None:
    from services.dossier_tracker import api_keys

    engine = make_engine(f"sqlite:///{tmp_path / 'keys.db'}")
    create_key_schema(engine)
    store = KeyStore(engine)
    key_id, key = store.add("motcua.tuyphong", now=NOW)
    now = [0.0]
    checker = KeyChecker(store, clock=lambda: now[0])
    assert checker.source_of(key) == "motcua.tuyphong"  # remembered from here on
    checks = []
    real = api_keys.secret_matches
    monkeypatch.setattr(api_keys, "secret_matches", lambda secret, stored: checks.append(1) or real(secret, stored))
    for i in range(api_keys.MAX_FAILURES + 5):
        assert checker.source_of(f"pwk_{key_id}.{'G' * 42}{i % 10}") is None
    assert len(checks) == api_keys.MAX_FAILURES  # the rest refused unchecked
    assert checker.source_of(key) == "motcua.tuyphong"
    fresh = KeyChecker(store, clock=lambda: now[0])  # a key not remembered waits out the window there
    fresh._failed = dict(checker._failed)
    assert fresh.source_of(key) is None
    now[0] += api_keys.FAILURE_WINDOW
    assert fresh.source_of(key) == "motcua.tuyphong"
    engine.dispose()


# -- the route, with a JetStream that fails on request ---------------------------------------------------------------


class _Ack:
    def __init__(self, duplicate: bool) -> None:
        self.duplicate = duplicate


class _FlakyJetStream:
    """Stores what it is given, says duplicate for what it already holds, fails for the ids it is told."""

    def __init__(self, failing: set[str]) -> None:
        self.failing = failing
        self.held: list[tuple[str, str]] = []

    async def publish(self, subject: str, payload: bytes, *, timeout: float, stream: str, headers: dict[str, str]
                      ) -> _Ack:
        event = json.loads(payload)
        if event["id"] in self.failing:
            raise TimeoutError
        key = (subject, headers["Nats-Msg-Id"])
        duplicate = key in self.held
        self.held.append(key)
        return _Ack(duplicate)


async def test_the_answer_is_202_only_when_every_event_was_stored() -> None:
    import httpx
    from fastapi import FastAPI

    from services.dossier_tracker.http_ingest import BATCH, PATH, IngestLimits, ingest_router

    js = _FlakyJetStream(failing={"will-fail"})
    app = FastAPI()
    app.include_router(ingest_router(source_of=lambda key: "motcua.test" if key == "k" else None,
                                     limits=IngestLimits(max_batch=10, max_batch_bytes=1 << 20),
                                     rates=SourceLimits(rate=100, burst=100), jetstream=lambda: js))
    ok = dossier_event("H1", 4, "2026-11-23T08:00:00+07:00", event_id="fine", source="motcua.test")
    failing = dossier_event("H2", 4, "2026-11-23T08:00:00+07:00", event_id="will-fail", source="motcua.test")
    headers = {"Authorization": "Bearer k", "Content-Type": BATCH}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://tracker") as http:
        answer = await http.post(PATH, content=json.dumps([ok, failing]), headers=headers)
        assert answer.status_code == 503 and answer.headers["Retry-After"] == "5"
        assert [e["outcome"] for e in answer.json()["events"]] == ["stored", "not_stored"]
        js.failing.clear()
        answer = await http.post(PATH, content=json.dumps([ok, failing]), headers=headers)  # sent again: safe
        assert answer.status_code == 202
        assert [e["outcome"] for e in answer.json()["events"]] == ["duplicate", "stored"]
    assert len(set(js.held)) == 2
