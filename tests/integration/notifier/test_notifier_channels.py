"""Channels against real servers on loopback: SMTP with STARTTLS and TLS, webhooks with HMAC.

Proves: mail arrives in Vietnamese with text and HTML parts; certificate
verification is on (an untrusted CA or a wrong host name means no mail, and a
retryable failure); a ``<script>`` comes out escaped in the HTML part;
webhook bodies are signed and failures are classified.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import ssl

import pytest

from services.notifier.config import parse_directory
from services.notifier.domain.model import EscalationPolicy, Official, notice_key
from services.notifier.notify import Message
from services.notifier.notify.smtp import SmtpChannel, tls_context
from services.notifier.notify.webhook import SIGNATURE_HEADER, WebhookChannel, verify
from services.notifier.render import Renderer

VN = dt.timezone(dt.timedelta(hours=7))
NOW = dt.datetime(2026, 11, 25, 9, 0, tzinfo=VN)
SCRIPT = '<script>alert("pwned")</script>'
DESK = Official(id="ptp-desk", agency_code="PTP", role="officer", title="Một cửa", email="ptp.desk@example.org")

DIRECTORY = parse_directory("""\
agencies:
  - code: PTP
    officials:
      - {id: ptp-desk, role: officer, name: Một cửa Phòng Tư pháp, email: ptp.desk@example.org}
routes:
  - {name: default, receivers: [officer]}
