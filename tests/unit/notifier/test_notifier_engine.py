"""The engine on a real database (SQLite, and PostgreSQL when available) with fake channels.

Receiving is idempotent on (source, id); the outbox survives failures and
restarts; the notification log stops a second send; digests are made once.
"""

from __future__ import annotations

import datetime as dt

import pytest
from prometheus_client import CollectorRegistry

from services.notifier.domain.dispatch import Plan
from services.notifier.domain.silence import Silence
from services.notifier.engine import Notifier, NotifierMetrics
from services.notifier.notify import Message, SendResult
from services.notifier.notify.log import LogChannel
from services.notifier.render import Renderer
from services.notifier.store import NewOutbox, Store
from shared.consuming import Outcome
from shared.db import make_engine

VN = dt.timezone(dt.timedelta(hours=7))


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
    def __init__(self, url, directory, calendar, timing, escalation, clock, registry=None, digests=False):
        self.engine = make_engine(url)
        self.store = Store(self.engine)
        self.store.create_schema()
        self.registry = registry or CollectorRegistry()
        self.smtp = FakeChannel("smtp")
        self.webhook = FakeChannel("webhook")
        self.clock = clock
        self.notifier = Notifier(
            store=self.store, directory=directory, renderer=Renderer(directory=directory, escalation=escalation),
            channels={"smtp": self.smtp, "webhook": self.webhook, "log": LogChannel()}, email_channel="smtp",
            timing=timing, escalation=escalation, calendar=calendar, metrics=NotifierMetrics(self.registry),
            clock=clock, weekly_digest=digests, monthly_digest=digests,
        )

    def metric(self, name, **labels):
        return self.registry.get_sample_value(name, labels) or 0.0

    async def run(self, *, seconds: float = 0) -> None:
        now = self.clock.advance(seconds=seconds)
        await self.notifier.tick(now)
        await self.notifier.deliver(now)


@pytest.fixture
def harness(database_url, directory, calendar, timing, escalation, clock):
    h = Harness(database_url, directory, calendar, timing, escalation, clock)
    yield h
    h.engine.dispose()


async def test_a_redelivered_event_is_a_duplicate_and_counted_once(harness, make_delivery):
    first = make_delivery("a1", event_id="ev-1")
    assert await harness.notifier.record([first]) == [Outcome.ACCEPTED]
    assert await harness.notifier.record([first]) == [Outcome.DUPLICATE]
    # Same id twice inside one batch, and the same alert re-sent with a new id.
    again = make_delivery("a1", event_id="ev-2")
    assert await harness.notifier.record([again, again]) == [Outcome.ACCEPTED, Outcome.DUPLICATE]
    await harness.notifier.record([make_delivery("a1", event_id="ev-3", resolved=True)])
    assert harness.metric("parwatch_alerts_total", kind="dossier_due_soon", severity="warning") == 2
    await harness.run()
    await harness.run(seconds=60)
    assert harness.smtp.sent == []  # resolved before the group wait ended: nobody needed telling


async def test_grouped_notice_is_sent_once_and_logged(harness, make_delivery):
    await harness.notifier.record([make_delivery("a1", event_id="e1"),
                                   make_delivery("a2", event_id="e2", ref="H31.12-002", kind="dossier_overdue")])
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
    assert harness.metric("parwatch_notifications_total", channel="smtp", result="sent") == 1


async def test_channel_down_then_up_delivers_exactly_once_with_backoff(harness, make_delivery):
    harness.smtp.mode = "down"
    await harness.notifier.record([make_delivery("a1", event_id="e1")])
    await harness.run()
    await harness.run(seconds=30)
    rows = harness.store.query_outbox(status="pending")
    assert len(rows) == 1 and rows[0].attempts == 1
    first_retry = rows[0].next_attempt_at
    assert first_retry - harness.clock.now == dt.timedelta(seconds=10)
    await harness.run(seconds=10)
    await harness.run(seconds=20)
    rows = harness.store.query_outbox(status="pending")
    assert rows[0].attempts == 3 and rows[0].next_attempt_at - harness.clock.now == dt.timedelta(seconds=40)
    # More alerts arrive while the channel is down: queued, nothing lost.
    await harness.notifier.record([make_delivery("b1", event_id="e2", agency_code="PNV", ref="N-1")])
    for _ in range(5):
        await harness.run(seconds=120)
    assert harness.smtp.sent == []
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
    assert harness.store.pending_counts() == {}


