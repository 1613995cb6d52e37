"""The scoring service against a real nats-server and database: internal facts in, figures out of
/metrics and the API, kpi_below_target alerts out (the KPI rounds driven directly), dead letters, CLI, and two
replicas."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import io
import uuid
from pathlib import Path

import httpx
import nats
import pytest
from openpyxl import load_workbook
from prometheus_client.parser import text_string_to_metric_families

from parwatch.cli import main as parwatch_main
from services.scoring import cli as scoring_cli
from services.scoring.app import create_app
from services.scoring.settings import ScoringSettings
from shared.events import (
    DOSSIER_STATE_TYPE,
    PLAN_TASK_STATE_TYPE,
    RATING_TYPE,
    DossierStateChanged,
    PlanTaskStateChanged,
    RatingSubmitted,
    encode,
    headers_for,
    new_event,
    parse_event,
)
from shared.plans import PlanSources
from shared.settings import CommonSettings
from shared.streams import ACCEPTED_RATINGS, ALERTS, DEADLETTER, DOSSIER_STATE, PLAN_TASK_STATE
from shared.testing import eventually

UTC = dt.timezone.utc
D = dt.date
NOW = dt.datetime(2026, 11, 20, 3, 0, tzinfo=UTC)  # 10:00, 20/11/2026 in Vietnam


class Clock:
    """The services' clock: 10:00 on 20/11/2026 in Vietnam until a test moves it."""

    def __init__(self, now: dt.datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += dt.timedelta(**kw)


def agencies_file(tmp_path: Path, agency: str, name: str) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "agencies.yaml"
    path.write_text(
        "district: {code: TUY_PHONG, name: Ủy ban nhân dân huyện Tuy Phong}\n"
        f"agencies:\n  - {{code: {agency}, kind: department, name: {name}}}\n",
        encoding="utf-8",
    )
    return path


def plans_dir(tmp_path: Path) -> Path:
    """A plan file in force in 2026 whose only target is an on-time rate of at least 98% (the plan sets targets)."""
    folder = tmp_path / "plans"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plan-test-2026.yaml").write_text(
        "plan_id: test-2026\nvalid_from: 2026-01-01\nvalid_until: 2026-12-31\ntargets:\n"
        "  - {id: on_time_ratio, title: Tỷ lệ hồ sơ đúng hạn, unit: ratio, op: ge, value: 0.98}\ntasks: []\n",
        encoding="utf-8",
    )
    return folder


def make_service(*, nats_url: str, database_url: str, tmp_path: Path, agency: str, durable: str,
                 clock: Clock | None = None, **overrides):
    """The service as create_app wires it; its KPI loop runs a round at start, then the test drives them."""
    common = CommonSettings(nats_url=nats_url, database_url=database_url, data_dir=tmp_path)
    settings = ScoringSettings(
        port=0, durable=durable, agencies_file=agencies_file(tmp_path, agency, "Phòng Tư pháp"),
        evaluate_interval=3600, **overrides,
    )
    plans = PlanSources(include_shipped_plans=False, plans_dir=plans_dir(tmp_path))
    return create_app(common, settings, clock=clock or Clock(), plans=plans)


def state(code: str, revision: int, agency: str, **kw) -> object:
    data = dict(
        dossier_code=code, revision=revision, agency_code=agency, procedure_code="1.000001", field_code="HT",
        status=4, counted=True, received_at=dt.datetime(2026, 11, 2, 2, tzinfo=UTC), receipt_day=D(2026, 11, 2),
        due_day=D(2026, 11, 25), updated_at=NOW,
    ) | kw
    return new_event(type=DOSSIER_STATE_TYPE, source="parwatch/dossier_tracker", id=f"{code}:{revision}",
                     subject=code, data=DossierStateChanged(**data), time=NOW)


def rating(code: str, agency: str, overall: str, day: int, **criteria) -> object:
    data = RatingSubmitted(dossier_code=code, agency_code=agency, overall=overall,
                           rated_at=dt.datetime(2026, 11, day, 2, tzinfo=UTC), criteria=criteria or None)
    return new_event(type=RATING_TYPE, source="kiosk/tuy-phong", id=str(uuid.uuid4()), subject=code, data=data)


