"""Acknowledgements on a real database: the HTTP API and the e-mail's link (ASGI, in process), ``parwatch alerts
ack``, the dispatch loop reading them from the store (a clock the test moves), ``parwatch notifications``, and
their retention."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.notifier import cli
from services.notifier.ack import SECRET_FILE, AckLinks, acknowledge
from services.notifier.api import AckApi
from services.notifier.config import load_directory
from services.notifier.domain.ack import Acknowledgement, LinkClaim, sign_link
from services.notifier.metrics import NotifierMetrics
from services.notifier.notify import Message, SendResult
from services.notifier.notify.log import LogChannel
from services.notifier.render import Renderer
from services.notifier.service import NotifierService
from services.notifier.settings import EXAMPLE_DIRECTORY, NotifierSettings
from services.notifier.store import Store
from shared.calendar import load_calendar
from shared.db import make_engine
from shared.retention import Retention
from shared.secret import load_secret

VN = dt.timezone(dt.timedelta(hours=7))
SECRET = b"s" * 32
KEY = "dossier_due_soon:H31.12-001"


class Channel:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Message]] = []

    async def send(self, official, message: Message) -> SendResult:
        self.sent.append((official.id, message))
        return SendResult.sent()


class Harness:
    """The service (repeat after 24 h, escalation after 8 and 24 working hours) and its acknowledge API."""

    def __init__(self, url, directory, clock):
        settings = NotifierSettings()
        self.engine = make_engine(url)
        self.store = Store(self.engine)
        self.smtp = Channel()
        self.clock = clock
        self.links = AckLinks(secret=SECRET, base_url="http://notifier.test", ttl=dt.timedelta(days=7))
        self.notifier = NotifierService(
            store=self.store, directory=directory,
            renderer=Renderer(directory=directory, escalation=settings.escalation(), ack_links=self.links.urls),
            channels={"smtp": self.smtp, "log": LogChannel()}, email_channel="smtp", timing=settings.timing(),
            escalation=settings.escalation(), calendar=load_calendar(), metrics=NotifierMetrics(CollectorRegistry()),
            clock=clock, backoff=settings.delivery_backoff(), weekly_digest=False, monthly_digest=False,
        )
        self.notifier.create_schema()
        app = FastAPI()
        app.include_router(AckApi(store=self.store, directory=directory, secret=SECRET, clock=clock).router())
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://notifier.test")

    async def run(self, **kw: float) -> None:
        now = self.clock.advance(**kw)
        await self.notifier.tick(now)
        await self.notifier.relay.once(now)

    def token(self, *, receiver: str = "ptp-desk", kind: str = "apology_sent", days: float = 7) -> str:
        expires = int((self.clock.now + dt.timedelta(days=days)).timestamp())
        return sign_link(SECRET, LinkClaim(KEY, receiver, kind, expires))


@pytest.fixture
async def h(database_url, directory, clock, make_received):
    h = Harness(database_url, directory, clock)
    await h.notifier.record([make_received(KEY, event_id="e1")])
    yield h
    await h.http.aclose()
    h.engine.dispose()


# -- the e-mail's link ----------------------------------------------------------------------------


async def test_the_mail_carries_links_that_acknowledge_after_a_click_on_the_page(h):
    await h.run()
    await h.run(seconds=30)
    [(receiver, message)] = h.smtp.sent
    url = next(line.split(": ", 1)[1] for line in message.text.splitlines() if "Đang xử lý" in line)
    path = url.removeprefix("http://notifier.test")
    page = await h.http.get(path)  # what a mail scanner's prefetch does: nothing is recorded
    assert page.status_code == 200 and "<form method=\"post\">" in page.text and "Xác nhận: đang xử lý" in page.text
    assert h.store.latest_acks([KEY]) == {}
    done = await h.http.post(path, data={"note": "đã liên hệ người nộp"})
    assert done.status_code == 200 and "Đã ghi nhận" in done.text
    ack = h.store.latest_acks([KEY])[KEY]
    assert (receiver, ack.official_id, ack.kind, ack.via, ack.note) == ("ptp-desk", "ptp-desk", "handling", "link",
                                                                          "đã liên hệ người nộp")


async def test_an_expired_link_is_refused_and_records_nothing(h):
    token = h.token(days=7)
    h.clock.advance(days=7)
    for response in (await h.http.get(f"/ack/{token}"), await h.http.post(f"/ack/{token}")):
        assert response.status_code == 410 and "hết hạn" in response.text
    assert h.store.latest_acks([KEY]) == {}


async def test_a_tampered_link_is_refused_and_records_nothing(h):
    token = h.token()
    forged = sign_link(b"not the secret", LinkClaim(KEY, "ptp-desk", "handling", 2**40))
    for bad in (token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB"), forged, "nonsense"):
        response = await h.http.post(f"/ack/{bad}")
        assert response.status_code in (400, 403)
    assert h.store.latest_acks([KEY]) == {}


async def test_a_link_for_a_receiver_who_does_not_answer_for_the_alert_is_refused(h):
    token = h.token(receiver="pnv-desk")  # validly signed, but Phòng Nội vụ's desk never heard of PTP's dossier
    assert (await h.http.post(f"/ack/{token}")).status_code == 403
    assert (await h.http.post(f"/ack/{h.token(receiver='someone-gone')}")).status_code == 403
    assert h.store.latest_acks([KEY]) == {}


# -- the JSON API -------------------------------------------------------------------------------------


async def test_the_api_lists_firing_alerts_and_records_acks(h):
    listed = (await h.http.get("/alerts")).json()["alerts"]
    assert [(a["alert_key"], a["acknowledged"]) for a in listed] == [(KEY, None)]
    assert (await h.http.get("/alerts", params={"agency": "PNV"})).json() == {"alerts": []}
    response = await h.http.post(f"/alerts/{KEY}/ack", json={"official": "ptp-head", "kind": "apology_sent"})
    assert response.status_code == 201
    assert response.json()["acknowledged"]["official"] == "ptp-head"
    [alert] = (await h.http.get("/alerts")).json()["alerts"]
    assert alert["acknowledged"]["kind"] == "apology_sent"
    assert alert["acknowledged"]["at"] == h.clock.now.astimezone(dt.UTC).isoformat()


@pytest.mark.parametrize(("key", "body", "status"), [
    ("dossier_due_soon:nope", {"official": "ptp-desk", "kind": "handling"}, 404),
    (KEY, {"official": "pnv-desk", "kind": "handling"}, 403),
    (KEY, {"official": "ptp-desk", "kind": "done"}, 422),
    (KEY, {"official": "ptp-desk", "kind": "handling", "note": "x" * 501}, 422),
])
async def test_the_api_refuses_what_cannot_be_acknowledged(h, key, body, status):
    response = await h.http.post(f"/alerts/{key}/ack", json=body)
    assert response.status_code == status, response.text
    assert h.store.latest_acks([KEY]) == {}


async def test_a_resolved_alert_cannot_be_acknowledged(h, make_received):
    await h.notifier.record([make_received(KEY, event_id="e2", resolved=True)])
    response = await h.http.post(f"/alerts/{KEY}/ack", json={"official": "ptp-desk", "kind": "handling"})
    assert response.status_code == 409


# -- the dispatch loop reads them from the store ----------------------------------------------------------


async def test_an_ack_stops_reminders_and_escalation_until_the_alert_fires_again(h, make_received):
    await h.run()
    await h.run(seconds=30)
    assert [r for r, _ in h.smtp.sent] == ["ptp-desk"]
    response = await h.http.post(f"/alerts/{KEY}/ack", json={"official": "ptp-desk", "kind": "handling"})
    assert response.status_code == 201
    for _ in range(2 * 24):  # to Friday 09:00, an hour at a time: no reminder (24 h), no head (8 working hours)
        await h.run(hours=1)
    assert [r for r, _ in h.smtp.sent] == ["ptp-desk"]
    await h.notifier.record([make_received(KEY, event_id="e2", resolved=True, ends_at=h.clock.now)])
    await h.run(seconds=1)
    assert [m.data["alerts"][0]["state"] for _, m in h.smtp.sent] == ["firing", "resolved"]
    await h.notifier.record([make_received(KEY, event_id="e3", starts_at=h.clock.now)])  # fired again
    await h.run(seconds=NotifierSettings().group_interval.total_seconds())  # the group's interval since then
    assert [m.data["alerts"][0]["state"] for _, m in h.smtp.sent] == ["firing", "resolved", "firing"]


# -- the CLI -------------------------------------------------------------------------------------------------


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'notifier.db'}"
    monkeypatch.setenv("PARWATCH_DATABASE_URL", url)
    monkeypatch.setenv("PARWATCH_DATA_DIR", str(tmp_path))
    return url


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="parwatch")
    sub = parser.add_subparsers(dest="command")
    cli.register(sub)
    args = parser.parse_args(list(argv))
    return args.func(args)


async def test_parwatch_alerts_ack_and_notifications_show_who_answered(env, capsys, make_received, clock):
    """The shipped directory (as the CLI reads it): Phòng Tư pháp's desk is ``tuphap-motcua``."""
    clock.set(dt.datetime.now(dt.UTC))
    store = Store(make_engine(env))
    directory = load_directory(EXAMPLE_DIRECTORY)
    links = AckLinks(secret=SECRET, base_url="http://x", ttl=dt.timedelta(days=7))
    notifier = NotifierService(
        store=store, directory=directory, renderer=Renderer(directory=directory, escalation=NotifierSettings()
                                                            .escalation(), ack_links=links.urls),
        channels={"log": LogChannel()}, email_channel="log", timing=NotifierSettings().timing(),
        escalation=NotifierSettings().escalation(), calendar=load_calendar(),
        metrics=NotifierMetrics(CollectorRegistry()), clock=clock, backoff=NotifierSettings().delivery_backoff(),
        weekly_digest=False, monthly_digest=False, quiet_hours=False,
    )
    notifier.create_schema()
    await notifier.record([make_received(KEY, event_id="e1", starts_at=clock.now)])
    await notifier.tick(clock.advance(seconds=31))
    await notifier.relay.once(clock.now)

    assert run("alerts", "ack", KEY, "--as", "pnv-nobody", "--kind", "handling") == 1
    assert "no official 'pnv-nobody'" in capsys.readouterr().err
    assert run("alerts", "ack", KEY, "--as", "noivu-motcua", "--kind", "handling") == 1
    assert "neither a receiver" in capsys.readouterr().err
    assert run("alerts", "ack", KEY, "--as", "tuphap-motcua", "--kind", "apology_sent", "--note", "đã gửi") == 0
    assert "acknowledged: đã gửi thư xin lỗi by tuphap-motcua" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        run("alerts", "ack", KEY, "--as", "tuphap-motcua", "--kind", "done")
    capsys.readouterr()

    assert run("notifications", "--alert-key", KEY) == 0
    out = capsys.readouterr().out
    assert KEY in out and "ack: apology_sent by tuphap-motcua" in out
    assert run("notifications", "--alert-key", KEY, "--json") == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["ack"]["official"] == "tuphap-motcua" and row["ack"]["note"] == "đã gửi" and row["ack"]["via"] == "cli"


