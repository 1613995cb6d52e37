"""At-least-once processing of JetStream batches with classified failures.

The rules every parwatch consumer follows:

* A message that cannot be accepted (bad JSON, schema violation, unknown
  type, too large) is republished to ``tthc.deadletter`` with a reason, once
  (the dead letter's id is derived from the stream sequence, so a redelivery
  does not publish a second one), then acked; the pipeline goes on.
* A transient failure (database unavailable, lock timeout) naks the batch
  with a growing delay; after ``max_deliver`` deliveries the message is dead
  lettered with the reason, so it is never silently dropped and can be
  replayed from its stream.
* Any other exception isolates the failing message: the batch is retried one
  message at a time, the exception is logged with its traceback (never the
  payload), and the message is retried with delay like a transient failure
  (a fixed deploy may still take it) before it is dead lettered.
* Acks happen only after the work is committed. Handlers are idempotent, so
  a redelivery after a crash between commit and ack changes nothing.
* With ``in_flight`` > 0, a batch is applied while the next ones are fetched
  and parsed: at most ``in_flight`` batches are handed over and not yet acked,
  their applies start in the order the batches were fetched, and the service
  settles them before it closes its connection (:func:`settle_batches`). For
  a handler that does its work elsewhere (dossier_tracker's store process);
  one that shares the interpreter only adds lock contention.

FastStream's default ack policy terminates a message on the first error;
subscribers here use ``AckPolicy.MANUAL`` and this module decides.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import datetime as dt
import logging
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from faststream import AckPolicy, Context
from faststream.nats import JStream, NatsRouter, PullSub
from faststream.nats.message import NatsBatchMessage
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig
from prometheus_client import CollectorRegistry, Counter

from shared.db import is_conflict, is_transient
from shared.events import (
    DEADLETTER_TYPE,
    CloudEvent,
    DeadLetter,
    EventRejected,
    new_event,
    parse_event,
)
from shared.streams import DEADLETTER, stream_for

log = logging.getLogger(__name__)


class Outcome(str, Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class Delivery:
    """One parsed message with where it came from."""

    event: CloudEvent[Any]
    stream: str
    stream_seq: int
    subject: str
    num_delivered: int
    raw: Msg | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded redeliveries with exponential delay (seconds)."""

    max_deliver: int = 12
    first_delay: float = 1.0
    max_delay: float = 120.0
    ack_wait: float = 60.0

    def delay(self, num_delivered: int) -> float:
        return min(self.max_delay, self.first_delay * (2 ** max(0, num_delivered - 1)))


class Publisher(Protocol):
    async def publish(self, event: CloudEvent[Any], *, subject: str) -> None: ...

    async def publish_many(self, events: Sequence[CloudEvent[Any]], *, subject: str) -> None: ...


Apply = Callable[[Sequence[Delivery]], Awaitable[Sequence[Outcome]]]


