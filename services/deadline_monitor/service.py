"""deadline_monitor's service layer: applies the domain to what arrives and to the passing of time,
and decides what to publish.

* **Dossier state facts** (``parwatch.dossier.state``): each dossier keeps its
  highest revision, and is settled at once: a dossier already overdue when its
  fact arrives raises ``dossier_overdue`` then, not at the next tick. While the
  monitor is catching up on a backlog (:class:`shared.backlog.Backlog`, as
  scoring's KPI rounds: the facts' event time lags far behind now, or much is
  pending), dossiers are stored unsettled instead, and settled with their
  latest state once the input is current (or idle): a dossier ended within
  the backlog never fires.
* **Plan reports** (``parwatch.accepted.plan``): stored once per (source, id);
  the occurrence they name is settled. One that matches no tracked occurrence
  (or names a closed plan) is not stored: its outcome is ``Rejected(reason)``
  and the shared consumer dead-letters it.
* **Closed plans** (``valid_until`` + 31 days passed): their occurrences keep
  their final state; the tick's closing step resolves what still fires.
* **Dead letters** (``tthc.deadletter``): one ``deadletter`` alert each, ever.
* **Agency codes outside the directory** (``shared.agencies``): a dossier of
  such a unit raises no dossier alert (nobody answers for it); new dossier
  facts or plan reports naming such codes fire the one ``unknown_agency``
  alert (for the technical desk), or, while it fires, restart its quiet
  period: it resolves ``unknown_agency_quiet`` after the last such event
  (the tick's expiry step), and fires again if they come back.
* **The tick** (:meth:`MonitorService.tick`): what the passing of time changed
  (an indexed read per level, :mod:`store`), and the dead-letter alerts whose
  time is up.

Each decision is written in one store transaction (:meth:`MonitorStore.transaction`)
with the CloudEvents that announce it, built here as outbox messages: alerts
on ``tthc.alerts`` (id ``{alert_key}:{firing|resolved}:{generation}``, in order
per alert key) and task states on ``parwatch.plan.task_state`` (in order per
occurrence). The outbox relay is woken after every commit that sent something.

One process writes through one :class:`MonitorService`: a lock serialises its
transactions (the tick, states, reports and dead letters may touch the same
rows), each run in a thread. A tick takes it per transaction (``tick_chunk``
rows), so a long tick does not hold the consumers back.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from services.deadline_monitor import domain
from services.deadline_monitor.domain import (
    FIRING,
    PLAN_KINDS,
    RESOLVED,
    Catalog,
    Horizons,
    OccurrenceFacts,
    OccurrenceSpec,
    Policy,
    WorkingDays,
)
from services.deadline_monitor.plan import Continuous
from services.deadline_monitor.store import (
    DOSSIERS,
    OCCURRENCES,
    UNSETTLED,
    MonitorStore,
    Ticked,
    Work,
    dossier_facts,
    occurrence_facts,
    occurrence_key_of,
    stored_alert,
)
from shared.backlog import Backlog, event_time
from shared.calendar import local_date
from shared.consumer import Outcome, Received, Rejected
from shared.db import Record
from shared.events import (
    ALERT_FIRING_TYPE,
    ALERT_RESOLVED_TYPE,
    PLAN_TASK_STATE_TYPE,
    Alert,
    DeadLetter,
    DeadLetterEvent,
    DossierStateChanged,
    DossierStateEvent,
    PlanEvent,
    PlanTaskReported,
    PlanTaskStateChanged,
    encode,
    new_event,
)
from shared.outbox import Message
from shared.streams import ALERTS, PLAN_TASK_STATE
from shared.text import escape_text

log = logging.getLogger(__name__)

SOURCE = "parwatch/deadline_monitor"
T = TypeVar("T")
F = TypeVar("F")
#: One piece of a tick: given the transaction and a row budget, (rows examined, transitions, exhausted).
Step = Callable[[Work, int], tuple[int, int, bool]]


@dataclass(frozen=True)
class TickResult:
    examined: int = 0  # rows read
    transitions: int = 0  # alerts fired or resolved, facts published

    def __add__(self, other: TickResult) -> TickResult:
        return TickResult(self.examined + other.examined, self.transitions + other.transitions)


# -- what the monitor publishes ------------------------------------------------------------------


def alert_message(alert: Alert, *, transition: str, generation: int, now: dt.datetime) -> Message:
    """The ``vn.tthc.alert.firing|resolved`` event of one transition, ordered by its alert key."""
    event = new_event(
        type=ALERT_FIRING_TYPE if transition == FIRING else ALERT_RESOLVED_TYPE,
        source=SOURCE,
        id=domain.alert_event_id(alert.alert_key, transition, generation),
        subject=alert.alert_key,
        data=alert,
        time=now,
    )
    return Message(topic=ALERTS, key=alert.alert_key, payload=encode(event).decode(), message_id=event.id)


def task_state_message(o: OccurrenceFacts, *, state: domain.TaskState, version: int, now: dt.datetime) -> Message:
    """The ``vn.parwatch.plan.task_state_changed`` fact of an occurrence's state, ordered by occurrence."""
    fact = PlanTaskStateChanged(
        plan_id=o.plan_id,
        task_id=o.task_id,
        agency_code=o.agency_code,
        period=o.period or None,
        due_day=o.due_day,
        state=state,
        done_on=o.done_on,
        updated_at=now,
    )
    key = domain.occurrence_key(o)
    event = new_event(
        type=PLAN_TASK_STATE_TYPE,
        source=SOURCE,
        id=domain.event_id(key, version),
        subject=f"{o.plan_id}:{o.task_id}",
        data=fact,
        time=now,
    )
    return Message(topic=PLAN_TASK_STATE, key=key, payload=encode(event).decode(), message_id=event.id)