# -- settings and retention ------------------------------------------------------------------------------------


def test_without_a_configured_secret_one_is_made_once_and_kept(tmp_path):
    first = load_secret(None, tmp_path / "data", name=SECRET_FILE)
    assert len(first) >= 32 and load_secret(None, tmp_path / "data", name=SECRET_FILE) == first
    assert (tmp_path / "data" / "notifier-ack-secret").stat().st_mode & 0o077 == 0
    assert load_secret(b"configured", tmp_path / "data", name=SECRET_FILE) == b"configured"


async def test_acks_are_pruned_with_the_log_unless_they_cover_a_firing_alert(h, make_received):
    acknowledge(h.store, h.notifier.directory, alert_key=KEY, official_id="ptp-desk", kind="handling", via="api",
                now=h.clock.now)
    h.store.add_ack(Acknowledgement(alert_key="gone", episode=h.clock.now, severity="warning",
                                    official_id="ptp-desk", kind="handling", acked_at=h.clock.now, via="api"))
    retention = Retention(dedup=dt.timedelta(days=1), history=dt.timedelta(days=400), log=dt.timedelta(days=30),
                          chunk=100)
    later = h.clock.now + dt.timedelta(days=31)
    assert h.store.prune(retention, now=later)["notifier_ack"] == 1  # the one of no firing alert
    assert set(h.store.latest_acks([KEY, "gone"])) == {KEY}
    await h.notifier.record([make_received(KEY, event_id="e2", resolved=True)])
    assert h.store.prune(retention, now=later)["notifier_ack"] == 1
    assert h.store.latest_acks([KEY]) == {}


