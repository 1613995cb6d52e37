"""dossier_tracker's store work in a process of its own.

A batch costs the tracker about as much Python time to store (dedup, fold,
rows, SQLite) as to receive, parse, publish and ack, and one interpreter runs
one of them at a time: a worker thread only adds lock contention (measured in
docs/benchmarks.md). A separate process stores batch N while the service
fetches and parses batch N+1, each on its own core.

The process is started with ``spawn`` (no copy of the service's threads, locks
or connections) and opens its own engine; a failure inside it reaches the
caller as the same exception type, so the consumer rules classify it as
usual. If the process dies, the pool is rebuilt and the batch fails as a
transient error (redelivered, nothing lost).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from services.dossier_tracker.handlers import FactValues, Items, store_batch
from services.dossier_tracker.store import TrackerStore

log = logging.getLogger(__name__)

_STORE: TrackerStore | None = None


def _start(database_url: str, calendar_overrides: str | None, parent: int) -> None:
    global _STORE
    from shared.calendar import load_calendar
    from shared.db import make_engine
    from shared.process import settle_garbage_collector

    _STORE = TrackerStore(make_engine(database_url), calendar=load_calendar(calendar_overrides))
    threading.Thread(target=_exit_with, args=(parent,), name="parent-watch", daemon=True).start()
    settle_garbage_collector()


def _exit_with(parent: int, every: float = 1.0) -> None:
    """End this process when the service that started it is gone (killed: no shutdown reached it).

    A pool worker waits on its task queue, whose pipe it holds both ends of, so
    it would wait forever; an uncommitted transaction is rolled back.
    """
    while True:
        time.sleep(every)
        if os.getppid() != parent:
            os._exit(0)


def _apply(items: Items, now: dt.datetime) -> tuple[list[bool], list[FactValues]]:
    assert _STORE is not None, "worker not started"
    return store_batch(_STORE, items, now=now)


def _ready() -> bool:
    return _STORE is not None


class StoreProcessFailed(ConnectionError):
    """The store process died; the batch is retried (transient)."""


class StoreWorker:
    """The store's work on a batch of dossier events, run in one spawned process and awaited from the event loop."""

    def __init__(self, database_url: str, *, calendar_overrides: Path | None = None) -> None:
        self.database_url = database_url
        self.calendar_overrides = str(calendar_overrides) if calendar_overrides else None
        self._pool: ProcessPoolExecutor | None = None

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start,
            initargs=(self.database_url, self.calendar_overrides, os.getpid()),
        )

    async def start(self) -> None:
        self._pool = self._new_pool()
        await asyncio.get_running_loop().run_in_executor(self._pool, _ready)  # imports done before the first batch

    async def apply(self, items: Items, *, now: dt.datetime) -> tuple[list[bool], list[FactValues]]:
        if self._pool is None:
            raise RuntimeError("StoreWorker.start() was not called")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, _apply, list(items), now)
        except BrokenProcessPool as exc:
            log.error("store process died; starting a new one")
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
            raise StoreProcessFailed("the store process died") from exc

    async def stop(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)
