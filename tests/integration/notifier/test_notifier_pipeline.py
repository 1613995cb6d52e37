"""The whole notifier: a real nats-server, SQLite, a real SMTP server (STARTTLS) and webhook.

Alert CloudEvents are published with plain nats-py JetStream on
``tthc.alerts``; the service runs its consumer and background loops as in
production, with an injected clock that the tests move (no sleeping through
group waits, escalations or quiet hours). That nothing more goes out is
shown by a dispatch pass the test runs itself (``tick(now)``) leaving the
outbox empty, never by waiting a while.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from services.notifier.app import create_app
from services.notifier.domain.silence import Silence
from services.notifier.settings import NotifierSettings
from shared.events import ALERT_FIRING_TYPE, ALERT_RESOLVED_TYPE, CONTENT_TYPE, Alert, encode, new_event
from shared.settings import CommonSettings
from shared.streams import ALERTS
from shared.testing import eventually

VN = dt.timezone(dt.timedelta(hours=7))
SECRET = "bí-mật-webhook"

DIRECTORY = """\
version: 1
agencies:
  - code: TUY_PHONG
    officials:
      - {{id: lead, role: district_leadership, name: Lãnh đạo UBND huyện, email: lead@example.org}}
  - code: PTP
    officials:
      - {{id: ptp-desk, role: officer, name: Một cửa Phòng Tư pháp, email: ptp.desk@example.org}}
      - {{id: ptp-head, role: head, name: Trưởng phòng Tư pháp, email: ptp.head@example.org}}
  - code: PNV
    officials:
      - {{id: pnv-desk, role: officer, name: Một cửa Phòng Nội vụ, email: pnv.desk@example.org}}
      - {{id: tech, role: officer, direct_only: true, name: Bộ phận kỹ thuật, webhook: "{webhook}"}}
routes:
  - {{name: deadletters, match: {{kind: [deadletter]}}, receivers: [tech], escalate: false}}
  - {{name: default, receivers: [officer]}}
"""


class Stack:
    """The notifier service wired to this test's servers."""

    def __init__(self, *, nats_url: str, tmp: Path, clock: Any, smtp_port: int, ca_file: Path,
                 webhook_url: str = "http://127.0.0.1:9/unused", **overrides: Any) -> None:
        directory = tmp / "directory.yaml"
        if not directory.exists():
            directory.write_text(DIRECTORY.format(webhook=webhook_url), encoding="utf-8")
        self.common = CommonSettings(nats_url=nats_url, database_url=f"sqlite:///{tmp / 'notifier.db'}",
                                     data_dir=tmp)
        values: dict[str, Any] = dict(
            directory=directory, smtp_host="127.0.0.1", smtp_port=smtp_port, smtp_security="starttls",
            smtp_ca_file=ca_file, smtp_from="parwatch@example.org", smtp_timeout=5, webhook_secret=SECRET,
            tick_interval=0.05, delivery_interval=0.05, weekly_digest=False, monthly_digest=False,
            retry_first_delay="5s", retry_max_delay="60s",
        )
        values.update(overrides)
        self.settings = NotifierSettings(**values)
        self.clock = clock
        self.service, self.app = create_app(self.common, self.settings, clock=clock)
        self.store = self.app.state.store
        self.notifier = self.app.state.notifier

    async def __aenter__(self) -> Stack:
        await asyncio.wait_for(self.service.start(), 60)  # a hang fails here, with a traceback
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.wait_for(self.service.stop(), 60)

    def metric(self, name: str, **labels: str) -> float:
        return self.service.registry.get_sample_value(name, labels) or 0.0

    async def nothing_to_send(self) -> bool:
        """A dispatch pass at the current time (besides the loop's) plans nothing and no notice waits:
        so nothing more will go out until the clock moves."""
        await self.notifier.tick(self.clock.now)
        return self.store.waiting() == []