async def test_the_api_write_is_open_only_to_this_machine_or_the_token(h):
    """The JSON API names the official itself, so only the web page's back end may write: a caller on this machine
    when no token is set; with a token, only a caller that sends it."""
    app = FastAPI()
    app.include_router(AckApi(store=h.store, directory=h.notifier.directory, secret=SECRET, clock=h.clock).router())
    body = {"official": "ptp-head", "kind": "apology_sent"}
    remote = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("203.0.113.7", 4000)),
                               base_url="http://notifier.test")
    assert (await remote.post(f"/alerts/{KEY}/ack", json=body)).status_code == 403

    with_token = FastAPI()
    with_token.include_router(AckApi(store=h.store, directory=h.notifier.directory, secret=SECRET, clock=h.clock,
                                     api_token="s3cret-token").router())
    local = httpx.AsyncClient(transport=httpx.ASGITransport(app=with_token), base_url="http://notifier.test")
    assert (await local.post(f"/alerts/{KEY}/ack", json=body)).status_code == 403  # loopback is not enough now
    wrong = {"Authorization": "Bearer guessed"}
    assert (await local.post(f"/alerts/{KEY}/ack", json=body, headers=wrong)).status_code == 403
    right = {"Authorization": "Bearer s3cret-token"}
    assert (await local.post(f"/alerts/{KEY}/ack", json=body, headers=right)).status_code == 201
