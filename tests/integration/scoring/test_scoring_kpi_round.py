"""scoring's KPI rounds on a real database, driven directly (``evaluate(now)``, ``relay.once(now)``): the
decisions and their events are committed together, an event the stream refused stays in the outbox and goes
out later in order, recovery and period end resolve, nothing fires twice, and an older version's undelivered
alert is carried over on upgrade."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from sqlalchemy import Column, MetaData, String, Table, update

from services.scoring.alerts import KpiTargets
from services.scoring.board import Scoreboard, load_directory
from services.scoring.domain import DossierFacts, IndexConfig
from services.scoring.service import ScoringService
from services.scoring.settings import ScoringSettings
from services.scoring.store import ScoringStore
from shared.db import UtcDateTime, add_missing_columns
from shared.events import parse_event
from shared.outbox import Relay
from shared.plans import PlanTargets, Target
from shared.publishing import JetStreamPublisher
from shared.streams import ALERTS

UTC = dt.timezone.utc
D = dt.date
KEY = "kpi_below_target:PTP:on_time:2026-11"


def on_time_target(value: float = 0.98, op: str = "ge") -> KpiTargets:
    """A plan in force all of 2026 whose on-time target is ``value`` (the targets come from plan files alone)."""
    target = Target(id="on_time_ratio", title="Tỷ lệ hồ sơ đúng hạn", unit="ratio", op=op, value=value)
    plan = PlanTargets(plan_id="test-plan", valid_from=D(2026, 1, 1), valid_until=D(2026, 12, 31), targets=(target,))
    return KpiTargets(plans=(plan,))


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += dt.timedelta(**kw)


class Broker:
    """Stands for the NATS broker under the real ``JetStreamPublisher.deliver``: the first ``failures``
    publishes get no ack from the stream; the others are kept with their ``Nats-Msg-Id``."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.attempts = 0
        self.published: list[tuple[str, object]] = []  # (Nats-Msg-Id, event)

    async def publish(self, body: bytes, subject: str, *, headers: dict[str, str], stream: str, timeout: float) -> None:
        assert (subject, stream) == (ALERTS, "TTHC_ALERTS")
        self.attempts += 1
        if self.failures:
            self.failures -= 1
            raise ConnectionError("no ack from the stream")
        self.published.append((headers["Nats-Msg-Id"], parse_event(body)))

    @property
    def events(self) -> list:
        return [e for _, e in self.published]


def scoring_for(store: ScoringStore, broker: Broker, clock: Clock) -> tuple[ScoringService, Relay]:
    """The service layer and relay as create_app wires them, with the test's clock and broker."""
    directory = load_directory()
    settings = ScoringSettings(min_dossiers=1, alert_kpis=["on_time"], alert_periods=["month"],
                               alert_district=False, fire_after=1, resolve_after=2, resolve_margin=0.005,
                               evaluate_interval=60)
    relay = Relay(store.outbox, JetStreamPublisher(broker).deliver, clock=clock)  # type: ignore[arg-type]
    scoring = ScoringService(store=store, board=Scoreboard(store, config=IndexConfig(),
                                                           district=directory.district_code),
                             directory=directory, settings=settings, clock=clock, targets=on_time_target(),
                             wake=relay.wake)
    return scoring, relay


def waiting(store: ScoringStore) -> list[str | None]:
    """The message ids of the events waiting in the outbox, due or not."""
    return [p.message_id for p in store.outbox.due(now=dt.datetime.max.replace(tzinfo=UTC), limit=100)]


def dossier(code: str, revision: int, **kw) -> DossierFacts:
    base = dict(dossier_code=code, revision=revision, agency_code="PTP", counted=True, receipt_day=D(2026, 11, 2),
                due_day=D(2026, 11, 10))
    return DossierFacts(**(base | kw))