def alert_event(key: str, *, resolved: bool = False, event_id: str | None = None, **fields: Any):
    data: dict[str, Any] = {
        "alert_key": key, "kind": "dossier_due_soon", "severity": "warning", "agency_code": "PTP", "ref": key,
        "summary": "Hồ sơ sắp đến hạn trả kết quả", "starts_at": dt.datetime(2026, 11, 25, 8, 0, tzinfo=VN),
        "labels": {"due_day": "2026-11-27"},
    }
    data.update(fields)
    if resolved:
        data.setdefault("ends_at", data["starts_at"] + dt.timedelta(hours=3))
    return new_event(type=ALERT_RESOLVED_TYPE if resolved else ALERT_FIRING_TYPE, source="parwatch/deadline_monitor",
                     data=Alert(**data), id=event_id or f"{key}:{'resolved' if resolved else 'firing'}")


async def publish(url: str, *events: Any, msg_id: str | None = None) -> None:
    nc = await asyncio.wait_for(nats.connect(url, allow_reconnect=False), 30)
    try:
        js = nc.jetstream()
        for ev in events:
            await js.publish(ALERTS, encode(ev), headers={"Content-Type": CONTENT_TYPE, "Nats-Msg-Id": msg_id or ev.id},
                             stream="TTHC_ALERTS")
    finally:
        await nc.close()


async def consumed(url: str, n: int) -> None:
    """Wait until the notifier's consumer has taken and acked ``n`` messages."""
    nc = await asyncio.wait_for(nats.connect(url, allow_reconnect=False), 30)
    try:
        js = nc.jetstream()

        async def done() -> bool:
            info = await js.consumer_info("TTHC_ALERTS", "notifier")
            return info.delivered.stream_seq >= n and info.num_ack_pending == 0

        for _ in range(300):
            if await done():
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"the notifier did not consume {n} messages")
    finally:
        await nc.close()


def refs_in(mails) -> list[str]:
    """Dossier codes named in the new/repeat lines of plain-text mails."""
    out = []
    for m in mails:
        text = m.get_body(("plain",)).get_content()
        out += [line.split("] Hồ sơ ")[1].split(" ")[0] for line in text.splitlines() if "] Hồ sơ " in line]
    return out


