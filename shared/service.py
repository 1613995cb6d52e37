"""What every service process shares: logging, the HTTP face, the run loop.

A service is a FastStream NATS broker plus a small HTTP app (FastAPI) that
serves ``/health`` and ``/metrics`` and whatever API the service adds. The
HTTP app's lifespan starts the broker and the service's background tasks, so
one uvicorn server runs everything in one event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import gc
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Response
from faststream.nats import NatsBroker
from nats.js import JetStreamContext
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, disable_created_metrics, generate_latest
from sqlalchemy import Engine

from shared.backoff import Backoff
from shared.consumer import Consumers
from shared.logs import one_line_handler
from shared.nats_auth import report_nats_error
from shared.periodic import Step, Wake, run_every
from shared.settings import CommonSettings
from shared.streams import check_streams, ensure_streams, require_atomic_batches, require_server_version

log = logging.getLogger(__name__)

HealthCheck = Callable[[], Awaitable[bool]]
Background = Callable[[], Awaitable[None]]


def setup_logging(settings: CommonSettings, *, service: str) -> None:
    """Every record of the process on one line of at most 4 KB, text or JSON (:mod:`shared.logs`)."""
    handler = one_line_handler(f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s",
                               json_lines=settings.log_format == "json")
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # FastStream logs every message received/processed at INFO: too much, and
    # its message ids are not useful to operators.
    logging.getLogger("faststream").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


def make_broker(settings: CommonSettings) -> NatsBroker:
    """The service's connection: its credential and TLS when configured (:mod:`shared.nats_auth`), else plain."""
    return NatsBroker(
        settings.nats_servers(),
        logger=logging.getLogger("faststream"),
        log_level=logging.DEBUG,
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        connect_timeout=5,
        graceful_timeout=15.0,
        error_cb=report_nats_error,
        **settings.nats_auth().broker_options(),
    )


@dataclass
class Service:
    """One running service: its broker and consumers, HTTP app and background loops."""

    name: str
    port: int
    broker: NatsBroker
    registry: CollectorRegistry
    settings: CommonSettings
    consumers: Consumers | None = None
    health_checks: dict[str, HealthCheck] = field(default_factory=dict)
    background: list[Background] = field(default_factory=list)
    on_start: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    http: FastAPI | None = None
    stop_timeout: float = 10.0  # how long stop() waits for a background loop to end
    restart: Backoff = Backoff(first=1.0, cap=60.0)  # a background loop that crashed starts again after this
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def jetstream(self) -> JetStreamContext:
        return self.broker.connection.jetstream()

    def every(self, interval: float, step: Step, *, name: str, wake: Wake | None = None) -> None:
        """Run ``step`` in the background: now, then every ``interval`` seconds or when woken
        (:func:`shared.periodic.run_every`)."""

        async def loop() -> None:
            await run_every(interval, step, name=f"{self.name}:{name}", wake=wake)

        loop.__name__ = name
        self.background.append(loop)

    def use_database(
        self,
        engine: Engine,
        *,
        create_schema: Callable[[], None],
        ping: Callable[[], bool],
    ) -> None:
        """Create or migrate the schema at start, report the database in /health, dispose at stop."""

        lock = SingleWriter.for_engine(engine, service=self.name)

        async def migrate() -> None:
            if lock is not None:
                lock.take()
            await asyncio.to_thread(create_schema)

        async def database_ok() -> bool:
            return await asyncio.to_thread(ping)

        async def dispose() -> None:
            await asyncio.to_thread(engine.dispose)
            if lock is not None:
                lock.release()

        self.on_start.insert(0, migrate)
        self.on_stop.append(dispose)
        self.health_checks["database"] = database_ok

    def app(self, *, title: str | None = None, description: str = "", extra_routes: Sequence[Any] = ()) -> FastAPI:
        if self.http is None:
            self.http = make_http_app(self, title=title or f"parwatch {self.name}", description=description)
            for router in extra_routes:
                self.http.include_router(router)
        return self.http

    async def start(self) -> None:
        await self.broker.connect()
        require_server_version(self.broker.connection.connected_server_version)
        specs = self.settings.stream_specs()
        if self.settings.manages_streams():
            await ensure_streams(self.jetstream, replicas=self.settings.stream_replicas, specs=specs)
        else:  # a service's own credential may not change streams: `parwatch streams ensure` did
            await check_streams(self.jetstream, specs=specs)
        await require_atomic_batches(self.jetstream, specs=specs)
        for hook in self.on_start:
            await hook()
        await self.broker.start()
        if self.consumers is not None:
            await self.consumers.start(self.jetstream)
        for loop in self.background:
            name = f"{self.name}:{loop.__name__}"
            self._tasks.append(asyncio.create_task(_guard(loop, name=name, restart=self.restart), name=name))
        log.info("service started name=%s port=%d", self.name, self.port)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            await _cancel_and_wait(task, timeout=self.stop_timeout)
        self._tasks.clear()
        # Stop the deliveries, let the batch in hand be applied and acked, then close the connection.
        if self.consumers is not None:
            await self.consumers.stop()
        await self.broker.stop()
        for hook in self.on_stop:
            await hook()
        log.info("service stopped name=%s", self.name)

    async def healthy(self) -> dict[str, bool]:
        results = {"nats": await self.broker.ping(timeout=2.0)}
        for name, check in self.health_checks.items():
            try:
                results[name] = await asyncio.wait_for(check(), timeout=5.0)
            except Exception:  # a failing check is a health result, logged
                log.warning("health check failed name=%s", name, exc_info=True)
                results[name] = False
        return results