async def test_outbox_recovery_and_period_end(store: ScoringStore) -> None:
    clock = Clock(dt.datetime(2026, 11, 20, 3, tzinfo=UTC))
    store.apply_states([dossier("A", 1)], now=clock())  # open and overdue: on-time rate 0
    broker = Broker(failures=1)
    scoring, relay = scoring_for(store, broker, clock)

    await scoring.evaluate()  # fires, and wakes the relay
    await asyncio.wait_for(relay.wake.wait(60), timeout=5)  # returns at once when woken
    assert waiting(store) == [f"{KEY}:1:firing"]
    await relay.once()  # the stream does not ack: the event stays
    assert broker.attempts == 1 and broker.published == []
    assert waiting(store) == [f"{KEY}:1:firing"]

    clock.advance(minutes=1)
    await scoring.evaluate()  # decides nothing new
    await relay.once()  # publishes the stored event
    assert [(e.type, e.id) for e in broker.events] == [("vn.tthc.alert.firing", f"{KEY}:1:firing")]
    assert broker.published[0][0] == f"{KEY}:1:firing"  # Nats-Msg-Id: the stream drops a repeat
    assert broker.events[0].data.summary == (
        "Tỷ lệ hồ sơ đúng hạn của Phòng Tư pháp tháng 11/2026 là 0%, dưới mục tiêu 98%"
    )
    assert waiting(store) == []

    clock.advance(minutes=1)
    restarted, restarted_relay = scoring_for(store, broker, clock)
    await restarted.evaluate()  # a restarted service: still firing, no event
    await restarted_relay.once()
    assert len(broker.events) == 1 and waiting(store) == []

    # The dossier ends on time: 100 % >= 98.5 % for two evaluations resolves it.
    store.apply_states([dossier("A", 2, ended_on=D(2026, 11, 10), timeliness="on_time")], now=clock())
    clock.advance(minutes=1)
    await scoring.evaluate()
    await relay.once()
    assert len(broker.events) == 1
    clock.advance(minutes=1)
    await scoring.evaluate()
    await relay.once()
    resolved = broker.events[-1]
    assert resolved.type == "vn.tthc.alert.resolved"
    assert resolved.data.ends_at == clock() and resolved.data.starts_at == dt.datetime(2026, 11, 20, 3, tzinfo=UTC)
    assert resolved.data.summary == (
        "Tỷ lệ hồ sơ đúng hạn của Phòng Tư pháp tháng 11/2026 đã đạt 100%, không còn dưới mục tiêu 98%"
    )

    # Late again, fires again; then November ends while it fires: resolved as closed.
    store.apply_states([dossier("A", 3, ended_on=D(2026, 11, 12), timeliness="late")], now=clock())
    clock.advance(minutes=1)
    await scoring.evaluate()
    await relay.once()
    assert broker.events[-1].id == f"{KEY}:3:firing"
    clock.now = dt.datetime(2026, 11, 30, 17, 0, tzinfo=UTC)  # 00:00 on 1/12/2026 in Vietnam
    await scoring.evaluate()
    await relay.once()
    closed = broker.events[-1]
    assert (closed.type, closed.data.labels["period"]) == ("vn.tthc.alert.resolved", "2026-11")
    assert closed.data.summary == (
        "Tháng 11/2026 đã kết thúc; tỷ lệ hồ sơ đúng hạn của Phòng Tư pháp chốt ở 0% (mục tiêu 98%)"
    )
    assert len(broker.events) == 4
    assert store.alert_records()[KEY].firing is False
    assert waiting(store) == []


