"""WorkerProcess: an object built in a child process, its methods called there in order, failures sent back as
themselves, a dead child replaced, and no child left behind when its service dies."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest
from sqlalchemy import exc as sa_exc

from shared.backoff import is_retryable
from shared.process import WorkerDied, WorkerProcess
from shared.testing import EchoWorker

REPO = Path(__file__).resolve().parents[3]


async def test_calls_run_in_the_child_in_the_order_they_were_asked() -> None:
    worker = WorkerProcess(EchoWorker, "Xin chào")
    await worker.start()
    try:
        text, pid = await worker.run(EchoWorker.hello, "Tuy Phong", punctuation=".")
        assert text == "Xin chào, Tuy Phong." and pid != os.getpid()
        answers = await asyncio.gather(worker.run(EchoWorker.slow, 0.2, 1), worker.run(EchoWorker.slow, 0.0, 2),
                                       worker.run(EchoWorker.slow, 0.0, 3))
        assert answers == [1, 2, 3]
        assert await worker.run(EchoWorker.count) == 1  # one object, kept between calls
    finally:
        await worker.stop()


async def test_a_failure_comes_back_as_itself_so_the_consumer_rules_classify_it() -> None:
    worker = WorkerProcess(EchoWorker, "hi")
    await worker.start()
    try:
        with pytest.raises(sa_exc.OperationalError) as caught:
            await worker.run(EchoWorker.fail, sa_exc.OperationalError("INSERT", {}, Exception("database is locked")))
        assert is_retryable(caught.value)
        with pytest.raises(ValueError, match="bad data"):
            await worker.run(EchoWorker.fail, ValueError("bad data"))
        assert (await worker.run(EchoWorker.hello, "again"))[0] == "hi, again!"  # the child goes on
    finally:
        await worker.stop()


async def test_a_dead_child_fails_its_call_as_transient_and_a_new_one_takes_the_next() -> None:
    worker = WorkerProcess(EchoWorker, "hi")
    await worker.start()
    try:
        _, pid = await worker.run(EchoWorker.hello, "a")
        call = asyncio.create_task(worker.run(EchoWorker.slow, 30, 0))
        await asyncio.sleep(0.2)
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(WorkerDied) as caught:
            await call
        assert is_retryable(caught.value)
        _, new_pid = await worker.run(EchoWorker.hello, "b")
        assert new_pid != pid
    finally:
        await worker.stop()


async def test_stop_ends_the_child() -> None:
    worker = WorkerProcess(EchoWorker, "hi")
    await worker.start()
    _, pid = await worker.run(EchoWorker.hello, "a")
    await worker.stop()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_a_child_whose_service_is_killed_ends_too(tmp_path: Path) -> None:
    script = tmp_path / "service.py"
    script.write_text(textwrap.dedent("""
        import asyncio, sys
        from shared.process import WorkerProcess
        from shared.testing import EchoWorker

        async def main():
            worker = WorkerProcess(EchoWorker, "hi")
            await worker.start()
            _, pid = await worker.run(EchoWorker.hello, "x")
            print(pid, flush=True)
            await asyncio.sleep(600)

        asyncio.run(main())
    """))
    proc = subprocess.Popen([sys.executable, str(script)], cwd=REPO, stdout=subprocess.PIPE,
                            env=os.environ | {"PYTHONPATH": str(REPO)})
    try:
        assert proc.stdout is not None
        child = psutil.Process(int(proc.stdout.readline()))
        proc.send_signal(signal.SIGKILL)  # no stop(), no goodbye
        proc.wait(timeout=10)
        _, alive = psutil.wait_procs([child], timeout=10)
        assert not alive
    finally:
        if proc.poll() is None:
            proc.kill()
