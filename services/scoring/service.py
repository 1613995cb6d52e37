"""scoring's service layer: applies the facts other services publish, and runs the KPI alert rounds.

* Dossier states, ratings and plan-task states are applied to the
  aggregates, one transaction per batch. Each is idempotent by content (the
  highest revision, the latest rating or task state wins): a fact that
  changes nothing is a duplicate.
* A KPI round (:meth:`ScoringService.evaluate`) reads the running periods'
  figures from the read model (:class:`~services.scoring.board.Scoreboard`),
  runs the pure rules (:func:`services.scoring.alerts.evaluate`) on the alert
  records, locked, and builds the ``vn.tthc.alert.firing`` /
  ``vn.tthc.alert.resolved`` event of each transition; the store writes the
  records and those events (the shared outbox) in one transaction. The
  outbox's relay publishes them in order per alert, with ``Nats-Msg-Id`` the
  event id (``{alert_key}:{n}:firing|resolved``): a decision is committed
  with the record it changes, so it is never taken twice, and a delivery
  repeated after a crash is dropped by the stream.
* While scoring is catching up on a backlog of dossier state (history
  replayed into a fresh stack, a restart after a long stop), a KPI round
  decides nothing (:meth:`ScoringService.evaluate`): the running month's open
  dossiers then include every dossier whose end is still on its way, judged
  overdue against today. The :class:`shared.backlog.Backlog` deadline_monitor
  holds its dossier alerts on says so: fed by each batch of dossier facts (its
  event time, the ``occurred_at`` they carry, and what waits behind it on the
  consumer), probed at each round (what waits on scoring's consumer and on
  dossier_tracker's), it holds while the input's event time lags now by more
  than ``backlog_lag`` and facts keep coming, or while more than
  ``catch_up_threshold`` wait. A held round moves no alert record (no firing,
  no resolving, no streak); the first round after the hold judges the whole
  history. A replay that pauses for longer than ``backlog_idle_seconds``
  (nothing arriving) is a quiet district, in which the rounds run.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Sequence

from services.scoring.alerts import (
    FIRING,
    KIND,
    RESOLVED,
    AlertRecord,
    Evaluation,
    KpiTargets,
    Observation,
    Transition,
    evaluate,
)
from services.scoring.board import Directory, Scoreboard
from services.scoring.domain import DossierFacts, RatingFacts, TaskFacts, today_in_vietnam
from services.scoring.settings import ScoringSettings
from services.scoring.store import ScoringStore
from shared.agencies import UNKNOWN
from shared.backlog import Backlog, event_time
from shared.consumer import Outcome, Received
from shared.events import Alert, CloudEvent, DossierStateEvent, PlanTaskStateEvent, RatingEvent, encode, new_event
from shared.outbox import Message
from shared.streams import ALERTS

log = logging.getLogger(__name__)

SOURCE = "parwatch/scoring"


def alert_event(transition: Transition) -> CloudEvent[Alert]:
    """The CloudEvent of an alert that fired or resolved."""
    record = transition.record
    assert record.started_at is not None  # a record that fired has started
    return new_event(
        type=transition.type,
        source=SOURCE,
        id=transition.event_id,
        subject=record.alert_key,
        time=transition.at,
        data=Alert(
            alert_key=record.alert_key,
            kind=KIND,
            severity="warning",
            agency_code=record.agency_code,
            ref=f"{record.kpi}/{record.period}",
            summary=transition.summary,
            starts_at=record.started_at,
            ends_at=(record.ends_at or transition.at) if transition.type == RESOLVED else None,
            labels={"kpi": record.kpi, "period": record.period},
        ),
    )


def alert_messages(transitions: Sequence[Transition]) -> list[Message]:
    """The outbox messages of the transitions: on ``tthc.alerts``, in order per alert."""
    events = [alert_event(t) for t in transitions]
    return [Message(topic=ALERTS, key=e.data.alert_key, payload=encode(e).decode(), message_id=e.id) for e in events]


def outcomes(changed: Sequence[bool]) -> list[Outcome]:
    return [Outcome.ACCEPTED if c else Outcome.DUPLICATE for c in changed]


class ScoringService:
    """``wake`` is called after a commit that added alert events to the outbox (the relay's wake); ``backlog`` says
    whether the KPI rounds wait (default: one without a broker, fed by the batches alone)."""

    def __init__(
        self,
        *,
        store: ScoringStore,
        board: Scoreboard,
        directory: Directory,
        settings: ScoringSettings,
        clock: Callable[[], dt.datetime],
        targets: KpiTargets,
        wake: Callable[[], None] = lambda: None,
        backlog: Backlog | None = None,
    ) -> None:
        self.store = store
        self.board = board
        self.directory = directory
        self.clock = clock
        self.wake = wake
        self.backlog = backlog or Backlog()
        self._holding = False  # the last round waited for the backlog
        self.policy = settings.hysteresis()
        self.targets = targets
        self.kpis = tuple(settings.alert_kpis)
        self.periods = tuple(settings.alert_periods)
        self.include_district = settings.alert_district
        # Replicas share the records: an evaluation counts once per half interval.
        self.min_gap = dt.timedelta(seconds=settings.evaluate_interval / 2)

    # -- facts in ----------------------------------------------------------------------------
    async def apply_dossier_states(self, received: Sequence[Received[DossierStateEvent]]) -> list[Outcome]:
        states = [r.event.data for r in received]
        if received:  # where the input stands, for the KPI rounds' hold
            self.backlog.delivered(received[-1].msg.metadata.num_pending)
            self.backlog.observed(event_time(states))
        facts = [DossierFacts.from_state(s) for s in states]
        return outcomes(await asyncio.to_thread(self.store.apply_states, facts, now=self.clock()))

    async def apply_ratings(self, received: Sequence[Received[RatingEvent]]) -> list[Outcome]:
        facts = [RatingFacts.from_event(r.event.data, event_id=r.event.id) for r in received]
        return outcomes(await asyncio.to_thread(self.store.apply_ratings, facts))

    async def apply_task_states(self, received: Sequence[Received[PlanTaskStateEvent]]) -> list[Outcome]:
        facts = [TaskFacts.from_event(r.event.data, event_id=r.event.id) for r in received]
        return outcomes(await asyncio.to_thread(self.store.apply_tasks, facts))

    # -- KPI alerts --------------------------------------------------------------------------
    async def evaluate(self, now: dt.datetime | None = None) -> bool:
        """One KPI round (a ``service.every`` step), unless the backlog holds it (:meth:`waits`); False: a round
        leaves nothing for the next one."""
        now = now or self.clock()
        if await self.waits(now):
            return False
        result = await asyncio.to_thread(self._evaluate, now)
        for t in result.transitions:
            record = t.record
            log.info("kpi alert %s agency=%s kpi=%s period=%s", "firing" if t.type == FIRING else "resolved",
                     record.agency_code, record.kpi, record.period)
        if result.transitions:
            self.wake()
        return False

    async def waits(self, now: dt.datetime) -> bool:
        """Whether the round at ``now`` waits for a backlog of dossier state (the module's docstring): the pending
        counts probed, then :meth:`Backlog.holds`. Said once when a hold begins and once when it ends."""
        await self.backlog.probe()
        holds = self.backlog.holds(now)
        if holds != self._holding:
            self._holding = holds
            watermark = self.backlog.watermark.isoformat() if self.backlog.watermark else None
            if holds:
                log.info("catching up on dossier states watermark=%s pending=%d: kpi rounds wait",
                         watermark, self.backlog.pending)
            else:
                log.info("caught up on dossier states watermark=%s pending=%d: kpi rounds judge again",
                         watermark, self.backlog.pending)
        return holds

    def _evaluate(self, now: dt.datetime) -> Evaluation:
        observations, current = self.observations(today_in_vietnam(now))
        names = self.directory.names()

        def decide(records: dict[str, AlertRecord]) -> tuple[Evaluation, list[Message]]:
            result = evaluate(records, observations, policy=self.policy, now=now, names=names, current=current,
                              min_gap=self.min_gap)
            return result, alert_messages(result.transitions)

        return self.store.evaluate_alerts(decide, now=now)

    def observations(self, today: dt.date) -> tuple[list[Observation], set[str]]:
        """Every watched KPI with a plan target in force, of every agency with data in the watched running periods,
        and those periods' keys. A KPI with fewer records than its minimum has no value (it changes nothing)."""
        tables = self.board.current_tables(today)
        out: list[Observation] = []
        current: set[str] = set()
        for kind in self.periods:
            table = tables[kind]
            current.add(table.period.key)
            for agency in sorted(table.figures):
                if agency == self.board.district and not self.include_district:
                    continue
                if agency == UNKNOWN:  # nobody answers for units outside the directory (the monitor's unknown_agency)
                    continue
                figures = table.figures[agency]
                for kpi in self.kpis:
                    target = self.targets.target(kpi, district=agency == self.board.district, day=today)
                    if target is None:
                        continue
                    enough = figures.kpi_denominator(kpi) >= self.policy.minimum(kpi)
                    out.append(
                        Observation(
                            agency_code=agency,
                            kpi=kpi,
                            period=table.period,
                            value=figures.kpi(kpi) if enough else None,
                            target=target.value,
                            op=target.op,
                        )
                    )
        return out, current

    async def adopt_legacy_alerts(self) -> None:
        """At start: alert events an older version left undelivered in its alert records go to the outbox."""
        n = await asyncio.to_thread(self.store.adopt_legacy_pending, alert_messages, now=self.clock())
        if n:
            log.warning("undelivered kpi alerts of an older version moved to the outbox count=%d", n)
            self.wake()