async def test_a_resolution_decided_while_the_firing_is_undelivered_goes_out_after_it(store: ScoringStore) -> None:
    clock = Clock(dt.datetime(2026, 11, 20, 3, tzinfo=UTC))
    store.apply_states([dossier("A", 1)], now=clock())
    broker = Broker(failures=1)
    scoring, relay = scoring_for(store, broker, clock)
    await scoring.evaluate()  # fires
    store.apply_states([dossier("A", 2, ended_on=D(2026, 11, 10), timeliness="on_time")], now=clock())
    for _ in range(2):
        clock.advance(minutes=1)
        await scoring.evaluate()  # the record goes on: resolved after two rounds at 100 %
    assert waiting(store) == [f"{KEY}:1:firing", f"{KEY}:2:resolved"]
    assert store.alert_records()[KEY].firing is False

    await relay.once()  # the firing is refused: the resolution of the same alert is held back, not tried
    assert broker.attempts == 1 and broker.published == []
    clock.advance(minutes=1)
    await relay.once()
    assert [(msg_id, e.type) for msg_id, e in broker.published] == [
        (f"{KEY}:1:firing", "vn.tthc.alert.firing"),
        (f"{KEY}:2:resolved", "vn.tthc.alert.resolved"),
    ]
    assert waiting(store) == []


async def test_an_event_delivered_again_after_a_crash_has_the_same_id(store: ScoringStore,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(dt.datetime(2026, 11, 20, 3, tzinfo=UTC))
    store.apply_states([dossier("A", 1)], now=clock())
    broker = Broker()
    scoring, relay = scoring_for(store, broker, clock)
    await scoring.evaluate()
    settle = store.outbox.settle

    def crash(*args, **kwargs):
        raise ConnectionError("the process died before it deleted what it delivered")

    monkeypatch.setattr(store.outbox, "settle", crash)
    with pytest.raises(ConnectionError):
        await relay.once()
    monkeypatch.setattr(store.outbox, "settle", settle)
    clock.advance(minutes=1)
    await scoring.evaluate()  # already firing: nothing new decided
    await relay.once()
    (first_id, first), (second_id, second) = broker.published
    assert first_id == second_id == f"{KEY}:1:firing" and first == second  # the stream keeps one
    assert waiting(store) == []


async def test_an_undelivered_alert_of_an_older_version_is_sent_after_the_upgrade(store: ScoringStore) -> None:
    clock = Clock(dt.datetime(2026, 11, 20, 3, tzinfo=UTC))
    store.apply_states([dossier("A", 1)], now=clock())
    broker = Broker()
    scoring, relay = scoring_for(store, broker, clock)
    await scoring.adopt_legacy_alerts()  # a database of this version: nothing to do
    assert waiting(store) == []

    # What an older version left: the record fired, its event kept in the record's pending_* columns.
    await scoring.evaluate()
    (decided,) = store.outbox.due(now=clock(), limit=10)
    legacy = Table("scoring_alert", MetaData(), Column("alert_key", String(256), primary_key=True),
                   Column("pending_type", String(64)), Column("pending_id", String(256)),
                   Column("pending_summary", String(1000)), Column("pending_at", UtcDateTime))
    engine = store.engine
    assert add_missing_columns(engine, legacy) == ["pending_type", "pending_id", "pending_summary", "pending_at"]
    event = parse_event(decided.payload.encode())
    with engine.begin() as conn:
        conn.execute(store.outbox.table.delete())
        conn.execute(update(legacy).values(pending_type=event.type, pending_id=event.id,
                                           pending_summary=event.data.summary, pending_at=event.time))

    clock.advance(minutes=5)  # the upgrade
    await scoring.adopt_legacy_alerts()
    (adopted,) = store.outbox.due(now=clock(), limit=10)
    assert (adopted.key, adopted.message_id, adopted.payload) == (KEY, f"{KEY}:1:firing", decided.payload)
    await scoring.adopt_legacy_alerts()  # moved once
    assert waiting(store) == [f"{KEY}:1:firing"]
    with engine.connect() as conn:
        assert conn.execute(legacy.select()).all() == [(KEY, None, None, None, None)]
    await relay.once()
    assert [e.id for e in broker.events] == [f"{KEY}:1:firing"]
    assert store.alert_records()[KEY].firing