def task_state(task_id: str, agency: str, state_: str, minute: int) -> object:
    data = PlanTaskStateChanged(plan_id="146", task_id=task_id, agency_code=agency, period="2026-11",
                                due_day=D(2026, 11, 15), state=state_,
                                updated_at=NOW + dt.timedelta(minutes=minute))
    return new_event(type=PLAN_TASK_STATE_TYPE, source="parwatch/deadline_monitor", id=f"{task_id}:{minute}",
                     subject=task_id, data=data)


async def publish(js, subject: str, events) -> None:
    for e in events:
        await js.publish(subject, encode(e), headers=headers_for(e))


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, tuple], float]:
    text = (await client.get("/metrics")).text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def series(samples: dict, name: str, **labels) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


async def test_facts_in_figures_and_alerts_out(nats_server: str, sqlite_url: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    agency = f"T{uuid.uuid4().hex[:8].upper()}"
    clock = Clock()
    # The session's nats-server is shared: only this test's agency may raise alerts (per-agency target).
    service, app = make_service(nats_url=nats_server, database_url=sqlite_url, tmp_path=tmp_path, agency=agency,
                                durable=f"scoring_{uuid.uuid4().hex[:8]}", clock=clock, min_dossiers=1,
                                alert_kpis=["on_time"], alert_district=False)
    await service.start()
    nc = await nats.connect(nats_server)
    js = nc.jetstream()
    alerts_sub = await js.subscribe(ALERTS, deliver_policy=nats.js.api.DeliverPolicy.NEW)
    dead_sub = await js.subscribe(DEADLETTER, deliver_policy=nats.js.api.DeliverPolicy.NEW)
    try:
        # Out of order and twice: the highest revision of each dossier wins.
        await publish(js, DOSSIER_STATE, [
            state("S-E1", 2, agency, status=10, ended_on=D(2026, 11, 9), due_day=D(2026, 11, 10), timeliness="early",
                  channel=2, synced_national=True),
            state("S-E1", 1, agency, channel=1),
            state("S-E2", 1, agency, status=10, ended_on=D(2026, 11, 12), due_day=D(2026, 11, 12),
                  timeliness="on_time", channel=2, synced_national=True),
            state("S-E3", 1, agency, status=10, ended_on=D(2026, 11, 9), due_day=D(2026, 11, 5), timeliness="late",
                  channel=1, synced_national=False),
            state("S-O1", 1, agency),
            state("S-O2", 1, agency, due_day=D(2026, 11, 10)),
            state("S-O2", 1, agency, due_day=D(2026, 11, 10)),
            state("S-P1", 3, agency, status=5, due_day=D(2026, 11, 18), paused=True,
                  pause_started_on=D(2026, 11, 13), supplement_requests=1),
            state("S-N1", 1, agency, status=1, counted=False, received_at=None, receipt_day=None, due_day=None),
        ])
        await js.publish(DOSSIER_STATE, b'{"not": "a cloudevent"}')
        await publish(js, ACCEPTED_RATINGS, [
            rating("S-E1", agency, "unsatisfied", 12, c1=0, c7=1),
            rating("S-E1", agency, "very_satisfied", 10, c1=2, c7=2),  # earlier: replaced by the one above
            rating("S-E2", agency, "satisfied", 13, c1=2),
            rating("S-E3", agency, "unsatisfied", 13),
        ])
        await publish(js, PLAN_TASK_STATE, [
            task_state("t1", agency, "done", 1), task_state("t2", agency, "overdue", 1),
            task_state("t2", agency, "done_late", 2), task_state("t3", agency, "overdue", 1),
            task_state("t4", agency, "open", 1),
        ])

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://scoring") as client:

            # Three consumers (states, ratings, tasks) apply their facts independently: wait until every
            # figure below has reached its value, then check the details of that one scrape.
            expected = {
                # ended 3 (2 in time) + open 3 (S-O1 in time, S-P1 paused before due, S-O2 overdue) -> 4/6
                **{("parwatch_on_time_ratio", (("agency", agency), ("period", p))): 4 / 6
                   for p in ("month", "quarter", "year")},
                ("parwatch_satisfaction_ratio", (("agency", agency),)): 1 / 3,
                ("parwatch_satisfaction_criterion_score", (("agency", agency), ("criterion", "c1"))): 1.0,
                ("parwatch_plan_completion_ratio", (("agency", agency),)): 2 / 3,
                # Filed online / channel known: the three dossiers without a channel leave the share.
                ("parwatch_online_filing_ratio", (("agency", agency), ("period", "month"))): 2 / 3,
                ("parwatch_period_dossiers", (("agency", agency), ("figure", "open"), ("period", "month"))): 3,
            }
            last: dict = {}

            async def ready():
                nonlocal last
                last = await scrape(client)
                return last if all(last.get(k) == v for k, v in expected.items()) else None

            try:
                s = await eventually(ready)
            except AssertionError:
                assert {k: last.get(k) for k in expected} == expected
                raise
            assert series(s, "parwatch_national_sync_ratio", agency=agency, period="month") == 2 / 3
            assert series(s, "parwatch_online_payment_ratio", agency=agency, period="month") is None
            assert series(s, "parwatch_service_index_points", agency=agency, period="month",
                          part="progress") == pytest.approx(20 * 4 / 6)
            assert series(s, "parwatch_service_index_points", agency=agency, period="month",
                          part="digitization") is None
            assert series(s, "parwatch_period_dossiers", agency=agency, period="month", figure="overdue") == 1
            assert series(s, "parwatch_on_time_ratio", agency="TUY_PHONG", period="month") is not None

            # The bad message was dead-lettered and the stream kept flowing.
            letter = parse_event((await dead_sub.next_msg(timeout=10)).data)
            assert letter.data.stream == "PARWATCH_DOSSIER_STATE"
            assert "JSON" in letter.data.reason or "type" in letter.data.reason

            # An alert for the agency's on-time rate, in Vietnamese: two rounds below target (half an
            # interval apart, as replicas need) fire it; the relay publishes it.
            key = f"kpi_below_target:{agency}:on_time:2026-11"
            scoring, relay = app.state.scoring, app.state.relay
            await scoring.evaluate()
            clock.advance(hours=1)
            await scoring.evaluate()
            await relay.once()

            async def alert():
                while True:
                    msg = await alerts_sub.next_msg(timeout=10)
                    event = parse_event(msg.data)
                    if event.data.alert_key == key:
                        return event

            event = await asyncio.wait_for(alert(), timeout=20)
            assert event.type == "vn.tthc.alert.firing" and event.data.kind == "kpi_below_target"
            assert event.data.summary == (
                "Tỷ lệ hồ sơ đúng hạn của Phòng Tư pháp tháng 11/2026 là 66,7%, dưới mục tiêu 98%"
            )
            assert event.data.labels == {"kpi": "on_time", "period": "2026-11"}
            assert event.data.agency_code == agency

            # -- the API ------------------------------------------------------------------
            r = await client.get(f"/figures/{agency}", params={"period": "2026-11"})
            assert r.status_code == 200
            body = r.json()
            assert body["on_time_ratio"] == 4 / 6 and body["current"] is True and body["as_of"] == "2026-11-20"
            assert body["agency_name"] == "Phòng Tư pháp"
            assert set(body["not_computable"]) == {"publicity_other", "online_service_other", "digitization",
                                                   "satisfaction_other"}
            assert body["online_payment_ratio"] is None
            assert body["index_points_computed"] is not None
            r = await client.get(f"/figures/{agency}", params={"period": "2026-10"})
            assert r.status_code == 200 and r.json()["on_time_ratio"] is None and r.json()["open"] == 0
            assert (await client.get(f"/figures/{agency}", params={"period": "2026-13"})).status_code == 422
            assert (await client.get(f"/figures/{agency}", params={"period": "2027-01"})).status_code == 422
            assert (await client.get("/figures/NO_SUCH_UNIT")).status_code == 404
            review = (await client.get(f"/dossiers/{agency}/late", params={"period": "2026-11"})).json()
            assert [d["dossier_code"] for d in review["late"]] == ["S-E3"]
            assert [d["dossier_code"] for d in review["overdue"]] == ["S-O2"]
            codes = {a["code"]: a for a in (await client.get("/agencies")).json()}
            assert codes[agency]["name"] == "Phòng Tư pháp" and codes["TUY_PHONG"]["kind"] == "district"
            csv_body = (await client.get("/report", params={"period": "2026-11"})).content
            text = csv_body.decode("utf-8-sig")
            assert text.splitlines()[0].startswith("Mã đơn vị,Đơn vị,Kết thúc trước hạn")
            row = next(line for line in text.splitlines() if line.startswith(agency))
            assert row.split(",")[:9] == [agency, "Phòng Tư pháp", "1", "1", "1", "0", "3", "1", "0.6667"]
            xlsx = (await client.get("/report", params={"period": "2026-11", "format": "xlsx"})).content
            ws = load_workbook(io.BytesIO(xlsx)).active
            rows = [[c.value for c in r] for r in ws.iter_rows()]
            xrow = next(r for r in rows if r[0] == agency)
            assert xrow[8] == pytest.approx(4 / 6)
            spec = (await client.get("/openapi.json")).json()
            assert {"/agencies", "/figures/{agency}", "/dossiers/{agency}/late", "/report"} <= set(spec["paths"])
    finally:
        await alerts_sub.unsubscribe()
        await dead_sub.unsubscribe()
        await nc.close()
        await service.stop()

    # -- the CLI on the same database writes the same table as the API -------------------------------
    monkeypatch.setenv("PARWATCH_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("PARWATCH_SCORING_AGENCIES_FILE", str(tmp_path / "agencies.yaml"))
    out = tmp_path / "report.csv"
    args = argparse.Namespace(period="2026-11", format="csv", output=out)
    assert scoring_cli.run_report(args, clock=clock) == 0
    assert out.read_bytes() == csv_body
    assert parwatch_main(["report", "--period", "2020-01", "--output", str(tmp_path / "old.csv")]) == 0
    assert (tmp_path / "old.csv").read_text(encoding="utf-8-sig").count(agency) == 1
    assert parwatch_main(["rebuild-scores"]) == 0
    assert scoring_cli.run_report(argparse.Namespace(period="2026-11", format="csv", output=out), clock=clock) == 0
    assert out.read_bytes() == csv_body


@pytest.mark.postgres
async def test_two_replicas_export_the_same_figures(nats_server: str, postgres_url: str, tmp_path: Path) -> None:
    """Replicas share a database that takes several writers: PostgreSQL (on SQLite a second replica refuses)."""
    database_url = postgres_url
    agency = f"R{uuid.uuid4().hex[:8].upper()}"
    durable = f"scoring_{uuid.uuid4().hex[:8]}"  # one durable consumer shared by both replicas
    replicas = [
        make_service(nats_url=nats_server, database_url=database_url, tmp_path=tmp_path / str(i), agency=agency,
                     durable=durable, batch_size=5, alert_kpis=[])
        for i in range(2)
    ]
    for service, _ in replicas:
        await service.start()
    nc = await nats.connect(nats_server)
    js = nc.jetstream()
    try:
        events = []
        for i in range(40):
            for revision in (1, 2):
                ended = revision == 2 and i % 4 != 0
                events.append(state(f"RP-{agency}-{i}", revision, agency, status=10 if ended else 4,
                                    ended_on=D(2026, 11, 10) if ended else None,
                                    timeliness=("late" if i % 4 == 1 else "on_time") if ended else None,
                                    due_day=D(2026, 11, 10) if ended else D(2026, 11, 19 + i % 3)))
        await publish(js, DOSSIER_STATE, events)
        # ended: 30 (10 late, 20 on time); open: 10, of which due 19/11 (i % 3 == 0 among i % 4 == 0) are overdue
        open_overdue = sum(1 for i in range(40) if i % 4 == 0 and i % 3 == 0)
        expected = (20 + 10 - open_overdue) / 40
        clients = [httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://scoring")
                   for _, app in replicas]

        # Every final state applied (a retried snapshot may come a second later: the ratio alone is already
        # right while a dossier ended on time is still open in time).
        final = {"ended_on_time": 20, "ended_late": 10, "open": 10, "overdue": open_overdue}

        async def ready(client: httpx.AsyncClient) -> bool:
            s = await scrape(client)
            return series(s, "parwatch_on_time_ratio", agency=agency, period="month") == expected and all(
                series(s, "parwatch_period_dossiers", agency=agency, period="month", figure=f) == n
                for f, n in final.items()
            )

        async def both_ready():
            return all([await ready(c) for c in clients])

        await eventually(both_ready, timeout=30)
        a, b = [await scrape(c) for c in clients]
        mine = lambda s: {k: v for k, v in s.items() if ("agency", agency) in k[1]}
        assert mine(a) == mine(b) and mine(a)
        for c in clients:
            await c.aclose()
    finally:
        await nc.close()
        for service, _ in replicas:
            await service.stop()
