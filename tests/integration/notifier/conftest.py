"""Real servers on loopback for the notifier: SMTP (aiosmtpd, STARTTLS or TLS) and a webhook endpoint;
the directory of the unit tests, a clock the tests move, alert events as the consumer hands them over.

TLS certificates are made in the test: with ``trustme`` when installed, else
with the ``openssl`` command; without either, the TLS tests skip and say why.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from services.notifier.config import load_directory
from services.notifier.domain.model import Directory
from shared.consumer import Received
from shared.embedded import free_port
from shared.events import ALERT_FIRING_TYPE, ALERT_RESOLVED_TYPE, Alert, AlertEvent, new_event

SMTP_USER, SMTP_PASSWORD = "parwatch", "mật-khẩu-thử"
VN = dt.timezone(dt.timedelta(hours=7))
# Wednesday 25/11/2026 09:00 in Tuy Phong: a working day, inside working hours.
T0 = dt.datetime(2026, 11, 25, 9, 0, tzinfo=VN)


# -- the notifier's inputs ------------------------------------------------------------------


class FakeClock:
    def __init__(self, now: dt.datetime = T0) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **kw: float) -> dt.datetime:
        self.now += dt.timedelta(**kw)
        return self.now

    def set(self, moment: dt.datetime) -> dt.datetime:
        self.now = moment
        return moment


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def directory() -> Directory:
    """The unit tests' directory (tests/unit/notifier/directory.yaml)."""
    return load_directory(Path(__file__).parents[2] / "unit" / "notifier" / "directory.yaml")


@pytest.fixture
def make_received() -> Callable[..., Received[AlertEvent]]:
    """An alert event as the consumer hands it to ``NotifierService.record``."""

    def make(key: str = "dossier_due_soon:H31.12-001", *, resolved: bool = False, event_id: str | None = None,
             source: str = "parwatch/deadline_monitor", seq: int = 1, **fields: Any) -> Received[AlertEvent]:
        data: dict[str, Any] = {
            "alert_key": key, "kind": "dossier_due_soon", "severity": "warning", "agency_code": "PTP",
            "ref": "H31.12-001", "summary": "Hồ sơ sắp đến hạn trả kết quả",
            "starts_at": T0 - dt.timedelta(hours=1), "labels": {"due_day": "2026-11-27"},
        }
        data.update(fields)
        if resolved and "ends_at" not in data:
            data["ends_at"] = T0
        event = new_event(type=ALERT_RESOLVED_TYPE if resolved else ALERT_FIRING_TYPE, source=source,
                          data=Alert(**data), id=event_id)
        return Received(event, "TTHC_ALERTS", seq, 1, msg=None)  # type: ignore[arg-type]

    return make


# -- TLS material ----------------------------------------------------------------------


@dataclass(frozen=True)
class TlsMaterial:
    ca_file: Path  # the CA the notifier is told to trust
    cert_file: Path  # server certificate for localhost and 127.0.0.1
    key_file: Path
    other_ca_file: Path  # a CA that did not sign the server certificate
    wrong_host_cert: Path  # signed by ca_file, but for mail.example.org only
    wrong_host_key: Path

    def server_context(self, *, wrong_host: bool = False) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        if wrong_host:
            ctx.load_cert_chain(self.wrong_host_cert, self.wrong_host_key)
        else:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


