"""Nothing lost between services: ratings and plan reports of different sources that share an event id all reach
the accepted stream, scoring and deadline_monitor (a real nats-server, the three services as create_app wires them)."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
from sqlalchemy import func, select

from services.deadline_monitor.app import create_app as create_monitor
from services.deadline_monitor.settings import MonitorSettings
from services.deadline_monitor.store import PlanReportRow
from services.dossier_tracker.app import create_app as create_tracker
from services.dossier_tracker.settings import TrackerSettings
from services.scoring.app import create_app as create_scoring
from services.scoring.settings import ScoringSettings
from services.scoring.store import RatingRow
from shared.db import make_engine
from shared.events import PLAN_TYPE, RATING_TYPE, PlanTaskReported, RatingSubmitted, encode, new_event, parse_event
from shared.publishing import source_scoped_id
from shared.settings import CommonSettings
from shared.streams import ACCEPTED_PLAN_REPORTS, ACCEPTED_RATINGS, PLAN_EVENTS, RATING_EVENTS, ensure_streams
from shared.testing import metric_value, publish_event, wait_until

UTC = dt.timezone.utc
AT = dt.datetime(2026, 11, 20, 3, 0, tzinfo=UTC)
SOURCES = ("kiosk.lienhuong", "portal.dichvucong", "kiosk.phanricua")


def rating(source: str, code: str, overall: str) -> Any:
    data = RatingSubmitted(dossier_code=code, agency_code="PTP", rated_at=AT, overall=overall)
    return new_event(type=RATING_TYPE, source=source, id="rating-1", subject=code, data=data, time=AT)


def report(source: str, task: str) -> Any:
    data = PlanTaskReported(plan_id="P146", task_id=task, agency_code="PTP", state="done", reported_at=AT)
    return new_event(type=PLAN_TYPE, source=source, id="report-1", subject=task, data=data, time=AT)


@contextlib.asynccontextmanager
async def running(*services: Any) -> AsyncIterator[None]:
    started = []
    try:
        for service in services:
            await service.start()
            started.append(service)
        yield
    finally:
        for service in reversed(started):
            await service.stop()


def rows(url: str, model: Any) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(model.__table__)).scalar_one())
    finally:
        engine.dispose()


async def accepted(js: Any) -> list[tuple[str, str, Any]]:
    """What the accepted stream holds: (subject, Nats-Msg-Id, event) each."""
    info = await js.stream_info("PARWATCH_ACCEPTED")
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1) if info.state.messages else ():
        msg = await js.get_msg("PARWATCH_ACCEPTED", seq)
        out.append((msg.subject, msg.headers["Nats-Msg-Id"], parse_event(msg.data)))
    return out


async def test_equal_ids_from_different_sources_are_each_relayed_and_counted_downstream(
    own_nats_server, tmp_path: Path
) -> None:
    common = CommonSettings(nats_url=own_nats_server.url, data_dir=tmp_path)
    tracker, _ = create_tracker(common, TrackerSettings(retry_first_delay=0.2, retry_max_delay=0.5))
    scoring, _ = create_scoring(common, ScoringSettings(port=0, evaluate_interval=3600))
    monitor, _ = create_monitor(common, MonitorSettings(port=0, include_shipped_plans=False, tick_interval=3600))
    ratings = [rating(s, f"H.R{i}", o) for i, (s, o) in enumerate(zip(SOURCES, ["satisfied", "very_satisfied",
                                                                               "unsatisfied"], strict=True))]
    reports = [report(s, f"T{i}") for i, s in enumerate(SOURCES)]
    nc = await nats.connect(own_nats_server.url)
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        async with running(tracker, scoring, monitor):
            # The sources set distinct Nats-Msg-Ids on the input streams; the ids of their events are equal.
            for e in ratings:
                await publish_event(js, RATING_EVENTS, encode(e), msg_id=f"{e.source}/{e.id}")
            for e in reports:
                await publish_event(js, PLAN_EVENTS, encode(e), msg_id=f"{e.source}/{e.id}")

            async def all_relayed() -> bool:
                return len(await accepted(js)) >= 6

            await wait_until(all_relayed, timeout=20)
            await wait_until(lambda: rows(common.database_url_for("scoring"), RatingRow) == 3, timeout=20)
            # The monitor takes each of the three: none of its tasks is in a plan it loads, so each is dead-lettered
            # with a reason (issue 12), once per message of the accepted stream; none was lost as a duplicate.
            async def reports_taken() -> bool:
                info = await js.stream_info("TTHC_DEADLETTER")
                return info.state.messages >= 3

            await wait_until(reports_taken, timeout=20)
            letters = [parse_event((await js.get_msg("TTHC_DEADLETTER", seq)).data) for seq in range(1, 4)]
            assert sorted(letter.data.stream_seq for letter in letters if letter.data.stream == "PARWATCH_ACCEPTED") \
                == sorted(seq for seq, (subject, _, _) in enumerate(await accepted(js), start=1)
                          if subject == ACCEPTED_PLAN_REPORTS)
            assert rows(common.database_url_for("deadline_monitor"), PlanReportRow) == 0
            counted = {s: metric_value(tracker.registry, "parwatch_events_total", stream=s, result="accepted")
                       for s in ("TTHC_RATING", "TTHC_PLAN")}
            assert counted == {"TTHC_RATING": 3.0, "TTHC_PLAN": 3.0}
        relayed = await accepted(js)
    finally:
        await nc.close()
    assert sorted((e.source, e.id) for _, _, e in relayed) == sorted((e.source, e.id) for e in ratings + reports)
    assert all(msg_id == source_scoped_id(e) for _, msg_id, e in relayed)
    assert sorted(subject for subject, _, _ in relayed) == [ACCEPTED_PLAN_REPORTS] * 3 + [ACCEPTED_RATINGS] * 3
