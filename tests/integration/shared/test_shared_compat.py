"""The nats-py shims against a real nats-server."""

from __future__ import annotations

import asyncio

import nats
import pytest
from nats.aio.subscription import Subscription
from nats.js.api import StreamConfig

from shared.compat import install_fetch_timeout_shim, install_next_msg_fast_path

pytestmark = pytest.mark.asyncio


async def test_queued_messages_come_out_in_order_with_the_librarys_bookkeeping(own_nats_server) -> None:
    install_next_msg_fast_path()
    install_next_msg_fast_path()  # idempotent: one wrapper, not two
    assert getattr(Subscription.next_msg, "__wrapped__").__name__ == "next_msg"
    assert not hasattr(Subscription.next_msg.__wrapped__, "__wrapped__")
    nc = await nats.connect(own_nats_server.url)
    try:
        sub = await nc.subscribe("compat.test")
        for i in range(5):
            await nc.publish("compat.test", f"m{i}".encode())
        await nc.flush()
        for _ in range(50):  # until the read loop has queued all five
            if sub.pending_msgs == 5:
                break
            await asyncio.sleep(0.01)
        assert sub.pending_msgs == 5 and sub.pending_bytes == 10
        got = [(await sub.next_msg(timeout=1)).data for _ in range(5)]
        assert got == [b"m0", b"m1", b"m2", b"m3", b"m4"]
        assert sub.pending_msgs == 0 and sub.pending_bytes == 0
        with pytest.raises(nats.errors.TimeoutError):  # nothing queued: the library waits, then times out
            await sub.next_msg(timeout=0.1)
        waiter = asyncio.create_task(sub.next_msg(timeout=2))  # nothing queued yet: it waits for the next one
        await asyncio.sleep(0.05)
        await nc.publish("compat.test", b"late")
        assert (await waiter).data == b"late"
    finally:
        await nc.close()


async def test_a_pull_fetch_takes_a_whole_batch_through_the_fast_path(own_nats_server) -> None:
    install_fetch_timeout_shim()
    install_next_msg_fast_path()
    nc = await nats.connect(own_nats_server.url)
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="COMPAT", subjects=["compat.js"]))
        for i in range(300):
            await js.publish("compat.js", str(i).encode())
        sub = await js.pull_subscribe("compat.js", durable="compat")
        seen: list[int] = []
        while len(seen) < 300:
            for msg in await sub.fetch(120, timeout=2):
                seen.append(int(msg.data))
                await msg.ack()
        assert seen == list(range(300))
        with pytest.raises(nats.errors.TimeoutError):
            await sub.fetch(10, timeout=0.3)
    finally:
        await nc.close()