""")


def render(*, ref: str = "H31.12-231124-0001", summary: str = "Hồ sơ sẽ trễ hạn", agency: str = "PTP",
           labels: dict[str, str] | None = None) -> Message:
    start = dt.datetime(2026, 11, 24, 8, 0, tzinfo=VN)
    item = {"notice_key": notice_key("k", start, "firing"), "alert_key": "k", "state": "firing", "level": 0,
            "repeat": 0, "kind": "dossier_apology_due", "severity": "warning", "agency_code": agency, "ref": ref,
            "summary": summary, "starts_at": start.isoformat(), "ends_at": None,
            "labels": labels if labels is not None else {"due_day": "2026-11-27"}}
    payload = {"type": "alerts", "receiver": "ptp-desk", "role": "officer", "agency": agency, "items": [item]}
    renderer = Renderer(directory=DIRECTORY, escalation=EscalationPolicy())
    return renderer.render(payload, delivery_id="parwatch-42", sent_at=NOW)


def channel(server, ca_file, **kw) -> SmtpChannel:
    return SmtpChannel(host=kw.pop("host", "127.0.0.1"), port=server.port, security=server.mode,
                       sender="parwatch@example.org", ca_file=ca_file, timeout=5, **kw)


def parts(msg):
    return msg.get_body(("plain",)).get_content(), msg.get_body(("html",)).get_content()


def test_client_context_verifies_certificates_and_host_names(tls):
    ctx = tls_context(None)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    ctx = tls_context(tls.ca_file)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname


@pytest.mark.parametrize("mode", ["starttls", "tls"])
async def test_mail_arrives_in_vietnamese_over_verified_tls(smtp_server, tls, mode):
    server = smtp_server(mode=mode, auth=True)
    result = await channel(server, tls.ca_file, user="parwatch", password="mật-khẩu-thử").send(DESK, render())
    assert result.ok, result
    [msg] = server.mailbox.to("ptp.desk@example.org")
    assert msg["Subject"] == "[parwatch] Phòng Tư pháp: 1 hồ sơ cần gửi phiếu xin lỗi"
    assert msg["X-Parwatch-Delivery"] == "parwatch-42" and "parwatch-42" in msg["Message-ID"]
    text, html = parts(msg)
    assert ("Hồ sơ H31.12-231124-0001 sẽ trễ hạn: gửi phiếu xin lỗi và hẹn lại ngày trả kết quả trước ngày "
            "27/11/2026.") in text
    assert "Phòng Tư pháp" in html and "27/11/2026" in html


@pytest.mark.parametrize("subject", [
    "[parwatch] [KHẨN] Phòng Tư pháp: 1 hồ sơ quá hạn",
    "[parwatch] [Chuyển cấp] Văn phòng HĐND và UBND huyện: 2 hồ sơ quá hạn, 1 hồ sơ cần gửi phiếu xin lỗi, "
    "3 hồ sơ sắp đến hạn, 1 nhiệm vụ quá hạn, 1 cảnh báo đã kết thúc",
])
async def test_long_vietnamese_subjects_arrive_word_for_word(smtp_server, tls, subject):
    server = smtp_server()
    message = Message(delivery_id="parwatch-5", subject=subject, text="Nội dung", html="<p>Nội dung</p>")
    assert (await channel(server, tls.ca_file).send(DESK, message)).ok
    [msg] = server.mailbox.to("ptp.desk@example.org")
    assert msg["Subject"] == subject


async def test_wrong_password_is_retryable_and_sends_nothing(smtp_server, tls):
    server = smtp_server(auth=True)
    result = await channel(server, tls.ca_file, user="parwatch", password="sai").send(DESK, render())
    assert not result.ok and result.retryable
    assert server.mailbox.all() == []


@pytest.mark.parametrize("mode", ["starttls", "tls"])
async def test_an_untrusted_certificate_means_no_mail(smtp_server, tls, mode):
    server = smtp_server(mode=mode)
    for ca in (tls.other_ca_file, None):  # another CA, and the system CAs
        result = await channel(server, ca).send(DESK, render())
        assert not result.ok and result.retryable, result
        assert result.reason == "server certificate verification failed"
    assert server.mailbox.all() == []


async def test_a_certificate_for_another_host_means_no_mail(smtp_server, tls):
    server = smtp_server(wrong_host=True)
    result = await channel(server, tls.ca_file).send(DESK, render())
    assert not result.ok and result.retryable and "certificate" in result.reason
    assert server.mailbox.all() == []


async def test_server_down_is_retryable(tls):
    from shared.embedded import free_port

    ch = SmtpChannel(host="127.0.0.1", port=free_port(), security="starttls", sender="p@example.org",
                     ca_file=tls.ca_file, timeout=2)
    result = await ch.send(DESK, render())
    assert not result.ok and result.retryable


async def test_a_script_in_any_field_is_escaped_in_the_html_mail(smtp_server, tls):
    server = smtp_server()
    # (An agency code outside the directory never reaches a message at all: test_notifier_unknown_agency.)
    message = render(ref=SCRIPT, summary=f"Nội dung {SCRIPT}", labels={"due_day": SCRIPT, "x": SCRIPT})
    assert (await channel(server, tls.ca_file).send(DESK, message)).ok
    [msg] = server.mailbox.to("ptp.desk@example.org")
    text, html = parts(msg)
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;" in html
    assert SCRIPT in text


async def test_webhook_body_is_signed_and_stable(webhook_server):
    official = Official(id="tech", agency_code="PNV", role="officer", title="Kỹ thuật", webhook=webhook_server.url)
    secret = b"webhook-secret"
    ch = WebhookChannel(secret_for=lambda rid: secret if rid == "tech" else None, timeout=2)
    message = render()
    assert (await ch.send(official, message)).ok
    [req] = webhook_server.requests
    assert req["path"] == "/hooks/parwatch"
    body = req["body"]
    expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    assert req["headers"][SIGNATURE_HEADER] == expected and verify(secret, body, expected)
    assert req["headers"]["X-Parwatch-Delivery"] == "parwatch-42"
    data = json.loads(body)
    assert data["alerts"][0]["ref"] == "H31.12-231124-0001" and data["agency"]["name"] == "Phòng Tư pháp"
    assert "ptp.desk@example.org" not in body.decode()


async def test_webhook_failures_are_classified(webhook_server):
    official = Official(id="tech", agency_code="PNV", role="officer", title="Kỹ thuật", webhook=webhook_server.url)
    ch = WebhookChannel(secret_for=lambda rid: b"k", timeout=0.5)
    webhook_server.statuses = [503, 429, 400]
    r1, r2, r3 = [await ch.send(official, render()) for _ in range(3)]
    assert (r1.retryable, r2.retryable, r3.retryable) == (True, True, False)
    assert r3.reason == "HTTP 400"
    webhook_server.delay = 1.0
    slow = await ch.send(official, render())
    assert not slow.ok and slow.retryable and slow.reason == "timeout"
    no_secret = WebhookChannel(secret_for=lambda rid: None)
    assert (await no_secret.send(official, render())).retryable  # never sent unsigned
