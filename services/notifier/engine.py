"""The notifier at work: receive, dispatch, deliver, each step persisted.

* :meth:`Notifier.record` (the consumer's ``apply``) stores alert events,
  deduplicated on (source, id), and returns; the batch is acked after commit.
* :meth:`Notifier.tick` asks the pure ``plan_dispatch`` what to send at
  ``now`` and persists the plan with its outbox rows in one transaction; it
  also makes the weekly and monthly digests when due.
* :meth:`Notifier.deliver` sends due outbox rows. Before a send it checks the
  notification log; after a send it writes the log and marks the row sent in
  one transaction. A retryable failure schedules the row again with an
  exponential back-off, so while a channel is down nothing is lost, and when
  it returns nothing goes out twice.

The clock is injected; tests call ``tick(now)`` and ``deliver(now)``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from services.notifier.domain import digest as digests
from services.notifier.domain.dispatch import Calendar, Flush, Plan, plan_dispatch
from services.notifier.domain.model import Directory, EscalationPolicy, Official, Timing
from services.notifier.domain.routing import officials_for_role
from services.notifier.notify import Channel, SendResult
from services.notifier.render import Renderer
from services.notifier.store import IncomingAlert, LogEntry, NewOutbox, OutboxRow, Store
from shared.consuming import Delivery, Outcome, run_in_thread
from shared.events import ALERT_FIRING_TYPE, ALERT_KINDS

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class _MemoCalendar:
    """The working calendar with escalation deadlines remembered (computed once per alert, not per pass)."""

    def __init__(self, calendar: Calendar, *, size: int = 20_000) -> None:
        self.calendar = calendar
        self.size = size
        self._hours: dict[tuple[dt.datetime, float], dt.datetime] = {}

    def is_working_day(self, day: dt.date) -> bool:
        return self.calendar.is_working_day(day)

    def add_working_hours(self, start: dt.datetime, hours: float) -> dt.datetime:
        key = (start, hours)
        found = self._hours.get(key)
        if found is None:
            if len(self._hours) >= self.size:
                self._hours.clear()
            found = self._hours[key] = self.calendar.add_working_hours(start, hours)
        return found


class NotifierMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.notifications = Counter(
            "parwatch_notifications_total",
            "Notices by channel: sent, failed (given up) or suppressed (silenced).",
            ["channel", "result"],
            registry=registry,
        )
        self.alerts = Counter(
            "parwatch_alerts_total",
            "Distinct firing alert events received on tthc.alerts (deduplicated on source and id).",
            ["kind", "severity"],
            registry=registry,
        )
        self.send_errors = Counter(
            "parwatch_notifier_send_errors_total",
            "Failed delivery attempts by channel and whether they will be retried.",
            ["channel", "retryable"],
            registry=registry,
        )
        self.pending = Gauge(
            "parwatch_notifier_outbox_pending",
            "Notices waiting in the outbox, by channel.",
            ["channel"],
            registry=registry,
        )

    def initialize(self, channels: Iterable[str]) -> None:
        """Export zeros for the known series, so dashboards and rate() see them from the start."""
        for channel in channels:
            for result in ("sent", "failed", "suppressed"):
                self.notifications.labels(channel=channel, result=result)
            self.pending.labels(channel=channel).set(0)
        for kind in ALERT_KINDS:
            for severity in ("info", "warning", "critical"):
                self.alerts.labels(kind=kind, severity=severity)


class Notifier:
    def __init__(
        self,
        *,
        store: Store,
        directory: Directory,
        renderer: Renderer,
        channels: Mapping[str, Channel],
        email_channel: str,
        timing: Timing,
        escalation: EscalationPolicy,
        calendar: Calendar,
        metrics: NotifierMetrics,
        clock: Clock = utc_now,
        quiet_hours: bool = True,
        retry_first_delay: dt.timedelta = dt.timedelta(seconds=10),
        retry_max_delay: dt.timedelta = dt.timedelta(minutes=15),
        delivery_batch: int = 50,
        weekly_digest: bool = True,
        monthly_digest: bool = True,
        digest_time: dt.time = dt.time(7, 30),
        tick_interval: float = 2.0,
        delivery_interval: float = 1.0,
    ) -> None:
        self.store = store
        self.directory = directory
        self.renderer = renderer
        self.channels = channels
        self.email_channel = email_channel
        metrics.initialize({c for o in directory.officials.values() for c in self.channels_for(o)})
        self.timing = timing
        self.escalation = escalation
        self.calendar = _MemoCalendar(calendar)
        self.metrics = metrics
        self.clock = clock
        self.quiet_hours = quiet_hours
        self.retry_first_delay = retry_first_delay
        self.retry_max_delay = retry_max_delay
        self.delivery_batch = delivery_batch
        self.weekly_digest = weekly_digest
        self.monthly_digest = monthly_digest
        self.digest_time = digest_time
        self.tick_interval = tick_interval
        self.delivery_interval = delivery_interval
        self._installed_at: dt.datetime | None = None
        self._lock = asyncio.Lock()
        self._deliver_lock = asyncio.Lock()

    # -- receiving ---------------------------------------------------------------------
    async def record(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        events = [IncomingAlert(source=d.event.source, event_id=d.event.id, type=d.event.type, alert=d.event.data)
                  for d in deliveries]
        async with self._lock:
            fresh = await run_in_thread(self.store.record_alerts, events, now=self.clock())
        for ev, new in zip(events, fresh, strict=True):
            if new and ev.type == ALERT_FIRING_TYPE:
                self.metrics.alerts.labels(kind=ev.alert.kind, severity=ev.alert.severity).inc()
            log.info("alert %s key=%s kind=%s agency=%s", "recorded" if new else "duplicate", ev.alert.alert_key,
                     ev.alert.kind, ev.alert.agency_code)
        return [Outcome.ACCEPTED if new else Outcome.DUPLICATE for new in fresh]

    # -- dispatching ------------------------------------------------------------------
    def channels_for(self, official: Official) -> list[str]:
        out = []
        if official.email:
            out.append(self.email_channel)
        if official.webhook:
            out.append("webhook")
        return out or ["log"]

    async def tick(self, now: dt.datetime | None = None) -> Plan:
        """One dispatch pass at ``now``: plan, persist with outbox rows, then digests."""
        now = now or self.clock()
        async with self._lock:
            state = await run_in_thread(self.store.load_dispatch_state, now=now)
            plan = plan_dispatch(
                now=now, alerts=state.alerts, assignments=state.assignments, groups=state.groups,
                silences=state.silences, directory=self.directory, timing=self.timing, escalation=self.escalation,
                calendar=self.calendar, quiet_hours=self.quiet_hours,
            )
            outbox = [row for flush in plan.flushes for row in self._outbox_for(flush, now)]
            if not plan.empty:
                await run_in_thread(self.store.apply_plan, plan, outbox, now=now)
            for s in plan.suppressed:
                official = self.directory.officials.get(s.receiver_id)
                for channel in self.channels_for(official) if official else ["log"]:
                    self.metrics.notifications.labels(channel=channel, result="suppressed").inc()
                log.info("notification suppressed key=%s receiver=%s silence=%s", s.alert_key, s.receiver_id,
                         s.silence_id)
            for flush in plan.flushes:
                log.info("notification queued receiver=%s agency=%s keys=%s", flush.receiver_id, flush.agency_code,
                         ",".join(i.alert.alert_key for i in flush.items))
            await self._digests(now)
        return plan

    def _outbox_for(self, flush: Flush, now: dt.datetime) -> list[NewOutbox]:
        official = self.directory.officials[flush.receiver_id]
        items = []
        for i in flush.items:
            a = i.alert
            items.append({
                "notice_key": i.notice_key, "alert_key": a.alert_key, "state": i.state, "level": i.level,
                "repeat": i.repeat, "kind": a.kind, "severity": a.severity, "agency_code": a.agency_code,
                "ref": a.ref, "summary": a.summary, "starts_at": a.starts_at.isoformat(),
                "ends_at": a.ends_at.isoformat() if a.ends_at else None, "labels": dict(a.labels),
            })
        payload = {"type": "alerts", "receiver": official.id, "role": official.role, "agency": flush.agency_code,
                   "created_at": now.isoformat(), "items": items}
        keys = [i["notice_key"] for i in items]
        return [NewOutbox(kind="alerts", receiver_id=official.id, channel=channel, agency_code=flush.agency_code,
                          payload=payload, notice_keys=keys) for channel in self.channels_for(official)]

    async def _digests(self, now: dt.datetime) -> None:
        periods = digests.due_periods(now, calendar=self.calendar, digest_time=self.digest_time,
                                      weekly=self.weekly_digest, monthly=self.monthly_digest)
        if not periods:
            return
        if self._installed_at is None:
            self._installed_at = await run_in_thread(self.store.installed_at, now=now)
        for period in periods:
            if not digests.covers(period, self._installed_at):
                continue  # the notifier was not running then: nothing to report
            wanted: list[tuple[str, str]] = []  # (digest kind, agency)
            if period.kind == digests.WEEKLY:
                wanted = [(digests.WEEKLY, code) for code in self._digest_agencies()]
            else:
                wanted = [(digests.MONTHLY, code) for code in self._digest_agencies()]
                wanted.append((digests.DISTRICT_MONTHLY, self.directory.district_code))
            made: dict[str, set[str]] = {}
            todo = []
            for kind, code in wanted:
                if kind not in made:
                    made[kind] = await run_in_thread(self.store.digests_made, kind, period.key)
                if code not in made[kind]:
                    todo.append((kind, code))
            if not todo:
                continue
            since = dt.datetime.combine(period.start - dt.timedelta(days=1), dt.time(0), tzinfo=dt.timezone.utc)
            alerts = await run_in_thread(self.store.alerts_since, since)
            for kind, code in todo:
                if kind == digests.WEEKLY:
                    d = digests.build_weekly(code, period, alerts)
                    receivers = officials_for_role(self.directory, code, "officer") + officials_for_role(
                        self.directory, code, "head")
                elif kind == digests.MONTHLY:
                    d = digests.build_monthly(code, period, alerts)
                    receivers = officials_for_role(self.directory, code, "head")
                else:
                    d = digests.build_district_monthly(code, period, alerts, self._digest_agencies())
                    receivers = self.directory.leadership()
                outbox = self._digest_outbox(kind, period, code, d, receivers)
                if await run_in_thread(self.store.make_digest, kind, period.key, code, outbox, now=now):
                    log.info("digest queued kind=%s period=%s agency=%s receivers=%d", kind, period.key, code,
                             len({o.receiver_id for o in outbox}))

    def _digest_agencies(self) -> list[str]:
        return [c for c in self.directory.agencies_with_officials() if c != self.directory.district_code]

    def _digest_outbox(self, kind: str, period: digests.DigestPeriod, agency_code: str, d: digests.Digest,
                       receivers: list[Official]) -> list[NewOutbox]:
        body = _jsonable(asdict(d))
        body["kind"] = kind
        key = f"digest:{kind}:{period.key}:{agency_code}"
        out, seen = [], set()
        for official in receivers:
            if official.id in seen:
                continue
            seen.add(official.id)
            payload = {"type": "digest", "receiver": official.id, "role": official.role, "agency": agency_code,
                       "notice_key": key, "digest": body}
            out += [NewOutbox(kind="digest", receiver_id=official.id, channel=channel, agency_code=agency_code,
                              payload=payload, notice_keys=[key]) for channel in self.channels_for(official)]
        return out

    # -- delivering --------------------------------------------------------------------
    def backoff(self, attempts: int) -> dt.timedelta:
        """Delay before the next try after ``attempts`` failed ones: doubles, capped."""
        delay = self.retry_first_delay * (2 ** max(0, attempts - 1))
        return min(delay, self.retry_max_delay)

    async def deliver(self, now: dt.datetime | None = None) -> int:
        """Send the outbox rows due at ``now``; returns how many were sent."""
        now = now or self.clock()
        sent = 0
        async with self._deliver_lock:
            rows = await run_in_thread(self.store.due_outbox, now=now, limit=self.delivery_batch)
            down: set[str] = set()
            for row in rows:
                if row.channel in down:
                    continue  # this channel just failed: its rows wait for their own next try
                result = await self._deliver_one(row, now)
                if result is None:
                    continue
                if result.ok:
                    sent += 1
                elif result.retryable:
                    down.add(row.channel)
            counts = await run_in_thread(self.store.pending_counts)
            for name in set(self.channels) | set(counts):
                self.metrics.pending.labels(channel=name).set(counts.get(name, 0))
        return sent

    async def _deliver_one(self, row: OutboxRow, now: dt.datetime) -> SendResult | None:
        assert row.id is not None
        official = self.directory.officials.get(row.receiver_id)
        channel = self.channels.get(row.channel)
        if official is None or channel is None:
            why = "receiver not in the directory" if official is None else "channel not configured"
            await run_in_thread(self.store.mark_finished, row.id, status="failed", now=now, error=why)
            self.metrics.notifications.labels(channel=row.channel, result="failed").inc()
            log.error("notification dropped outbox=%d receiver=%s channel=%s: %s", row.id, row.receiver_id,
                      row.channel, why)
            return SendResult.give_up(why)
        done = await run_in_thread(self.store.logged_keys, receiver_id=row.receiver_id, channel=row.channel,
                                   keys=row.notice_keys)
        payload = dict(row.payload)
        if row.kind == "alerts":
            payload["items"] = [i for i in payload["items"] if i["notice_key"] not in done]
            remaining = bool(payload["items"])
        else:
            remaining = not set(row.notice_keys) <= done
        if not remaining:
            await run_in_thread(self.store.mark_finished, row.id, status="duplicate", now=now)
            log.info("notification already sent outbox=%d receiver=%s", row.id, row.receiver_id)
            return None
        try:
            message = self.renderer.render(payload, delivery_id=f"parwatch-{row.id}", sent_at=now)
        except Exception:  # a payload that cannot be rendered will not render later either
            log.exception("notification cannot be rendered outbox=%d receiver=%s", row.id, row.receiver_id)
            result = SendResult.give_up("cannot be rendered")
        else:
            try:
                result = await channel.send(official, message)
            except Exception:  # a channel bug: keep the notice and try again later, loudly
                log.exception("channel raised outbox=%d receiver=%s channel=%s", row.id, row.receiver_id, row.channel)
                result = SendResult.retry("channel raised an exception")
        attempts = row.attempts + 1
        if result.ok:
            await run_in_thread(self.store.mark_sent, row.id, _log_entries(row, payload), now=now)
            self.metrics.notifications.labels(channel=row.channel, result="sent").inc()
            log.info("notification sent outbox=%d receiver=%s channel=%s agency=%s attempts=%d", row.id,
                     row.receiver_id, row.channel, row.agency_code, attempts)
        elif result.retryable:
            next_at = now + self.backoff(attempts)
            await run_in_thread(self.store.mark_retry, row.id, attempts=attempts, next_attempt_at=next_at,
                                error=result.reason)
            self.metrics.send_errors.labels(channel=row.channel, retryable="true").inc()
            log.warning("notification deferred outbox=%d receiver=%s channel=%s attempts=%d retry_at=%s reason=%s",
                        row.id, row.receiver_id, row.channel, attempts, next_at.isoformat(), result.reason)
        else:
            await run_in_thread(self.store.mark_finished, row.id, status="failed", now=now, error=result.reason,
                                attempts=attempts)
            self.metrics.send_errors.labels(channel=row.channel, retryable="false").inc()
            self.metrics.notifications.labels(channel=row.channel, result="failed").inc()
            log.error("notification failed outbox=%d receiver=%s channel=%s reason=%s", row.id, row.receiver_id,
                      row.channel, result.reason)
        return result

    # -- loops (background tasks of the Service) ------------------------------------------
    async def dispatch_loop(self) -> None:
        while True:
            await self.tick(self.clock())
            await asyncio.sleep(self.tick_interval)

    async def delivery_loop(self) -> None:
        while True:
            await self.deliver(self.clock())
            await asyncio.sleep(self.delivery_interval)


def _log_entries(row: OutboxRow, payload: Mapping[str, Any]) -> list[LogEntry]:
    if row.kind == "digest":
        return [LogEntry(receiver_id=row.receiver_id, channel=row.channel, agency_code=row.agency_code,
                         alert_key=payload["notice_key"], state="digest", kind=payload["digest"]["kind"],
                         severity="info", notice_key=payload["notice_key"])]
    return [LogEntry(receiver_id=row.receiver_id, channel=row.channel, agency_code=row.agency_code,
                     alert_key=i["alert_key"], state=i["state"], kind=i["kind"], severity=i["severity"],
                     notice_key=i["notice_key"]) for i in payload["items"]]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return value
