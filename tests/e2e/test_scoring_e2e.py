"""End to end through the public contract: dossier and rating CloudEvents in (tthc.dossier.events,
tthc.rating.events), dossier_tracker and scoring running in-process on a real nats-server with a
SQLite file each; the exact ratios out of scoring's /metrics and a kpi_below_target alert out on
tthc.alerts."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import uuid
from pathlib import Path

import httpx
import nats
from nats.js.api import DeliverPolicy
from prometheus_client.parser import text_string_to_metric_families

from services.dossier_tracker.app import create_app as create_tracker
from services.dossier_tracker.settings import TrackerSettings
from services.scoring.app import create_app as create_scoring
from services.scoring.settings import ScoringSettings
from shared.events import CONTENT_TYPE, parse_event
from shared.plans import PlanSources
from shared.settings import CommonSettings

NOW = dt.datetime(2026, 11, 20, 3, 0, tzinfo=dt.timezone.utc)  # Friday 20/11/2026, 10:00 in Vietnam
_T0 = time.monotonic()


def clock() -> dt.datetime:
    """20/11/2026 10:00 in Vietnam, running at real speed."""
    return NOW + dt.timedelta(seconds=time.monotonic() - _T0)


def vn(day: int, hour: int = 9) -> str:
    return f"2026-11-{day:02d}T{hour:02d}:00:00+07:00"


class Source:
    """A one-stop-shop system publishing contract events for one agency."""

    def __init__(self, js, agency: str) -> None:
        self.js = js
        self.agency = agency
        self.sent: list[bytes] = []

    async def send(self, subject: str, event: dict, *, again: bool = False) -> None:
        body = json.dumps(event).encode()
        await self.js.publish(subject, body, headers={"Content-Type": CONTENT_TYPE, "Nats-Msg-Id": event["id"]})
        if again:  # a retry by the source: same id, must count once
            await self.js.publish(subject, body, headers={"Content-Type": CONTENT_TYPE})

    async def status(self, code: str, seq: int, status: int, at: str, **fields) -> None:
        data = {"dossier_code": code, "sequence": seq, "status": status, "occurred_at": at,
                "agency_code": self.agency, "procedure_code": "2.000889", "field_code": "CT"} | fields
        await self.send("tthc.dossier.events", {
            "specversion": "1.0", "id": str(uuid.uuid4()), "source": "mot-cua/tuy-phong",
            "type": "vn.tthc.dossier.status_changed", "time": at, "subject": code, "data": data,
        }, again=seq == 1)

    async def rating(self, code: str, overall: str, at: str) -> None:
        await self.send("tthc.rating.events", {
            "specversion": "1.0", "id": str(uuid.uuid4()), "source": "kiosk/tuy-phong",
            "type": "vn.tthc.rating.submitted", "time": at, "subject": code,
            "data": {"dossier_code": code, "agency_code": self.agency, "rated_at": at, "overall": overall},
        })


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_events_in_ratios_and_alert_out(nats_server: str, tmp_path: Path) -> None:
    agency = f"E{uuid.uuid4().hex[:8].upper()}"
    names = tmp_path / "agencies.yaml"
    names.write_text("district: {code: TUY_PHONG, name: Ủy ban nhân dân huyện Tuy Phong}\n"
                     f"agencies:\n  - {{code: {agency}, kind: department, name: Phòng Tư pháp}}\n", encoding="utf-8")
    run = uuid.uuid4().hex[:8]
    tracker, _ = create_tracker(
        CommonSettings(nats_url=nats_server, database_url=f"sqlite:///{tmp_path / 'tracker.db'}", data_dir=tmp_path),
        TrackerSettings(port=0, durable=f"tracker_{run}"),
        clock=clock,
    )
    plans = tmp_path / "plans"
    plans.mkdir()
    (plans / "plan-test-2026.yaml").write_text(  # the targets come from plan files alone
        "plan_id: test-2026\nvalid_from: 2026-01-01\nvalid_until: 2026-12-31\ntargets:\n"
        "  - {id: on_time_ratio, title: Tỷ lệ hồ sơ đúng hạn, unit: ratio, op: ge, value: 0.98}\ntasks: []\n",
        encoding="utf-8")
    scoring, scoring_app = create_scoring(
        CommonSettings(nats_url=nats_server, database_url=f"sqlite:///{tmp_path / 'scoring.db'}", data_dir=tmp_path),
        # The session's nats-server is shared: only this test's agency may raise alerts (its own agencies file).
        ScoringSettings(port=0, durable=f"scoring_{run}", agencies_file=names,
                        evaluate_interval=0.2, min_dossiers=1, alert_kpis=["on_time"], alert_district=False),
        clock=clock,
        plans=PlanSources(include_shipped_plans=False, plans_dir=plans),
    )
    await tracker.start()
    await scoring.start()
    nc = await nats.connect(nats_server)
    js = nc.jetstream()
    alerts = await js.subscribe("tthc.alerts", deliver_policy=DeliverPolicy.NEW)
    try:
        src = Source(js, agency)
        code = lambda n: f"{agency}/{n}"  # noqa: E731
        # Ended early, on time, late; open in time, open overdue, paused before its due day; never received.
        await src.status(code(1), 1, 2, vn(2), received_at=vn(2), due_at=vn(10, 17), channel=2,
                         synced_national=True)
        await src.status(code(1), 2, 10, vn(9))
        await src.status(code(2), 2, 10, vn(12, 15))  # arrives before its receipt: order by sequence
        await src.status(code(2), 1, 2, vn(3), received_at=vn(3), due_at=vn(12, 17), channel=2,
                         synced_national=True)
        await src.status(code(3), 1, 2, vn(3), received_at=vn(3), due_at=vn(5, 17), channel=1, synced_national=True)
        await src.status(code(3), 2, 9, vn(9))
        await src.status(code(4), 1, 2, vn(16, 8), received_at=vn(16, 8), due_at=vn(25, 17), channel=1)
        await src.status(code(5), 1, 2, vn(2), received_at=vn(2), due_at=vn(10, 17), channel=1)
        await src.status(code(6), 1, 2, vn(2), received_at=vn(2), due_at=vn(18, 17), channel=1)
        await src.status(code(6), 2, 5, vn(13))
        await src.status(code(7), 1, 1, vn(4), channel=2)
        # The later rating of dossier 1 arrives first and still wins.
        await src.rating(code(1), "unsatisfied", vn(11))
        await src.rating(code(1), "very_satisfied", vn(10))
        await src.rating(code(2), "satisfied", vn(13))
        await src.rating(code(3), "unsatisfied", vn(13))

        expected = {
            ("parwatch_on_time_ratio", "month"): 4 / 6,  # (1 early + 1 on time + 2 open not overdue) / (3 + 3)
            ("parwatch_on_time_ratio", "quarter"): 4 / 6,
            ("parwatch_on_time_ratio", "year"): 4 / 6,
            ("parwatch_online_filing_ratio", "month"): 2 / 6,
            ("parwatch_national_sync_ratio", "month"): 1.0,  # 3 synced of the 3 whose sync is known
            ("parwatch_satisfaction_ratio", None): 1 / 3,
        }

        def pick(s: dict) -> dict:
            out = {}
            for (name, period) in expected:
                labels = {"agency": agency} | ({"period": period} if period else {})
                out[(name, period)] = s.get((name, tuple(sorted(labels.items()))))
            return out

        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=scoring_app), base_url="http://x") as client:
            deadline = time.monotonic() + 30
            while True:
                got = pick(samples((await client.get("/metrics")).text))
                if got == expected or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            assert got == expected
            final = samples((await client.get("/metrics")).text)
            assert ("parwatch_plan_completion_ratio", (("agency", agency),)) not in final  # no task: no series
            assert final[("parwatch_period_dossiers",
                          (("agency", agency), ("figure", "overdue"), ("period", "month")))] == 1

        key = f"kpi_below_target:{agency}:on_time:2026-11"

        async def kpi_alert():
            while True:
                event = parse_event((await alerts.next_msg(timeout=20)).data)
                if event.data.alert_key == key:
                    return event

        event = await asyncio.wait_for(kpi_alert(), timeout=30)
        assert event.type == "vn.tthc.alert.firing"
        assert event.source == "parwatch/scoring"
        assert (event.data.kind, event.data.severity, event.data.agency_code) == ("kpi_below_target", "warning", agency)
        assert event.data.summary == "Tỷ lệ hồ sơ đúng hạn của Phòng Tư pháp tháng 11/2026 là 66,7%, dưới mục tiêu 98%"
        assert event.data.labels == {"kpi": "on_time", "period": "2026-11"}
    finally:
        await alerts.unsubscribe()
        await nc.close()
        await scoring.stop()
        await tracker.stop()
