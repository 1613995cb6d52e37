"""The one periodic loop: again at once while there is more, after the interval or a wake otherwise,
retryable failures waited out, the rest raised. Driven by the steps themselves: no test waits to see that
something did not happen."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from sqlalchemy import exc as sa_exc

from shared.backoff import Backoff
from shared.periodic import Wake, run_every
from shared.testing import wait_until

HOUR = 3600.0


@contextlib.asynccontextmanager
async def looping(step, **kwargs):  # type: ignore[no-untyped-def]
    task = asyncio.create_task(run_every(HOUR, step, name="test", **kwargs))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_step_with_more_to_do_runs_again_at_once() -> None:
    calls: list[int] = []

    async def step() -> bool:
        calls.append(len(calls))
        return len(calls) < 4  # three full batches, then a partial one

    async with looping(step):
        await wait_until(lambda: len(calls) == 4, timeout=5)  # the hour-long interval never elapsed


async def test_a_wake_cuts_the_wait_short() -> None:
    calls: list[int] = []
    wake = Wake()

    async def step() -> bool:
        calls.append(1)
        return False

    async with looping(step, wake=wake):
        await wait_until(lambda: len(calls) == 1, timeout=5)
        wake()
        await wait_until(lambda: len(calls) == 2, timeout=5)


async def test_a_wake_during_the_step_is_not_lost() -> None:
    calls: list[int] = []
    wake = Wake()

    async def step() -> bool:
        calls.append(1)
        if len(calls) == 1:
            wake()  # something was committed while this pass ran
        return False

    async with looping(step, wake=wake):
        await wait_until(lambda: len(calls) == 2, timeout=5)


async def test_a_retryable_failure_is_waited_out_and_the_loop_goes_on() -> None:
    calls: list[int] = []

    async def step() -> bool:
        calls.append(1)
        if len(calls) <= 2:
            raise sa_exc.OperationalError("SELECT", {}, Exception("database is locked"))
        return False

    async with looping(step, backoff=Backoff(first=0.01, cap=0.02)):
        await wait_until(lambda: len(calls) == 3, timeout=5)


async def test_any_other_failure_ends_the_loop_with_it() -> None:
    async def step() -> bool:
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        await asyncio.wait_for(run_every(HOUR, step, name="test"), timeout=5)