async def _cancel_and_wait(task: asyncio.Task[None], *, timeout: float, recancel_every: float = 0.5) -> None:
    """Wait for a cancelled ``task`` to end, cancelling it again while it runs on.

    One ``cancel()`` is not enough: on Python 3.11 ``asyncio.wait_for``
    swallows a cancellation that arrives in the same loop iteration as the
    result it waits for (cpython gh-86296; 3.12 rebuilt it on
    ``asyncio.timeout``), and nats-py awaits every request (``consumer_info``,
    publish acks) through it. The background loop then goes on as if it had
    not been cancelled, and a plain ``await task`` never returns. After
    ``timeout`` seconds the task is left behind with an error logged, so a
    stop never hangs.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        await asyncio.wait({task}, timeout=recancel_every)
        if task.done():
            break
        if loop.time() >= deadline:
            where = "".join(f" {f.f_code.co_filename}:{f.f_lineno}" for f in task.get_stack())
            log.error(
                "background task did not stop name=%s after %.1fs; left running at%s", task.get_name(), timeout, where
            )
            return
        log.warning("background task still running after cancel name=%s; cancelling again", task.get_name())
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _guard(loop: Background, *, name: str, restart: Backoff) -> None:
    """Run a background loop; if it dies, log it and start it again after the backoff's delay."""
    crashes = 0
    while True:
        try:
            await loop()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            crashes += 1
            delay = restart.delay(crashes)
            log.exception("background loop crashed name=%s; restarting in %.0fs", name, delay)
            await asyncio.sleep(delay)


def utc_now() -> dt.datetime:
    """The services' clock (injectable everywhere it is used)."""
    return dt.datetime.now(dt.UTC)


def main(name: str, create_app: Callable[[CommonSettings], tuple[Service, FastAPI]]) -> None:
    """The entry point of a service's process (``python -m services.<name>``): its process-wide choices, made
    here and nowhere else (a test process that builds services keeps its own), then the service until a signal.

    * no ``_created`` series: they would double every counter's series for little use;
    * ``gc.freeze()`` once the modules are loaded: what they hold lives as long as the process, out of the cycle
      collector's sight, which otherwise walks it again and again (docs/benchmarks.md).
    """
    disable_created_metrics()
    gc.freeze()
    common = CommonSettings()
    setup_logging(common, service=name)
    service, app = create_app(common)
    serve(service, app)


class AnotherReplica(RuntimeError):
    """A second replica of a service on one SQLite database: SQLite takes one writer; replicas need PostgreSQL."""


class SingleWriter:
    """One replica of a service on a SQLite database: an exclusive lock on ``<database>.<service>.lock``, held
    while the service runs and released by the system if its process dies (``fcntl.flock``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @classmethod
    def for_engine(cls, engine: Engine, *, service: str) -> SingleWriter | None:
        database = engine.url.database
        if engine.dialect.name != "sqlite" or not database or database == ":memory:":
            return None
        return cls(Path(f"{database}.{service}.lock"))

    def take(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AnotherReplica(
                f"another replica of this service already runs on the SQLite database {self.path.stem}: SQLite "
                "takes one writer; run replicas on PostgreSQL (PARWATCH_DATABASE_URL=postgresql://...)"
            ) from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def make_http_app(service: Service, *, title: str, description: str) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(title=title, description=description, lifespan=lifespan)

    @app.get("/health", tags=["operations"], summary="Liveness and dependencies")
    async def health() -> Response:
        checks = await service.healthy()
        ok = all(checks.values())
        body = json.dumps({"status": "ok" if ok else "degraded", "service": service.name, "checks": checks})
        return Response(body, status_code=200 if ok else 503, media_type="application/json")

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics")
    async def metrics() -> Response:
        payload = await asyncio.to_thread(generate_latest, service.registry)
        return Response(payload, media_type=CONTENT_TYPE_LATEST)

    return app


def serve(service: Service, app: FastAPI) -> None:
    """Run the service until SIGINT or SIGTERM (uvicorn handles both)."""
    config = uvicorn.Config(
        app,
        host=service.settings.http_host,
        port=service.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=20,
    )
    server = uvicorn.Server(config)
    log.info("serving name=%s url=http://%s:%d", service.name, service.settings.http_host, service.port)
    asyncio.run(server.serve())
