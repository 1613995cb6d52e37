"""Whether the monitor is catching up: its own consumer's backlog and dossier_tracker's, read through a
stand-in for JetStream's ``consumer_info`` (no broker)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import nats.errors
import pytest
from nats.js.errors import NotFoundError

from shared.backlog import Backlog

OWN = ("PARWATCH_DOSSIER_STATE", "deadline_monitor_dossiers")
UPSTREAM = ("TTHC_DOSSIER", "dossier_tracker")


class Consumers:
    """``consumer_info`` answering from a table: (num_pending, num_ack_pending), or an exception to raise."""

    def __init__(self, **answers: Any) -> None:
        self.answers = {OWN: answers.get("own"), UPSTREAM: answers.get("upstream")}
        self.asked: list[tuple[str, str]] = []

    async def __call__(self, stream: str, durable: str) -> Any:
        self.asked.append((stream, durable))
        answer = self.answers[(stream, durable)]
        if isinstance(answer, BaseException):
            raise answer
        pending, in_flight = answer
        return SimpleNamespace(num_pending=pending, num_ack_pending=in_flight)


def backlog(consumers: Consumers, threshold: int = 10) -> Backlog:
    return Backlog(threshold=threshold, consumer_info=consumers, own=OWN, upstream=UPSTREAM)


async def test_a_tick_counts_what_waits_on_both_consumers_and_what_the_monitor_has_in_hand() -> None:
    b = backlog(Consumers(own=(6, 2), upstream=(3, 500)))
    await b.probe()
    assert (b.own_pending, b.upstream_pending) == (8, 3)  # the tracker's events in hand do not count to the threshold
    assert b.catching_up
    b.delivered(0)  # the last state of the backlog arrived
    assert b.pending == 3 and not b.catching_up


async def test_the_input_is_drained_only_once_the_tracker_holds_nothing_in_hand() -> None:
    consumers = Consumers(own=(0, 0), upstream=(0, 500))
    b = backlog(consumers)
    await b.probe()
    assert b.pending == 0 and not b.catching_up
    assert not b.drained  # a slow tracker batch still changes dossiers
    consumers.answers[UPSTREAM] = (0, 0)
    await b.probe()
    assert b.drained


async def test_a_tracker_batch_finished_between_the_two_reads_is_not_taken_for_drained() -> None:
    """The tracker publishes a batch's facts and then acks its events. Read the monitor's own consumer before the
    tracker's, and a batch finished between the two reads is in neither: no longer in the tracker's hand, not yet
    counted on the monitor's consumer. Read upstream first, and what left the tracker's hand is on the monitor's
    consumer by the time it is read."""
    before = {OWN: (0, 0), UPSTREAM: (0, 1)}  # the tracker's last batch in hand, its facts not yet published
    after = {OWN: (3, 0), UPSTREAM: (0, 0)}  # its facts published, its events acked
    consumers = Consumers()

    async def info(stream: str, durable: str) -> Any:
        answer = (before if not consumers.asked else after)[(stream, durable)]  # the batch ends after the first read
        consumers.asked.append((stream, durable))
        return SimpleNamespace(num_pending=answer[0], num_ack_pending=answer[1])

    b = Backlog(threshold=10, consumer_info=info, own=OWN, upstream=UPSTREAM)
    await b.probe()
    assert not b.drained


async def test_a_missing_consumer_counts_as_nothing_upstream_and_as_unknown_for_the_monitor() -> None:
    b = backlog(Consumers(own=NotFoundError(), upstream=NotFoundError()))
    b.delivered(40)
    b.upstream_pending = 7
    await b.probe()
    assert (b.own_pending, b.upstream_pending) == (40, 0)


async def test_a_probe_that_fails_for_a_while_keeps_the_last_values() -> None:
    consumers = Consumers(own=(50, 0), upstream=(20, 0))
    b = backlog(consumers)
    await b.probe()
    consumers.answers = {OWN: nats.errors.TimeoutError(), UPSTREAM: ConnectionError()}
    await b.probe()
    assert (b.own_pending, b.upstream_pending) == (50, 20)


async def test_a_probe_that_fails_for_good_raises() -> None:
    b = backlog(Consumers(own=ValueError("a bug"), upstream=(0, 0)))
    with pytest.raises(ValueError, match="a bug"):
        await b.probe()


async def test_at_arrival_upstream_is_asked_at_most_once_a_second() -> None:
    consumers = Consumers(own=(0, 0), upstream=(30, 0))
    b = backlog(consumers)
    await b.probe_upstream()
    await b.probe_upstream()
    assert consumers.asked == [UPSTREAM] and b.upstream_pending == 30
    await b.probe_upstream(at_most_every=0.0)
    assert consumers.asked == [UPSTREAM, UPSTREAM]


async def test_without_a_broker_only_the_deliveries_count() -> None:
    b = Backlog(threshold=3)
    await b.probe()
    await b.probe_upstream()
    assert not b.catching_up
    b.delivered(4)
    assert b.catching_up
