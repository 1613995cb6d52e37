"""The notifier's service layer: record alerts, plan notices, deliver them; each step persisted.

* :meth:`NotifierService.record` (the ``tthc.alerts`` handler's call) stores
  alert events, deduplicated on (source, id); the batch is acked after commit.
  Alertmanager's receiver (``alertmanager``) records through the same
  :meth:`NotifierService.receive`.
* :meth:`NotifierService.tick` asks the pure ``plan_dispatch`` what to send at
  ``now`` and stores the plan with its notices in one transaction: each
  notice is a message of the shared outbox (:class:`Notice`: one receiver,
  one channel). It also makes the weekly and monthly digests when due.
* :meth:`NotifierService.send` is the outbox relay's delivery of one notice.
  It checks the notification log first (what the log holds is not sent
  again), renders the notice and sends it on its channel; the log is written
  in the transaction that deletes the notice from the outbox. A failure the
  channel calls retryable is tried again under the relay's backoff, with no
  limit (nothing is lost while a channel is down); a permanent one is
  recorded (``notifier_failure``) and counted ``failed``.

The clock is injected; tests call ``tick(now)`` and ``relay.once(now)``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from services.notifier.domain import digest as digests
from services.notifier.domain.dispatch import Calendar, Flush, plan_dispatch
from services.notifier.domain.model import Directory, EscalationPolicy, Official, Timing
from services.notifier.domain.routing import officials_for_role, restricted
from services.notifier.metrics import NotifierMetrics
from services.notifier.notify import Channel, SendResult
from services.notifier.render import Renderer
from services.notifier.store import Failure, IncomingAlert, LogEntry, Store
from shared.backoff import Backoff
from shared.consumer import Outcome, Received
from shared.events import ALERT_FIRING_TYPE, AlertEvent
from shared.outbox import Delivered, GiveUp, Message, Pending, Relay, Result, Retry
from shared.service import utc_now
from shared.text import escape_text

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]

#: Notices sent at once by the relay (messages of one receiver and channel always go out one after the other).
SEND_CONCURRENCY = 4


@dataclass(frozen=True)
class Notice:
    """What one receiver is told on one channel: an outbox message's topic (the channel) and payload (``body``)."""

    channel: str
    body: dict[str, Any]  # type (alerts | digest), receiver, role, agency, notice_keys, items | digest

    @property
    def receiver_id(self) -> str:
        return str(self.body["receiver"])

    @property
    def kind(self) -> str:
        return str(self.body["type"])

    @property
    def agency_code(self) -> str:
        return str(self.body["agency"])

    @property
    def notice_keys(self) -> list[str]:
        return list(self.body["notice_keys"])

    def message(self) -> Message:
        """The outbox message. A receiver's notices on a channel go out in order; the message id is the
        ``X-Parwatch-Delivery`` receivers may drop a copy on: the same for the same notices, across retries."""
        content = "\n".join([self.channel, self.receiver_id, *self.notice_keys])
        return Message(topic=self.channel, key=f"{self.channel}:{self.receiver_id}",
                       payload=json.dumps(self.body, ensure_ascii=False),
                       message_id="parwatch-" + hashlib.sha256(content.encode()).hexdigest()[:24])

    @classmethod
    def of(cls, pending: Pending) -> Notice:
        return cls(channel=pending.topic, body=json.loads(pending.payload))

    def without(self, done: set[str]) -> Notice | None:
        """The notice less what was already delivered (``done``); None when nothing is left."""
        if self.kind != "alerts":
            return None if set(self.notice_keys) <= done else self
        items = [i for i in self.body["items"] if i["notice_key"] not in done]
        if not items:
            return None
        return Notice(self.channel, {**self.body, "items": items, "notice_keys": [i["notice_key"] for i in items]})

    def log_entries(self) -> list[LogEntry]:
        """What the notification log keeps of it once delivered: one entry per alert (or the digest)."""
        common = dict(receiver_id=self.receiver_id, channel=self.channel, agency_code=self.agency_code)
        if self.kind == "digest":
            key = self.body["notice_key"]
            return [LogEntry(**common, alert_key=key, state="digest", kind=self.body["digest"]["kind"],
                             severity="info", notice_key=key)]
        return [LogEntry(**common, alert_key=i["alert_key"], state=i["state"], kind=i["kind"], severity=i["severity"],
                         notice_key=i["notice_key"]) for i in self.body["items"]]


