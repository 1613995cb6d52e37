"""The KPI watch: evaluates the alert rules on the current figures, publishes what they decide.

Each round reads the current figures (the same small reads as a scrape),
runs :func:`services.scoring.alerts.evaluate` on the stored alert records
inside one locked transaction, then publishes every pending alert event from
the stored records (an outbox) and clears it once the stream acked it. A
crash between deciding and publishing publishes on the next round, with the
same event id (the broker drops a duplicate); a restart never fires again
what is already firing.
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
    Hysteresis,
    Observation,
    evaluate,
)
from services.scoring.board import Directory, Scoreboard
from services.scoring.domain import today_in_vietnam
from services.scoring.store import ScoringStore
from shared.consuming import Publisher
from shared.db import is_conflict, is_transient
from shared.events import Alert, new_event
from shared.streams import ALERTS

log = logging.getLogger(__name__)

SOURCE = "parwatch/scoring"


def alert_event(record: AlertRecord):  # type: ignore[no-untyped-def]
    """The CloudEvent of a record's pending decision."""
    pending = record.pending
    assert pending is not None and record.started_at is not None
    return new_event(
        type=pending.type,
        source=SOURCE,
        id=pending.event_id,
        subject=record.alert_key,
        time=pending.at,
        data=Alert(
            alert_key=record.alert_key,
            kind=KIND,
            severity="warning",
            agency_code=record.agency_code,
            ref=f"{record.kpi}/{record.period}",
            summary=pending.summary,
            starts_at=record.started_at,
            ends_at=(record.ends_at or pending.at) if pending.type == RESOLVED else None,
            labels={"kpi": record.kpi, "period": record.period},
        ),
    )


class KpiWatch:
    def __init__(
        self,
        *,
        store: ScoringStore,
        board: Scoreboard,
        directory: Directory,
        publisher: Publisher,
        policy: Hysteresis,
        target: Callable[[str, str], float],
        kpis: Sequence[str],
        periods: Sequence[str],
        include_district: bool,
        interval: float,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self.store = store
        self.board = board
        self.directory = directory
        self.publisher = publisher
        self.policy = policy
        self.target = target
        self.kpis = tuple(kpis)
        self.periods = tuple(periods)
        self.include_district = include_district
        self.interval = interval
        self.clock = clock

    def observations(self, today: dt.date) -> tuple[list[Observation], set[str]]:
        tables = self.board.current_tables(today)
        out: list[Observation] = []
        current: set[str] = set()
        for kind in self.periods:
            table = tables[kind]  # type: ignore[index]
            current.add(table.period.key)
            for agency in sorted(table.figures):
                if agency == self.board.district and not self.include_district:
                    continue
                figures = table.figures[agency]
                for kpi in self.kpis:
                    enough = figures.kpi_denominator(kpi) >= self.policy.min_denominator
                    out.append(
                        Observation(
                            agency_code=agency,
                            kpi=kpi,
                            period=table.period,
                            value=figures.kpi(kpi) if enough else None,
                            target=self.target(agency, kpi),
                        )
                    )
        return out, current

    def _evaluate(self, now: dt.datetime) -> Evaluation:
        observations, current = self.observations(today_in_vietnam(now))
        names = self.directory.names()
        # Replicas share the records: an evaluation counts once per half interval.
        gap = dt.timedelta(seconds=self.interval / 2)
        return self.store.evaluate_alerts(
            lambda records: evaluate(
                records, observations, policy=self.policy, now=now, names=names, current=current, min_gap=gap
            )
        )

    async def evaluate_once(self) -> Evaluation:
        result = await asyncio.to_thread(self._evaluate, self.clock())
        await self.publish_pending()
        return result

    async def publish_pending(self) -> int:
        records = await asyncio.to_thread(self.store.pending_alerts)
        for record in records:
            await self.publisher.publish(alert_event(record), subject=ALERTS)
            assert record.pending is not None
            await asyncio.to_thread(self.store.mark_published, record.alert_key, record.pending.event_id)
            log.info(
                "kpi alert published type=%s agency=%s kpi=%s period=%s",
                "firing" if record.pending.type == FIRING else "resolved",
                record.agency_code,
                record.kpi,
                record.period,
            )
        return len(records)

    async def run(self) -> None:
        while True:
            try:
                await self.evaluate_once()
            except Exception as exc:
                if not (is_transient(exc) or is_conflict(exc)):
                    raise  # logged with its traceback and restarted by the service
                log.warning("kpi evaluation deferred error=%s", type(exc).__name__)
            await asyncio.sleep(self.interval)

