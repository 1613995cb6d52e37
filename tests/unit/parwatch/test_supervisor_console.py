"""What `parwatch up` writes where: the terminal gets the URLs, lifecycle lines and the status; the log file in
the data folder gets everything, each alert and notice included."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from parwatch.status import Console
from parwatch.supervisor import (
    LOG_FILE,
    Child,
    RestartPolicy,
    RestartTracker,
    StackSettings,
    Supervisor,
    rotate_log,
    routed_logs,
)
from shared.settings import CommonSettings

SERVICE_LINE = "alert recorded key=dossier_overdue/D-1 kind=dossier_overdue agency=PTP"


@pytest.fixture
def clean_root():  # type: ignore[no-untyped-def]
    """The root logger as the test found it, whatever routed_logs does."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    root.setLevel(logging.INFO)
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def test_without_a_terminal_the_stderr_handler_keeps_only_lifecycle_lines_and_the_file_gets_all(
    tmp_path: Path, clean_root: logging.Logger
) -> None:
    terminal = io.StringIO()
    clean_root.handlers[:] = [logging.StreamHandler(terminal)]
    log_path = tmp_path / LOG_FILE
    with routed_logs(log_path=log_path, console=None, json_lines=False):
        logging.getLogger("services.notifier.service").info(SERVICE_LINE)
        logging.getLogger("parwatch.supervisor").info("started notifier pid=1 port=9104")
        logging.getLogger("services.notifier.service").warning("SMTP refused")
    assert "started notifier" in terminal.getvalue() and "SMTP refused" in terminal.getvalue()
    assert "alert recorded" not in terminal.getvalue()
    written = log_path.read_text(encoding="utf-8")
    assert SERVICE_LINE in written and "started notifier" in written and "SMTP refused" in written
    assert clean_root.handlers[0].filters == []  # put back as it was


def test_on_a_terminal_log_lines_go_through_the_live_console(tmp_path: Path, clean_root: logging.Logger) -> None:
    screen = io.StringIO()
    console = Console(screen, live=True)
    with routed_logs(log_path=tmp_path / LOG_FILE, console=console, json_lines=True):
        logging.getLogger("services.notifier.service").info(SERVICE_LINE)
        logging.getLogger("parwatch.supervisor").warning("notifier exited (code 1)")
    assert "notifier exited (code 1)" in screen.getvalue() and "alert recorded" not in screen.getvalue()
    assert '"msg": "alert recorded' in (tmp_path / LOG_FILE).read_text(encoding="utf-8")


def test_a_large_log_is_moved_aside_at_start(tmp_path: Path) -> None:
    path = tmp_path / LOG_FILE
    path.write_bytes(b"x" * 11)
    rotate_log(path, limit=20)
    assert path.exists()
    rotate_log(path, limit=10)
    assert not path.exists() and (tmp_path / f"{LOG_FILE}.1").read_bytes() == b"x" * 11


def test_the_console_mode_follows_the_terminal_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("TERM", "xterm-256color")
    assert StackSettings().live_console(Tty())
    monkeypatch.setenv("TERM", "dumb")
    assert not StackSettings().live_console(Tty())
    assert not StackSettings().live_console(io.StringIO())
    assert StackSettings(console="live").live_console(io.StringIO())
    assert not StackSettings(console="plain").live_console(Tty())


def test_the_status_is_read_from_health_and_metrics_over_http(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    Gauge("parwatch_monitor_alerts_firing", "firing", ["kind"], registry=registry).labels(kind="dossier_overdue").set(3)
    monitor_metrics = generate_latest(registry).decode()
    asked: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(f"{request.url.port}{request.url.path}")
        if request.url.port == 9102:
            return httpx.Response(200, text=monitor_metrics if request.url.path == "/metrics" else "{}")
        return httpx.Response(503, text="{}")  # the notifier: degraded, its /metrics still read

    now = [100.0]
    sup = Supervisor(common=CommonSettings(data_dir=tmp_path), settings=StackSettings(), environ={},
                     data_dir=tmp_path, clock=lambda: now[0])
    for name, port in (("deadline_monitor", 9102), ("notifier", 9104)):
        c = Child(name=name, args=("true",), env={}, port=port, tracker=RestartTracker(RestartPolicy(), clock=sup.clock))
        c.proc = object()  # type: ignore[assignment]  # running, as far as the probe cares
        sup.children.append(c)
    with httpx.Client(transport=httpx.MockTransport(answer)) as client:
        status = sup.status(client, extra=["demo: live"])
    assert status.figures.alerts_firing == 3
    assert status.figures.notifications_sent is None  # the notifier's /metrics answered 503: unknown
    assert status.services == (("deadline_monitor", "up"), ("notifier", "degraded"))
    assert "9102/metrics" in asked and "9104/metrics" in asked
    assert status.extra == ("demo: live",)


def test_a_companion_may_add_status_lines_and_a_failing_one_adds_none() -> None:
    from parwatch.supervisor import _companion_lines

    class Feed:
        def status_lines(self) -> list[str]:
            return ["demo: 1,200 messages, live at 20/s"]

    class Broken:
        def status_lines(self) -> list[str]:
            raise RuntimeError("not yet")

    assert _companion_lines(Feed()) == ["demo: 1,200 messages, live at 20/s"]  # type: ignore[arg-type]
    assert _companion_lines(Broken()) == []  # type: ignore[arg-type]
    assert _companion_lines(object()) == [] and _companion_lines(None) == []  # type: ignore[arg-type]
