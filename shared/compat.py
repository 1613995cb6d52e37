"""Compatibility shims between pinned libraries, each with its reason.

nats-py 2.16 ``PullSubscription.fetch`` can raise a bare
``asyncio.TimeoutError`` when the deadline runs out between its two pull
requests (nats-io/nats.py#934 moved that path), while FastStream 0.7's pull
loop catches only ``nats.errors.TimeoutError`` (a subclass of it). The bare
error escapes, FastStream's supervisor restarts the consumer task after a
pause, and consumption stalls for seconds. The shim turns the bare timeout
into the library's own, which is what both sides document.

nats-py 2.16 ``Subscription.next_msg`` costs tens of microseconds a message
even when the message is already queued: a ``uuid4`` (a ``getrandom`` call),
a task and an ``asyncio.wait_for`` each time, and ``PullSubscription.fetch``
calls it once per message of a batch (nats-io/nats.py#862 measures about
29,000 messages/s through it). The fast path hands out a message already in
the subscription's queue directly, with the same bookkeeping, and leaves
waiting for one to the library.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from nats import errors as nats_errors
from nats.aio.subscription import Subscription
from nats.js.client import JetStreamContext

_PATCHED = "_parwatch_shim"  # marks a method this module replaced


def install_fetch_timeout_shim() -> None:
    cls = JetStreamContext.PullSubscription
    if getattr(cls.fetch, _PATCHED, False):
        return
    original = cls.fetch

    @functools.wraps(original)
    async def fetch(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await original(self, *args, **kwargs)
        except nats_errors.TimeoutError:
            raise
        except asyncio.TimeoutError as exc:
            raise nats_errors.TimeoutError from exc

    setattr(fetch, _PATCHED, True)
    cls.fetch = fetch  # type: ignore[method-assign]


def next_msg_fast_path_installed() -> bool:
    return bool(getattr(Subscription.next_msg, _PATCHED, False))


def install_next_msg_fast_path() -> None:
    if next_msg_fast_path_installed():
        return
    original = Subscription.next_msg

    @functools.wraps(original)
    async def next_msg(self: Any, timeout: float | None = 1.0) -> Any:
        if not self._cb and not self._conn.is_closed:
            try:
                msg = self._pending_queue.get_nowait()
            except asyncio.QueueEmpty:
                pass
            else:  # what the library does once its task got the message
                self._pending_size -= len(msg.data)
                self._pending_queue.task_done()
                return msg
        return await original(self, timeout)

    setattr(next_msg, _PATCHED, True)
    Subscription.next_msg = next_msg  # type: ignore[method-assign]
