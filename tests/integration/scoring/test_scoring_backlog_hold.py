"""scoring's KPI rounds wait while it catches up on a backlog of dossier state, on a real database (no broker):
dossier facts as the handler receives them (``apply_dossier_states``) and rounds driven directly
(``evaluate(now)``). The business clock is fixed; how long the input has been quiet is a driven monotonic clock;
the pending counts are what the batches say, or what a stand-in for JetStream's ``consumer_info`` answers."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from services.scoring import handlers
from services.scoring.alerts import KpiTargets
from services.scoring.app import create_app
from services.scoring.board import Scoreboard, load_directory
from services.scoring.domain import IndexConfig
from services.scoring.service import ScoringService
from services.scoring.settings import ScoringSettings
from services.scoring.store import ScoringStore
from shared.backlog import Backlog
from shared.calendar import VN_TZ
from shared.events import DossierStateChanged
from shared.plans import PlanSources, PlanTargets, Target
from shared.settings import CommonSettings
from shared.testing import drain_outbox

D = dt.date
NOW = dt.datetime(2026, 11, 20, 10, 0, tzinfo=VN_TZ)  # a Friday morning in Tuy Phong
KEY = "kpi_below_target:PTP:on_time:2026-11"
LAG = dt.timedelta(hours=3)
IDLE = 2.0
OWN = ("PARWATCH_DOSSIER_STATE", "scoring_state")
UPSTREAM = ("TTHC_DOSSIER", "dossier_tracker")


def at(day: int, hour: int = 9) -> dt.datetime:
    return dt.datetime(2026, 11, day, hour, tzinfo=VN_TZ)


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Consumers:
    """``consumer_info`` answering (num_pending, num_ack_pending) from a table."""

    def __init__(self) -> None:
        self.answers = {OWN: (0, 0), UPSTREAM: (0, 0)}

    async def __call__(self, stream: str, durable: str) -> Any:
        pending, in_flight = self.answers[(stream, durable)]
        return SimpleNamespace(num_pending=pending, num_ack_pending=in_flight)


def fact(code: str, revision: int, *, occurred: dt.datetime | None, ended: int | None = None) -> DossierStateChanged:
    """A dossier of Phòng Tư pháp received on 2/11 and due on 10/11 (overdue now while open), its last event at
    ``occurred``; ended on the ``ended``-th of November, on time, if given."""
    return DossierStateChanged(
        dossier_code=code, revision=revision, agency_code="PTP", procedure_code="1.004227", field_code="HOTICH",
        status=10 if ended else 4, counted=True, received_at=at(2), receipt_day=D(2026, 11, 2),
        due_day=D(2026, 11, 10), ended_on=D(2026, 11, ended) if ended else None,
        timeliness="on_time" if ended else None, updated_at=NOW, occurred_at=occurred,
    )


def received(*facts: DossierStateChanged, pending: int = 0) -> list[Any]:
    """A batch as the consumer hands it over, ``pending`` facts waiting behind its last message."""
    return [SimpleNamespace(event=SimpleNamespace(data=f), msg=SimpleNamespace(metadata=SimpleNamespace(
        num_pending=pending))) for f in facts]


def scoring(store: ScoringStore, *, consumers: Consumers | None = None) -> tuple[ScoringService, Monotonic]:
    """The service layer as create_app wires it, judging the on-time rate of each agency against 98 %, firing on
    the first round below it and resolving after two at or above 98.5 %."""
    quiet = Monotonic()
    backlog = Backlog(threshold=1000, consumer_info=consumers, own=OWN if consumers else None,
                      upstream=UPSTREAM if consumers else None, lag=LAG, idle=IDLE, monotonic=quiet)
    directory = load_directory()
    settings = ScoringSettings(min_dossiers=1, alert_kpis=["on_time"], alert_periods=["month"], alert_district=False,
                               fire_after=1, resolve_after=2, evaluate_interval=60)
    target = Target(id="on_time_ratio", title="Tỷ lệ hồ sơ đúng hạn", unit="ratio", op="ge", value=0.98)
    plan = PlanTargets(plan_id="test-plan", valid_from=D(2026, 1, 1), valid_until=D(2026, 12, 31), targets=(target,))
    service = ScoringService(
        store=store, board=Scoreboard(store, config=IndexConfig(), district=directory.district_code),
        directory=directory, settings=settings, clock=lambda: NOW, targets=KpiTargets(plans=(plan,)),
        backlog=backlog,
    )
    return service, quiet


def transitions(events: list[Any]) -> list[tuple[str, str]]:
    return [(e.type.rsplit(".", 1)[1], e.data.alert_key) for e in events]


async def test_a_replay_is_judged_once_on_its_whole_history(store: ScoringStore) -> None:
    service, quiet = scoring(store)
    # The first days of a replayed month: the dossier is open, overdue against today; its end is on its way.
    await service.apply_dossier_states(received(fact("H.A", 1, occurred=at(2))))
    assert await service.evaluate(NOW) is False
    quiet.now += 1.0
    await service.apply_dossier_states(received(fact("H.A", 2, occurred=at(9), ended=9)))
    quiet.now += IDLE - 0.1
    await service.evaluate(NOW)  # the replay is still coming
    assert store.alert_records() == {} and await drain_outbox(store.outbox) == []

    quiet.now += 0.1  # nothing came for the idle time: the history is in
    await service.evaluate(NOW)
    assert (store.alert_records()[KEY].firing, store.alert_records()[KEY].value) == (False, 1.0)
    assert await drain_outbox(store.outbox) == []


async def test_without_an_event_time_the_same_facts_are_judged_as_they_come(store: ScoringStore) -> None:
    """The control of the test above: facts of a tracker older than ``occurred_at`` hold nothing."""
    service, quiet = scoring(store)
    await service.apply_dossier_states(received(fact("H.A", 1, occurred=None)))
    await service.evaluate(NOW)
    quiet.now += 1.0
    await service.apply_dossier_states(received(fact("H.A", 2, occurred=None, ended=9)))
    await service.evaluate(NOW + dt.timedelta(minutes=1))
    await service.evaluate(NOW + dt.timedelta(minutes=2))
    assert transitions(await drain_outbox(store.outbox)) == [("firing", KEY), ("resolved", KEY)]


async def test_live_facts_are_judged_at_the_next_round(store: ScoringStore) -> None:
    service, _ = scoring(store)
    await service.apply_dossier_states(received(fact("L.A", 1, occurred=NOW - LAG)))  # within the lag: the present
    await service.evaluate(NOW)
    assert transitions(await drain_outbox(store.outbox)) == [("firing", KEY)]


async def test_a_held_round_moves_no_alert_record(store: ScoringStore) -> None:
    """A firing alert, then a backlog (a restart after a long stop) whose facts would resolve it: while held, the
    record keeps its state, streaks and last evaluation; once caught up, the rounds resolve it as the whole
    history says."""
    service, quiet = scoring(store)
    await service.apply_dossier_states(received(fact("L.A", 1, occurred=NOW - dt.timedelta(minutes=5))))
    await service.evaluate(NOW)
    assert transitions(await drain_outbox(store.outbox)) == [("firing", KEY)]
    before = store.alert_records()[KEY]

    quiet.now += 600.0
    for minute in range(1, 4):  # the history comes in, a batch a second, each round between two batches
        quiet.now += 1.0
        ended = fact("L.A", 1 + minute, occurred=at(9 + minute), ended=9)
        await service.apply_dossier_states(received(ended, fact(f"H.{minute}", 1, occurred=at(9 + minute),
                                                                ended=9)))
        await service.evaluate(NOW + dt.timedelta(minutes=minute))
    assert store.alert_records()[KEY] == before
    assert await drain_outbox(store.outbox) == []

    quiet.now += IDLE
    await service.evaluate(NOW + dt.timedelta(minutes=4))
    after = store.alert_records()[KEY]
    assert (after.firing, after.above, after.value) == (True, 1, 1.0)  # the first round on the whole history
    await service.evaluate(NOW + dt.timedelta(minutes=5))
    assert transitions(await drain_outbox(store.outbox)) == [("resolved", KEY)]


async def test_a_period_that_ends_during_a_hold_is_closed_after_it(store: ScoringStore) -> None:
    """Nothing of a round is done while held, not even closing a period that is over."""
    service, quiet = scoring(store)
    await service.apply_dossier_states(received(fact("L.A", 1, occurred=NOW - dt.timedelta(minutes=5))))
    await service.evaluate(NOW)
    december = dt.datetime(2026, 12, 1, 8, 0, tzinfo=VN_TZ)
    quiet.now += 600.0
    await service.apply_dossier_states(received(fact("H.B", 1, occurred=at(25))))
    await service.evaluate(december)
    assert store.alert_records()[KEY].firing
    quiet.now += IDLE
    await service.evaluate(december)
    events = [e for e in await drain_outbox(store.outbox) if e.data.alert_key == KEY]
    assert transitions(events) == [("firing", KEY), ("resolved", KEY)]
    assert events[-1].data.summary.startswith("Tháng 11/2026 đã kết thúc")


async def test_much_pending_holds_the_rounds_whatever_the_event_time(store: ScoringStore) -> None:
    consumers = Consumers()
    service, _ = scoring(store, consumers=consumers)
    await service.apply_dossier_states(received(fact("L.A", 1, occurred=NOW), pending=5000))
    consumers.answers[OWN] = (4000, 500)  # what the round's probe reads
    await service.evaluate(NOW)
    consumers.answers[OWN] = (0, 0)
    consumers.answers[UPSTREAM] = (1500, 0)  # dossier_tracker has not read the rest yet
    await service.evaluate(NOW)
    assert store.alert_records() == {}

    consumers.answers[UPSTREAM] = (0, 200)  # in the tracker's hands: under the threshold
    await service.evaluate(NOW)
    assert transitions(await drain_outbox(store.outbox)) == [("firing", KEY)]


async def test_a_replay_that_pauses_for_the_idle_time_is_a_quiet_district(store: ScoringStore) -> None:
    """The limit of the hold: nothing arriving looks the same after a history as in a quiet district, in which
    the rounds must run. A late batch (an agency's system that syncs once a day) is judged once it stops."""
    service, quiet = scoring(store)
    await service.apply_dossier_states(received(fact("H.A", 1, occurred=at(2))))
    await service.evaluate(NOW)
    quiet.now += IDLE
    await service.evaluate(NOW)
    assert transitions(await drain_outbox(store.outbox)) == [("firing", KEY)]


async def test_a_hold_is_said_once_when_it_begins_and_once_when_it_ends(
    store: ScoringStore, caplog: pytest.LogCaptureFixture
) -> None:
    """With where the input stands and how much waits: no dossier, no agency."""
    caplog.set_level(logging.INFO, logger="services.scoring.service")
    service, quiet = scoring(store)
    for day in (2, 3, 4):
        quiet.now += 1.0
        await service.apply_dossier_states(received(fact(f"H.{day}", 1, occurred=at(day))))
        await service.evaluate(NOW)
    quiet.now += IDLE
    await service.evaluate(NOW)
    await service.evaluate(NOW)
    said = [r.getMessage() for r in caplog.records if "dossier states" in r.getMessage()]
    assert said == [
        "catching up on dossier states watermark=2026-11-02T09:00:00+07:00 pending=0: kpi rounds wait",
        "caught up on dossier states watermark=2026-11-04T09:00:00+07:00 pending=0: kpi rounds judge again",
    ]
    assert all(r.levelno == logging.INFO for r in caplog.records if "dossier states" in r.getMessage())


def test_the_app_wires_the_backlog_from_the_settings(tmp_path: Path) -> None:
    common = CommonSettings(database_url=f"sqlite:///{tmp_path / 'scoring.db'}", data_dir=tmp_path)
    settings = ScoringSettings(port=0, durable="scoring_b", catch_up_threshold=50, backlog_lag=dt.timedelta(hours=1),
                               backlog_idle_seconds=15, upstream_consumer="TTHC_DOSSIER:tracker_b")
    _, app = create_app(common, settings, clock=lambda: NOW, plans=PlanSources(include_shipped_plans=False))
    backlog = app.state.scoring.backlog
    assert (backlog.own, backlog.upstream) == (handlers.snapshot_consumer("scoring_b"), ("TTHC_DOSSIER", "tracker_b"))
    assert (backlog.threshold, backlog.lag, backlog.idle) == (50, dt.timedelta(hours=1), 15.0)
    assert backlog.consumer_info is not None
    _, app = create_app(common, settings.model_copy(update={"upstream_consumer": ""}), clock=lambda: NOW,
                        plans=PlanSources(include_shipped_plans=False))
    assert app.state.scoring.backlog.upstream is None