async def test_backoff_doubles_up_to_the_cap(harness):
    n = harness.notifier
    assert [n.backoff(i).total_seconds() for i in (1, 2, 3, 4, 7, 20)] == [10, 20, 40, 80, 640, 900]


async def test_the_log_stops_a_second_send_of_the_same_notice(harness, make_delivery):
    await harness.notifier.record([make_delivery("a1", event_id="e1")])
    await harness.run()
    await harness.run(seconds=30)
    assert len(harness.smtp.sent) == 1
    # As after a crash between planning and marking: the same notice queued again.
    row = harness.store.query_outbox(status="sent")[0]
    harness.store.apply_plan(Plan(), [
        NewOutbox(kind=row.kind, receiver_id=row.receiver_id, channel=row.channel, agency_code=row.agency_code,
                  payload=row.payload, notice_keys=row.notice_keys)], now=harness.clock.now)
    await harness.run(seconds=1)
    assert len(harness.smtp.sent) == 1
    assert [r.status for r in harness.store.query_outbox()] == ["duplicate", "sent"]


async def test_a_refused_address_is_given_up_and_counted_failed(harness, make_delivery):
    harness.smtp.mode = "refuse"
    await harness.notifier.record([make_delivery("a1", event_id="e1")])
    await harness.run()
    await harness.run(seconds=30)
    await harness.run(seconds=3600)
    assert [r.status for r in harness.store.query_outbox()] == ["failed"]
    assert harness.metric("parwatch_notifications_total", channel="smtp", result="failed") == 1


async def test_a_restart_picks_up_pending_notices(database_url, directory, calendar, timing, escalation, clock,
                                                  make_delivery):
    first = Harness(database_url, directory, calendar, timing, escalation, clock)
    first.smtp.mode = "down"
    await first.notifier.record([make_delivery("a1", event_id="e1")])
    await first.run()
    await first.run(seconds=30)
    first.engine.dispose()
    second = Harness(database_url, directory, calendar, timing, escalation, clock)
    await second.run(seconds=60)
    assert [r for r, _ in second.smtp.sent] == ["ptp-desk"]
    assert await second.notifier.record([make_delivery("a1", event_id="e1")]) == [Outcome.DUPLICATE]
    await second.run(seconds=3600)
    assert len(second.smtp.sent) == 1
    second.engine.dispose()


async def test_silenced_alert_counts_suppressed_once_then_goes_out(harness, make_delivery):
    now = harness.clock.now
    harness.store.add_silence(Silence(id="", starts_at=now, ends_at=now + dt.timedelta(hours=1), comment="bảo trì",
                                      created_at=now, refs=frozenset({"H31.12-001"})))
    await harness.notifier.record([make_delivery("a1", event_id="e1")])
    for _ in range(4):
        await harness.run(seconds=60)
    assert harness.smtp.sent == []
    assert harness.metric("parwatch_notifications_total", channel="smtp", result="suppressed") == 1
    await harness.run(seconds=3600)
    assert [r for r, _ in harness.smtp.sent] == ["ptp-desk"]


async def test_webhook_officials_get_their_own_channel(harness, make_delivery):
    await harness.notifier.record([make_delivery("dl", event_id="e1", kind="deadletter", agency_code="PNV",
                                                 ref="TTHC_DOSSIER", summary="Bản tin bị từ chối")])
    await harness.run()
    await harness.run(seconds=30)
    assert [r for r, _ in harness.webhook.sent] == ["tech"] and harness.smtp.sent == []


async def test_weekly_and_monthly_digests_are_made_once(database_url, directory, calendar, timing, escalation, clock,
                                                        make_delivery):
    h = Harness(database_url, directory, calendar, timing, escalation, clock, digests=True)
    await h.run()  # Wednesday 25/11/2026: the notifier starts
    await h.notifier.record([
        make_delivery("o1", event_id="e1", kind="dossier_overdue", ref="H31.12-0042", labels={"due_day": "2026-11-24"}),
        make_delivery("t1", event_id="e2", kind="plan_task_due_soon", ref="KH146-III.2",
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
