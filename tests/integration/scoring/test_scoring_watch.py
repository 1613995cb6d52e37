"""The KPI watch on a real database: the outbox survives a failed publish, recovery and period end
resolve, and nothing fires twice."""

from __future__ import annotations

import datetime as dt

import pytest

from services.scoring.alerts import Hysteresis
from services.scoring.board import Scoreboard, load_directory
from services.scoring.domain import DossierFacts, IndexConfig
from services.scoring.store import ScoringStore, create_schema
from services.scoring.watch import KpiWatch
from shared.db import make_engine

UTC = dt.timezone.utc
D = dt.date


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += dt.timedelta(**kw)


class FlakyPublisher:
    """Fails the first ``failures`` publishes (the stream did not ack), then records what it publishes."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.events: list = []

    async def publish(self, event, *, subject: str) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("no ack from the stream")
        assert subject == "tthc.alerts"
        self.events.append(event)


@pytest.fixture
def store(sqlite_url: str):
    engine = make_engine(sqlite_url)
    create_schema(engine)
    yield ScoringStore(engine)
    engine.dispose()


def watch_for(store: ScoringStore, publisher: FlakyPublisher, clock: Clock) -> KpiWatch:
    directory = load_directory()
    return KpiWatch(
        store=store,
        board=Scoreboard(store, config=IndexConfig(), district=directory.district_code),
        directory=directory,
        publisher=publisher,
        policy=Hysteresis(fire_after=1, resolve_after=2, margin=0.005),
        target=lambda agency, kpi: 0.98,
        kpis=["on_time"],
        periods=["month"],
        include_district=False,
        interval=60,
        clock=clock,
    )


def dossier(code: str, revision: int, **kw) -> DossierFacts:
    base = dict(dossier_code=code, revision=revision, agency_code="PTP", counted=True, receipt_day=D(2026, 11, 2),
                due_day=D(2026, 11, 10))
    return DossierFacts(**(base | kw))


async def test_outbox_recovery_and_period_end(store: ScoringStore) -> None:
    clock = Clock(dt.datetime(2026, 11, 20, 3, tzinfo=UTC))
    store.apply_states([dossier("A", 1)], now=clock())  # open and overdue: on-time rate 0
    publisher = FlakyPublisher(failures=1)
    watch = watch_for(store, publisher, clock)

    with pytest.raises(ConnectionError):
        await watch.evaluate_once()
    assert [r.alert_key for r in store.pending_alerts()] == ["kpi_below_target:PTP:on_time:2026-11"]

    clock.advance(minutes=1)
    await watch.evaluate_once()  # publishes the stored decision, decides nothing new
    assert [(e.type, e.id) for e in publisher.events] == [
        ("vn.tthc.alert.firing", "kpi_below_target:PTP:on_time:2026-11:1:firing")
    ]
    assert publisher.events[0].data.summary == (
        "Tỷ lệ hồ sơ đúng hạn của Phòng Tư pháp tháng 11/2026 là 0%, dưới mục tiêu 98%"
    )
    assert store.pending_alerts() == []

    clock.advance(minutes=1)
    await watch_for(store, publisher, clock).evaluate_once()  # a restarted watch: still firing, no event
    assert len(publisher.events) == 1

    # The dossier ends on time: 100 % >= 98.5 % for two evaluations resolves it.
    store.apply_states([dossier("A", 2, ended_on=D(2026, 11, 10), timeliness="on_time")], now=clock())
    clock.advance(minutes=1)
    await watch.evaluate_once()
    assert len(publisher.events) == 1
    clock.advance(minutes=1)
    await watch.evaluate_once()
    resolved = publisher.events[-1]
    assert resolved.type == "vn.tthc.alert.resolved"
    assert resolved.data.ends_at == clock() and resolved.data.starts_at == dt.datetime(2026, 11, 20, 3, tzinfo=UTC)
    assert resolved.data.summary == (
        "Tỷ lệ hồ sơ đúng hạn của Phòng Tư pháp tháng 11/2026 đã đạt 100%, không còn dưới mục tiêu 98%"
    )

    # Late again, fires again; then November ends while it fires: resolved as closed.
    store.apply_states([dossier("A", 3, ended_on=D(2026, 11, 12), timeliness="late")], now=clock())
    clock.advance(minutes=1)
    await watch.evaluate_once()
    assert publisher.events[-1].id == "kpi_below_target:PTP:on_time:2026-11:3:firing"
    clock.now = dt.datetime(2026, 11, 30, 17, 0, tzinfo=UTC)  # 00:00 on 1/12/2026 in Vietnam
    await watch.evaluate_once()
    closed = publisher.events[-1]
    assert (closed.type, closed.data.labels["period"]) == ("vn.tthc.alert.resolved", "2026-11")
    assert closed.data.summary == (
        "Tháng 11/2026 đã kết thúc; tỷ lệ hồ sơ đúng hạn của Phòng Tư pháp chốt ở 0% (mục tiêu 98%)"
    )
    assert len(publisher.events) == 4
    assert store.alert_records()["kpi_below_target:PTP:on_time:2026-11"].firing is False