class EventCounter:
    """``parwatch_events_total``: one per process that ingests public streams."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.counter = Counter(
            "parwatch_events_total",
            "Events taken from the public input streams, by result.",
            ["stream", "result"],
            registry=registry,
        )

    def count(self, stream: str, result: str, n: int = 1) -> None:
        if n:
            self.counter.labels(stream=stream, result=result).inc(n)


def _clock() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


#: Batches handed over (``in_flight``) and not yet applied and acked.
_IN_FLIGHT: weakref.WeakSet[asyncio.Task[None]] = weakref.WeakSet()


async def settle_batches(timeout: float = 30.0) -> None:
    """Wait for every batch in flight to be applied and acked (a service's stop, after its subscribers stopped)."""
    tasks = [t for t in _IN_FLIGHT if not t.done()]
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:  # left unacked: JetStream redelivers them after ack_wait
        log.error("batch still in flight after %.0fs at stop; cancelling it", timeout)
        task.cancel()


class BatchProcessor:
    """Parses, applies and acknowledges one batch of JetStream messages."""

    def __init__(
        self,
        *,
        service: str,
        accept: frozenset[str],
        apply: Apply,
        publisher: Publisher,
        counter: EventCounter | None = None,
        retry: RetryPolicy | None = None,
        clock: Callable[[], dt.datetime] = _clock,
        in_flight: int = 0,
    ) -> None:
        self.service = service
        self.accept = accept
        self.apply = apply
        self.publisher = publisher
        self.counter = counter
        self.retry = retry or RetryPolicy()
        self.clock = clock
        self.in_flight = in_flight
        self._in_flight: collections.deque[asyncio.Task[None]] = collections.deque()

    async def handle(self, raws: Sequence[Msg]) -> None:
        """Parse a batch, dead-letter what cannot be accepted, apply the rest and ack.

        With ``in_flight`` the apply runs as a task and this returns at once,
        so the next batch is fetched and parsed meanwhile; with that many
        batches in flight already, it first waits for the oldest.
        """
        deliveries = await self._parse(raws)
        if not self.in_flight:
            if deliveries:
                await self._apply(deliveries, isolate=len(deliveries) > 1)
            return
        while self._in_flight and (self._in_flight[0].done() or len(self._in_flight) >= self.in_flight):
            await self._settle_oldest()
        if deliveries:
            task = asyncio.create_task(self._apply(deliveries, isolate=len(deliveries) > 1))
            self._in_flight.append(task)
            _IN_FLIGHT.add(task)

    async def settle(self) -> None:
        """Wait until every batch in flight has been applied and acked."""
        while self._in_flight:
            await self._settle_oldest()

    async def _settle_oldest(self) -> None:
        task = self._in_flight.popleft()
        try:
            await task
        except Exception:  # its messages stay unacked: JetStream redelivers them after ack_wait
            log.exception("batch in flight failed service=%s", self.service)

    async def _parse(self, raws: Sequence[Msg]) -> list[Delivery]:
        deliveries: list[Delivery] = []
        for raw in raws:
            md = raw.metadata
            try:
                event = parse_event(raw.data, accept=self.accept)
            except EventRejected as exc:
                await self.reject(raw, reason=exc.reason)
                continue
            deliveries.append(
                Delivery(
                    event=event,
                    stream=md.stream,
                    stream_seq=md.sequence.stream,
                    subject=raw.subject,
                    num_delivered=md.num_delivered,
                    raw=raw,
                )
            )
        return deliveries

    async def _apply(self, deliveries: Sequence[Delivery], *, isolate: bool) -> None:
        try:
            outcomes = await self.apply(deliveries)
        except Exception as exc:  # classified below, never swallowed
            if is_transient(exc) or is_conflict(exc):
                log.warning(
                    "transient failure service=%s batch=%d error=%s", self.service, len(deliveries), type(exc).__name__
                )
                await self._retry_later(deliveries, why=f"transient failure ({type(exc).__name__})")
                return
            if isolate:
                log.warning("batch failed service=%s batch=%d; retrying one by one", self.service, len(deliveries))
                for d in deliveries:
                    await self._apply([d], isolate=False)
                return
            d = deliveries[0]
            log.exception(
                "processing failed service=%s stream=%s seq=%d delivered=%d",
                self.service,
                d.stream,
                d.stream_seq,
                d.num_delivered,
            )
            await self._retry_later(deliveries, why=f"processing failed ({type(exc).__name__})")
            return
        # Counted once a batch: a labels() lookup per message cost more than its ack.
        counts = collections.Counter((d.stream, o.value) for d, o in zip(deliveries, outcomes, strict=True))
        if self.counter:
            for (stream, result), n in counts.items():
                self.counter.count(stream, result, n)
        for d in deliveries:
            if d.raw is not None:
                await d.raw.ack()

    async def _retry_later(self, deliveries: Sequence[Delivery], *, why: str) -> None:
        for d in deliveries:
            if d.num_delivered >= self.retry.max_deliver:
                await self.reject(d.raw, reason=f"{why}; gave up after {d.num_delivered} deliveries", delivery=d)
            elif d.raw is not None:
                await d.raw.nak(delay=self.retry.delay(d.num_delivered))

    async def reject(self, raw: Msg | None, *, reason: str, delivery: Delivery | None = None) -> None:
        """Dead-letter one message (once per stream sequence), then ack it."""
        if raw is not None:
            md = raw.metadata
            stream, seq, subject = md.stream, md.sequence.stream, raw.subject
        else:
            assert delivery is not None
            stream, seq, subject = delivery.stream, delivery.stream_seq, delivery.subject
        letter = new_event(
            type=DEADLETTER_TYPE,
            source=f"parwatch/{self.service}",
            id=f"deadletter:{stream}:{seq}",
            subject=subject,
            data=DeadLetter(
                stream=stream,
                stream_seq=seq,
                subject=subject,
                reason=reason[:2000],
                received_at=self.clock(),
            ),
        )
        await self.publisher.publish(letter, subject=DEADLETTER)
        log.warning("message rejected service=%s stream=%s seq=%d reason=%s", self.service, stream, seq, reason)
        if self.counter:
            self.counter.count(stream, "rejected")
        if raw is not None:
            await raw.ack()


def subscribe_batches(
    router: NatsRouter,
    *,
    subject: str,
    durable: str,
    processor: BatchProcessor,
    batch_size: int,
    batch_timeout: float,
) -> None:
    """A durable pull consumer on ``subject`` whose batches ``processor`` handles.

    Manual acks: FastStream's default policy would terminate a message on the
    first error; :class:`BatchProcessor` decides instead. JetStream's own
    ``max_deliver`` sits one above the processor's, so the processor always
    gets the last delivery and dead-letters it with a reason.
    """
    retry = processor.retry

    async def handle(msg: NatsBatchMessage = Context("message")) -> None:
        # In a context of its own: FastStream's holds the batch message (every
        # raw message of the batch), and a timer scheduled under it (a
        # publish's ack timeout) keeps a copy of that context until it would
        # have fired, cancelled or not. With 10 s ack timeouts a draining
        # tracker kept up to thirty batches alive, about 60 MiB.
        await asyncio.create_task(processor.handle(msg.raw_message), context=contextvars.Context())

    async def raw_bodies(msg: NatsBatchMessage) -> list[bytes]:
        # FastStream's batch decoder decodes every body as JSON and builds a
        # message object (with a fresh uuid4) for each, values the handler
        # never reads: the processor parses the raw messages itself.
        return list(msg.body)

    router.subscriber(
        subject,
        stream=JStream(name=stream_for(subject).name, declare=False),
        durable=durable,
        pull_sub=PullSub(batch_size=batch_size, timeout=batch_timeout, batch=True),
        ack_policy=AckPolicy.MANUAL,
        config=ConsumerConfig(
            max_deliver=retry.max_deliver + 1,
            ack_wait=retry.ack_wait,
            # Room for the batches in flight and the one being fetched: at the
            # server's default (1,000) the fetch of the next batch waits for the
            # acks of an earlier one, and the store idles meanwhile.
            max_ack_pending=max(1000, batch_size * (processor.in_flight + 2)),
        ),
        decoder=raw_bodies,
        title=f"{processor.service}.{durable}",
    )(handle)


@dataclass(frozen=True)
class Route:
    """One subscription of a service: what it reads, under which durable name, and what applies it."""

    subject: str
    durable: str
    accept: str
    apply: Apply


def consumer_router(
    *,
    service: str,
    routes: Sequence[Route],
    publisher: Publisher,
    retry: RetryPolicy,
    clock: Callable[[], dt.datetime],
    batch_size: int,
    batch_timeout: float,
    counter: EventCounter | None = None,
    in_flight: int = 0,
) -> NatsRouter:
    """A router with one durable batch consumer per route, each under the consumer rules above."""
    router = NatsRouter()
    for route in routes:
        processor = BatchProcessor(
            service=service,
            accept=frozenset({route.accept}),
            apply=route.apply,
            publisher=publisher,
            counter=counter,
            retry=retry,
            clock=clock,
            in_flight=in_flight,
        )
        subscribe_batches(
            router,
            subject=route.subject,
            durable=route.durable,
            processor=processor,
            batch_size=batch_size,
            batch_timeout=batch_timeout,
        )
    return router


async def run_in_thread(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Run blocking database work off the event loop."""
    return await asyncio.to_thread(fn, *args, **kwargs)
