"""Publishing parwatch's own events with JetStream acks."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from faststream.nats import NatsBroker

from shared.events import CloudEvent, encode, headers_for
from shared.streams import stream_for


class JetStreamPublisher:
    """Publishes a CloudEvent on a subject and waits for the stream's ack.

    ``Nats-Msg-Id`` is the event id, so a republished event inside the
    stream's duplicate window is stored once.
    """

    def __init__(self, broker: NatsBroker) -> None:
        self.broker = broker

    async def publish(self, event: CloudEvent[Any], *, subject: str) -> None:
        await self.broker.publish(
            encode(event),
            subject,
            headers=headers_for(event),
            stream=stream_for(subject).name,
        )

    async def publish_many(self, events: Sequence[CloudEvent[Any]], *, subject: str) -> None:
        """Publish several events pipelined, then wait until the stream acked every one.

        Raises the first publish error, so the caller's batch is retried.
        """
        if not events:
            return
        js = self.broker.config.connection_state.stream
        stream = stream_for(subject).name
        futures = [
            await js.publish_async(subject, encode(e), headers=headers_for(e) | {"Nats-Expected-Stream": stream})
            for e in events
        ]
        await asyncio.gather(*futures)
