"""Dossier facts as the handler receives them, judged by their event time, on a real database (no broker): a
backlog is held without alert and settled against its final state, when the input reaches the present or goes
quiet. The business clock is fixed; the input's quiet is a driven monotonic clock."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from typing import Any

from services.deadline_monitor.domain import Catalog, Policy
from services.deadline_monitor.plan import load_agencies
from services.deadline_monitor.service import MonitorService
from services.deadline_monitor.store import MonitorStore, create_schema
from shared.backlog import Backlog
from shared.calendar import VN_TZ, load_calendar
from shared.db import make_engine
from shared.events import DossierStateChanged
from shared.testing import drain_outbox


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=VN_TZ)


NOW = at("2026-11-30T08:00")
LAG = dt.timedelta(hours=3)


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fact(code: str, revision: int, *, occurred: dt.datetime, ended: bool = False) -> DossierStateChanged:
    """A dossier of Phòng Tư pháp due 20/11 (overdue now unless ended), its last event at ``occurred``."""
    return DossierStateChanged(
        dossier_code=code, revision=revision, agency_code="PTP", procedure_code="1.004227", field_code="HOTICH",
        status=10 if ended else 4, counted=True, due_day=dt.date(2026, 11, 20),
        ended_on=occurred.date() if ended else None, updated_at=NOW, occurred_at=occurred,
    )


def received(*facts: DossierStateChanged, pending: int = 0) -> list[Any]:
    """A batch as the consumer hands it over: nothing waits behind it (a replay the consumers keep up with)."""
    return [SimpleNamespace(event=SimpleNamespace(data=f), msg=SimpleNamespace(metadata=SimpleNamespace(
        num_pending=pending))) for f in facts]


def monitor(database_url: str) -> tuple[MonitorService, Monotonic]:
    """A monitor without broker: the pending counts are what the batches say."""
    engine = make_engine(database_url)
    create_schema(engine)
    quiet = Monotonic()
    service = MonitorService(
        store=MonitorStore(engine), catalog=Catalog(agencies=load_agencies(), plans={}), calendar=load_calendar(),
        policy=Policy(), clock=lambda: NOW, backlog=Backlog(lag=LAG, idle=2.0, monotonic=quiet),
    )
    return service, quiet


async def drain(service: MonitorService) -> list[Any]:
    """Every event waiting in the monitor's outbox, in the order the relay delivers them."""
    return await drain_outbox(service.store.outbox)


def kinds(events: list[Any]) -> list[tuple[str, str]]:
    return [(e.type.rsplit(".", 1)[1], e.data.alert_key) for e in events]


async def test_a_backlog_is_held_and_settled_against_its_final_state_once_the_input_reaches_now(
    database_url: str,
) -> None:
    service, quiet = monitor(database_url)
    await service.apply_dossier_states(received(fact("H.END", 1, occurred=at("2026-11-05T08:00")),
                                                fact("H.OPEN", 1, occurred=at("2026-11-05T09:00"))))
    await service.tick(NOW)
    assert await service.settle_when_caught_up(NOW) is False
    assert await drain(service) == []  # overdue both, as the backlog stands: no alert yet
    quiet.now += 1.0
    await service.apply_dossier_states(received(fact("H.END", 2, occurred=at("2026-11-27T10:00"), ended=True)))
    assert await drain(service) == []
    quiet.now += 1.0
    await service.apply_dossier_states(received(fact("H.NOW", 1, occurred=NOW - dt.timedelta(minutes=5))))
    await service.settle_when_caught_up(NOW)
    # The present reached and nothing pending: every dossier settled against its final state; the one ended in the
    # backlog never fires.
    assert sorted(kinds(await drain(service))) == [("firing", "dossier_overdue:H.NOW"),
                                                   ("firing", "dossier_overdue:H.OPEN")]


