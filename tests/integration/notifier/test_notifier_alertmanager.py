"""Alertmanager hands Prometheus's alerts to a running notifier, which tells the technical desk once.

The notifier runs as in production (``create_app``: a real nats-server,
SQLite, its loops, its HTTP API served by uvicorn on a loopback port) with a
clock the test moves; the desk's webhook and the officials' mail server are
real servers of the test. The payload is the documented example of
Alertmanager's webhook; the last test runs Debian's Alertmanager binary
against the shipped config (skipped when it is not installed). That nothing
more goes out is shown by a dispatch pass the test runs itself leaving the
outbox empty, never by waiting a while.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime as dt
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml

from services.notifier.alertmanager import MAX_BODY_BYTES
from services.notifier.app import create_app
from services.notifier.settings import NotifierSettings
from shared.embedded import free_port
from shared.settings import CommonSettings
from shared.testing import alertmanager_example, eventually

VN = dt.timezone(dt.timedelta(hours=7))
T0 = dt.datetime(2026, 11, 25, 9, 0, tzinfo=VN)  # Wednesday, working hours
TOKEN = "am-token-for-tests"
SECRET = "bí-mật-webhook"
REPO = Path(__file__).resolve().parents[3]
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")

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
  - code: PVHTT
    officials:
      - {{id: tech, role: officer, direct_only: true, name: Bộ phận kỹ thuật, webhook: "{webhook}"}}
technical_desk: [tech]
routes:
  - {{name: default, receivers: [officer]}}
"""

#: Alertmanager's documented webhook example (version 4), with one of parwatch's rules as its alert.
PAYLOAD: dict[str, Any] = alertmanager_example("scoring:9103")
KEY = "operator_alert:ParwatchServiceDown:1a30ba71cca2921f"


def resolved_payload() -> dict[str, Any]:
    p = copy.deepcopy(PAYLOAD)
    p["status"] = p["alerts"][0]["status"] = "resolved"
    p["alerts"][0]["endsAt"] = "2026-11-25T09:20:00+07:00"
    return p


