"""How every parwatch service consumes: durable JetStream consumers that hand a handler what has arrived.

A service declares its subscriptions on a :class:`Consumers`, each handing
its batches to a call of the service layer (``services/<name>/handlers.py``)::

    consumers.batches(DOSSIER_EVENTS, durable="dossier_tracker", accept=DossierEvent)(
        service.record_status_changes  # async (Sequence[Received[DossierEvent]]) -> list[Outcome]
    )

Each is a durable JetStream push consumer whose deliver group is the durable
name (replicas of a service share its messages), subscribed on the
connection of the service's FastStream broker with nats-py's public push API.
Each message is decoded as it arrives (:func:`shared.events.parse_event`),
and the handler gets, in one call, every message that arrived while its
previous call ran, up to ``batch_size``: one message at a quiet hour
(answered in milliseconds), a full batch under load (one transaction for
many). The consumer's ``max_ack_pending`` (two batches) bounds what waits.

Why not a FastStream subscriber (docs/architecture.md has the figures):
FastStream 0.7's batch pull subscriber waits out its fetch timeout for a
batch that is not coming (the latency is the timeout) and polls at idle; its
per-message push subscriber costs about 40 µs of its own machinery a message,
which put dossier_tracker at 0.31 of the ingest baseline, under its floor.

The rules, the same for every service:

* a message that fails the contract (bad JSON, schema, unknown type, too
  large) is dead-lettered on ``tthc.deadletter`` with a reason naming the
  field, once (the dead letter's id is ``deadletter:{stream}:{seq}``), and
  acked; the rest of its batch goes on. So is a message the handler answers
  :class:`Rejected` (``Rejected(reason)``): valid, but not acceptable to the
  service (a plan report that names no tracked occurrence);
* a failure that may pass (database or broker away, a lost race) holds the
  batch: the consumer takes nothing new and tries the same batch again after
  the shared backoff's delay, as long as it takes, keeping the held and the
  waiting messages from being redelivered meanwhile (``in_progress``). An
  outage costs time, never a dead letter; with its ``max_ack_pending``
  reached, the server stops delivering until the batch passes;
* any other exception isolates the failing message (the batch is retried one
  message at a time), logged with its traceback, never its payload; such a
  message is naked with the backoff's delay and dead-lettered with the reason
  at its ``max_deliver``-th delivery, never dropped silently;
* a message is acked only after what the handler published, or its dead
  letter, was stored (acked by JetStream); handlers are idempotent, so a
  redelivery after a crash between the two changes nothing. The server's own
  ``max_deliver`` is unlimited: a message whose dead letter cannot be stored
  comes again rather than being abandoned;
* at stop, the batch being handled is finished and acked (a held batch is
  naked at once); what is still waiting is naked at once, for another
  replica or the next start.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Generic, Protocol, TypeVar

from nats.aio.msg import Msg
from nats.errors import NotJSMessageError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy as JsAckPolicy
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from prometheus_client import CollectorRegistry, Counter

from shared.backoff import Backoff, is_retryable
from shared.events import DEADLETTER_TYPE, CloudEvent, DeadLetter, EventRejected, new_event, parse_event, types_of
from shared.streams import DEADLETTER, stream_for
from shared.text import safe_text

log = logging.getLogger(__name__)

E = TypeVar("E", bound=CloudEvent[Any])
T = TypeVar("T")


class Outcome(str, Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class Rejected:
    """A handler's outcome for a message that passed the contract but that the service cannot accept (a plan
    report naming no tracked occurrence): it is dead-lettered with ``reason`` like a contract failure, once,
    then acked. The handler must not have stored it, so a redelivery decides the same."""

    reason: str


@dataclass(frozen=True)
class Received(Generic[E]):
    """One message that passed the contract, with where it came from."""

    event: E
    stream: str
    seq: int  # the stream sequence
    delivered: int  # deliveries so far, 1 the first time
    msg: Msg = field(repr=False, compare=False)


Handler = Callable[[Sequence[Received[Any]]], Awaitable[Sequence[Outcome | Rejected] | None]]


@dataclass(frozen=True)
class RetryPolicy:
    """How long to wait before trying again; how many deliveries a message that fails by itself gets."""

    max_deliver: int = 12  # deliveries of a message that fails by itself (not an outage) before its dead letter
    backoff: Backoff = Backoff(first=1.0, cap=120.0)
    ack_wait: float = 60.0


class Publisher(Protocol):
    async def publish(self, event: CloudEvent[Any], *, subject: str) -> None: ...


class EventCounter:
    """``parwatch_events_total``: counted by the service that ingests the public streams."""

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


@dataclass(frozen=True)
class _Arrival:
    """A message as decoded: the event, or the reason it cannot be accepted."""

    msg: Msg
    event: CloudEvent[Any] | None
    reason: str | None


class Consumers:
    """One service's subscriptions (:meth:`batches`) and their lifecycle."""

    def __init__(
        self,
        service: str,
        *,
        publisher: Publisher,
        retry: RetryPolicy,
        batch_size: int,
        clock: Callable[[], dt.datetime],
        counter: EventCounter | None = None,
        linger: float = 0.0,
    ) -> None:
        self.service = service
        self.publisher = publisher
        self.retry = retry
        self.batch_size = batch_size
        self.linger = linger  # seconds a call waits for a full batch once something arrived (0: none)
        self.clock = clock
        self.counter = counter
        self.subscriptions: list[Subscription] = []

    def batches(
        self, subject: str, *, durable: str, accept: type[CloudEvent[Any]], in_flight: int = 1,
    ) -> Callable[[Handler], Handler]:
        """Register ``handler`` for the events of type ``accept`` on ``subject`` (decorator).

        ``in_flight`` > 1 lets the next batch be handed over before the previous
        call returned, for a handler whose work waits on another process (the
        tracker's store): that process then never waits for this one to publish
        and ack. Calls start in the order the batches arrived.
        """

        def register(handler: Handler) -> Handler:
            sub = Subscription(
                self, subject=subject, durable=durable, accept=accept, handler=handler, in_flight=in_flight
            )
            self.subscriptions.append(sub)
            return handler

        return register

    async def start(self, js: JetStreamContext) -> None:
        """Create or update each durable consumer, then take its deliveries."""
        for sub in self.subscriptions:
            await sub.start(js)

    async def stop(self) -> None:
        """Stop the deliveries, finish the batches in hand, nak what still waits."""
        await asyncio.gather(*(sub.stop() for sub in self.subscriptions))