async def test_the_tail_of_a_backlog_waits_until_it_has_drained(database_url: str) -> None:
    service, _ = monitor(database_url)
    await service.apply_dossier_states(received(fact("H.A", 1, occurred=at("2026-11-05T08:00")), pending=5000))
    # The replay reaches the present while 500 facts still wait (under the pending threshold): among them, the
    # one that ends H.B. Settling now would fire for H.B.
    await service.apply_dossier_states(received(fact("H.B", 1, occurred=NOW - dt.timedelta(minutes=9)), pending=500))
    await service.settle_when_caught_up(NOW)
    assert await drain(service) == []
    await service.apply_dossier_states(received(fact("H.B", 2, occurred=NOW - dt.timedelta(minutes=8), ended=True),
                                                pending=0))
    await service.settle_when_caught_up(NOW)
    assert kinds(await drain(service)) == [("firing", "dossier_overdue:H.A")]


async def test_under_live_load_that_never_drains_a_hold_ends_after_its_release_time(database_url: str) -> None:
    service, quiet = monitor(database_url)
    await service.apply_dossier_states(received(fact("H.A", 1, occurred=at("2026-11-05T08:00")), pending=5000))

    async def live_second() -> None:  # a live fact a second, a few always waiting behind each batch
        quiet.now += 1.0
        await service.apply_dossier_states(received(fact("H.LIVE", 1, occurred=NOW), pending=20))
        await service.settle_when_caught_up(NOW)

    for _ in range(int(service.backlog.release)):
        await live_second()
    assert await drain(service) == []  # calm for less than the release time
    await live_second()
    assert sorted(kinds(await drain(service))) == [("firing", "dossier_overdue:H.A"),
                                                   ("firing", "dossier_overdue:H.LIVE")]


async def test_a_hold_waits_for_the_input_to_drain_when_nothing_comes(database_url: str) -> None:
    service, quiet = monitor(database_url)
    await service.apply_dossier_states(received(fact("H.A", 1, occurred=at("2026-11-05T08:00")), pending=5000))
    await service.apply_dossier_states(received(fact("H.B", 1, occurred=NOW), pending=20))
    # No fact comes any more and twenty still wait (a killed consumer's batch until its ack wait ends): quiet is
    # not calm, however long it lasts.
    for _ in range(3):
        quiet.now += service.backlog.release
        await service.settle_when_caught_up(NOW)
    assert await drain(service) == []
    await service.apply_dossier_states(received(fact("H.A", 2, occurred=NOW, ended=True), pending=0))
    await service.settle_when_caught_up(NOW)
    assert kinds(await drain(service)) == [("firing", "dossier_overdue:H.B")]


async def test_a_restarted_monitor_keeps_holding_what_the_run_before_it_held(database_url: str) -> None:
    first, _ = monitor(database_url)
    await first.apply_dossier_states(received(fact("H.A", 1, occurred=at("2026-11-05T08:00")),
                                              fact("H.B", 1, occurred=at("2026-11-05T09:00")), pending=300))
    # That run dies; the next starts while the rest of the history is on its way (300 facts wait on its consumer,
    # under the pending threshold), ticks, and gets nothing for a while.
    again, quiet = monitor(database_url)
    waiting = {"num_pending": 300}

    async def consumer_info(stream: str, durable: str) -> Any:
        return SimpleNamespace(num_pending=waiting["num_pending"], num_ack_pending=0)

    again.backlog.consumer_info, again.backlog.own = consumer_info, ("DOSSIER_STATE", "monitor")
    await again.resume()
    await again.tick(NOW)
    quiet.now += 3 * again.backlog.release
    await again.tick(NOW)
    assert await drain(again) == []
    waiting["num_pending"] = 0
    await again.apply_dossier_states(received(fact("H.A", 2, occurred=at("2026-11-27T10:00"), ended=True),
                                              pending=0))
    quiet.now += again.backlog.idle
    await again.settle_when_caught_up(NOW)
    assert kinds(await drain(again)) == [("firing", "dossier_overdue:H.B")]


async def test_a_history_with_nothing_after_it_settles_once_the_input_is_quiet(database_url: str) -> None:
    service, quiet = monitor(database_url)
    await service.apply_dossier_states(received(fact("H.OPEN", 1, occurred=at("2026-11-05T09:00")),
                                                fact("H.END", 2, occurred=at("2026-11-27T10:00"), ended=True)))
    quiet.now += 1.9
    await service.settle_when_caught_up(NOW)
    assert await drain(service) == []  # not quiet long enough
    quiet.now += 0.1
    await service.settle_when_caught_up(NOW)
    assert kinds(await drain(service)) == [("firing", "dossier_overdue:H.OPEN")]


