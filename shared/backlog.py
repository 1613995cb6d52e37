"""Whether a consumer of dossier state is catching up on a backlog: history replayed into a fresh stack, a restart
after a long stop. While it is, what a service would decide from the dossiers it holds waits, because later
revisions of those dossiers are still on their way.

Two services hold their dossier decisions on one :class:`Backlog`:

* **deadline_monitor** stores the dossier facts of a backlog unsettled and
  settles them against their final state once it has caught up
  (``MonitorService.settle_when_caught_up``): a dossier that ended within the
  backlog never fires ``dossier_overdue``;
* **scoring** skips its KPI rounds while the backlog holds
  (``ScoringService.evaluate``): the running month's open dossiers whose end is
  still on its way are not judged overdue against today, so
  ``kpi_below_target`` follows the state the whole history leaves.

Each feeds it from its own dossier state consumer (:meth:`Backlog.observed`
with :func:`event_time` of each batch, :meth:`Backlog.delivered` with the
``num_pending`` of its last message) and asks it at a periodic step
(:meth:`Backlog.probe`, then :meth:`Backlog.holds`).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

from nats.js.api import ConsumerInfo
from nats.js.errors import NotFoundError

from shared.backoff import is_retryable
from shared.events import DossierStateChanged

if TYPE_CHECKING:
    from shared.settings import BacklogSettings

log = logging.getLogger(__name__)

#: JetStream's ``consumer_info(stream, durable)``, as a service's broker answers it.
ConsumerInfoOf = Callable[[str, str], Awaitable[ConsumerInfo]]


def event_time(states: Iterable[DossierStateChanged]) -> dt.datetime | None:
    """Where a batch of dossier facts stands in event time: the newest ``occurred_at`` among them.

    The newest: a replay comes in time order, so it says how far the input
    has got; one late event (an agency's system that syncs once a day) among
    current ones does not hold the batch, nor, under steady load, every batch
    after it. None when no fact carries one (facts of a tracker older than
    the field).
    """
    times = [s.occurred_at for s in states if s.occurred_at is not None]
    return max(times) if times else None


def lags(watermark: dt.datetime | None, *, now: dt.datetime, lag: dt.timedelta) -> bool:
    """Whether the input's event time ``watermark`` lags ``now`` by more than ``lag``: the consumer is reading
    a backlog (history replayed, a restart after an outage), whose later events may end the dossiers it
    holds. An unknown watermark does not lag."""
    return watermark is not None and now - watermark > lag


class Backlog:
    """Whether a consumer of dossier state is catching up on a backlog, and holds its dossier decisions meanwhile
    (deadline_monitor's dossier alerts, scoring's KPI rounds: see the module's docstring).

    Two signs, either one holds them:

    * **event time** (:meth:`behind`): the last batch's watermark
      (:func:`event_time`, the ``occurred_at`` the facts carry) lags
      ``now`` by more than ``lag``. A replay may come at any pace, as fast as
      a publisher can send or a few hundred events a second that the
      consumers keep up with: only event time tells history from the present.
      When no fact has arrived for ``idle`` seconds the watermark no longer
      holds anything: a history with nothing live after it, one late event,
      or a quiet district.
    * **pending count** (:attr:`catching_up`): how much dossier state the
      consumer has not read yet is above ``threshold`` (as below).

    ``release`` is the seconds after which live load that never drains to
    zero no longer holds a history the monitor stored unsettled (its
    ``settle_when_caught_up``; :attr:`drained` is the other way such a hold
    ends). scoring needs neither: a KPI round after the hold judges whatever
    the store holds then.

    A backlog (a first start in front of the stream's history, a restart after
    a long stop) holds older revisions of dossiers whose later ones follow:
    deciding on each at arrival would fire and resolve alerts for dossiers that
    ended long ago. Two parts count: the state facts waiting on the service's
    own consumer (``own``: ``num_pending`` of each batch's last message; at a
    probe, its consumer's info: those not delivered yet and those delivered and
    not yet handled) and the dossier events dossier_tracker has not read yet
    (``upstream``: state the service has not seen either). Without
    ``consumer_info`` (no broker) only what :meth:`delivered` says counts.
    """

    def __init__(
        self,
        *,
        threshold: int = 1000,
        consumer_info: ConsumerInfoOf | None = None,
        own: tuple[str, str] | None = None,
        upstream: tuple[str, str] | None = None,
        lag: dt.timedelta = dt.timedelta(hours=3),
        idle: float = 2.0,
        release: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.lag = lag
        self.idle = idle
        self.release = release
        self.monotonic = monotonic
        self.watermark: dt.datetime | None = None  # the last batch's event time (None: unknown)
        self._observed_at = -1e18  # monotonic time of the last batch
        self.consumer_info = consumer_info
        self.own = own
        self.upstream = upstream
        self.own_pending = 0  # state facts waiting on the service's consumer, as last seen
        self.upstream_pending = 0  # dossier events dossier_tracker has not read, as last seen
        self.upstream_in_hand = 0  # dossier events dossier_tracker has read and not yet folded, as last seen
        self._upstream_read = -1e9  # monotonic time of the last upstream answer

    @classmethod
    def configured(cls, settings: BacklogSettings, *, consumer_info: ConsumerInfoOf, own: tuple[str, str]) -> Backlog:
        """The backlog a service's settings describe, reading ``own`` (stream, durable) and the upstream consumer
        through ``consumer_info``."""
        stream, _, durable = settings.upstream_consumer.partition(":")
        return cls(
            threshold=settings.catch_up_threshold,
            consumer_info=consumer_info,
            own=own,
            upstream=(stream, durable) if settings.upstream_consumer else None,
            lag=settings.backlog_lag,
            idle=settings.backlog_idle_seconds,
        )

    @property
    def pending(self) -> int:
        return self.own_pending + self.upstream_pending

    @property
    def catching_up(self) -> bool:
        return self.pending > self.threshold

    def observed(self, watermark: dt.datetime | None) -> None:
        """The event time of a batch of dossier facts just received. It never moves back while the input flows
        (a batch within ``idle`` seconds of the last): a late fact in a batch of its own, right after current
        ones, is one late event, not a history."""
        if (watermark is not None and self.watermark is not None and watermark < self.watermark
                and self.idle_for() < self.idle):
            watermark = self.watermark
        self.watermark = watermark
        self._observed_at = self.monotonic()

    def idle_for(self) -> float:
        """Seconds since the last batch."""
        return self.monotonic() - self._observed_at

    def flowing(self) -> bool:
        """Facts with an event time are coming: the last batch came less than ``idle`` seconds ago."""
        return self.watermark is not None and self.idle_for() < self.idle

    def behind(self, now: dt.datetime) -> bool:
        """The last batch's event time lags ``now`` by more than ``lag``, and the input is not idle."""
        return lags(self.watermark, now=now, lag=self.lag) and self.idle_for() < self.idle

    def holds(self, now: dt.datetime) -> bool:
        """Dossier decisions wait: behind in event time, or too much pending."""
        return self.behind(now) or self.catching_up

    def delivered(self, num_pending: int) -> None:
        """What a delivered message says still waits behind it on the service's consumer."""
        self.own_pending = num_pending

    @property
    def drained(self) -> bool:
        """Nothing on its way: nothing waits on either consumer, and dossier_tracker holds no event in hand
        (a slow batch, or one a killed tracker gets again after its ack wait, still changes dossiers)."""
        return self.pending == 0 and self.upstream_in_hand == 0

    async def probe(self) -> None:
        """Both parts from the consumers' info (at a periodic step); a part that cannot be read keeps its last
        value. Upstream first: dossier_tracker publishes a batch's facts before it acks the batch, so what has
        left its hand by then is on the service's own consumer when that is read (read the other way round, a
        batch finished between the two reads would be in neither, and the input taken for drained)."""
        await self._probe_upstream()
        own = await self._counts(self.own, missing=None)  # not created yet: nothing known
        if own is not None:
            self.own_pending = sum(own)

    async def probe_upstream(self, *, at_most_every: float = 1.0) -> None:
        """The upstream part, unless it was read less than ``at_most_every`` seconds ago (at each batch)."""
        if time.monotonic() - self._upstream_read < at_most_every:
            return
        await self._probe_upstream()

    async def _probe_upstream(self) -> None:
        # What the tracker has not read counts towards the threshold; what it holds in hand only keeps the input
        # from being drained (under steady load it always holds a batch or two). No tracker consumer (yet):
        # nothing waits upstream.
        found = await self._counts(self.upstream, missing=(0, 0))
        if found is not None:
            self.upstream_pending, self.upstream_in_hand = found
            self._upstream_read = time.monotonic()

    async def _counts(
        self, consumer: tuple[str, str] | None, *, missing: tuple[int, int] | None
    ) -> tuple[int, int] | None:
        """(not yet delivered, delivered and not yet acked) of ``consumer`` (stream, durable); ``missing`` if it
        does not exist, None if unknown."""
        if consumer is None or self.consumer_info is None:
            return None
        try:
            info = await self.consumer_info(*consumer)
        except NotFoundError:
            return missing
        except Exception as exc:
            if not is_retryable(exc):
                raise
            log.debug("backlog unknown consumer=%s error=%s; keeping the last value", consumer[1], type(exc).__name__)
            return None
        return int(info.num_pending or 0), int(info.num_ack_pending or 0)