@dataclass(kw_only=True, eq=False, repr=False)  # a holder of its dependencies, compared by identity
class NotifierService:
    store: Store
    directory: Directory
    renderer: Renderer
    channels: Mapping[str, Channel]
    email_channel: str
    timing: Timing
    escalation: EscalationPolicy
    calendar: Calendar
    metrics: NotifierMetrics
    backoff: Backoff  # the relay's, before a notice a channel refused is tried again
    clock: Clock = utc_now
    quiet_hours: bool = True
    delivery_batch: int = 50  # notices the relay takes in one pass
    weekly_digest: bool = True
    monthly_digest: bool = True
    digest_time: dt.time = dt.time(7, 30)

    def __post_init__(self) -> None:
        #: Delivers the outbox: run ``relay.once`` in the background, woken when a pass queued notices.
        self.relay = Relay(self.store.outbox, self.send, clock=self.clock, batch=self.delivery_batch,
                           concurrency=SEND_CONCURRENCY, backoff=self.backoff)
        self.metrics.initialize({c for o in self.directory.officials.values() for c in self.channels_for(o)},
                                outbox=self.store.outbox)
        self._installed_at: dt.datetime | None = None
        self._lock = asyncio.Lock()  # receiving and planning take turns: a plan sees every alert recorded before it

    def create_schema(self) -> None:
        """The store's tables; the notices an older notifier left waiting in its own outbox are queued again."""
        self.store.create_schema()
        legacy = self.store.legacy_notices()
        if legacy:
            notices = [Notice(n.channel, {**n.payload, "notice_keys": n.notice_keys}) for n in legacy]
            self.store.carry_over(legacy, [n.message() for n in notices], now=self.clock())
            log.warning("notices of the older outbox carried over count=%d", len(legacy))

    # -- receiving ---------------------------------------------------------------------
    async def record(self, received: Sequence[Received[AlertEvent]]) -> list[Outcome]:
        events = [IncomingAlert(source=r.event.source, event_id=r.event.id, type=r.event.type, alert=r.event.data)
                  for r in received]
        fresh = await self.receive(events)
        return [Outcome.ACCEPTED if new else Outcome.DUPLICATE for new in fresh]

    async def receive(self, events: Sequence[IncomingAlert]) -> list[bool]:
        """Record alert events from any door (``tthc.alerts``, Alertmanager's receiver); True for the new ones."""
        async with self._lock:
            fresh = await asyncio.to_thread(self.store.record_alerts, events, now=self.clock())
        for ev, new in zip(events, fresh, strict=True):
            if new and ev.type == ALERT_FIRING_TYPE:
                self.metrics.alert_received(kind=ev.alert.kind, severity=ev.alert.severity)
            log.info("alert %s key=%s kind=%s agency=%s", "recorded" if new else "duplicate",
                     escape_text(ev.alert.alert_key, limit=300), escape_text(ev.alert.kind, limit=80),
                     self.directory.agency_label(ev.alert.agency_code))
        return fresh

    # -- dispatching ------------------------------------------------------------------
    def channels_for(self, official: Official) -> list[str]:
        out = []
        if official.email:
            out.append(self.email_channel)
        if official.webhook:
            out.append("webhook")
        return out or ["log"]

    async def tick(self, now: dt.datetime | None = None) -> None:
        """One dispatch pass at ``now``: plan, store the plan with its notices, then the digests due."""
        now = now or self.clock()
        async with self._lock:
            state = await asyncio.to_thread(self.store.load_dispatch_state, now=now)
            plan = plan_dispatch(
                now=now, alerts=state.alerts, assignments=state.assignments, groups=state.groups,
                silences=state.silences, directory=self.directory, timing=self.timing, escalation=self.escalation,
                calendar=self.calendar, quiet_hours=self.quiet_hours, acks=state.acks,
            )
            messages = [n.message() for flush in plan.flushes for n in self._notices_for(flush, now)]
            if not plan.empty:
                await asyncio.to_thread(self.store.apply_plan, plan, messages, now=now)
            for s in plan.suppressed:
                official = self.directory.officials.get(s.receiver_id)
                for channel in self.channels_for(official) if official else ["log"]:
                    self.metrics.notifications.labels(channel=channel, result="suppressed").inc()
                if s.rule:
                    log.info("notification inhibited key=%s receiver=%s rule=%s source=%s", s.alert_key,
                             s.receiver_id, s.rule, s.source_key)
                else:
                    log.info("notification suppressed key=%s receiver=%s silence=%s", s.alert_key, s.receiver_id,
                             s.silence_id)
            for flush in plan.flushes:
                log.info("notification queued receiver=%s agency=%s keys=%s", flush.receiver_id, flush.agency_code,
                         ",".join(i.alert.alert_key for i in flush.items))
            digested = await self._digests(now)
        if messages or digested:
            self.relay.wake()

    def _notices_for(self, flush: Flush, now: dt.datetime) -> list[Notice]:
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
        body = {"type": "alerts", "receiver": official.id, "role": official.role, "agency": flush.agency_code,
                "created_at": now.isoformat(), "notice_keys": [i["notice_key"] for i in items], "items": items}
        return [Notice(channel, body) for channel in self.channels_for(official)]

    async def _digests(self, now: dt.datetime) -> bool:
        """Make the digests due at ``now`` (each once); True when one was queued."""
        periods = digests.due_periods(now, calendar=self.calendar, digest_time=self.digest_time,
                                      weekly=self.weekly_digest, monthly=self.monthly_digest)
        if not periods:
            return False
        if self._installed_at is None:
            self._installed_at = await asyncio.to_thread(self.store.installed_at, now=now)
        queued = False
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
                    made[kind] = await asyncio.to_thread(self.store.digests_made, kind, period.key)
                if code not in made[kind]:
                    todo.append((kind, code))
            if not todo:
                continue
            since = dt.datetime.combine(period.start - dt.timedelta(days=1), dt.time(0), tzinfo=dt.timezone.utc)
            alerts = await asyncio.to_thread(self.store.alerts_since, since)
            # The technical desk's alone (unknown_agency, codes outside the directory): no digest shows them.
            alerts = [a for a in alerts if not restricted(self.directory, a)]
            acks = await asyncio.to_thread(self.store.latest_acks, [a.alert_key for a in alerts if a.firing])
            for kind, code in todo:
                if kind == digests.WEEKLY:
                    d = digests.build_weekly(code, period, alerts, acks)
                    receivers = officials_for_role(self.directory, code, "officer") + officials_for_role(
                        self.directory, code, "head")
                elif kind == digests.MONTHLY:
                    d = digests.build_monthly(code, period, alerts, acks)
                    receivers = officials_for_role(self.directory, code, "head")
                else:
                    d = digests.build_district_monthly(code, period, alerts, self._digest_agencies(), acks)
                    receivers = self.directory.leadership()
                notices = self._digest_notices(kind, period, code, d, receivers)
                messages = [n.message() for n in notices]
                if await asyncio.to_thread(self.store.make_digest, kind, period.key, code, messages, now=now):
                    queued = True
                    log.info("digest queued kind=%s period=%s agency=%s receivers=%d", kind, period.key, code,
                             len({n.receiver_id for n in notices}))
        return queued

    def _digest_agencies(self) -> list[str]:
        return [c for c in self.directory.agencies_with_officials() if c != self.directory.district_code]

    def _digest_notices(self, kind: str, period: digests.DigestPeriod, agency_code: str, d: digests.Digest,
                        receivers: list[Official]) -> list[Notice]:
        content = _jsonable(asdict(d))
        content["kind"] = kind
        key = f"digest:{kind}:{period.key}:{agency_code}"
        out, seen = [], set()
        for official in receivers:
            if official.id in seen:
                continue
            seen.add(official.id)
            body = {"type": "digest", "receiver": official.id, "role": official.role, "agency": agency_code,
                    "notice_key": key, "notice_keys": [key], "digest": content}
            out += [Notice(channel, body) for channel in self.channels_for(official)]
        return out

    # -- delivering (the outbox relay's delivery) --------------------------------------------
    async def send(self, pending: Pending) -> Result:
        """Deliver one notice of the outbox, unless the notification log says it was (see the module)."""
        notice = Notice.of(pending)
        official = self.directory.officials.get(notice.receiver_id)
        channel = self.channels.get(notice.channel)
        if official is None or channel is None:
            return self._give_up(pending, notice, "receiver not in the directory" if official is None
                                 else "channel not configured")
        if (notice.kind == "alerts" and not self.directory.knows(notice.agency_code)
                and official.id not in self.directory.technical_desk):
            # Queued by an older notifier for an agency outside the directory: the technical desk's alone.
            return self._give_up(pending, notice, "agency outside the directory: for the technical desk only")
        done = await asyncio.to_thread(self.store.logged_keys, receiver_id=notice.receiver_id,
                                       channel=notice.channel, keys=notice.notice_keys)
        remaining = notice.without(done)
        if remaining is None:
            log.info("notification already sent outbox=%d receiver=%s", pending.id, notice.receiver_id)
            return Delivered()
        now = self.clock()
        try:
            message = self.renderer.render(remaining.body, delivery_id=pending.message_id or f"parwatch-{pending.id}",
                                           sent_at=now)
        except Exception:  # a notice that cannot be rendered will not render later either
            log.exception("notification cannot be rendered outbox=%d receiver=%s", pending.id, notice.receiver_id)
            result = SendResult.give_up("cannot be rendered")
        else:
            try:
                result = await channel.send(official, message)
            except Exception:  # a channel bug: keep the notice and try again later, loudly
                log.exception("channel raised outbox=%d receiver=%s channel=%s", pending.id, notice.receiver_id,
                              notice.channel)
                result = SendResult.retry("channel raised an exception")
        attempts = pending.attempts + 1
        if result.ok:
            self.metrics.notifications.labels(channel=notice.channel, result="sent").inc()
            log.info("notification sent outbox=%d receiver=%s channel=%s agency=%s attempts=%d", pending.id,
                     notice.receiver_id, notice.channel, notice.agency_code, attempts)
            return Delivered(record=functools.partial(self.store.log_sent, entries=remaining.log_entries(),
                                                      outbox_id=pending.id, now=now))
        self.metrics.send_errors.labels(channel=notice.channel, retryable=str(result.retryable).lower()).inc()
        if result.retryable:
            log.warning("notification deferred outbox=%d receiver=%s channel=%s attempts=%d reason=%s", pending.id,
                        notice.receiver_id, notice.channel, attempts, result.reason)
            return Retry(result.reason)
        return self._give_up(pending, notice, result.reason)

    def _give_up(self, pending: Pending, notice: Notice, reason: str) -> GiveUp:
        self.metrics.notifications.labels(channel=notice.channel, result="failed").inc()
        log.error("notification failed outbox=%d receiver=%s channel=%s reason=%s", pending.id, notice.receiver_id,
                  notice.channel, reason)
        failure = Failure(receiver_id=notice.receiver_id, channel=notice.channel,
                          agency_code=self.directory.agency_label(notice.agency_code),
                          kind=notice.kind, notice_keys=notice.notice_keys, reason=reason,
                          attempts=pending.attempts + 1, created_at=pending.created_at)
        return GiveUp(reason, record=functools.partial(self.store.log_failure, failure=failure, now=self.clock()))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return value
