"""Stopping the monitor ends its background loops even when a cancellation is swallowed.

Python 3.11's ``asyncio.wait_for`` returns the awaited result, and drops the
cancellation, when the cancel and the result arrive in the same loop
iteration (cpython gh-86296). nats-py awaits every request through it, so the
tick's backlog probe (``consumer_info``) can swallow ``Service.stop``'s cancel;
the tick loop then went on and ``stop`` waited for it forever (the hang of
``test_a_backlog_read_after_a_stop_alerts_only_for_what_is_still_late`` under
load). These tests make that race happen on purpose, on the monitor as
``create_app`` wires it, against a real nats-server.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from types import SimpleNamespace
from typing import Any

import pytest

from services.deadline_monitor.app import create_app
from services.deadline_monitor.settings import MonitorSettings
from shared.service import Service
from shared.settings import CommonSettings


def monitor(nats_url: str, sqlite_url: str, **overrides: Any) -> tuple[Service, Any]:
    settings = MonitorSettings(include_shipped_plans=False, port=0, tick_interval=0.01, **overrides)
    clock = lambda: dt.datetime(2026, 11, 30, 1, tzinfo=dt.UTC)
    return create_app(CommonSettings(nats_url=nats_url, database_url=sqlite_url), settings, clock=clock)


async def stopped_within(seconds: float, service: Service) -> None:
    """``service.stop()`` in a task of its own, so that giving up on it cancels nothing it awaits."""
    stopping = asyncio.create_task(service.stop())
    done, _ = await asyncio.wait({stopping}, timeout=seconds)
    assert stopping in done, f"Service.stop() still running after {seconds}s"
    await stopping


def task_named(service: Service, name: str) -> asyncio.Task[None]:
    [task] = [t for t in service._tasks if t.get_name() == f"deadline_monitor:{name}"]
    return task


async def test_stop_ends_the_tick_loop_when_its_probe_swallows_the_cancel(own_nats_server, sqlite_url: str) -> None:
    service, app = monitor(own_nats_server.url, sqlite_url)
    loop = asyncio.get_running_loop()
    reply: asyncio.Future[Any] = loop.create_future()
    probing = asyncio.Event()

    async def consumer_info(stream: str, durable: str) -> Any:
        """Like nats-py's ``Client.request``: the reply future awaited through ``wait_for``."""
        nonlocal reply
        reply = loop.create_future()
        probing.set()
        return await asyncio.wait_for(reply, timeout=5)

    app.state.monitor.backlog.consumer_info = consumer_info
    await service.start()
    task = task_named(service, "tick")
    try:
        await asyncio.wait_for(probing.wait(), timeout=5)
        reply.set_result(SimpleNamespace(num_pending=0, num_ack_pending=0))  # in the loop iteration of the cancel
        await stopped_within(5, service)  # without the re-cancel: stop() never returns
        assert task.cancelled()
        assert not await service.broker.ping(timeout=1)  # and it went on to close the connection
    finally:
        for _ in range(100):  # do not leave a runaway loop behind a failed test
            if task.done():
                break
            task.cancel()
            await asyncio.sleep(0.01)


async def test_stop_gives_up_on_a_loop_that_refuses_to_end_and_says_so(
    own_nats_server, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    service, _ = monitor(own_nats_server.url, sqlite_url)
    service.stop_timeout = 0.3
    release = asyncio.Event()
    running = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            running.set()
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                pass

    service.background.append(stubborn)
    await service.start()
    task = task_named(service, "stubborn")
    await asyncio.wait_for(running.wait(), timeout=5)  # the loop runs: a cancel now reaches its sleep
    try:
        with caplog.at_level(logging.ERROR, logger="shared.service"):
            await stopped_within(5, service)
        assert "background task did not stop name=deadline_monitor:stubborn" in caplog.text
        assert not task.done()  # left behind, as the log says
        assert not await service.broker.ping(timeout=1)  # and the stop went on to close the connection
    finally:
        release.set()
        await asyncio.wait({task}, timeout=5)