async def test_alerts_reach_the_right_officials_grouped_once_and_resolved(own_nats_server, tmp_path, smtp_server,
                                                                          tls, webhook_server, clock):
    smtp = smtp_server()
    clock.set(dt.datetime(2026, 11, 25, 9, 0, tzinfo=VN))
    url = own_nats_server.url
    async with Stack(nats_url=url, tmp=tmp_path, clock=clock, smtp_port=smtp.port, ca_file=tls.ca_file,
                     webhook_url=webhook_server.url) as stack:
        first = alert_event("H31.12-001")
        await publish(url, first, alert_event("H31.12-002"),
                      alert_event("deadletter:TTHC_DOSSIER:7", kind="deadletter", agency_code="PNV",
                                  ref="TTHC_DOSSIER", summary="Bản tin bị từ chối: data.status"))
        await publish(url, first, msg_id="redelivered-1")  # past the broker's dedup: the consumer must dedup
        await consumed(url, 4)
        assert await stack.nothing_to_send() and smtp.mailbox.all() == []  # group wait
        clock.advance(seconds=31)
        await eventually(lambda: smtp.mailbox.to("ptp.desk@example.org") and webhook_server.requests, what="notices")
        await eventually(lambda: not stack.store.waiting(), what="the sends to be recorded")
        [mail] = smtp.mailbox.to("ptp.desk@example.org")
        assert mail["Subject"] == "[parwatch] Phòng Tư pháp: 2 hồ sơ sắp đến hạn"
        assert sorted(refs_in([mail])) == ["H31.12-001", "H31.12-002"]
        html = mail.get_body(("html",)).get_content()
        assert "Phòng Tư pháp" in html and "27/11/2026" in html

        [hook] = webhook_server.requests
        expected = "sha256=" + hmac.new(SECRET.encode(), hook["body"], hashlib.sha256).hexdigest()
        assert hook["headers"]["X-Parwatch-Signature"] == expected
        body = json.loads(hook["body"])
        assert [a["kind"] for a in body["alerts"]] == ["deadletter"] and body["receiver"] == "tech"

        for _ in range(3):
            clock.advance(minutes=20)
            assert await stack.nothing_to_send()
        assert len(smtp.mailbox.all()) == 1 and len(webhook_server.requests) == 1
        assert stack.metric("parwatch_alerts_total", kind="dossier_due_soon", severity="warning") == 2
        assert stack.metric("parwatch_alerts_total", kind="deadletter", severity="warning") == 1

        await publish(url, alert_event("H31.12-001", resolved=True))
        await consumed(url, 5)
        clock.advance(seconds=1)
        await eventually(lambda: len(smtp.mailbox.to("ptp.desk@example.org")) == 2, what="resolved notice")
        resolved = smtp.mailbox.to("ptp.desk@example.org")[1]
        assert resolved["Subject"] == "[parwatch] Phòng Tư pháp: 1 cảnh báo đã kết thúc"
        assert "Hồ sơ H31.12-001 sắp đến hạn trả kết quả: cảnh báo đã kết thúc lúc 25/11/2026 11:00." in (
            resolved.get_body(("plain",)).get_content())

        # The mail server has it; the notifier records the send right after.
        await eventually(lambda: stack.metric("parwatch_notifications_total", channel="smtp", result="sent") == 2,
                         what="the send to be recorded")
        transport = httpx.ASGITransport(app=stack.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://notifier") as client:
            metrics = (await client.get("/metrics")).text
        assert 'parwatch_notifications_total{channel="smtp",result="sent"} 2.0' in metrics
        assert 'parwatch_notifications_total{channel="webhook",result="sent"} 1.0' in metrics
        assert 'parwatch_alerts_total{kind="dossier_due_soon",severity="warning"} 2.0' in metrics
        assert "example.org" not in metrics and "H31.12" not in metrics
        # The counters move when a channel has sent; each log row is written in the outbox's transaction after it.
        log = await eventually(lambda: rows if len(rows := stack.store.query_log()) >= 4 else None,
                               what="the four notices' log rows")
        assert sorted((r.receiver_id, r.alert_key, r.state) for r in log) == [
            ("ptp-desk", "H31.12-001", "firing"), ("ptp-desk", "H31.12-001", "resolved"),
            ("ptp-desk", "H31.12-002", "firing"), ("tech", "deadletter:TTHC_DOSSIER:7", "firing")]


async def test_escalation_to_head_after_working_hours(own_nats_server, tmp_path, smtp_server, tls, clock):
    smtp = smtp_server()
    start = clock.set(dt.datetime(2026, 11, 27, 16, 0, tzinfo=VN))  # Friday 16:00
    url = own_nats_server.url
    async with Stack(nats_url=url, tmp=tmp_path, clock=clock, smtp_port=smtp.port, ca_file=tls.ca_file,
                     repeat_interval="30d") as stack:
        await publish(url, alert_event("H-ESC", kind="dossier_overdue", starts_at=start))
        await consumed(url, 1)
        clock.advance(seconds=31)
        await eventually(lambda: smtp.mailbox.to("ptp.desk@example.org"), what="the desk's notice")
        await eventually(lambda: not stack.store.waiting(), what="the desk's notice to be recorded")
        clock.set(dt.datetime(2026, 11, 30, 15, 59, tzinfo=VN))  # Monday: 7.98 working hours later
        assert await stack.nothing_to_send()
        assert not any(a.receiver_id == "ptp-head" for a in stack.store.load_dispatch_state(now=clock.now).assignments)
        assert smtp.mailbox.to("ptp.head@example.org") == []
        clock.set(dt.datetime(2026, 11, 30, 16, 0, tzinfo=VN))  # 8 working hours: the head hears of it
        await eventually(lambda: any(a.receiver_id == "ptp-head" for a in
                                     stack.store.load_dispatch_state(now=clock.now).assignments),
                         what="the escalation decision")
        clock.advance(seconds=31)
        [mail] = await eventually(lambda: smtp.mailbox.to("ptp.head@example.org"), what="the head's notice")
        assert mail["Subject"] == "[parwatch] [Chuyển cấp] Phòng Tư pháp: 1 hồ sơ quá hạn"
        text = mail.get_body(("plain",)).get_content()
        assert "Kính gửi: Lãnh đạo Phòng Tư pháp" in text and "quá 8 giờ làm việc" in text
        await eventually(lambda: not stack.store.waiting(), what="the head's notice to be recorded")
        assert await stack.nothing_to_send()
        assert smtp.mailbox.to("lead@example.org") == []
        assert len(smtp.mailbox.to("ptp.desk@example.org")) == 1


async def test_quiet_hours_and_silences(own_nats_server, tmp_path, smtp_server, tls, clock):
    smtp = smtp_server()
    evening = clock.set(dt.datetime(2026, 11, 25, 18, 0, tzinfo=VN))  # Wednesday, after office hours
    url = own_nats_server.url
    async with Stack(nats_url=url, tmp=tmp_path, clock=clock, smtp_port=smtp.port, ca_file=tls.ca_file,
                     escalate_head_after_hours=0, escalate_leadership_after_hours=0) as stack:
        silence = stack.store.add_silence(Silence(
            id="", starts_at=evening, ends_at=evening + dt.timedelta(days=2), comment="Phòng Nội vụ đã biết",
            created_at=evening, agencies=frozenset({"PNV"})))
        await publish(url, alert_event("H-WARN", starts_at=evening),
                      alert_event("H-CRIT", kind="dossier_overdue", severity="critical", starts_at=evening),
                      alert_event("H-SIL", agency_code="PNV", starts_at=evening))
        await consumed(url, 3)
        clock.advance(seconds=31)
        [night] = await eventually(lambda: smtp.mailbox.to("ptp.desk@example.org"), what="the critical notice")
        assert night["Subject"] == "[parwatch] [KHẨN] Phòng Tư pháp: 1 hồ sơ quá hạn"
        assert refs_in([night]) == ["H-CRIT"]
        await eventually(lambda: not stack.store.waiting(), what="the critical notice to be recorded")
        clock.set(dt.datetime(2026, 11, 26, 6, 59, tzinfo=VN))
        assert await stack.nothing_to_send()  # still quiet
        assert len(smtp.mailbox.to("ptp.desk@example.org")) == 1
        clock.set(dt.datetime(2026, 11, 26, 7, 0, tzinfo=VN))
        await eventually(lambda: len(smtp.mailbox.to("ptp.desk@example.org")) == 2, what="the morning notice")
        assert refs_in(smtp.mailbox.to("ptp.desk@example.org")[1:]) == ["H-WARN"]
        assert smtp.mailbox.to("pnv.desk@example.org") == []  # silenced
        assert stack.metric("parwatch_notifications_total", channel="smtp", result="suppressed") == 1
        stack.store.expire_silence(silence.id, now=clock.now)
        clock.advance(seconds=1)
        [released] = await eventually(lambda: smtp.mailbox.to("pnv.desk@example.org"), what="the released notice")
        assert refs_in([released]) == ["H-SIL"]
        assert stack.metric("parwatch_notifications_total", channel="smtp", result="suppressed") == 1


async def test_smtp_outage_and_restart_deliver_every_notice_exactly_once(own_nats_server, tmp_path, smtp_server,
                                                                         tls, clock):
    smtp = smtp_server(start=False)  # the mail server is down
    clock.set(dt.datetime(2026, 11, 25, 9, 0, tzinfo=VN))
    url = own_nats_server.url
    kw = dict(nats_url=url, tmp=tmp_path, clock=clock, smtp_port=smtp.port, ca_file=tls.ca_file)
    async with Stack(**kw) as stack:
        await publish(url, alert_event("H-1"), alert_event("H-2"), alert_event("N-1", agency_code="PNV"))
        await consumed(url, 3)
        clock.advance(seconds=31)
        await eventually(lambda: [r for r in stack.store.waiting() if r.attempts >= 1], what="a failed attempt")
        for attempts in (2, 3):
            clock.advance(seconds=60)  # retry_max_delay: every notice is due again
            await eventually(lambda: all(r.attempts >= attempts for r in stack.store.waiting()),  # noqa: B023
                             what=f"attempt {attempts}")
        assert stack.metric("parwatch_notifications_total", channel="smtp", result="failed") == 0

    # The notifier restarts while the mail server is still down; alerts keep coming, one of them twice.
    async with Stack(**kw) as stack:
        await publish(url, alert_event("H-3", starts_at=dt.datetime(2026, 11, 25, 9, 5, tzinfo=VN)))
        await publish(url, alert_event("H-1"), msg_id="again-H-1")
        await consumed(url, 5)
        clock.advance(seconds=NotifierSettings().group_interval.total_seconds() + 60)  # past the group's interval
        # H-3 queued, and every notice tried at this time: none is due before the clock moves.
        await eventually(lambda: len(waiting := stack.store.waiting()) == 3
                         and all(r.next_attempt_at > clock.now for r in waiting), what="H-3 queued, all tried")
        assert smtp.mailbox.all() == []

        smtp.start()  # the mail server is back
        clock.advance(seconds=61)  # past retry_max_delay: every notice is due
        await eventually(lambda: not stack.store.waiting(), what="an empty outbox")
        for _ in range(3):
            clock.advance(minutes=30)
            assert await stack.nothing_to_send()

        ptp = smtp.mailbox.to("ptp.desk@example.org")
        pnv = smtp.mailbox.to("pnv.desk@example.org")
        assert sorted(refs_in(ptp)) == ["H-1", "H-2", "H-3"]  # each exactly once
        assert refs_in(pnv) == ["N-1"]
        assert len(ptp) == 2 and len(pnv) == 1
        deliveries = [m["X-Parwatch-Delivery"] for _, m in smtp.mailbox.all()]
        assert len(deliveries) == len(set(deliveries)) == 3
        assert stack.metric("parwatch_notifications_total", channel="smtp", result="sent") == 3
        assert stack.metric("parwatch_notifications_total", channel="smtp", result="failed") == 0
        assert stack.metric("parwatch_alerts_total", kind="dossier_due_soon", severity="warning") == 1  # H-3 only


async def test_a_bad_directory_stops_the_start_with_clear_errors(tmp_path):
    bad = tmp_path / "directory.yaml"
    bad.write_text("agencies:\n  - code: NOPE\n    officials: []\nroutes:\n  - {name: x, receivers: [boss]}\n")
    with pytest.raises(Exception) as info:
        create_app(CommonSettings(database_url=f"sqlite:///{tmp_path / 'db'}"), NotifierSettings(directory=bad))
    message = str(info.value)
    assert f"{bad}:2: agencies[0].code: unknown agency code 'NOPE'" in message
    assert f"{bad}:5: routes[0].receivers[0]: 'boss' is neither a role" in message


async def test_embedded_default_uses_the_example_directory_and_the_log_channel(own_nats_server, tmp_path, caplog,
                                                                               clock):
    clock.set(dt.datetime(2026, 11, 25, 9, 0, tzinfo=VN))
    common = CommonSettings(nats_url=own_nats_server.url, data_dir=tmp_path)
    settings = NotifierSettings(tick_interval=0.05, delivery_interval=0.05)
    service, app = create_app(common, settings, clock=clock)
    assert app.state.notifier.email_channel == "log"
    await service.start()
    try:
        assert await service.healthy() == {"nats": True, "database": True}
        await publish(own_nats_server.url, alert_event("H-LOG", agency_code="XA_VINH_TAN"))
        await consumed(own_nats_server.url, 1)
        clock.advance(seconds=31)
        registry = service.registry
        await eventually(lambda: registry.get_sample_value("parwatch_notifications_total",
                                                           {"channel": "log", "result": "sent"}),
                         what="a notice on the log channel")
        # The counter moves when the channel has sent; the log row is written in the outbox's transaction after it.
        log = await eventually(app.state.store.query_log, what="the notice's log row")
        assert [(r.receiver_id, r.channel, r.agency_code) for r in log] == [("vinhtan-motcua", "log", "XA_VINH_TAN")]
        assert "example.invalid" not in caplog.text  # no address in the log
        assert (tmp_path / "notifier.db").exists()
    finally:
        await service.stop()
