"""Publishing parwatch's own events with JetStream acks."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

from faststream.nats import NatsBroker

from shared.backoff import is_retryable
from shared.events import CONTENT_TYPE, CloudEvent, encode, headers_for
from shared.outbox import Delivered, Pending, Result, Retry
from shared.streams import stream_for

#: nats-server's cap on the messages of one atomic batch.
ATOMIC_BATCH_MAX = 1000


class BatchNotStored(ConnectionError):
    """The stream refused or lost an atomic batch: none of it is stored, publishing it again is safe."""


class JetStreamPublisher:
    """Publishes CloudEvents on a subject and waits for the stream's ack.

    ``Nats-Msg-Id`` is the event id, so a republished event inside the
    stream's duplicate window is stored once (not in atomic batches: see
    :meth:`_publish_atomic`).
    """

    def __init__(self, broker: NatsBroker, *, ack_timeout: float = 10.0) -> None:
        self.broker = broker
        self.ack_timeout = ack_timeout

    async def publish(self, event: CloudEvent[Any], *, subject: str) -> None:
        await self.publish_body(encode(event), subject=subject, msg_id=event.id)

    async def publish_body(self, body: bytes, *, subject: str, msg_id: str | None) -> None:
        """An encoded CloudEvent (an outbox's payload)."""
        headers = {"Content-Type": CONTENT_TYPE}
        if msg_id:
            headers["Nats-Msg-Id"] = msg_id
        await self.broker.publish(body, subject, headers=headers, stream=stream_for(subject).name,
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

    async def publish_many(self, events: Sequence[CloudEvent[Any]], *, subject: str) -> None:
        """Publish several events and wait until the stream stored every one.

        On a stream that allows atomic batches, one batch per
        :data:`ATOMIC_BATCH_MAX` events, stored all or none and acked once;
        elsewhere, pipelined publishes acked one by one. Raises on the first
        failure, so the caller's batch is retried.
        """
        if not events:
            return
        spec = stream_for(subject)
        if spec.allow_atomic:
            await self.publish_encoded([encode(e) for e in events], subject=subject)
            return
        js = self.broker.connection.jetstream()
        futures = [
            await js.publish_async(subject, encode(e), headers=headers_for(e) | {"Nats-Expected-Stream": spec.name})
            for e in events
        ]
        for future in futures:
            await future

    async def publish_encoded(self, bodies: Sequence[bytes], *, subject: str) -> None:
        """Encoded CloudEvents onto a stream that allows atomic batches, :data:`ATOMIC_BATCH_MAX` a batch."""
        spec = stream_for(subject)
        if not spec.allow_atomic:
            raise ValueError(f"{spec.name} does not take atomic batches")
        for start in range(0, len(bodies), ATOMIC_BATCH_MAX):
            await self._publish_atomic(bodies[start : start + ATOMIC_BATCH_MAX], subject=subject, stream=spec.name)

    async def _publish_atomic(self, bodies: Sequence[bytes], *, subject: str, stream: str) -> None:
        """One JetStream atomic batch (ADR-50): core publishes, the last one a request that commits.

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
