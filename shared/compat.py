"""Compatibility shims between pinned libraries, each with its reason.

nats-py 2.16 ``PullSubscription.fetch`` can raise a bare
``asyncio.TimeoutError`` when the deadline runs out between its two pull
requests (nats-io/nats.py#934 moved that path), while FastStream 0.7's pull
loop catches only ``nats.errors.TimeoutError`` (a subclass of it). The bare
error escapes, FastStream's supervisor restarts the consumer task after a
pause, and consumption stalls for seconds. The shim turns the bare timeout
into the library's own, which is what both sides document.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from nats import errors as nats_errors
from nats.js.client import JetStreamContext

_PATCHED = "_parwatch_timeout_shim"


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