async def test_facts_without_an_event_time_are_settled_on_arrival(database_url: str) -> None:
    service, _ = monitor(database_url)
    old_tracker = fact("H.OPEN", 1, occurred=NOW).model_copy(update={"occurred_at": None})
    await service.apply_dossier_states(received(old_tracker))
    assert kinds(await drain(service)) == [("firing", "dossier_overdue:H.OPEN")]


async def test_a_late_event_among_current_ones_is_judged_on_arrival(database_url: str) -> None:
    service, _ = monitor(database_url)
    await service.apply_dossier_states(received(fact("H.LATE", 1, occurred=at("2026-11-05T09:00")),
                                                fact("H.NOW", 1, occurred=NOW - dt.timedelta(minutes=1))))
    assert sorted(kinds(await drain(service))) == [("firing", "dossier_overdue:H.LATE"),
                                                   ("firing", "dossier_overdue:H.NOW")]


async def test_a_hold_for_live_load_alone_ends_once_the_pending_count_is_down(database_url: str) -> None:
    service, _ = monitor(database_url)
    # Current facts, but thousands waiting behind them (the monitor fell behind under load): held.
    await service.apply_dossier_states(received(fact("H.A", 1, occurred=NOW - dt.timedelta(minutes=2)),
                                                pending=5000))
    assert await drain(service) == []
    # The pending count is down under the threshold: live facts are what they say, settled at once (no history
    # tail to wait for, no release time).
    await service.apply_dossier_states(received(fact("H.B", 1, occurred=NOW - dt.timedelta(minutes=1)),
                                                pending=20))
    assert sorted(kinds(await drain(service))) == [("firing", "dossier_overdue:H.A"),
                                                   ("firing", "dossier_overdue:H.B")]


async def test_a_late_event_in_a_batch_of_its_own_right_after_current_ones_is_judged_on_arrival(
    database_url: str,
) -> None:
    service, quiet = monitor(database_url)
    await service.apply_dossier_states(received(fact("H.NOW", 1, occurred=NOW - dt.timedelta(minutes=1))))
    quiet.now += 0.5  # the input flows: the watermark stays where the current facts put it
    await service.apply_dossier_states(received(fact("H.LATE", 1, occurred=at("2026-11-05T09:00"))))
    assert sorted(kinds(await drain(service))) == [("firing", "dossier_overdue:H.LATE"),
                                                   ("firing", "dossier_overdue:H.NOW")]



async def test_one_late_batch_after_a_quiet_while_is_settled_with_the_live_batch_after_it(database_url: str) -> None:
    service, quiet = monitor(database_url)
    # A quiet input; then an old dossier synced late, in a batch of its own, and live load that never drains.
    await service.apply_dossier_states(received(fact("H.LATE", 1, occurred=at("2026-11-05T09:00")), pending=20))
    assert await drain(service) == []  # behind: held, the next batch may be more of a history
    quiet.now += 0.05
    await service.apply_dossier_states(received(fact("H.NOW", 1, occurred=NOW - dt.timedelta(minutes=1)),
                                                pending=20))
    assert sorted(kinds(await drain(service))) == [("firing", "dossier_overdue:H.LATE"),
                                                   ("firing", "dossier_overdue:H.NOW")]


async def test_a_replica_s_live_batch_leaves_another_replica_s_hold_alone(database_url: str) -> None:
    holding, _ = monitor(database_url)
    live, _ = monitor(database_url)  # a second replica on the same database and consumer
    await holding.apply_dossier_states(received(fact("H.A", 1, occurred=at("2026-11-05T08:00")), pending=5000))
    await live.apply_dossier_states(received(fact("H.NOW", 1, occurred=NOW - dt.timedelta(minutes=1))))
    assert kinds(await drain(live)) == [("firing", "dossier_overdue:H.NOW")]  # H.A's later revision is on its way
    await holding.apply_dossier_states(received(fact("H.A", 2, occurred=at("2026-11-27T10:00"), ended=True)))
    await holding.settle_when_caught_up(NOW)
    assert await drain(holding) == []  # H.A ended within the history: never fired
