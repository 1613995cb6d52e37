"""The service layer on a real database (SQLite, and PostgreSQL when available) with fake channels.

Receiving is idempotent on (source, id); the outbox survives failures and
restarts; the notification log stops a second send; digests are made once.
The tests drive ``tick(now)`` and ``relay.once(now)`` themselves.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import JSON, Column, Index, Integer, MetaData, String, Table, text

from services.notifier.domain.silence import Silence
from services.notifier.metrics import NotifierMetrics
from services.notifier.notify import Message, SendResult
from services.notifier.notify.log import LogChannel
from services.notifier.render import Renderer
from services.notifier.service import Notice, NotifierService
from services.notifier.settings import NotifierSettings
from services.notifier.store import Store
from shared.calendar import load_calendar
from shared.consumer import Outcome
from shared.db import UtcDateTime, make_engine
from shared.outbox import Message as OutboxMessage

VN = dt.timezone(dt.timedelta(hours=7))
CALENDAR = load_calendar()


class FakeChannel:
    def __init__(self, name: str) -> None:
        self.name = name
        self.sent: list[tuple[str, Message]] = []
        self.mode = "ok"  # ok | down | refuse

    async def send(self, official, message: Message) -> SendResult:
        if self.mode == "down":
            return SendResult.retry("ConnectionRefusedError")
        if self.mode == "refuse":
            return SendResult.give_up("recipient refused (550)")
        self.sent.append((official.id, message))
        return SendResult.sent()


class Harness:
    """The service with the default settings (group wait 30 s, retries from 10 s to 15 min, escalation after 8 and
    24 working hours) on ``url``, with fake channels."""

    def __init__(self, url, directory, clock, digests=False):
        settings = NotifierSettings()
        self.engine = make_engine(url)
        self.store = Store(self.engine)
        self.registry = CollectorRegistry()
        self.smtp = FakeChannel("smtp")
        self.webhook = FakeChannel("webhook")
        self.clock = clock
        self.notifier = NotifierService(
            store=self.store, directory=directory,
            renderer=Renderer(directory=directory, escalation=settings.escalation()),
            channels={"smtp": self.smtp, "webhook": self.webhook, "log": LogChannel()}, email_channel="smtp",
            timing=settings.timing(), escalation=settings.escalation(), calendar=CALENDAR,
            metrics=NotifierMetrics(self.registry), clock=clock, backoff=settings.delivery_backoff(),
            weekly_digest=digests, monthly_digest=digests,
        )
        self.notifier.create_schema()

    def metric(self, name, **labels):
        return self.registry.get_sample_value(name, labels) or 0.0

    async def run(self, *, seconds: float = 0) -> None:
        now = self.clock.advance(seconds=seconds)
        await self.notifier.tick(now)
        await self.notifier.relay.once(now)


@pytest.fixture
def harness(database_url, directory, clock):
    h = Harness(database_url, directory, clock)
    yield h
    h.engine.dispose()


async def test_a_redelivered_event_is_a_duplicate_and_counted_once(harness, make_received):
    first = make_received("a1", event_id="ev-1")
    assert await harness.notifier.record([first]) == [Outcome.ACCEPTED]
    assert await harness.notifier.record([first]) == [Outcome.DUPLICATE]
    # Same id twice inside one batch, and the same alert re-sent with a new id.
    again = make_received("a1", event_id="ev-2")
    assert await harness.notifier.record([again, again]) == [Outcome.ACCEPTED, Outcome.DUPLICATE]
    await harness.notifier.record([make_received("a1", event_id="ev-3", resolved=True)])
    assert harness.metric("parwatch_alerts_total", kind="dossier_due_soon", severity="warning") == 2
    await harness.run()
    await harness.run(seconds=60)
    assert harness.smtp.sent == []  # resolved before the group wait ended: nobody needed telling
    assert harness.store.waiting() == []


async def test_grouped_notice_is_sent_once_and_logged(harness, make_received):
    await harness.notifier.record([make_received("a1", event_id="e1"),
                                   make_received("a2", event_id="e2", ref="H31.12-002", kind="dossier_overdue")])
    await harness.run()
    assert harness.smtp.sent == []
    await harness.run(seconds=30)
    assert [(r, m.subject) for r, m in harness.smtp.sent] == [
        ("ptp-desk", "[parwatch] Phòng Tư pháp: 1 hồ sơ quá hạn, 1 hồ sơ sắp đến hạn")]
    for _ in range(3):
        await harness.run(seconds=600)
    assert len(harness.smtp.sent) == 1
    log = harness.store.query_log()
    assert sorted((r.receiver_id, r.channel, r.alert_key, r.state) for r in log) == [
        ("ptp-desk", "smtp", "a1", "firing"), ("ptp-desk", "smtp", "a2", "firing")]
    [notice] = harness.store.sent()  # one notice, both alerts
    assert sorted(e.alert_key for e in notice) == ["a1", "a2"]
    assert harness.metric("parwatch_notifications_total", channel="smtp", result="sent") == 1


async def test_channel_down_then_up_delivers_exactly_once_with_backoff(harness, make_received):
    harness.smtp.mode = "down"
    await harness.notifier.record([make_received("a1", event_id="e1")])
    await harness.run()
    await harness.run(seconds=30)
    rows = harness.store.waiting()
    assert len(rows) == 1 and rows[0].attempts == 1 and rows[0].last_error == "ConnectionRefusedError"
    first_retry = rows[0].next_attempt_at
    assert first_retry - harness.clock.now == dt.timedelta(seconds=10)
    await harness.run(seconds=10)
    await harness.run(seconds=20)
    rows = harness.store.waiting()
    assert rows[0].attempts == 3 and rows[0].next_attempt_at - harness.clock.now == dt.timedelta(seconds=40)
    # More alerts arrive while the channel is down: queued, nothing lost.
    await harness.notifier.record([make_received("b1", event_id="e2", agency_code="PNV", ref="N-1")])
    for _ in range(5):
        await harness.run(seconds=120)
    assert harness.smtp.sent == []
    assert harness.metric("parwatch_notifier_outbox_pending", channel="smtp") == 2
    harness.smtp.mode = "ok"
    await harness.run(seconds=900)
    await harness.run(seconds=900)
    assert sorted(r for r, _ in harness.smtp.sent) == ["pnv-desk", "ptp-desk"]
    for _ in range(3):
        await harness.run(seconds=900)
    assert len(harness.smtp.sent) == 2
    assert harness.metric("parwatch_notifications_total", channel="smtp", result="sent") == 2
    assert harness.metric("parwatch_notifications_total", channel="smtp", result="failed") == 0
    assert harness.metric("parwatch_notifier_send_errors_total", channel="smtp", retryable="true") >= 5
    assert harness.store.waiting() == [] and harness.store.failures() == []
    assert harness.registry.get_sample_value("parwatch_notifier_outbox_pending", {"channel": "smtp"}) == 0


async def test_the_log_stops_a_second_send_of_the_same_notice(harness, make_received):
    await harness.notifier.record([make_received("a1", event_id="e1")])
    await harness.run()
    await harness.notifier.tick(harness.clock.advance(seconds=30))
    [queued] = harness.store.outbox.due(now=harness.clock.now, limit=10)  # the notice as the plan queued it
    await harness.notifier.relay.once(harness.clock.now)
    assert len(harness.smtp.sent) == 1
    # As after a crash between sending and deleting the notice: the same notice in the outbox again.
    with harness.engine.begin() as conn:
        harness.store.outbox.add(conn, [OutboxMessage(topic=queued.topic, key=queued.key, payload=queued.payload,
                                                      message_id=queued.message_id)], now=harness.clock.now)
    await harness.run(seconds=1)
    assert len(harness.smtp.sent) == 1
    assert harness.store.waiting() == []
    assert [(r.receiver_id, r.alert_key) for r in harness.store.query_log()] == [("ptp-desk", "a1")]
    assert harness.metric("parwatch_notifications_total", channel="smtp", result="sent") == 1


async def test_a_refused_address_is_given_up_and_counted_failed(harness, make_received):
    harness.smtp.mode = "refuse"
    await harness.notifier.record([make_received("a1", event_id="e1")])
    await harness.run()
    await harness.run(seconds=30)
    await harness.run(seconds=3600)
    [failure] = harness.store.failures()
    assert (failure.receiver_id, failure.channel, failure.reason, failure.attempts) == (
        "ptp-desk", "smtp", "recipient refused (550)", 1)
    assert harness.store.waiting() == [] and harness.store.query_log() == []  # a failure is never "already sent"
    assert harness.metric("parwatch_notifications_total", channel="smtp", result="failed") == 1
    assert harness.metric("parwatch_notifier_send_errors_total", channel="smtp", retryable="false") == 1


async def test_a_restart_picks_up_pending_notices(database_url, directory, clock, make_received):
    first = Harness(database_url, directory, clock)
    first.smtp.mode = "down"
    await first.notifier.record([make_received("a1", event_id="e1")])
    await first.run()
    await first.run(seconds=30)
    first.engine.dispose()
    second = Harness(database_url, directory, clock)
    await second.run(seconds=60)
    assert [r for r, _ in second.smtp.sent] == ["ptp-desk"]
    assert await second.notifier.record([make_received("a1", event_id="e1")]) == [Outcome.DUPLICATE]
    await second.run(seconds=3600)
    assert len(second.smtp.sent) == 1
    second.engine.dispose()


async def test_silenced_alert_counts_suppressed_once_then_goes_out(harness, make_received):
    now = harness.clock.now
    harness.store.add_silence(Silence(id="", starts_at=now, ends_at=now + dt.timedelta(hours=1), comment="bảo trì",
                                      created_at=now, refs=frozenset({"H31.12-001"})))
    await harness.notifier.record([make_received("a1", event_id="e1")])
    for _ in range(4):
        await harness.run(seconds=60)
    assert harness.smtp.sent == []
    assert harness.metric("parwatch_notifications_total", channel="smtp", result="suppressed") == 1
    await harness.run(seconds=3600)
    assert [r for r, _ in harness.smtp.sent] == ["ptp-desk"]


async def test_webhook_officials_get_their_own_channel(harness, make_received):
    await harness.notifier.record([make_received("dl", event_id="e1", kind="deadletter", agency_code="PNV",
                                                 ref="TTHC_DOSSIER", summary="Bản tin bị từ chối")])
    await harness.run()
    await harness.run(seconds=30)
    assert [r for r, _ in harness.webhook.sent] == ["tech"] and harness.smtp.sent == []


async def test_weekly_and_monthly_digests_are_made_once(database_url, directory, clock, make_received):
    h = Harness(database_url, directory, clock, digests=True)
    await h.run()  # Wednesday 25/11/2026: the notifier starts
    await h.notifier.record([
        make_received("o1", event_id="e1", kind="dossier_overdue", ref="H31.12-0042", labels={"due_day": "2026-11-24"}),
        make_received("t1", event_id="e2", kind="plan_task_due_soon", ref="KH146-III.2",
                      labels={"due_day": "2026-12-04"}),
    ])
    await h.run(seconds=60)
    await h.run(seconds=60)
    assert [m.data["type"] for _, m in h.smtp.sent] == ["alerts"]
    h.smtp.sent.clear()
    clock.set(dt.datetime(2026, 11, 30, 7, 29, tzinfo=VN))  # Monday, before the digest time
    await h.run()
    assert [m for _, m in h.smtp.sent if m.data["type"] == "digest"] == []
    await h.run(seconds=60)
    weekly = {(r, m.data["agency"]["code"]): m for r, m in h.smtp.sent if m.data["type"] == "digest"}
    assert set(weekly) == {("ptp-desk", "PTP"), ("ptp-head", "PTP"), ("pnv-desk", "PNV"), ("pnv-head", "PNV"),
                           ("chicong-desk", "XA_CHI_CONG"), ("lead", "XA_CHI_CONG")}
    m = weekly[("ptp-head", "PTP")]
    assert m.subject == "[parwatch] Phòng Tư pháp: báo cáo tuần 48/2026 (23/11/2026 - 29/11/2026)"
    assert "HỒ SƠ QUÁ HẠN CHƯA GIẢI QUYẾT (1)" in m.text and "Hồ sơ H31.12-0042 đã quá hạn" in m.text
    assert "Nhiệm vụ KH146-III.2 sắp đến hạn (hạn: 04/12/2026)" in m.text
    sent = len(h.smtp.sent)
    await h.run(seconds=3600)
    assert [m for _, m in h.smtp.sent[sent:] if m.data["type"] == "digest"] == []  # once per week and agency
    sent = len(h.smtp.sent)
    clock.set(dt.datetime(2026, 12, 1, 7, 30, tzinfo=VN))  # first working day of December
    await h.run()
    await h.run(seconds=1)
    monthly = {(r, m.data["digest"]["kind"], m.data["agency"]["code"]) for r, m in h.smtp.sent[sent:]
               if m.data["type"] == "digest"}
    assert monthly == {("ptp-head", "monthly", "PTP"), ("pnv-head", "monthly", "PNV"),
                       ("lead", "monthly", "XA_CHI_CONG"), ("lead", "district_monthly", "TUY_PHONG")}
    district = next(m for r, m in h.smtp.sent if m.data["type"] == "digest"
                    and m.data["digest"]["kind"] == "district_monthly")
    assert district.subject == ("[parwatch] Ủy ban nhân dân huyện Tuy Phong: tổng hợp tháng 11/2026 các cơ quan, "
                                "đơn vị")
    assert "* Phòng Tư pháp: 2 cảnh báo phát sinh (1 hồ sơ quá hạn), 0 đã kết thúc, 2 còn tồn cuối kỳ." in district.text
    h.engine.dispose()


def _older_outbox(engine, rows):
    """The outbox table of notifiers before the shared outbox (its columns and index), with ``rows``."""
    table = Table(
        "notifier_outbox", MetaData(),
        Column("id", Integer, primary_key=True),
        Column("kind", String(16), nullable=False), Column("receiver_id", String(64), nullable=False),
        Column("channel", String(16), nullable=False), Column("agency_code", String(64), nullable=False),
        Column("payload", JSON, nullable=False), Column("notice_keys", JSON, nullable=False),
        Column("created_at", UtcDateTime, nullable=False), Column("status", String(16), nullable=False),
        Column("attempts", Integer, nullable=False), Column("next_attempt_at", UtcDateTime, nullable=False),
        Column("last_error", String(200)), Column("finished_at", UtcDateTime),
        Index("ix_notifier_outbox_due", "status", "next_attempt_at"),
    )
    table.create(engine)
    with engine.begin() as conn:
        conn.execute(table.insert(), rows)


async def test_an_older_outbox_is_set_aside_and_its_waiting_notices_carried_over(database_url, directory, clock):
    def row(receiver, status, key):
        item = {"notice_key": key, "alert_key": "a1", "state": "firing", "level": 0, "repeat": 0,
                "kind": "dossier_overdue", "severity": "warning", "agency_code": "PTP", "ref": "H31.12-0042",
                "summary": "Hồ sơ quá hạn", "starts_at": clock.now.isoformat(), "ends_at": None, "labels": {}}
        payload = {"type": "alerts", "receiver": receiver, "role": "officer", "agency": "PTP",
                   "created_at": clock.now.isoformat(), "items": [item]}
        return {"kind": "alerts", "receiver_id": receiver, "channel": "smtp", "agency_code": "PTP", "payload": payload,
                "notice_keys": [key], "created_at": clock.now, "status": status, "attempts": 2,
                "next_attempt_at": clock.now, "last_error": None, "finished_at": None}

    engine = make_engine(database_url)
    _older_outbox(engine, [row("ptp-desk", "sent", "k0"), row("ptp-desk", "pending", "k1"),
                           row("gone", "pending", "k2")])
    engine.dispose()
    h = Harness(database_url, directory, clock)
    carried = [Notice(w.channel, json.loads(w.payload)) for w in h.store.waiting()]
    assert sorted((n.receiver_id, n.notice_keys[0]) for n in carried) == [("gone", "k2"), ("ptp-desk", "k1")]
    with h.engine.connect() as conn:  # the older table keeps its history, less what was carried over
        assert [r.status for r in conn.execute(text("SELECT status FROM notifier_outbox_legacy"))] == ["sent"]
    await h.notifier.relay.once(clock.now)
    [(receiver, mail)] = h.smtp.sent
    assert receiver == "ptp-desk" and mail.subject == "[parwatch] Phòng Tư pháp: 1 hồ sơ quá hạn"
    [failure] = h.store.failures()
    assert (failure.receiver_id, failure.reason) == ("gone", "receiver not in the directory")
    assert h.store.waiting() == [] and [r.notice_key for r in h.store.query_log()] == ["k1"]
    h.engine.dispose()
    again = Harness(database_url, directory, clock)  # the next start: nothing to carry
    assert again.store.waiting() == []
    again.engine.dispose()


# -- agency codes outside the directory ----------------------------------------------------------------------

HOSTILE = "ZZCANARY-0123456789"  # a code the contract accepts, from outside the directory


async def test_alerts_of_unknown_codes_reach_the_technical_desk_alone_and_name_no_code(harness, make_received):
    received = [make_received(f"dossier_overdue:H-{i}", event_id=f"u{i}", kind="dossier_overdue",
                              severity="critical", agency_code=f"{HOSTILE}-{i}", ref=f"H-{i}",
                              summary=f"Hồ sơ H-{i} của {HOSTILE}-{i} đã quá hạn") for i in range(3)]
    received.append(make_received("unknown_agency", event_id="ua", kind="unknown_agency", agency_code="TUY_PHONG",
                                  ref="agency_directory", summary="Dữ liệu mang mã đơn vị ngoài danh mục", labels={}))
    await harness.notifier.record(received)
    await harness.run()
    await harness.run(seconds=30)
    assert harness.smtp.sent == []  # nobody reached by e-mail: not the leadership up the chain, not an officer
    assert sorted((r, m.data["agency"]["code"]) for r, m in harness.webhook.sent) == [
        ("tech", "TUY_PHONG"), ("tech", "unknown")]  # one notice for the 3 codes, one for the unknown_agency alert
    for _, m in harness.webhook.sent:
        assert "CANARY" not in m.subject + m.text + m.html + json.dumps(m.data, ensure_ascii=False)
    assert {r.agency_code for r in harness.store.query_log()} == {"unknown", "TUY_PHONG"}


async def test_a_notice_queued_before_for_a_leader_about_an_unknown_code_is_not_sent(harness, clock):
    from shared.outbox import Outbox

    key = "dossier_overdue:H-1"
    item = {"notice_key": f"{key}@x:firing", "alert_key": key, "state": "firing", "level": 2, "repeat": 0,
            "kind": "dossier_overdue", "severity": "critical", "agency_code": HOSTILE, "ref": "H-1",
            "summary": HOSTILE, "starts_at": clock().isoformat(), "ends_at": None, "labels": {}}
    old = Notice("smtp", {"type": "alerts", "receiver": "lead", "role": "district_leadership", "agency": HOSTILE,
                          "created_at": clock().isoformat(), "notice_keys": [item["notice_key"]], "items": [item]})
    outbox: Outbox = harness.store.outbox
    with harness.engine.begin() as conn:
        outbox.add(conn, [old.message()], now=clock())
    await harness.notifier.relay.once(clock())
    assert harness.smtp.sent == []
    assert harness.metric("parwatch_notifications_total", channel="smtp", result="failed") == 1
    [failure] = harness.store.failures()
    assert failure.agency_code == "unknown" and failure.reason.startswith("agency outside the directory")
