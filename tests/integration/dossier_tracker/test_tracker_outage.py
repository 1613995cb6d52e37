"""dossier_tracker through a PostgreSQL outage longer than its whole retry budget: time lost, nothing else.

PostgreSQL sits behind a TCP proxy owned by the test. While the proxy refuses
(it cuts every open connection and closes each new one at once, so the
driver raises OperationalError as it would against a server that went away),
events keep arriving; once it lets connections through again, every event is
stored once and none is dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any, Self

import pytest
import sqlalchemy as sa
from prometheus_client import generate_latest
from sqlalchemy.engine import make_url

from services.dossier_tracker.app import create_app
from services.dossier_tracker.settings import TrackerSettings
from shared.embedded import free_port
from shared.settings import CommonSettings
from shared.streams import DOSSIER_EVENTS
from shared.testing import (
    dossier_event,
    jetstream,
    metric_value,
    publish_event,
    started,
    wait_until,
)

pytestmark = pytest.mark.postgres


class Proxy:
    """A TCP relay to ``upstream``, in a thread of its own (the service under test talks to its database from its
    event loop's thread too), that can refuse for a while: every connection cut, each new one closed at once."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.port = free_port()
        self.refusing = False
        self.refused = 0  # connections closed at once while refusing
        self._pipes: set[asyncio.Task[None]] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _close(self) -> None:
        """Every connection cut and its handler ended: none is left pending for the collector to close later, on a
        closed loop (an unraisable RuntimeError in whichever test runs then)."""
        self._server.close()
        self._cut()
        handlers = asyncio.all_tasks() - {asyncio.current_task()}
        if handlers:
            await asyncio.wait(handlers, timeout=5)

    def refuse(self) -> None:
        self.refusing = True
        self._loop.call_soon_threadsafe(self._cut)

    def accept(self) -> None:
        self.refusing = False

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    def _cut(self) -> None:
        for pipe in list(self._pipes):
            pipe.cancel()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            self.refused += 1
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        pipes = {asyncio.create_task(_pipe(reader, up_writer)), asyncio.create_task(_pipe(up_reader, writer))}
        self._pipes |= pipes
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            pass
        finally:
            for pipe in pipes:
                pipe.cancel()
            self._pipes -= pipes
            writer.transport.abort()
            up_writer.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()




def tracker(nats_url: str, database_url: str, settings: TrackerSettings) -> contextlib.AbstractAsyncContextManager[Any]:
    return started(create_app(CommonSettings(nats_url=nats_url, database_url=database_url), settings)[0])


def dossier(i: int) -> list[dict[str, Any]]:
    code = f"H.OUT.{i}"
    return [
        dossier_event(code, 2, "2026-11-23T08:00:00+07:00", seq=1, event_id=f"{code}:1",
                      statutory_duration={"value": 3, "unit": "working_days"}),
        dossier_event(code, 9, "2026-11-24T09:00:00+07:00", seq=2, event_id=f"{code}:2"),
    ]


async def test_a_postgresql_outage_longer_than_the_retry_budget_costs_no_event(own_nats_server, postgres_url) -> None:
    url = make_url(postgres_url)
    # The whole retry budget of a message that fails by itself: 3 deliveries, 2 s apart at most.
    settings = TrackerSettings(max_deliver=3, retry_first_delay=0.2, retry_max_delay=0.5, ack_wait=2.0, batch_size=5)
    budget = settings.max_deliver * (settings.ack_wait + settings.retry_max_delay)
    with Proxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        async with jetstream(own_nats_server.url) as js:
            through_proxy = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
            async with tracker(own_nats_server.url, through_proxy, settings) as svc:

                def counted(result: str) -> float:
                    return metric_value(svc.registry, "parwatch_events_total", stream="TTHC_DOSSIER", result=result) or 0

                for ev in dossier(0):
                    await publish_event(js, DOSSIER_EVENTS, ev)
                await wait_until(lambda: counted("accepted") == 2, timeout=20)

                proxy.refuse()
                loop = asyncio.get_running_loop()
                down_at = loop.time()
                for i in range(1, 11):
                    for ev in dossier(i):
                        await publish_event(js, DOSSIER_EVENTS, ev)
                # Down for longer than the budget, and the tracker kept trying (each try a refused connection).
                await wait_until(lambda: loop.time() - down_at > budget and proxy.refused > 2 * settings.max_deliver,
                                 timeout=budget + 30)
                held = await js.consumer_info("TTHC_DOSSIER", "dossier_tracker")
                # Held, never redelivered; and no more taken than max_ack_pending (two batches in flight, one
                # arriving): the rest waits on the server.
                assert (held.num_ack_pending, held.num_pending, held.num_redelivered) == (15, 5, 0)
                # /metrics still answers meanwhile, without what it reads from the database.
                scrape = generate_latest(svc.registry).decode()
                assert counted("accepted") == 2 and "parwatch_dossiers_open" not in scrape
                proxy.accept()

                await wait_until(lambda: counted("accepted") == 22, timeout=60)
                dead = (await js.stream_info("TTHC_DEADLETTER")).state.messages
                assert counted("rejected") == 0 and counted("duplicate") == 0

    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            dossiers = conn.execute(sa.text("SELECT count(*) FROM tracker_dossier")).scalar_one()
            history = conn.execute(sa.text("SELECT count(*) FROM tracker_dossier_event")).scalar_one()
    finally:
        engine.dispose()
    assert dead == 0
    assert (dossiers, history) == (11, 22)
