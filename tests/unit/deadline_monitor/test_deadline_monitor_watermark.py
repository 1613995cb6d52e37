"""Whether the monitor holds dossier alerts, judged by event time: the watermark of the facts it reads against a
fixed now, and the idleness of its input on a driven monotonic clock (no broker, no sleep)."""

from __future__ import annotations

import datetime as dt

import pytest

from services.deadline_monitor.settings import MonitorSettings
from shared import backlog
from shared.backlog import Backlog
from shared.events import DossierStateChanged

NOW = dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.timezone.utc)
LAG = dt.timedelta(hours=3)


def fact(code: str, occurred_at: dt.datetime | None) -> DossierStateChanged:
    return DossierStateChanged(dossier_code=code, revision=1, agency_code="PTP", procedure_code="1.0001",
                               field_code="HT", status=2, counted=True, updated_at=NOW, occurred_at=occurred_at)


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("behind", "lags"),
    [
        (dt.timedelta(days=30), True),  # a month of history replayed
        (dt.timedelta(hours=3, seconds=1), True),
        (dt.timedelta(hours=3), False),  # at the lag: the present
        (dt.timedelta(minutes=2), False),  # a live event, a little late
        (dt.timedelta(0), False),
        (-dt.timedelta(minutes=5), False),  # a source clock a little ahead
    ],
)
def test_a_watermark_lags_when_it_is_further_behind_now_than_the_lag(behind: dt.timedelta, lags: bool) -> None:
    assert backlog.lags(NOW - behind, now=NOW, lag=LAG) is lags


def test_an_unknown_watermark_does_not_lag() -> None:
    assert not backlog.lags(None, now=NOW, lag=LAG)


def test_a_batch_stands_where_its_newest_fact_stands() -> None:
    old, recent = NOW - dt.timedelta(days=2), NOW - dt.timedelta(minutes=1)
    assert backlog.event_time([fact("A", recent), fact("B", old), fact("C", None)]) == recent  # one late event
    assert backlog.event_time([fact("B", old), fact("D", old - dt.timedelta(hours=1))]) == old
    assert backlog.event_time([fact("A", None)]) is None  # facts of an older tracker
    assert backlog.event_time([]) is None


def test_a_backlog_holds_while_the_watermark_lags_whatever_the_pending_count() -> None:
    clock = Monotonic()
    b = Backlog(threshold=1000, lag=LAG, idle=10.0, monotonic=clock)
    assert not b.holds(NOW)  # nothing read yet
    b.delivered(0)  # a paced replay: the consumer keeps up, nothing waits
    b.observed(NOW - dt.timedelta(days=29))
    assert b.holds(NOW) and not b.catching_up
    clock.now += 9.0
    b.observed(NOW - dt.timedelta(hours=4))
    assert b.holds(NOW)
    b.observed(NOW - dt.timedelta(hours=1))  # the replay reached the present
    assert not b.holds(NOW)


def test_an_idle_input_with_a_lagging_watermark_holds_nothing() -> None:
    clock = Monotonic()
    b = Backlog(lag=LAG, idle=10.0, monotonic=clock)
    b.observed(NOW - dt.timedelta(days=3))  # a history with nothing live after it
    clock.now += 9.9
    assert b.holds(NOW)
    clock.now += 0.1
    assert not b.holds(NOW)
    b.observed(NOW - dt.timedelta(days=3))  # more history: held again
    assert b.holds(NOW)


def test_a_large_pending_count_still_holds_with_a_current_watermark() -> None:
    b = Backlog(threshold=10, lag=LAG)
    b.observed(NOW)
    b.delivered(11)
    assert b.holds(NOW)


def test_the_lag_is_a_setting_of_hours_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert MonitorSettings().backlog_lag == dt.timedelta(hours=3)
    monkeypatch.setenv("PARWATCH_MONITOR_BACKLOG_LAG", "PT30M")
    assert MonitorSettings().backlog_lag == dt.timedelta(minutes=30)
