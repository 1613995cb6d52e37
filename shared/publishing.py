"""Publishing parwatch's own events with JetStream acks.

A message published alone or in a small group carries ``Nats-Msg-Id`` = its
event id, so one published again (a batch redelivered after a crash, an
outbox message sent twice) is stored once inside the stream's duplicate
window; consumers keep their own idempotence beyond it. Events of many
sources republished on one stream (dossier_tracker's accepted ratings and
plan reports) carry :func:`source_scoped_id` instead: two sources may use the
same event id, and the broker would keep only the first of them.

Many messages at once (a backlog drained) go to a stream that allows it as
JetStream atomic batches (ADR-50, nats-server 2.12 or later): about 10 µs of
the publisher's CPU a message against 45 µs for pipelined publishes, whose
nats-py acks cost a random token each. A small group is not sent that way: a
commit took 4-5 ms even for one message, and up to 470 ms at times, on
nats-server 2.15 (docs/benchmarks.md), which an event at a quiet hour would
wait for.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from faststream.nats import NatsBroker
from nats.js import JetStreamContext

from shared.backoff import is_retryable
from shared.events import CONTENT_TYPE, CloudEvent, encode
from shared.outbox import Delivered, Pending, Result, Retry
from shared.streams import stream_for

#: From this many messages on, to a stream that allows it, one atomic batch (per ATOMIC_BATCH_MAX) instead of
#: pipelined publishes.
ATOMIC_FROM = 256
#: nats-server's cap on the messages of one atomic batch.
ATOMIC_BATCH_MAX = 1000


def source_scoped_id(event: CloudEvent[Any]) -> str:
    """The broker's dedup id of an event of any source: a digest of its type, source and id.

    The contract makes (``source``, ``id``) an event's identity; the id alone
    is only unique within its source. A digest keeps the header short and
    free of whatever characters a source put in its ids.
    """
    identity = json.dumps([event.type, event.source, event.id], ensure_ascii=True)
    return hashlib.sha256(identity.encode()).hexdigest()


class BatchNotStored(ConnectionError):
    """The stream refused or lost an atomic batch: none of it is stored, publishing it again is safe."""


class JetStreamPublisher:
    """Publishes CloudEvents on a subject and waits for the stream's acks."""

    def __init__(self, broker: NatsBroker, *, ack_timeout: float = 10.0) -> None:
        self.broker = broker
        self.ack_timeout = ack_timeout
        self._js: JetStreamContext | None = None  # one: each holds its own reply subscription for the acks

    async def publish(self, event: CloudEvent[Any], *, subject: str) -> None:
        await self.publish_body(encode(event), subject=subject, msg_id=event.id)

    async def publish_body(self, body: bytes, *, subject: str, msg_id: str | None) -> None:
        """An encoded CloudEvent (an outbox's payload)."""
        await self.broker.publish(body, subject, headers=_headers(msg_id), stream=stream_for(subject).name,
                                  timeout=self.ack_timeout)

    async def deliver(self, pending: Pending) -> Result:
        """An outbox message delivered to its subject (:class:`shared.outbox.Relay`'s delivery)."""
        try:
            await self.publish_body(pending.payload.encode(), subject=pending.topic, msg_id=pending.message_id)
        except Exception as exc:
            if is_retryable(exc):
                return Retry(f"publish failed ({type(exc).__name__})")
            raise
        return Delivered()

    async def publish_many(
        self,
        events: Sequence[CloudEvent[Any]],
        *,
        subject: str,
        msg_id: Callable[[CloudEvent[Any]], str] | None = None,
    ) -> None:
        """Several events, pipelined; returns once the stream acked every one, raises on the first failure.

        ``msg_id``: an event's ``Nats-Msg-Id`` (default its id; :func:`source_scoped_id` for many sources' events).
        """
        key = msg_id or _event_id
        await self.publish_encoded([(key(e), encode(e)) for e in events], subject=subject)

    async def publish_encoded(self, messages: Sequence[tuple[str, bytes]], *, subject: str) -> None:
        """Encoded events, given as (event id, body); returns once the stream stored every one.

        Pipelined publishes, each acked, or, from :data:`ATOMIC_FROM` messages on a stream that allows it, atomic
        batches of at most :data:`ATOMIC_BATCH_MAX`. Raises on the first failure, so the caller's batch is retried.
        """
        if not messages:
            return
        spec = stream_for(subject)
        if spec.allow_atomic and len(messages) >= ATOMIC_FROM:
            bodies = [body for _, body in messages]
            for start in range(0, len(bodies), ATOMIC_BATCH_MAX):
                await self._publish_atomic(bodies[start : start + ATOMIC_BATCH_MAX], subject=subject, stream=spec.name)
            return
        if self._js is None:
            self._js = self.broker.connection.jetstream()
        acks = [
            await self._js.publish_async(subject, body, headers=_headers(msg_id) | {"Nats-Expected-Stream": spec.name})
            for msg_id, body in messages
        ]
        await asyncio.wait_for(asyncio.gather(*acks), timeout=self.ack_timeout)

    async def _publish_atomic(self, bodies: Sequence[bytes], *, subject: str, stream: str) -> None:
        """One JetStream atomic batch: core publishes, the last one a request that commits.

        ``Nats-Msg-Id`` is left out: the server refuses a whole atomic batch
        that holds an id it has seen, and a batch published again after a
        crash holds only such ids. Readers of these facts are idempotent by
        content (the highest revision wins).
        """
        nc = self.broker.connection
        batch_id = uuid.uuid4().hex
        last = len(bodies)
        for i, body in enumerate(bodies, start=1):
            headers = {"Content-Type": CONTENT_TYPE, "Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(i)}
            if i < last:
                await nc.publish(subject, body, headers=headers)
                continue
            headers["Nats-Batch-Commit"] = "1"
            reply = await nc.request(subject, body, headers=headers, timeout=self.ack_timeout)
            try:
                ack = json.loads(reply.data)
            except ValueError:
                raise BatchNotStored(f"unreadable reply to an atomic batch on {subject}") from None
            error = ack.get("error")
            if error:
                raise BatchNotStored(f"stream refused an atomic batch on {subject}: {error.get('description', error)}")
            if ack.get("stream") != stream or ack.get("count") != last:
                raise BatchNotStored(f"atomic batch on {subject} acked as {ack.get('count')} in {ack.get('stream')}")


def _event_id(event: CloudEvent[Any]) -> str:
    return event.id


def _headers(msg_id: str | None) -> dict[str, str]:
    headers = {"Content-Type": CONTENT_TYPE}
    if msg_id:
        headers["Nats-Msg-Id"] = msg_id
    return headers
