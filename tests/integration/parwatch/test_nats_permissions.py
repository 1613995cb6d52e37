"""NATS accounts and permissions on a real nats-server started with the config `parwatch nats-config` writes.

One node, TLS on its client port, every user an nkey of the PARWATCH account
(parwatch/nats_access.py). A refused operation is shown by the server's own
answer, the ``Permissions Violation`` error it sends to the client, never by
waiting for something not to happen.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nats
import pytest

from parwatch.nats_access import SERVICES
from parwatch.nats_config import Request, ServerLayout, node_files, publisher_role, write_deployment
from parwatch.supervisor import _ensure_streams
from shared.embedded import free_port, nats_server_binary, stop_process, wait_for_port
from shared.nats_auth import NatsAuth
from shared.settings import CommonSettings
from shared.streams import STREAMS
from shared.testing import NatsDeployment, dossier_event, publish_event, wait_until

NODE = "nats-test"
SOURCE = "motcua.test"


@dataclass
class Deployment(NatsDeployment):
    conf_dir: Path
    url: str
    proc: subprocess.Popen[bytes] | None = None

    def common(self, role: str, **overrides: object) -> CommonSettings:
        return CommonSettings(nats_url=self.url, nats_nkey_seed_file=self.seed(role), nats_tls_ca_file=self.ca,
                              **overrides)

    def install(self) -> None:
        """Put the node's files where its config expects them (as compose mounts them)."""
        for rel, src in node_files(self.out, NODE).items():
            dest = self.conf_dir / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dest)

    def reload(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    port = free_port()
    conf_dir = tmp_path / "etc"
    layout = ServerLayout(conf_dir=str(conf_dir), store_dir=str(tmp_path / "data"), client_port=port,
                          http_port=free_port(), listen="127.0.0.1", max_file_store="8GB")
    out = tmp_path / "deployment"
    write_deployment(out, Request(nodes=(NODE,), publishers=(SOURCE,), layout=layout))
    d = Deployment(out=out, conf_dir=conf_dir, url=f"nats://127.0.0.1:{port}")
    d.install()
    log = open(tmp_path / "nats.log", "ab")  # noqa: SIM115 - handed to the child
    d.proc = subprocess.Popen([nats_server_binary(), "-c", str(conf_dir / "nats-cluster.conf")], stdout=log,
                              stderr=subprocess.STDOUT, env=os.environ | {"SERVER_NAME": NODE})
    try:
        wait_for_port("127.0.0.1", port)
        asyncio.run(_ensure_streams([d.url], replicas=1, specs=STREAMS, auth=d.auth("admin")))
        yield d
    finally:
        stop_process(d.proc)
        log.close()


@dataclass
class Client:
    nc: nats.NATS
    errors: list[str] = field(default_factory=list)

    async def refused(self, verb: str, subject: str) -> None:
        """Wait for the server's answer that ``verb`` (Publish, Subscription) on ``subject`` is not allowed."""
        wanted = f'permissions violation for {verb.lower()} to "{subject.lower()}"'
        await wait_until(lambda: any(wanted in e.lower() for e in self.errors), timeout=10)


@pytest.fixture
async def connect(deployment: Deployment) -> AsyncIterator[object]:
    clients: list[Client] = []

    async def open_as(role: str) -> Client:
        errors: list[str] = []

        async def on_error(e: Exception) -> None:
            errors.append(str(e))

        nc = await nats.connect(deployment.url, error_cb=on_error, allow_reconnect=False,
                                **deployment.auth(role).connect_options())
        client = Client(nc, errors)
        clients.append(client)
        return client

    yield open_as
    for c in clients:
        await c.nc.close()


PUBLISHER = publisher_role(SOURCE)


async def test_a_publisher_publishes_the_three_inputs_with_acks_and_nothing_else(
    deployment: Deployment, connect
) -> None:
    pub = await connect(PUBLISHER)
    js = pub.nc.jetstream(timeout=5)
    event = dossier_event("H-1", 2, "2026-11-25T09:00:00+07:00", source=SOURCE)
    await publish_event(js, "tthc.dossier.events", event)  # acked: TTHC_DOSSIER stored it
    # Nothing but the inputs: alerts, parwatch's own subjects, dead letters.
    for subject in ("tthc.alerts", "parwatch.dossier.state", "parwatch.accepted.rating", "parwatch.plan.task_state",
                    "tthc.deadletter"):
        await pub.nc.publish(subject, b"{}")
        await pub.refused("Publish", subject)
    # It subscribes to nothing: no stream subject, no delivery, no other user's inbox, not even every inbox.
    for subject in ("tthc.dossier.events", "tthc.>", ">", "_INBOX.>", "parwatch.deliver.dossier_tracker",
                    "$JS.ACK.>", f"_INBOX_{deployment.auth('dossier_tracker').public_key}.>"):
        await pub.nc.subscribe(subject)
        await pub.refused("Subscription", subject)
    # No stream-management API: create, update, delete, purge, consumers, not even information.
    for subject in ("$JS.API.STREAM.CREATE.EVIL", "$JS.API.STREAM.UPDATE.TTHC_DOSSIER",
                    "$JS.API.STREAM.DELETE.TTHC_DOSSIER", "$JS.API.STREAM.PURGE.TTHC_DOSSIER",
                    "$JS.API.STREAM.MSG.DELETE.TTHC_DOSSIER", "$JS.API.CONSUMER.CREATE.TTHC_DOSSIER",
                    "$JS.API.CONSUMER.DURABLE.CREATE.TTHC_DOSSIER.mine", "$JS.API.STREAM.INFO.TTHC_DOSSIER"):
        await pub.nc.publish(subject, b"{}")
        await pub.refused("Publish", subject)

    # What the server did, read with the operator's credential: one input stored, every other stream as it was.
    op = await connect("operator")
    ojs = op.nc.jetstream(timeout=5)
    counts = {s.name: (await ojs.stream_info(s.name)).state.messages for s in STREAMS}
    assert counts == {s.name: 1 if s.name == "TTHC_DOSSIER" else 0 for s in STREAMS}


async def test_parwatchs_own_publishing_commands_connect_with_the_configured_credential(
    deployment: Deployment, connect
) -> None:
    """`parwatch plan report` publishes as the NATS user and over the TLS its settings name (a publisher's)."""
    import datetime as dt

    from services.deadline_monitor.cli import publish_report
    from shared.events import PLAN_TYPE, PlanTaskReported, new_event

    report = PlanTaskReported(plan_id="KH-TEST", task_id="T.1", agency_code="PTP", state="done",
                              reported_at=dt.datetime(2026, 11, 25, 9, tzinfo=dt.UTC))
    event = new_event(type=PLAN_TYPE, source=SOURCE, subject="T.1", data=report)
    assert await publish_report(event, common=deployment.common(PUBLISHER)) == 1
    with pytest.raises(Exception):  # noqa: B017 - without the settings' credential the server refuses the client
        await publish_report(event, common=CommonSettings(nats_url=deployment.url))
    op = await connect("operator")
    assert (await op.nc.jetstream(timeout=5).stream_info("TTHC_PLAN")).state.messages == 1


async def test_the_services_http_doors_publish_on_the_input_subjects_with_their_own_credentials(
    deployment: Deployment, connect
) -> None:
    """The tracker's HTTP ingest (POST /events) publishes on the three input subjects, and deadline_monitor's API
    for the web page (POST /plan/report) on tthc.plan.events, each as its own NATS user."""
    import datetime as dt

    from services.dossier_tracker.http_ingest import _publish
    from shared.events import PLAN_TYPE, PlanTaskReported, encode, headers_for, new_event, parse_event
    from shared.streams import PLAN_EVENTS

    tracker = await connect("dossier_tracker")
    event = parse_event(json.dumps(dossier_event("H-HTTP-1", 2, "2026-11-25T09:00:00+07:00", source=SOURCE)))
    assert await _publish(tracker.nc.jetstream(timeout=5), [(event, encode(event))], timeout=5) == ["stored"]
    monitor = await connect("deadline_monitor")
    report = PlanTaskReported(plan_id="KH-TEST", task_id="T.1", agency_code="PTP", state="done",
                              reported_at=dt.datetime(2026, 11, 25, 9, tzinfo=dt.UTC))
    web = new_event(type=PLAN_TYPE, source="parwatch/web", subject="T.1", data=report)
    ack = await monitor.nc.jetstream(timeout=5).publish(PLAN_EVENTS, encode(web), headers=headers_for(web))
    assert ack.stream == "TTHC_PLAN"
    assert not tracker.errors and not monitor.errors


async def test_the_operator_reads_and_changes_nothing(
    deployment: Deployment, connect, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The operator reads information and messages by sequence, and lists the dead letters with `parwatch
    deadletters list`. It creates no consumer: a push consumer delivers where its config says, onto tthc.alerts
    (stored in TTHC_ALERTS) or a service's deliver subject as well, so a publisher's message made to look like an
    alert would become one. It publishes on no subject, and has no direct get, whose answer (the stored message
    itself) goes to whatever reply subject the request names."""
    import datetime as dt

    from parwatch.cli import main as parwatch_main
    from shared.events import (
        ALERT_FIRING_TYPE,
        DEADLETTER_TYPE,
        Alert,
        DeadLetter,
        EventRejected,
        encode,
        headers_for,
        new_event,
        parse_event,
    )

    now = dt.datetime(2026, 11, 25, 2, tzinfo=dt.UTC)
    admin = await connect("admin")
    ajs = admin.nc.jetstream()
    await publish_event(ajs, "tthc.dossier.events", dossier_event("H-2", 2, "2026-11-25T09:00:00+07:00"))
    letter = new_event(type=DEADLETTER_TYPE, source="parwatch/dossier_tracker", id="deadletter:TTHC_DOSSIER:1",
                       data=DeadLetter(stream="TTHC_DOSSIER", stream_seq=1, subject="tthc.dossier.events",
                                       reason="data.status: the operator's test", received_at=now))
    await ajs.publish("tthc.deadletter", encode(letter), headers=headers_for(letter))
    # What a publisher may store: an alert, published on an input subject (the tracker would dead-letter it).
    forged = new_event(type=ALERT_FIRING_TYPE, source="parwatch/deadline_monitor", data=Alert(
        alert_key="forged", kind="dossier_overdue", severity="critical", agency_code="PTP", ref="H-2",
        summary="forged", starts_at=now))
    pub = await connect(PUBLISHER)
    await publish_event(pub.nc.jetstream(), "tthc.dossier.events", encode(forged), msg_id="forged")

    op = await connect("operator")
    js = op.nc.jetstream(timeout=5)
    before = {s.name: await js.stream_info(s.name) for s in STREAMS}
    assert before["TTHC_DOSSIER"].state.messages == 2 and before["TTHC_ALERTS"].state.messages == 0
    assert (await js.get_msg("TTHC_DOSSIER", 1)).subject == "tthc.dossier.events"
    # `parwatch deadletters list` with the operator's credential, as an operator runs it (its own event loop).
    monkeypatch.setenv("PARWATCH_NATS_URL", deployment.url)
    monkeypatch.setenv("PARWATCH_NATS_NKEY_SEED_FILE", str(deployment.seed("operator")))
    monkeypatch.setenv("PARWATCH_NATS_TLS_CA_FILE", str(deployment.ca))
    code = await asyncio.to_thread(parwatch_main, ["deadletters", "list"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0 and len(out) == 1 and "TTHC_DOSSIER:1" in out[0] and "the operator's test" in out[0], out

    # No consumer of any kind, whatever it would deliver onto.
    onto_alerts = {"stream_name": "TTHC_DOSSIER", "config": {"deliver_subject": "tthc.alerts", "ack_policy": "none"}}
    onto_notifier = {"stream_name": "TTHC_DOSSIER", "config": {
        "deliver_subject": "parwatch.deliver.notifier", "deliver_group": "notifier", "ack_policy": "none"}}
    ordered = {"stream_name": "TTHC_DEADLETTER", "config": {
        "deliver_subject": f"{deployment.auth('operator').inbox_prefix}.x", "ack_policy": "none",
        "flow_control": True, "idle_heartbeat": 5_000_000_000, "mem_storage": True}}
    for subject, request in (("$JS.API.CONSUMER.CREATE.TTHC_DOSSIER", onto_alerts),
                             ("$JS.API.CONSUMER.CREATE.TTHC_DOSSIER", onto_notifier),
                             ("$JS.API.CONSUMER.CREATE.TTHC_DEADLETTER", ordered),
                             ("$JS.API.CONSUMER.CREATE.TTHC_DOSSIER.mine.tthc.dossier.events", onto_alerts),
                             ("$JS.API.CONSUMER.DURABLE.CREATE.TTHC_DOSSIER.mine", onto_alerts)):
        op.errors.clear()
        await op.nc.publish(subject, json.dumps(request).encode(), reply=f"{deployment.auth('operator').inbox_prefix}.r")
        await op.refused("Publish", subject)
    # No publish: no stream subject, no service's delivery, ack or inbox, no change, no direct get, whatever the
    # reply subject.
    other_inbox = deployment.auth("notifier").inbox_prefix
    for subject in (*(subject for spec in STREAMS for subject in spec.subjects), "parwatch.deliver.notifier",
                    "$JS.ACK.TTHC_ALERTS.notifier.1.1.1.0.0", "$JS.FC.x", "_INBOX.x", f"{other_inbox}.x",
                    "$JS.API.STREAM.DELETE.TTHC_DOSSIER", "$JS.API.STREAM.UPDATE.TTHC_DOSSIER",
                    "$JS.API.STREAM.PURGE.TTHC_DOSSIER", "$JS.API.STREAM.MSG.DELETE.TTHC_DOSSIER",
                    "$JS.API.CONSUMER.DELETE.TTHC_DOSSIER.dossier_tracker", "$JS.API.DIRECT.GET.TTHC_DOSSIER",
                    "$JS.API.DIRECT.GET.TTHC_DOSSIER.tthc.dossier.events"):
        op.errors.clear()
        await op.nc.publish(subject, b'{"seq": 2}', reply="tthc.alerts")
        await op.refused("Publish", subject)
    # A read answered onto tthc.alerts instead of the operator's inbox (NATS checks no reply subject) stores the
    # API's JSON there: junk the notifier dead-letters, never the publisher's alert.
    await op.nc.publish("$JS.API.STREAM.MSG.GET.TTHC_DOSSIER", b'{"seq": 2}', reply="tthc.alerts")
    await wait_until(lambda: _stream_count(js, "TTHC_ALERTS", at_least=1), timeout=10)
    with pytest.raises(EventRejected):
        parse_event((await js.get_msg("TTHC_ALERTS", 1)).data)
    after = {s.name: await js.stream_info(s.name) for s in STREAMS}
    for name, info in after.items():
        assert info.state.messages == before[name].state.messages + (name == "TTHC_ALERTS"), name
        assert info.state.consumer_count == before[name].state.consumer_count == 0, name


async def test_no_credential_or_no_tls_is_refused(deployment: Deployment) -> None:
    with pytest.raises(Exception, match="(?i)authorization"):
        await nats.connect(deployment.url, allow_reconnect=False, max_reconnect_attempts=0,
                           tls=deployment.auth("admin").ssl_context(), connect_timeout=5)
    with pytest.raises(Exception):  # noqa: B017 - the server asks TLS of a plain client: any refusal
        await nats.connect(deployment.url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=5,
                           nkeys_seed=str(deployment.seed("admin")))


async def test_each_service_runs_with_its_own_credential_only(
    deployment: Deployment, connect, tmp_path: Path
) -> None:
    from services.deadline_monitor.app import create_app as create_monitor
    from services.deadline_monitor.settings import MonitorSettings
    from services.dossier_tracker.app import create_app as create_tracker
    from services.notifier.app import create_app as create_notifier
    from services.notifier.settings import NotifierSettings
    from services.scoring.app import create_app as create_scoring
    from services.scoring.settings import ScoringSettings

    def common(role: str) -> CommonSettings:
        c = deployment.common(role, data_dir=tmp_path / role)
        assert not c.manages_streams()  # a credential: the streams are the admin's to change
        return c

    tracker, _ = create_tracker(common("dossier_tracker"))
    monitor, _ = create_monitor(common("deadline_monitor"),
                                MonitorSettings(port=0, include_shipped_plans=False, backlog_idle_seconds=0.5))
    scoring, _ = create_scoring(common("scoring"), ScoringSettings(port=0))
    notifier, _ = create_notifier(common("notifier"), NotifierSettings(port=free_port(), quiet_hours=False))
    services = [tracker, monitor, scoring, notifier]
    pub = await connect(PUBLISHER)
    admin = await connect("admin")
    op = await connect("operator")
    ojs = op.nc.jetstream(timeout=5)
    try:
        for service in services:
            await service.start()
        # A dossier of a unit outside the directory: the tracker folds it into a state fact, the monitor raises
        # unknown_agency on tthc.alerts, scoring takes the fact, the notifier the alert.
        await publish_event(pub.nc.jetstream(), "tthc.dossier.events",
                            dossier_event("H-OWN-1", 2, "2026-11-25T09:00:00+07:00", agency="ZZZ", source=SOURCE))
        await publish_event(pub.nc.jetstream(), "tthc.dossier.events", b"not json", msg_id=str(uuid.uuid4()))
        # Messages no service can accept, on each one's inputs: each dead-letters them (publishes, then acks).
        ajs = admin.nc.jetstream()
        await ajs.publish("parwatch.dossier.state", b"not json")
        await ajs.publish("tthc.alerts", b"not json")

        async def settled(stream: str, durable: str) -> bool:
            info = await ojs.consumer_info(stream, durable)
            return info.num_pending == 0 and info.num_ack_pending == 0 and info.delivered.stream_seq > 0

        for svc in SERVICES:
            for c in svc.consumes:
                if c.subject not in ("tthc.dossier.events", "parwatch.dossier.state", "tthc.alerts", "tthc.deadletter"):
                    continue  # no message was published there
                await wait_until(lambda c=c: settled(c.stream, c.durable), timeout=30)
        await wait_until(lambda: _stream_count(ojs, "PARWATCH_DOSSIER_STATE", at_least=2), timeout=30)
        await wait_until(lambda: _kinds(ojs, source="parwatch/deadline_monitor", want="unknown_agency"), timeout=30)
        await wait_until(lambda: _stream_count(ojs, "TTHC_DEADLETTER", at_least=3), timeout=30)
        assert not [e for c in (pub, admin, op) for e in c.errors]
    finally:
        for service in reversed(services):
            await service.stop()


async def _stream_count(js: object, stream: str, *, at_least: int) -> bool:
    return (await js.stream_info(stream)).state.messages >= at_least  # type: ignore[attr-defined]


async def _kinds(js: object, *, source: str, want: str) -> bool:
    from shared.events import EventRejected, parse_event

    info = await js.stream_info("TTHC_ALERTS")  # type: ignore[attr-defined]
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg("TTHC_ALERTS", seq)  # type: ignore[attr-defined]
        try:
            event = parse_event(msg.data)
        except EventRejected:  # the junk alert of the test
            event = None
        if event is not None and event.source == source and event.data.kind == want:
            return True
    return False


async def test_a_service_with_another_services_credential_is_refused_what_it_needs(
    deployment: Deployment, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from services.notifier.app import create_app as create_notifier
    from services.notifier.settings import NotifierSettings

    caplog.set_level(logging.ERROR, logger="shared.nats_auth")
    notifier, _ = create_notifier(deployment.common("scoring", data_dir=tmp_path / "n"),
                                  NotifierSettings(port=free_port(), quiet_hours=False))
    with pytest.raises(TimeoutError):  # its consumer cannot be created: the request gets no answer
        await notifier.start()
    await notifier.stop()
    # nats-py hands the server's error over in lower case.
    refused = [r.getMessage().lower() for r in caplog.records if "permissions violation" in r.getMessage().lower()]
    assert any("$js.api.consumer." in m and ".tthc_alerts.notifier" in m for m in refused), refused


async def test_a_rotated_credential_works_beside_the_old_one_until_the_rotation_is_finished(
    deployment: Deployment, connect
) -> None:
    old_seed = deployment.seed("scoring").read_bytes()
    write_deployment(deployment.out, Request(nodes=(NODE,), rotate=("scoring",), layout=_layout(deployment)))
    deployment.install()
    deployment.reload()
    new = NatsAuth.of(seed_file=deployment.seed("scoring"), ca_file=deployment.ca)
    old_file = deployment.out / "creds" / "scoring.previous.nk"
    assert old_file.read_bytes() == old_seed and deployment.seed("scoring").read_bytes() != old_seed

    async def answer(auth: NatsAuth) -> bool | None:
        """The server's answer to ``auth``: True, it connects and reads a stream's information (its inbox and
        STREAM.INFO: its permissions); False, it is refused ("Authorization Violation"); None, no answer yet. A
        server reloading its config may reset a connection or leave a request unanswered: that says nothing."""
        try:
            nc = await nats.connect(deployment.url, allow_reconnect=False, max_reconnect_attempts=0,
                                    connect_timeout=5, **auth.connect_options())
        except FileNotFoundError:  # no seed: a mistake of the test, not an answer of the server
            raise
        except (nats.errors.Error, OSError) as e:  # only the server's refusal is an answer
            return False if "authorization violation" in str(e).lower() else None
        try:
            await nc.jetstream(timeout=5).stream_info("TTHC_ALERTS")
            return True
        except (nats.errors.Error, OSError):  # a timeout, a reset or closed connection: the reload under way
            return None
        finally:
            await nc.close()

    async def answers(auth: NatsAuth, want: bool) -> bool:
        return await answer(auth) is want

    # The process still on the old key keeps its seed: --finish-rotation deletes creds/scoring.previous.nk.
    kept = deployment.out.parent / "scoring-old.nk"
    kept.write_bytes(old_seed)
    kept.chmod(0o600)
    old = NatsAuth.of(seed_file=kept, ca_file=deployment.ca)
    await wait_until(lambda: answers(new, True), timeout=15)  # the reload is asynchronous
    assert await _settled(answer, old) is True
    write_deployment(deployment.out, Request(nodes=(NODE,), finish_rotation=("scoring",), layout=_layout(deployment)))
    deployment.install()
    deployment.reload()
    assert not old_file.exists()
    await wait_until(lambda: answers(old, False), timeout=15)
    assert await _settled(answer, new) is True


async def _settled(answer: Callable[[NatsAuth], Awaitable[bool | None]], auth: NatsAuth) -> bool:
    """The first answer that is one (True or False); TimeoutError after 15 s without."""
    answered: list[bool] = []

    async def got() -> bool:
        result = await answer(auth)
        if result is not None:
            answered.append(result)
        return result is not None

    await wait_until(got, timeout=15)
    return answered[0]


def _layout(d: Deployment) -> ServerLayout:
    port = int(d.url.rsplit(":", 1)[1])
    text = (d.conf_dir / "nats-cluster.conf").read_text()
    http = int(text.split("http: 127.0.0.1:", 1)[1].split()[0])
    return ServerLayout(conf_dir=str(d.conf_dir), store_dir=text.split("store_dir: ", 1)[1].split()[0],
                        client_port=port, http_port=http, listen="127.0.0.1", max_file_store="8GB")
