"""Work that runs in a process of its own, beside a service's event loop.

One interpreter runs one thread of Python at a time. When a service's own
work costs about as much Python time as receiving and decoding its messages
(dossier_tracker's store: the fold, the rows, SQLite), a thread for it only
adds contention for that lock. :class:`WorkerProcess` builds the object that
does the work in a child process and calls its methods there, one at a
time, in the order they were asked for, while the event loop goes on
receiving.

The calls travel as pickled frames over the child's stdin and stdout, read
and written by the event loop itself. (``concurrent.futures``'
``ProcessPoolExecutor`` moves them with two helper threads, which wait for
the event loop's hold on the interpreter lock: 50 to 200 ms a batch under
load, measured, during which the child sat idle.)

A failure inside a call reaches the caller as the same exception, so the
consumer rules classify it as usual. If the child dies, the call fails as
:class:`WorkerDied` (a transient failure: the batch is redelivered) and the
next call starts a new child. If the service dies, the child reads the end
of its stdin and exits; its open transaction is rolled back.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import importlib
import logging
import os
import pickle
import signal
import struct
import sys
from collections.abc import Callable
from typing import Any, BinaryIO, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

_LENGTH = struct.Struct("!Q")


class WorkerDied(ConnectionError):
    """The worker process ended before it answered; the call may be made again."""


class WorkerError(RuntimeError):
    """An exception in the worker that could not travel back as itself (its text does)."""


def _frame(value: object) -> bytes:
    body = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(body)) + body


class WorkerProcess(Generic[T]):
    """The object ``factory(*args)`` built in a child process; :meth:`run` calls a method of it there.

    ``factory`` is a module-level function (``"package.module:function"`` is
    looked up in the child); ``args`` must pickle.
    """

    def __init__(self, factory: Callable[..., T], *args: Any) -> None:
        self.target = f"{factory.__module__}:{factory.__qualname__}"
        self.args = args
        self._proc: asyncio.subprocess.Process | None = None
        self._waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the child and wait until it built its object (imports done before the first call)."""
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shared.process",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read_answers(self._proc), name=f"worker:{self.target}")
        await self._ask((self.target, self.args))

    async def run(self, method: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
        """``method(obj, *args, **kwargs)`` in the child (``method``: e.g. ``Store.apply_batch``)."""
        if self._proc is None:
            raise RuntimeError("WorkerProcess.start() was not called")
        if self._reader is None or self._reader.done():  # the child's answers ended: it is gone
            log.error("worker process ended (code %s); starting a new one", await self._proc.wait())
            await self.start()
        return await self._ask((method, args, kwargs))

    async def _ask(self, request: object) -> Any:
        assert self._proc is not None and self._proc.stdin is not None
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append(answer)
        try:
            self._proc.stdin.write(_frame(request))
            await self._proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise WorkerDied("the worker process is gone") from exc
        ok, value = await answer
        if ok:
            return value
        raise value

    async def _read_answers(self, proc: asyncio.subprocess.Process) -> None:
        """Answers come back in the order the calls were sent."""
        assert proc.stdout is not None
        try:
            while True:
                head = await proc.stdout.readexactly(_LENGTH.size)
                body = await proc.stdout.readexactly(_LENGTH.unpack(head)[0])
                answer = self._waiting.popleft()
                if not answer.done():
                    answer.set_result(pickle.loads(body))
        except asyncio.IncompleteReadError:
            pass
        finally:
            while self._waiting:
                answer = self._waiting.popleft()
                if not answer.done():
                    answer.set_exception(WorkerDied("the worker process ended"))

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()  # the child ends at the end of its input
        try:
            await asyncio.wait_for(proc.wait(), timeout=30)
        except TimeoutError:
            log.error("worker process did not end; killing it")
            proc.kill()
            await proc.wait()
        if self._reader is not None:
            await self._reader


# -- the child ------------------------------------------------------------------------------------------


def _read(stream: BinaryIO) -> bytes:
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        raise EOFError
    return stream.read(_LENGTH.unpack(head)[0])


def _answer(stream: BinaryIO, ok: bool, value: object) -> None:
    try:
        frame = _frame((ok, value))
    except Exception:  # an exception that does not pickle: its type and text do
        frame = _frame((False, WorkerError(f"{type(value).__name__}: {value}")))
    stream.write(frame)
    stream.flush()


def build(source: BinaryIO) -> object:
    """The object the first frame names: ``factory(*args)``."""
    target, args = pickle.loads(_read(source))
    module, _, name = target.partition(":")
    factory = getattr(importlib.import_module(module), name)
    return factory(*args)


def serve(obj: object, source: BinaryIO, sink: BinaryIO) -> None:
    """The child's loop: say the object is built, then answer each call, until the end of the input."""
    _answer(sink, True, None)
    while True:
        try:
            request = _read(source)
        except EOFError:
            return
        try:
            method, args, kwargs = pickle.loads(request)
            result = method(obj, *args, **kwargs)
        except Exception as exc:  # sent back: the caller classifies it
            _answer(sink, False, exc)
        else:
            _answer(sink, True, result)


def main() -> None:
    """``python -m shared.process``: the worker's entry point. Its stdout carries answers only.

    It ignores Ctrl-C (its parent decides when it ends, by closing its input)
    and ends when its parent is gone.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sink = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # anything printed goes to stderr, not into the answers
    from shared.logs import one_line_handler  # every record one escaped line (shared/logs.py)

    logging.basicConfig(level=logging.WARNING,
                        handlers=[one_line_handler("%(asctime)s %(levelname)s worker %(name)s: %(message)s")])
    with contextlib.suppress(BrokenPipeError):
        obj = build(sys.stdin.buffer)
        # What the worker loaded (modules, engine, caches) lives as long as it does: out of the cycle
        # collector's sight. The tracker's store spent about a sixth of its time collecting otherwise.
        gc.freeze()
        serve(obj, sys.stdin.buffer, sink)


if __name__ == "__main__":
    main()