class Subscription:
    """One durable consumer: what arrived waits here until the handler takes it."""

    def __init__(
        self, owner: Consumers, *, subject: str, durable: str, accept: type[CloudEvent[Any]], handler: Handler,
        in_flight: int,
    ) -> None:
        self.owner = owner
        self.subject = subject
        self.stream = stream_for(subject).name
        self.durable = durable
        self.types = types_of(accept)
        self.handler = handler
        self.batch_size = owner.batch_size
        self.in_flight = in_flight
        self.waiting: collections.deque[_Arrival] = collections.deque()
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._subscription: JetStreamContext.PushSubscription | None = None
        self.drain_timeout = 10.0  # seconds a stop waits for the client to hand over what it received
        self.finish_timeout = 30.0  # seconds a stop waits for the batches in hand (unacked after: they come again)

    async def arrived(self, msg: Msg) -> None:
        """A delivery (nats-py's callback): decoded now, handled with whatever else has arrived.

        Only this consumer's deliveries are taken: anyone who may publish can aim a reply at the deliver subject
        (the server answers a request on whatever reply subject it names, and permissions do not look at reply
        subjects). Such a message has nothing to ack or dead-letter, and taken in it would fail its batch; it is
        dropped with a warning."""
        if not self._delivered_here(msg):
            log.warning("message on the deliver subject that this consumer did not deliver, dropped durable=%s "
                        "reply=%s", self.durable, safe_text(msg.reply or "-", limit=200))
            return
        try:
            arrival = _Arrival(msg, parse_event(msg.data, accept=self.types), None)
        except EventRejected as exc:
            arrival = _Arrival(msg, None, exc.reason)
        self.waiting.append(arrival)
        self._arrived.set()

    def _delivered_here(self, msg: Msg) -> bool:
        try:
            md = msg.metadata  # parsed from the ack subject (kept on the message)
        except NotJSMessageError:
            return False
        return md.stream == self.stream and md.consumer == self.durable

    # -- the consumer ----------------------------------------------------------------------
    def config(self) -> ConsumerConfig:
        retry = self.owner.retry
        return ConsumerConfig(
            durable_name=self.durable,
            deliver_subject=f"parwatch.deliver.{self.durable}",
            deliver_group=self.durable,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=JsAckPolicy.EXPLICIT,
            ack_wait=retry.ack_wait,
            # Unlimited: the handler dead-letters a failing message itself, at ``retry.max_deliver``; the server
            # never abandons one (a message whose dead letter could not be stored comes again).
            max_deliver=-1,
            # The batches in hand and the next one arriving.
            max_ack_pending=(self.in_flight + 1) * self.batch_size,
            filter_subject=self.subject,
        )

    async def declare(self, js: JetStreamContext) -> None:
        wanted = self.config()
        try:
            info = await js.consumer_info(self.stream, self.durable)
        except NotFoundError:
            await js.add_consumer(self.stream, wanted)
            return
        have = info.config
        if have.deliver_subject == wanted.deliver_subject and have.deliver_group == wanted.deliver_group:
            # Updates what may change (limits, ack_wait); where it started stays as it was created.
            await js.add_consumer(
                self.stream, wanted.evolve(deliver_policy=have.deliver_policy, opt_start_seq=have.opt_start_seq)
            )
            return
        # A consumer of another kind under this name (a pull consumer of an older parwatch): replace it,
        # starting after what it acknowledged; what it had delivered and not acked comes again.
        start = info.ack_floor.stream_seq + 1 if info.ack_floor else 1
        log.warning("consumer replaced stream=%s durable=%s from_seq=%d", self.stream, self.durable, start)
        await js.delete_consumer(self.stream, self.durable)
        await js.add_consumer(
            self.stream, wanted.evolve(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start)
        )

    async def start(self, js: JetStreamContext) -> None:
        await self.declare(js)
        self._task = asyncio.create_task(self._run(), name=f"{self.owner.service}:{self.durable}")
        self._subscription = await js.subscribe_bind(self.stream, self.config(), self.durable, cb=self.arrived,
                                                      manual_ack=True)

    async def stop(self) -> None:
        """Take no more deliveries, finish the batches in hand, nak what waits (for a replica, or the next start)."""
        task, self._task = self._task, None
        self._stopping.set()
        if task is not None:
            self.waiting.appendleft(_STOP)  # ahead of what waits: no new batch starts from now on
            self._arrived.set()
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            try:  # what the client already received reaches ``waiting`` too
                await asyncio.wait_for(subscription.drain(), timeout=self.drain_timeout)
            except TimeoutError:  # seen once under heavy load: a stop must not wait on it for ever
                log.warning("consumer drain did not finish in %.0fs durable=%s; what it held comes again after "
                            "ack_wait", self.drain_timeout, self.durable)
        if task is not None:
            try:
                await asyncio.wait_for(task, timeout=self.finish_timeout)
            except TimeoutError:
                log.error("consumer did not finish its batch in %.0fs at stop durable=%s; it comes again after "
                          "ack_wait", self.finish_timeout, self.durable)
        left = [a for a in self.waiting if a is not _STOP]
        self.waiting.clear()
        for a in left:
            await a.msg.nak()

    async def _run(self) -> None:
        """Hand over what has arrived: at once when nothing is being handled (after the owner's ``linger``, if
        any); a second call (``in_flight``) only for a full batch, so that the next call under load is as large
        as it can be."""
        handling: set[asyncio.Task[None]] = set()
        try:
            while True:
                await self._arrived.wait()
                self._arrived.clear()
                if not handling:
                    await self._linger()
                while self.waiting and self.waiting[0] is not _STOP and (
                    not handling or (len(handling) < self.in_flight and len(self.waiting) >= self.batch_size)
                ):
                    batch = [self.waiting.popleft() for _ in range(min(self.batch_size, len(self.waiting)))]
                    task = asyncio.create_task(self._handle_safely(batch))
                    task.add_done_callback(lambda t: (handling.discard(t), self._arrived.set()))
                    handling.add(task)
                if self.waiting and self.waiting[0] is _STOP and not handling:
                    return
        except asyncio.CancelledError:  # a stop that waited its bound: the batches in hand are given up too
            for task in handling:
                task.cancel()
            raise
        finally:
            if handling:
                await asyncio.wait(handling)

    async def _linger(self) -> None:
        """Wait up to the owner's ``linger`` seconds for a full batch (or a stop) once something has arrived:
        fewer, larger calls under moderate load, where a call's cost is mostly its transaction."""
        loop = asyncio.get_running_loop()
        until = loop.time() + self.owner.linger
        while self.waiting and self.waiting[0] is not _STOP and len(self.waiting) < self.batch_size:
            left = until - loop.time()
            if left <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout=left)
            except TimeoutError:
                return

    async def _handle_safely(self, batch: list[_Arrival]) -> None:
        try:
            await self.handle(batch)
        except _Stopping:  # held through an outage when the service stops: for another replica or the next start
            for a in batch:
                with contextlib.suppress(Exception):
                    await a.msg.nak()
        except Exception:  # the broker itself is away: the messages stay unacked and come again after ack_wait
            log.exception("batch left unacked durable=%s size=%d", self.durable, len(batch))

    # -- the rules ---------------------------------------------------------------------------
    async def handle(self, batch: Sequence[_Arrival]) -> None:
        good: list[Received[Any]] = []
        for a in batch:
            if a.event is None:
                await self.reject(a.msg, reason=a.reason or "rejected")
                continue
            md = a.msg.metadata
            good.append(Received(a.event, md.stream, md.sequence.stream, md.num_delivered, a.msg))
        if good:
            await self._apply(good, isolate=len(good) > 1)

    async def _apply(self, received: Sequence[Received[Any]], *, isolate: bool) -> None:
        try:
            outcomes = await self._until_it_passes(lambda: self.handler(received), held=[r.msg for r in received])
        except _Stopping:
            raise
        except Exception as exc:  # classified here, never swallowed
            if isolate:
                log.warning("batch failed durable=%s batch=%d; retrying one by one", self.durable, len(received))
                for r in received:
                    await self._apply([r], isolate=False)
            else:
                r = received[0]
                log.exception("processing failed durable=%s stream=%s seq=%d delivered=%d", self.durable, r.stream,
                              r.seq, r.delivered)
                await self._retry_later(received, why=f"processing failed ({type(exc).__name__})")
            return
        decided = list(zip(received, outcomes or [Outcome.ACCEPTED] * len(received), strict=True))
        counter = self.owner.counter
        if counter is not None:
            results = collections.Counter((r.stream, o.value) for r, o in decided if isinstance(o, Outcome))
            for (stream, result), n in results.items():
                counter.count(stream, result, n)
        for r, o in decided:
            if isinstance(o, Rejected):
                await self.reject(r.msg, reason=o.reason)  # counted as rejected there
            else:
                await r.msg.ack()

    async def _until_it_passes(self, attempt: Callable[[], Awaitable[T]], *, held: Sequence[Msg]) -> T:
        """``attempt()``'s answer. A failure that may pass (an outage) holds the ``held`` messages: the same
        attempt is made again after the backoff's delay, for as long as it takes; it never counts toward a dead
        letter. Raises :class:`_Stopping` if the service stops meanwhile."""
        failures = 0
        while True:
            try:
                return await attempt()
            except Exception as exc:
                if not is_retryable(exc):
                    raise
                failures += 1
                delay = self.owner.retry.backoff.delay(failures)
                log.warning("transient failure durable=%s held=%d error=%s failures=%d; next try in %.1fs",
                            self.durable, len(held), type(exc).__name__, failures, delay)
                await self._hold(held, seconds=delay)

    async def _hold(self, held: Sequence[Msg], *, seconds: float) -> None:
        """Wait ``seconds`` (or until the service stops), telling the server every third of ``ack_wait`` that the
        held messages, and those waiting behind them, are still being worked on."""
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        while True:
            await self._still_working([*held, *(a.msg for a in self.waiting if a is not _STOP)])
            left = until - loop.time()
            if left <= 0:
                return
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=min(left, self.owner.retry.ack_wait / 3))
            except TimeoutError:
                continue
            raise _Stopping

    async def _still_working(self, msgs: Sequence[Msg]) -> None:
        for msg in msgs:
            try:
                await msg.in_progress()
            except Exception as exc:
                if not is_retryable(exc):
                    raise
                # The broker is away too: the held messages may come again meanwhile, handled idempotently.
                log.debug("in_progress not sent durable=%s error=%s", self.durable, type(exc).__name__)
                return

    async def _retry_later(self, received: Sequence[Received[Any]], *, why: str) -> None:
        retry = self.owner.retry
        for r in received:
            if r.delivered >= retry.max_deliver:
                await self.reject(r.msg, reason=f"{why}; gave up after {r.delivered} deliveries")
            else:
                await r.msg.nak(delay=retry.backoff.delay(r.delivered))

    async def reject(self, msg: Msg, *, reason: str) -> None:
        """Dead-letter one message (once per stream sequence), then ack it."""
        md = msg.metadata
        stream, seq = md.stream, md.sequence.stream
        letter = new_event(
            type=DEADLETTER_TYPE,
            source=f"parwatch/{self.owner.service}",
            id=f"deadletter:{stream}:{seq}",
            subject=msg.subject,
            data=DeadLetter(
                stream=stream, stream_seq=seq, subject=msg.subject, reason=safe_text(reason, limit=2000),
                received_at=self.owner.clock(),
            ),
        )
        # Acked only once the dead letter is stored; an outage holds it like any batch.
        await self._until_it_passes(lambda: self.owner.publisher.publish(letter, subject=DEADLETTER), held=[msg])
        log.warning("message rejected durable=%s stream=%s seq=%d reason=%s", self.durable, stream, seq, reason)
        if self.owner.counter is not None:
            self.owner.counter.count(stream, "rejected")
        await msg.ack()


class _Stopping(Exception):
    """The service stops while a batch is held through an outage."""


#: Put behind the waiting messages at stop: the loop ends when it reaches it.
_STOP = _Arrival(msg=None, event=None, reason=None)  # type: ignore[arg-type]
