"""Stopping the monitor's service ends its background loops even when a cancellation is swallowed.

Python 3.11's ``asyncio.wait_for`` returns the awaited result, and drops the
cancellation, when the cancel and the result arrive in the same loop
iteration (cpython gh-86296). nats-py awaits every request through it, so the
tick loop's backlog probe (``consumer_info``) can swallow ``Service.stop``'s
cancel; the loop then ticked on and ``stop`` waited for it forever (the hang of
``test_a_backlog_read_after_a_stop_alerts_only_for_what_is_still_late`` under
load). These tests make that race happen on purpose.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from services.deadline_monitor.monitor import Monitor
from shared import service as service_module
from shared.service import Service
from shared.settings import CommonSettings


class FakeBroker:
    def __init__(self) -> None:
        self.config = SimpleNamespace(connection_state=SimpleNamespace(stream=None))
        self.subscribers: list[Any] = []
        self.stopped = False

    async def connect(self) -> None:
        pass

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self.stopped = True


class NoWorkStore:
    """A tick with nothing to do."""

    def tick_steps(self, *, now: dt.datetime, dossiers: bool = True) -> list[Any]:
        return []


def service_with(background: list[Any], monkeypatch: pytest.MonkeyPatch, **kw: Any) -> Service:
    async def no_streams(*args: Any, **kwargs: Any) -> None:
        pass

    monkeypatch.setattr(service_module, "ensure_streams", no_streams)
    return Service(
        name="deadline_monitor",
        port=0,
        broker=FakeBroker(),  # type: ignore[arg-type]
        registry=CollectorRegistry(),
        settings=CommonSettings(),
        background=background,
        **kw,
    )


async def stopped_within(seconds: float, service: Service) -> None:
    """``service.stop()`` in a task of its own, so that giving up on it cancels nothing it awaits."""
    stopping = asyncio.create_task(service.stop())
    done, _ = await asyncio.wait({stopping}, timeout=seconds)
    assert stopping in done, f"Service.stop() still running after {seconds}s"
    await stopping


async def test_stop_ends_the_tick_loop_when_its_probe_swallows_the_cancel(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()
    reply: asyncio.Future[int] = loop.create_future()
    probing = asyncio.Event()

    async def upstream_backlog() -> int:
        """Like nats-py's ``Client.request``: the reply future awaited through ``wait_for``."""
        nonlocal reply
        reply = loop.create_future()
        probing.set()
        return await asyncio.wait_for(reply, timeout=5)

    monitor = Monitor(
        store=NoWorkStore(),  # type: ignore[arg-type]
        outbox=None,
        clock=lambda: dt.datetime(2026, 11, 30, 1, tzinfo=dt.UTC),
        district_code="TUY_PHONG",
        tick_interval=0.01,
        upstream_backlog=upstream_backlog,
    )
    service = service_with([monitor.run_ticks], monkeypatch)
    await service.start()
    task = service._tasks[0]
    try:
        await asyncio.wait_for(probing.wait(), timeout=5)
        reply.set_result(0)  # the reply comes in the same loop iteration as the stop's cancel
        await stopped_within(5, service)  # without the fix: stop() never returns
        assert task.cancelled()
        assert service.broker.stopped
    finally:
        for _ in range(100):  # do not leave a runaway loop behind a failed test
            if task.done():
                break
            task.cancel()
            await asyncio.sleep(0.01)


async def test_stop_gives_up_on_a_loop_that_refuses_to_end_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                pass

    service = service_with([stubborn], monkeypatch, stop_timeout=0.3)
    await service.start()
    task = service._tasks[0]
    await asyncio.sleep(0.05)  # the loop runs: a cancel now reaches its sleep
    try:
        with caplog.at_level(logging.ERROR, logger="shared.service"):
            await stopped_within(5, service)
        assert service.broker.stopped
        assert "background task did not stop name=deadline_monitor:stubborn" in caplog.text
    finally:
        release.set()
        await asyncio.wait({task}, timeout=5)