def _with_trustme(d: Path) -> TlsMaterial:
    import trustme

    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    wrong = ca.issue_cert("mail.example.org")
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    other.cert_pem.write_to_path(str(d / "other-ca.pem"))
    server.private_key_and_cert_chain_pem.write_to_path(str(d / "server.pem"))
    wrong.private_key_and_cert_chain_pem.write_to_path(str(d / "wrong.pem"))
    return TlsMaterial(d / "ca.pem", d / "server.pem", d / "server.pem", d / "other-ca.pem", d / "wrong.pem",
                       d / "wrong.pem")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _with_openssl(d: Path) -> TlsMaterial:
    for name in ("ca", "other-ca"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem",
                 "-days", "2", "-subj", f"/CN=parwatch test {name}", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    for name, san in (("server", "DNS:localhost,IP:127.0.0.1"), ("wrong", "DNS:mail.example.org")):
        ext = f"subjectAltName={san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
        (d / f"{name}.ext").write_text(ext)
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj",
                 f"/CN={name}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
    return TlsMaterial(d / "ca.pem", d / "server.pem", d / "server.key", d / "other-ca.pem", d / "wrong.pem",
                       d / "wrong.key")


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsMaterial:
    d = tmp_path_factory.mktemp("tls")
    try:
        return _with_trustme(d)
    except ImportError:
        pass
    if shutil.which("openssl"):
        return _with_openssl(d)
    pytest.skip("TLS tests skipped: neither the trustme package nor the openssl command is available")


# -- SMTP ------------------------------------------------------------------------------------


class Mailbox:
    """What the SMTP server received, parsed."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], EmailMessage]] = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd hook
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self._lock:
            self.messages.append((list(envelope.rcpt_tos), msg))  # type: ignore[arg-type]
        return "250 Message accepted"

    def to(self, address: str) -> list[EmailMessage]:
        with self._lock:
            return [m for rcpts, m in self.messages if address in rcpts]

    def all(self) -> list[tuple[list[str], EmailMessage]]:
        with self._lock:
            return list(self.messages)


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == SMTP_USER and (
        auth_data.password.decode() == SMTP_PASSWORD)
    return AuthResult(success=ok, handled=False)


class SmtpServer:
    """An aiosmtpd server on a fixed loopback port that a test may stop and start again."""

    def __init__(self, tls: TlsMaterial | None, *, mode: str = "starttls", wrong_host: bool = False,
                 auth: bool = False) -> None:
        self.tls, self.mode, self.wrong_host, self.auth = tls, mode, wrong_host, auth
        self.port = free_port()
        self.mailbox = Mailbox()
        self.controller: Controller | None = None

    def start(self) -> None:
        kwargs: dict[str, Any] = {}
        if self.auth:
            # Implicit TLS is TLS from the first byte, but aiosmtpd only knows of STARTTLS.
            kwargs.update(authenticator=_authenticator, auth_require_tls=self.mode == "starttls")
        if self.mode == "starttls":
            assert self.tls is not None
            kwargs.update(tls_context=self.tls.server_context(wrong_host=self.wrong_host), require_starttls=True)
        elif self.mode == "tls":
            assert self.tls is not None
            kwargs.update(ssl_context=self.tls.server_context(wrong_host=self.wrong_host))
        self.controller = Controller(self.mailbox, hostname="127.0.0.1", port=self.port, ready_timeout=10,
                                     server_hostname="localhost", **kwargs)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def smtp_server(tls: TlsMaterial) -> Iterator[Callable[..., SmtpServer]]:
    made: list[SmtpServer] = []

    def make(*, mode: str = "starttls", wrong_host: bool = False, auth: bool = False, start: bool = True) -> SmtpServer:
        server = SmtpServer(tls, mode=mode, wrong_host=wrong_host, auth=auth)
        if start:
            server.start()
        made.append(server)
        return server

    yield make
    for s in made:
        s.stop()


# -- webhook ---------------------------------------------------------------------------------


@dataclass
class WebhookServer:
    port: int
    requests: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  # responses to give, in order; then 200
    delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/parwatch"


@pytest.fixture
def webhook_server() -> Iterator[WebhookServer]:
    state = WebhookServer(port=0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server hook
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if state.delay:
                time.sleep(state.delay)
            with state.lock:
                state.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                status = state.statuses.pop(0) if state.statuses else 200
            try:
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (the timeout test)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def json_body(request: dict[str, Any]) -> Any:
    return json.loads(request["body"])