class Notifier:
    """The notifier of ``create_app``, started, its HTTP API served on a loopback port."""

    def __init__(self, *, nats_url: str, tmp: Path, clock: Any, smtp_port: int, ca_file: Path, webhook_url: str):
        directory = tmp / "directory.yaml"
        directory.write_text(DIRECTORY.format(webhook=webhook_url), encoding="utf-8")
        common = CommonSettings(nats_url=nats_url, database_url=f"sqlite:///{tmp / 'notifier.db'}", data_dir=tmp)
        self.port = free_port()
        settings = NotifierSettings(
            port=self.port, directory=directory, smtp_host="127.0.0.1", smtp_port=smtp_port, smtp_ca_file=ca_file,
            smtp_from="parwatch@example.org", smtp_timeout=5, webhook_secret=SECRET, tick_interval=0.05,
            delivery_interval=0.05, weekly_digest=False, monthly_digest=False, alertmanager_token=TOKEN,
        )
        self.clock = clock
        self.service, self.app = create_app(common, settings, clock=clock)
        self.store = self.app.state.store
        self.notifier = self.app.state.notifier
        self.url = f"http://127.0.0.1:{self.port}"

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Notifier]:
        await asyncio.wait_for(self.service.start(), 60)
        server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, lifespan="off",
                                               log_config=None, access_log=False))
        task = asyncio.create_task(server.serve())
        try:
            await eventually(lambda: server.started or task.done(), what="the HTTP server")
            assert server.started
            yield self
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 30)
            await asyncio.wait_for(self.service.stop(), 60)

    async def post(self, payload: Any, *, token: str | None = TOKEN, raw: bytes | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        content = raw if raw is not None else json.dumps(payload, ensure_ascii=False).encode()
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as client:
            return await client.post("/alertmanager", content=content,
                                     headers=headers | {"Content-Type": "application/json"})

    async def nothing_to_send(self) -> bool:
        await self.notifier.tick(self.clock.now)
        return self.store.waiting() == []

    def metric(self, name: str, **labels: str) -> float:
        return self.service.registry.get_sample_value(name, labels) or 0.0


def desk_alerts(webhook_server) -> list[dict[str, Any]]:
    """What the desk's webhook received: each request's alerts, in order."""
    with webhook_server.lock:
        return [a for r in webhook_server.requests for a in json.loads(r["body"])["alerts"]]


async def test_a_payload_reaches_the_technical_desk_once_and_resolves(own_nats_server, tmp_path, smtp_server, tls,
                                                                      webhook_server, clock):
    smtp = smtp_server()
    clock.set(T0)
    kw = {"nats_url": own_nats_server.url, "tmp": tmp_path, "clock": clock, "smtp_port": smtp.port,
          "ca_file": tls.ca_file, "webhook_url": webhook_server.url}
    async with Notifier(**kw).running() as n:
        # The door: a token, a payload, a size.
        assert (await n.post(PAYLOAD, token=None)).status_code == 403
        assert (await n.post(PAYLOAD, token="wrong")).status_code == 403
        bad = copy.deepcopy(PAYLOAD)
        bad["alerts"][0]["fingerprint"] = "CANARY-not-hex"
        refused = await n.post(bad)
        assert refused.status_code == 400 and "alerts[0].fingerprint" in refused.json()["detail"]
        assert "CANARY" not in refused.text
        assert (await n.post(None, raw=b"[" * (MAX_BODY_BYTES + 1))).status_code == 413
        assert n.store.alert(KEY) is None

        accepted = await n.post(PAYLOAD)
        assert accepted.status_code == 200 and accepted.json() == {"alerts": 1, "recorded": 1, "duplicates": 0}
        again = await n.post(PAYLOAD)  # Alertmanager repeats itself
        assert again.json() == {"alerts": 1, "recorded": 0, "duplicates": 1}
        assert await n.nothing_to_send()  # the group wait

        clock.advance(seconds=31)
        await eventually(lambda: webhook_server.requests, what="the desk's notice")
        await eventually(lambda: not n.store.waiting(), what="the send to be recorded")
        [hook] = webhook_server.requests
        notice = json.loads(hook["body"])
        assert notice["receiver"] == "tech"
        assert "[KHẨN]" in notice["subject"] and "cảnh báo vận hành hệ thống" in notice["subject"]
        assert "Cảnh báo vận hành hệ thống: ParwatchServiceDown" in notice["text"]
        assert "Dịch vụ parwatch-scoring không phản hồi." in notice["text"]
        [alert] = notice["alerts"]
        assert (alert["alert_key"], alert["kind"], alert["severity"], alert["state"]) == (
            KEY, "operator_alert", "critical", "firing")

        for _ in range(3):  # Alertmanager's repeat_interval: the same again, and nothing more goes out
            assert (await n.post(PAYLOAD)).json()["duplicates"] == 1
            clock.advance(minutes=20)
            assert await n.nothing_to_send()
        assert len(webhook_server.requests) == 1
        assert n.metric("parwatch_alerts_total", kind="operator_alert", severity="critical") == 1

        resolved = await n.post(resolved_payload())
        assert resolved.json() == {"alerts": 1, "recorded": 1, "duplicates": 0}
        clock.advance(seconds=1)
        await eventually(lambda: len(webhook_server.requests) == 2, what="the resolved notice")
        await eventually(lambda: not n.store.waiting(), what="the resolved send to be recorded")
        assert [(a["alert_key"], a["state"]) for a in desk_alerts(webhook_server)] == [
            (KEY, "firing"), (KEY, "resolved")]

    # A restart: Alertmanager sends both again (its notification log was lost, say); nothing goes out again.
    async with Notifier(**kw).running() as n:
        for payload in (PAYLOAD, resolved_payload()):
            assert (await n.post(payload)).json() == {"alerts": 1, "recorded": 0, "duplicates": 1}
        for _ in range(3):
            clock.advance(minutes=30)
            assert await n.nothing_to_send()
        assert len(webhook_server.requests) == 2
    assert smtp.mailbox.all() == []  # no official but the desk heard of it: no leader, no agency


def alertmanager_config(tmp: Path, *, notifier_url: str) -> Path:
    """The shipped deploy/alertmanager/alertmanager.yml, pointed at this test's notifier, with short timings."""
    config = yaml.safe_load((REPO / "deploy" / "alertmanager" / "alertmanager.yml").read_text(encoding="utf-8"))
    token_file = tmp / "token"
    token_file.write_text(TOKEN, encoding="utf-8")
    config["route"].update(group_wait="1s", group_interval="1s")
    [receiver] = config["receivers"]
    [hook] = receiver["webhook_configs"]
    assert hook["url"].startswith("http://notifier:9104/")
    hook["url"] = notifier_url + hook["url"].removeprefix("http://notifier:9104")
    hook["http_config"]["authorization"]["credentials_file"] = str(token_file)
    path = tmp / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.mark.skipif(ALERTMANAGER is None, reason="Alertmanager not installed (Debian package "
                                                 "`prometheus-alertmanager`; .ci/run installs it)")
async def test_the_real_alertmanager_with_the_shipped_config_reaches_the_desk(own_nats_server, tmp_path, smtp_server,
                                                                             tls, webhook_server, clock):
    assert ALERTMANAGER is not None
    smtp = smtp_server()
    clock.set(T0)
    kw = {"nats_url": own_nats_server.url, "tmp": tmp_path, "clock": clock, "smtp_port": smtp.port,
          "ca_file": tls.ca_file, "webhook_url": webhook_server.url}
    async with Notifier(**kw).running() as n:
        am_port = free_port()
        config = alertmanager_config(tmp_path, notifier_url=n.url)
        with (tmp_path / "alertmanager.log").open("wb") as log_file:
            proc = await asyncio.create_subprocess_exec(
                ALERTMANAGER, f"--config.file={config}", f"--storage.path={tmp_path / 'am'}",
                f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address=",
                stdout=subprocess.DEVNULL, stderr=log_file)
        try:
            am = httpx.AsyncClient(base_url=f"http://127.0.0.1:{am_port}", timeout=5)

            async def ready() -> bool:
                with contextlib.suppress(httpx.HTTPError):
                    return (await am.get("/-/ready")).status_code == 200
                return False

            for _ in range(200):
                if await ready() or proc.returncode is not None:
                    break
                await asyncio.sleep(0.1)
            assert proc.returncode is None and await ready(), (tmp_path / "alertmanager.log").read_text()

            alert = {"labels": {"alertname": "ParwatchNotificationsFailing", "channel": "smtp", "severity": "critical"},
                     "annotations": {"summary": "Gửi thông báo qua kênh smtp đang bị lỗi."},
                     "startsAt": (T0 - dt.timedelta(hours=1)).isoformat(),
                     "generatorURL": "http://prometheus.test/graph"}
            assert (await am.post("/api/v2/alerts", json=[alert])).status_code == 200

            def recorded(state: str) -> Any:
                rows = [a for a in n.store.alerts_since(T0 - dt.timedelta(days=1)) if a.kind == "operator_alert"]
                return rows if rows and all(a.state == state for a in rows) else None

            [record] = await eventually(lambda: recorded("firing"), what="Alertmanager's notification")
            assert record.alert_key.startswith("operator_alert:ParwatchNotificationsFailing:")
            assert record.summary == "Gửi thông báo qua kênh smtp đang bị lỗi."
            clock.advance(seconds=31)
            await eventually(lambda: webhook_server.requests, what="the desk's notice")

            alert["endsAt"] = T0.isoformat()  # in the past: Alertmanager resolves it
            assert (await am.post("/api/v2/alerts", json=[alert])).status_code == 200
            await eventually(lambda: recorded("resolved"), what="Alertmanager's resolved notification")
            clock.advance(seconds=NotifierSettings().group_interval.total_seconds())  # the group's interval since the firing notice
            await eventually(lambda: len(webhook_server.requests) == 2, what="the resolved notice")
            assert [(a["alert_key"], a["state"]) for a in desk_alerts(webhook_server)] == [
                (record.alert_key, "firing"), (record.alert_key, "resolved")]
            await am.aclose()
        finally:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await eventually(lambda: not n.store.waiting(), what="the sends to be recorded")
        assert await n.nothing_to_send()
    assert len(webhook_server.requests) == 2 and smtp.mailbox.all() == []