def outcomes(duplicate: Sequence[bool]) -> list[Outcome]:
    return [Outcome.DUPLICATE if dup else Outcome.ACCEPTED for dup in duplicate]


def _with_facts(rows: Sequence[Any], facts_of: Callable[[Any], F]) -> list[tuple[Any, F]]:
    return [(row, facts_of(row)) for row in rows]


# -- the service layer -----------------------------------------------------------------------------------


@dataclass(kw_only=True, eq=False, repr=False)  # a holder of its dependencies, compared by identity
class MonitorService:
    """The monitor's work, as the handlers, the tick loop and the start call it (see the module's docstring).

    ``wake`` is the outbox relay's; ``clock`` the business clock, used when a call is given no ``now``.
    """

    store: MonitorStore
    catalog: Catalog
    calendar: WorkingDays
    policy: Policy
    clock: Callable[[], dt.datetime]
    backlog: Backlog = field(default_factory=Backlog)
    wake: Callable[[], None] | None = None  # the outbox relay's: something was committed for it
    deadletter_ttl: dt.timedelta | None = dt.timedelta(hours=24)
    unknown_agency_quiet: dt.timedelta | None = dt.timedelta(hours=24)  # None: the alert never resolves by itself
    tick_chunk: int = 1000

    def __post_init__(self) -> None:
        self.district_code = self.catalog.agencies.district_code
        self._lock = asyncio.Lock()
        self._held = False  # dossiers were stored unsettled since the last settling
        self._calm_since: float | None = None  # monotonic time since which a hold no longer holds (None: it does)
        self._history = False  # the hold began on history (event time behind), not only on live load pending
        self._was_behind = False  # the last batch of dossier facts was behind in event time

    def horizons(self, now: dt.datetime) -> Horizons:
        return domain.horizons(local_date(now), calendar=self.calendar, policy=self.policy)

    async def _commit(self, decide: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``decide(work, ...)`` in one store transaction, in a thread, one at a time; the relay woken if it
        sent something."""
        async with self._lock:
            result, sent = await asyncio.to_thread(self._transaction, decide, *args, **kwargs)
        if sent and self.wake is not None:
            self.wake()
        return result

    def _transaction(self, decide: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T, int]:
        with self.store.transaction() as work:
            result = decide(work, *args, **kwargs)
        return result, work.sent

    async def resume(self) -> None:
        """At start: dossiers stored unsettled by an earlier run (this process before a crash, or a replica that
        died) are a history's hold this run takes over; they settle as :meth:`settle_when_caught_up` says, not at
        the first tick, whose pending count may be small while the rest of their history is still on its way."""
        if await self._commit(lambda work: work.any_unsettled()):
            self._held = self._history = True

    # -- the handlers' calls ----------------------------------------------------------------------------
    async def apply_dossier_states(self, received: Sequence[Received[DossierStateEvent]]) -> list[Outcome]:
        """Dossier state facts: settled at once, or stored unsettled while catching up."""
        now = self.clock()
        states = [r.event.data for r in received]
        if received:
            self.backlog.delivered(received[-1].msg.metadata.num_pending)
            self.backlog.observed(event_time(states))
        await self.backlog.probe_upstream()
        # Once held for a history, the rest of it is stored unsettled too, until settle_when_caught_up finds the
        # input drained: the last thousand facts of a replay would otherwise settle dossiers whose later revisions
        # follow. A history is a batch behind with more than the threshold waiting, or two batches behind in a
        # row: one late batch after a quiet while (a system that syncs an old dossier), then current ones, is
        # late events, settled with the next batch. A hold for live load alone (current facts, many pending) ends
        # once the pending count is down.
        holding = self.backlog.holds(now)
        behind = self.backlog.behind(now)
        self._history = self._history or (behind and (self._was_behind or self.backlog.catching_up))
        self._was_behind = behind
        settle = not holding and not (self._held and self._history)
        duplicate = await self.record_states(states, now=now, settle=settle)
        return outcomes(duplicate)

    async def settle_when_caught_up(self, now: dt.datetime | None = None) -> bool:
        """Settle the dossiers stored while catching up once the backlog no longer holds them (its watermark is
        recent again, or no fact came for its ``idle`` seconds) and the input is drained (nothing waits on the
        monitor's consumer nor on dossier_tracker's), or, under live load that never quite drains, once that
        load has not held them for its ``release`` seconds: a history with nothing live after it, or one late event,
        settles within seconds, not at the next tick, and the last facts of a replay are not settled before
        the later revisions behind them arrive. A periodic step; False: nothing left undone."""
        if not self._held:
            return False
        now = now or self.clock()
        if not self.backlog.behind(now):
            await self.backlog.probe()  # the pending counts, as they are now
        if self.backlog.holds(now):
            self._calm_since = None
            return False
        # Calm is live input that no longer holds anything; with no input coming (quiet, or a restarted run that
        # has seen none yet) only a drained input ends a history's hold.
        if not self.backlog.flowing():
            self._calm_since = None
        elif self._calm_since is None:
            self._calm_since = self.backlog.monotonic()
        calm = self._calm_since is not None and self.backlog.monotonic() - self._calm_since >= self.backlog.release
        # A history's hold: drained, or live input after it that never quite drains; live load's: at once.
        if not self._history or self.backlog.drained or calm:
            self._held = self._history = False
            self._calm_since = None
            await self.settle_unsettled(now)
        return False

    async def apply_plan_reports(self, received: Sequence[Received[PlanEvent]]) -> list[Outcome | Rejected]:
        return await self.record_reports([(r.event.source, r.event.id, r.event.data) for r in received])

    async def apply_deadletters(self, received: Sequence[Received[DeadLetterEvent]]) -> list[Outcome]:
        return outcomes(await self.record_deadletters([r.event.data for r in received]))

    # -- dossier states ------------------------------------------------------------------------------------
    async def record_states(
        self, states: Sequence[DossierStateChanged], *, now: dt.datetime | None = None, settle: bool = True
    ) -> list[bool]:
        """Keep each dossier's highest revision; per state, True if ignored (a duplicate or an older revision).

        With ``settle=False`` (catching up: a later revision may follow) the
        dossiers are stored unsettled (no alert yet); with ``settle=True`` they
        are settled, and so is every dossier this run stored unsettled before
        (or took over at start). Another replica's hold is its own: its live
        batches do not end it (a dead replica's is taken over by the run that
        replaces it, or settled by the next tick of one that holds nothing).
        """
        now = now or self.clock()
        duplicate = await self._commit(self._record_states, states, now=now, settle=settle)
        if settle and self._held:
            await self.settle_unsettled(now)
        self._held = not settle
        if settle:
            self._history = False
        return duplicate

    def _record_states(
        self, work: Work, states: Sequence[DossierStateChanged], *, now: dt.datetime, settle: bool
    ) -> list[bool]:
        best = domain.latest_states(states)
        rows = work.dossiers(best)
        applied: set[tuple[str, int]] = set()
        changed = []
        unknown = 0
        for code, state in best.items():
            row = rows.get(code)
            if row is not None and state.revision <= row.revision:
                continue
            changed.append(work.save_dossier(state, row, is_open=domain.is_open(state), now=now))
            applied.add((code, state.revision))
            unknown += not self.catalog.known(state.agency_code)
        self._note_unknown(work, domain.UnknownSeen(dossiers=unknown), now=now)
        if settle:
            self._settle_dossiers(work, changed, h=self.horizons(now), now=now)
        else:
            for row in changed:
                row.tick_level = UNSETTLED
        return [(s.dossier_code, s.revision) not in applied for s in states]

    async def settle_unsettled(self, now: dt.datetime) -> TickResult:
        """Settle every dossier stored while catching up (one empty index lookup when there is none)."""
        return await self.run_steps([self.unsettled_step(now)])

    # -- plan reports and occurrences ------------------------------------------------------------------
    async def record_reports(
        self, reports: Sequence[tuple[str, str, PlanTaskReported]], *, now: dt.datetime | None = None
    ) -> list[Outcome | Rejected]:
        """Store (source, id, report) once each and settle the occurrences they name.

        A report that can apply to no tracked occurrence (no such plan, task or
        owner, a period outside the plan's validity, a closed plan) is not
        stored: its outcome is :class:`Rejected` with a reason naming the field,
        and the consumer dead-letters it. A report on a continuous task, or
        from an agency outside the directory (the ``unknown_agency`` alert),
        is stored and changes no figure.
        """
        return await self._commit(self._record_reports, reports, now=now or self.clock())

    def _record_reports(
        self, work: Work, reports: Sequence[tuple[str, str, PlanTaskReported]], *, now: dt.datetime
    ) -> list[Outcome | Rejected]:
        seen = work.seen_reports((source, event_id) for source, event_id, _ in reports)
        out: list[Outcome | Rejected] = []
        touched: set[tuple[str, str, str, str]] = set()
        unknown = 0
        today = local_date(now)
        for source, event_id, report in reports:
            if (source, event_id) in seen:
                out.append(Outcome.DUPLICATE)
                continue
            unknown += not self.catalog.known(report.agency_code)
            occ, reason = self._match_report(work, report, today=today)
            if reason is not None:
                log.warning("plan report rejected plan=%s task=%s agency=%s period=%s: %s",
                            escape_text(report.plan_id), escape_text(report.task_id),
                            self.catalog.agencies.label(report.agency_code), escape_text(report.period or ""), reason)
                out.append(Rejected(reason))
                continue
            seen.add((source, event_id))
            work.add_report(source, event_id, report, occ_period=occ, now=now)
            out.append(Outcome.ACCEPTED)
            if occ is not None:
                touched.add((report.plan_id, report.task_id, report.agency_code, occ))
        self._note_unknown(work, domain.UnknownSeen(plan_reports=unknown), now=now)
        work.flush()
        rows = []
        for key in sorted(touched):
            row = work.occurrence(key)
            assert row is not None  # matched above, in this transaction
            row.done_on = domain.done_on(work.reports_of(key), local_date=local_date)
            rows.append(row)
        self._settle_occurrences(work, rows, h=self.horizons(now), now=now)
        return out

    def _match_report(self, work: Work, report: PlanTaskReported, *, today: dt.date) -> tuple[str | None, str | None]:
        """(the occurrence's period, None) for a report that applies to a tracked occurrence; (None, None) for a
        report stored without one (a continuous task; an agency outside the directory, which the one
        ``unknown_agency`` alert speaks for: a flood of invented codes must not become a flood of dead-letter
        alerts); (None, reason) for a report that applies to nothing."""
        if not self.catalog.known(report.agency_code):
            return None, None
        reason = domain.report_problem(
            plan_id=report.plan_id, task_id=report.task_id, agency_code=report.agency_code, period=report.period,
            catalog=self.catalog, today=today,
        )
        if reason is not None:
            return None, reason
        occ = self._report_period(report.plan_id, report.task_id, report.period, report.reported_at)
        task = self.catalog.task(report.plan_id, report.task_id)
        if occ is None and task is not None and isinstance(task.due, Continuous):
            return None, None
        if occ is None or work.occurrence((report.plan_id, report.task_id, report.agency_code, occ)) is None:
            return None, domain.NO_OCCURRENCE
        return occ, None

    def _report_period(self, plan_id: str, task_id: str, period: str | None, reported_at: dt.datetime) -> str | None:
        task = self.catalog.task(plan_id, task_id)
        if task is None:
            return None
        return domain.report_period(task, period=period, reported_on=local_date(reported_at))

    async def sync_plans(self, specs: Sequence[OccurrenceSpec], *, now: dt.datetime | None = None) -> TickResult:
        """Make the stored occurrences those of the loaded plans; derive their states from the reports again.

        Occurrences no longer generated (a task removed or re-dated, a plan file
        removed, a narrower window) are deleted after their alerts resolve.
        """
        result = await self._commit(self._sync_plans, specs, now=now or self.clock())
        log.info("plan occurrences synced tracked=%d transitions=%d", len(specs), result.transitions)
        return result

    def _sync_plans(self, work: Work, specs: Sequence[OccurrenceSpec], *, now: dt.datetime) -> TickResult:
        wanted = {s.key: s for s in specs}
        rows = work.occurrences()
        gone = [r for k, r in rows.items() if k not in wanted]
        resolved = 0
        if gone:
            keys = [domain.plan_alert_key(kind, occurrence_facts(r)) for r in gone for kind in PLAN_KINDS]
            existing = work.alerts(keys)
            for key in keys:
                resolved += self._resolve(work, existing.get(key), now=now)
            work.delete_occurrences(gone)
            log.info("plan occurrences removed count=%d", len(gone))
        for key, spec in wanted.items():
            row = rows.get(key)
            if row is None:
                work.add_occurrence(spec, now=now)
            elif (row.due_day, row.opens_on) != (spec.due_day, spec.opens_on):
                row.due_day, row.opens_on, row.updated_at = spec.due_day, spec.opens_on, now
                row.tick_level = 0 if row.done_on is None else None
        work.flush()
        plan_ids = {s.plan_id for s in specs}
        for report in work.plan_reports(plan_ids):  # each stored report to its occurrence under the plans as loaded
            occ = self._report_period(report.plan_id, report.task_id, report.period, report.reported_at)
            if occ != report.occ_period:
                report.occ_period = occ
        live = [r for k, r in rows.items() if k in wanted]
        todo = {occurrence_key_of(r): r for r in live + work.unpublished_occurrences()}
        reports = work.reports_by_occurrence(plan_ids)
        for key, row in todo.items():
            row.done_on = domain.done_on(reports.get(key, ()), local_date=local_date)
        moved = self._settle_occurrences(work, list(todo.values()), h=self.horizons(now), now=now)
        return TickResult(examined=len(todo), transitions=moved + resolved)

    # -- dead letters -------------------------------------------------------------------------------------
    async def record_deadletters(self, letters: Sequence[DeadLetter], *, now: dt.datetime | None = None) -> list[bool]:
        """Raise one ``deadletter`` alert per rejected message, ever; True = already raised."""
        return await self._commit(self._record_deadletters, letters, now=now or self.clock())

    def _record_deadletters(self, work: Work, letters: Sequence[DeadLetter], *, now: dt.datetime) -> list[bool]:
        expires = now + self.deadletter_ttl if self.deadletter_ttl else None
        known = set(work.alerts(domain.deadletter_alert_key(d.stream, d.stream_seq) for d in letters))
        out = []
        for letter in letters:
            key = domain.deadletter_alert_key(letter.stream, letter.stream_seq)
            if key in known:
                out.append(True)
                continue
            known.add(key)
            alert = domain.deadletter_alert(letter, district_code=self.district_code, starts_at=now)
            self._fire(work, alert, None, now=now, expires_at=expires)
            out.append(False)
        return out

    # -- agencies outside the directory (inside a transaction) ------------------------------------------
    def _note_unknown(self, work: Work, seen: domain.UnknownSeen, *, now: dt.datetime) -> None:
        """Fire the one ``unknown_agency`` alert for ``seen``, or, while it fires, restart its quiet period."""
        if not seen:
            return
        key = domain.UNKNOWN_AGENCY_KEY
        row = work.alerts([key]).get(key)
        expires = now + self.unknown_agency_quiet if self.unknown_agency_quiet else None
        if row is not None and row.state == FIRING:
            row.expires_at = expires
            return
        alert = domain.unknown_agency_alert(seen, district_code=self.district_code, starts_at=now)
        self._fire(work, alert, row, now=now, expires_at=expires)
        log.warning("events name agency codes outside the directory dossiers=%d plan_reports=%d: unknown_agency "
                    "alert fired (list them: parwatch agencies unknown)", seen.dossiers, seen.plan_reports)

    # -- alert transitions (inside a transaction) -------------------------------------------------------
    def _fire(
        self,
        work: Work,
        alert: Alert,
        existing: Record | None,
        *,
        now: dt.datetime,
        expires_at: dt.datetime | None = None,
    ) -> bool:
        """Record a firing transition and its event; False if the alert was firing already."""
        if existing is not None and existing.state == FIRING:
            return False
        generation = 1 if existing is None else existing.generation + 1
        work.save_firing(alert, existing, generation=generation, now=now, expires_at=expires_at)
        work.send([alert_message(alert, transition=FIRING, generation=generation, now=now)])
        return True

    def _resolve(self, work: Work, row: Record | None, *, now: dt.datetime) -> bool:
        """Record a resolving transition and its event; False if the alert was not firing."""
        if row is None or row.state != FIRING:
            return False
        work.save_resolved(row, now=now)
        alert = stored_alert(row, ends_at=now)
        work.send([alert_message(alert, transition=RESOLVED, generation=row.generation, now=now)])
        return True

    def _transition(
        self, work: Work, *, resolve: Iterable[str], fire: Alert | None, existing: dict[str, Record], now: dt.datetime
    ) -> int:
        """Resolve the alerts (keys) whose condition no longer holds, fire the one that now does; the
        transitions counted."""
        count = sum(self._resolve(work, existing.get(key), now=now) for key in resolve)
        if fire is not None:
            self._fire(work, fire, existing.get(fire.alert_key), now=now)
            count += 1
        return count

    def _settle_dossiers(self, work: Work, rows: Sequence[Any], *, h: Horizons, now: dt.datetime) -> int:
        decided = [
            (row, facts, domain.settle_dossier(facts, row.firing, h, known=self.catalog.known(facts.agency_code)))
            for row, facts in _with_facts(rows, dossier_facts)
        ]
        existing = work.alerts(
            domain.dossier_alert_key(kind, row.dossier_code) for row, _, s in decided for kind in s.move.kinds
        )
        count = 0
        for row, facts, s in decided:
            fire = (
                domain.dossier_alert(
                    s.move.fire, facts, agency_name=self.catalog.agency_name(facts.agency_code), h=h, starts_at=now
                )
                if s.move.fire
                else None
            )
            resolve = [domain.dossier_alert_key(kind, row.dossier_code) for kind in s.move.resolve]
            count += self._transition(work, resolve=resolve, fire=fire, existing=existing, now=now)
            row.firing, row.tick_level = s.firing, s.tick_level
        return count

    def closed_plans(self, today: dt.date) -> list[str]:
        """The ids of the loaded plans closed on ``today`` (:func:`domain.plan_closes_on`)."""
        return sorted(p.plan_id for p in self.catalog.plans.values() if domain.plan_closed(p, today))

    def plans_in_force(self, today: dt.date) -> list[str]:
        """The ids of the loaded plans not closed on ``today``: those ``parwatch_plan_tasks`` counts."""
        return sorted(p.plan_id for p in self.catalog.plans.values() if not domain.plan_closed(p, today))

    def _settle_occurrences(self, work: Work, rows: Sequence[Any], *, h: Horizons, now: dt.datetime) -> int:
        closed = set(self.closed_plans(h.today))
        decided = [
            (row, facts, *domain.settle_occurrence(facts, row.firing, h, self.policy, closed=facts.plan_id in closed))
            for row, facts in _with_facts(rows, occurrence_facts)
        ]
        existing = work.alerts(
            domain.plan_alert_key(kind, facts) for _, facts, _, s in decided for kind in s.move.kinds
        )
        count = 0
        for row, facts, state, s in decided:
            if state != row.state:
                row.state = state
                row.fact_version += 1
                row.updated_at = now
                work.send([task_state_message(facts, state=state, version=row.fact_version, now=now)])
                count += 1
            fire = (
                domain.occurrence_alert(
                    s.move.fire,
                    facts,
                    task=self.catalog.task(facts.plan_id, facts.task_id),
                    plan=self.catalog.plans.get(facts.plan_id),
                    agency_name=self.catalog.agency_name(facts.agency_code),
                    starts_at=now,
                )
                if s.move.fire
                else None
            )
            resolve = [domain.plan_alert_key(kind, facts) for kind in s.move.resolve]
            count += self._transition(work, resolve=resolve, fire=fire, existing=existing, now=now)
            row.firing, row.tick_level = s.firing, s.tick_level
        return count

    # -- the tick --------------------------------------------------------------------------------------
    async def tick(self, now: dt.datetime | None = None) -> bool:
        """Everything time changed by ``now`` (default: the clock): dossiers, task occurrences, expired alerts.

        While the monitor is catching up, the dossiers are left alone: their
        stored state may be older than the stream's. With nothing due it is one
        transaction of seven index range scans that return no row. The periodic
        step (``service.every``): False, a tick leaves nothing undone.
        """
        now = now or self.clock()
        await self.settle_when_caught_up(now)  # a hold whose backlog has drained ends here too
        await self.backlog.probe()
        holding = self.backlog.holds(now) or self._held
        if holding:
            log.info("catching up on dossier states backlog=%d watermark=%s: dossier alerts wait",
                     self.backlog.pending, self.backlog.watermark)
        result = await self.run_steps(self.tick_steps(now, dossiers=not holding))
        if result.transitions:
            log.info("tick day=%s examined=%d transitions=%d", local_date(now), result.examined, result.transitions)
        return False

    def tick_steps(self, now: dt.datetime, *, dossiers: bool = True) -> list[Step]:
        """The tick as steps (:meth:`run_steps`); ``dossiers=False`` leaves the dossiers alone."""
        steps = [self.unsettled_step(now), *self.dossier_steps(now)] if dossiers else []
        return [*steps, self.closing_step(now), *self.occurrence_steps(now), self.expiry_step(now)]

    async def run_steps(self, steps: Sequence[Step]) -> TickResult:
        """Run ``steps`` in order, in transactions of at most ``tick_chunk`` rows each."""
        todo = list(steps)
        result = TickResult()
        while todo:
            part, todo = await self._commit(self._run_budget, todo)
            result += part
        return result

    def _run_budget(self, work: Work, steps: Sequence[Step]) -> tuple[TickResult, list[Step]]:
        todo = list(steps)
        result = TickResult()
        budget = self.tick_chunk
        while todo and budget > 0:
            examined, moved, exhausted = todo[0](work, budget)
            result += TickResult(examined=examined, transitions=moved)
            budget -= examined
            if exhausted:
                todo.pop(0)
        return result, todo

    def dossier_steps(self, now: dt.datetime) -> list[Step]:
        h = self.horizons(now)
        # A dossier at level L waits for a kind above L: due soon, apology due, overdue. Each bound is
        # the largest horizon among those kinds (a due day on a day off can be in the apology
        # horizon and not yet in the due-soon one when both leads are equal).
        bounds = ((0, max(h.soon, h.apology, h.yesterday)), (1, max(h.apology, h.yesterday)), (2, h.yesterday))
        return [
            self._level_step(DOSSIERS, level, bound, settle=self._settle_dossiers, h=h, now=now)
            for level, bound in bounds
        ]

    def occurrence_steps(self, now: dt.datetime) -> list[Step]:
        h = self.horizons(now)
        bounds = ((0, h.plan_soon), (1, h.yesterday))
        return [
            self._level_step(OCCURRENCES, level, bound, settle=self._settle_occurrences, h=h, now=now)
            for level, bound in bounds
        ]

    def _level_step(
        self,
        ticked: Ticked,
        level: int,
        bound: dt.date,
        *,
        settle: Callable[..., int],
        h: Horizons,
        now: dt.datetime,
    ) -> Step:
        """Settle up to ``budget`` rows at ``level`` whose due day reached ``bound``."""

        def step(work: Work, budget: int) -> tuple[int, int, bool]:
            rows = work.at_level(ticked, level=level, bound=bound, limit=budget)
            if not rows:
                return 0, 0, True
            moved = settle(work, rows, h=h, now=now)
            work.flush()  # the next step reads what this one wrote
            if all(r.tick_level == level for r in rows):  # nothing moved on: never loop on the same rows
                log.error("tick made no progress table=%s level=%d rows=%d", ticked.table.name, level, len(rows))
                return len(rows), moved, True
            return len(rows), moved, len(rows) < budget

        return step

    def closing_step(self, now: dt.datetime) -> Step:
        """Settle up to ``budget`` occurrences of closed plans still firing or watched: their alerts resolve, they
        are watched no more (each is read once after its plan closes; none when no plan closed)."""
        h = self.horizons(now)
        closed = self.closed_plans(h.today)
        return _settling(
            read=lambda work, budget: work.live_occurrences(closed, limit=budget) if closed else [],
            settle=lambda work, rows: self._settle_occurrences(work, rows, h=h, now=now),
        )

    def unsettled_step(self, now: dt.datetime) -> Step:
        """Settle up to ``budget`` dossiers stored while catching up."""
        h = self.horizons(now)
        return _settling(
            read=lambda work, budget: work.unsettled(limit=budget),
            settle=lambda work, rows: self._settle_dossiers(work, rows, h=h, now=now),
        )

    def expiry_step(self, now: dt.datetime) -> Step:
        """Resolve up to ``budget`` firing alerts whose time is up (dead letters after their TTL)."""

        def step(work: Work, budget: int) -> tuple[int, int, bool]:
            rows = work.expiring(now=now, limit=budget)
            moved = 0
            for row in rows:
                moved += self._resolve(work, row, now=now)
                row.expires_at = None
            return len(rows), moved, len(rows) < budget

        return step


def _settling(*, read: Callable[[Work, int], Sequence[Any]], settle: Callable[[Work, Sequence[Any]], int]) -> Step:
    """A step that settles up to ``budget`` of the rows ``read`` gives and writes them; it says it is done when
    fewer than ``budget`` came."""

    def step(work: Work, budget: int) -> tuple[int, int, bool]:
        rows = read(work, budget)
        if not rows:
            return 0, 0, True
        moved = settle(work, rows)
        work.flush()  # the next step reads what this one wrote
        return len(rows), moved, len(rows) < budget

    return step
