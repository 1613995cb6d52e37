"""Closed periods stay closed, through the real scoring service (a real nats-server, SQLite, and PostgreSQL when
available): last month's figures do not move when this month's events arrive, and do move when a late event that
occurred last month arrives."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import httpx
import nats

from services.scoring.app import create_app
from services.scoring.settings import ScoringSettings
from shared.events import DOSSIER_STATE_TYPE, DossierStateChanged, encode, headers_for, new_event
from shared.plans import PlanSources
from shared.settings import CommonSettings
from shared.streams import DOSSIER_STATE
from shared.testing import eventually

UTC = dt.timezone.utc
D = dt.date
NOW = dt.datetime(2026, 12, 5, 3, 0, tzinfo=UTC)  # 10:00 on 5/12/2026 in Vietnam: November is closed


def at(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(3), tzinfo=UTC)  # 10:00 that day in Vietnam


def dossier_fact(code: str, revision: int, agency: str, occurred: dt.date, **kw) -> object:
    """The tracker's snapshot of a dossier after its ``revision`` events, the latest of which occurred on
    ``occurred``: received on the 2nd of November, due on the 20th, processing."""
    data = dict(
        dossier_code=code, revision=revision, agency_code=agency, procedure_code="1.000001", field_code="HT",
        status=4, counted=True, received_at=at(D(2026, 11, 2)), receipt_day=D(2026, 11, 2),
        due_day=D(2026, 11, 20), updated_at=NOW, occurred_at=at(occurred),
    ) | kw
    return new_event(type=DOSSIER_STATE_TYPE, source="parwatch/dossier_tracker", id=f"{code}:{revision}",
                     subject=code, data=DossierStateChanged(**data), time=NOW)


def make_service(*, nats_url: str, database_url: str, tmp_path: Path, agencies: tuple[str, str]):
    path = tmp_path / "agencies.yaml"
    path.write_text(
        "district: {code: TUY_PHONG, name: Ủy ban nhân dân huyện Tuy Phong}\nagencies:\n"
        f"  - {{code: {agencies[0]}, kind: department, name: Phòng Tư pháp}}\n"
        f"  - {{code: {agencies[1]}, kind: department, name: Phòng Nội vụ}}\n",
        encoding="utf-8",
    )
    common = CommonSettings(nats_url=nats_url, database_url=database_url, data_dir=tmp_path)
    settings = ScoringSettings(port=0, durable=f"scoring_{uuid.uuid4().hex[:8]}", agencies_file=path,
                               evaluate_interval=3600)
    plans = PlanSources(include_shipped_plans=False, plans_dir=None)
    return create_app(common, settings, clock=lambda: NOW, plans=plans)


FIGURES = ("ended_early", "ended_on_time", "ended_late", "open", "overdue", "on_time_ratio", "received",
           "sync_reported", "synced", "national_sync_ratio")


async def test_last_month_moves_only_with_events_that_occurred_in_it(nats_server: str, database_url: str,
                                                                       tmp_path: Path) -> None:
    ptp, pnv = f"T{uuid.uuid4().hex[:8].upper()}", f"M{uuid.uuid4().hex[:8].upper()}"
    run = ptp  # the session's nats-server is shared: this test's dossier codes are its own

    def fact(name: str, *args, **kw) -> object:
        return dossier_fact(f"{name}.{run}", *args, **kw)

    service, app = make_service(nats_url=nats_server, database_url=database_url, tmp_path=tmp_path,
                                agencies=(ptp, pnv))
    await service.start()
    nc = await nats.connect(nats_server)
    js = nc.jetstream()

    async def send(events) -> None:
        for e in events:
            await js.publish(DOSSIER_STATE, encode(e), headers=headers_for(e))

    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://scoring") as client:

            async def figures(agency: str, period: str) -> dict:
                r = await client.get(f"/figures/{agency}", params={"period": period})
                assert r.status_code == 200
                body = r.json()
                return {k: body[k] for k in FIGURES}

            async def reaches(agency: str, period: str, expected: dict):
                found = await figures(agency, period)
                return found if all(found[k] == v for k, v in expected.items()) else None

            # November as it happened: C ended early on the 18th; A (due the 20th) open and overdue at the end
            # of November; B (due in December), G and H (due the 30th) open and in time; nobody said whether any
            # was synced to the national portal.
            await send([
                fact("A", 1, ptp, D(2026, 11, 2)),
                fact("B", 1, ptp, D(2026, 11, 3), due_day=D(2026, 12, 10)),
                fact("C", 1, ptp, D(2026, 11, 2)),
                fact("C", 2, ptp, D(2026, 11, 18), status=10, ended_on=D(2026, 11, 18), timeliness="early"),
                fact("G", 1, ptp, D(2026, 11, 6), due_day=D(2026, 11, 30)),
                fact("H", 1, ptp, D(2026, 11, 2), due_day=D(2026, 11, 30)),
            ])
            november = {"ended_early": 1, "ended_on_time": 0, "ended_late": 0, "open": 4, "overdue": 1,
                        "on_time_ratio": 4 / 5, "received": 5, "sync_reported": 0, "synced": 0,
                        "national_sync_ratio": None}
            await eventually(lambda: reaches(ptp, "2026-11", november))

            # December's events: A resolved late, B's second supplement request (late whatever its dates), the
            # sync flag of B and G, and G moved to another unit. Before histories each changed November.
            await send([
                fact("A", 2, ptp, D(2026, 12, 2), status=10, ended_on=D(2026, 12, 2), timeliness="late"),
                fact("B", 3, ptp, D(2026, 12, 1), status=5, paused=True, pause_started_on=D(2026, 12, 1),
                     supplement_requests=2, due_day=D(2026, 12, 10), synced_national=True),
                fact("G", 2, pnv, D(2026, 12, 3), due_day=D(2026, 11, 30), synced_national=True),
            ])
            # Wait until scoring has applied them (they show in December and in the running year) ...
            await eventually(lambda: reaches(ptp, "2026-12", {"ended_late": 1, "open": 2, "overdue": 2}))
            await eventually(lambda: reaches(pnv, "2026", {"received": 1, "synced": 1, "open": 1}))
            # ... then November is what it was, under the unit G belonged to then.
            assert await figures(ptp, "2026-11") == november
            assert (await client.get(f"/figures/{pnv}", params={"period": "2026-11"})).json()["received"] == 0
            late_list = (await client.get(f"/dossiers/{ptp}/late", params={"period": "2026-11"})).json()
            assert [d["dossier_code"] for d in late_list["overdue"]] == [f"A.{run}"]

            # Late events that occurred in November reach scoring only now: H was resolved on time on the 27th,
            # and D, received on the 4th, on the 25th.
            await send([
                fact("H", 2, ptp, D(2026, 11, 27), status=10, ended_on=D(2026, 11, 27), timeliness="early"),
                fact("D", 2, ptp, D(2026, 11, 25), receipt_day=D(2026, 11, 4), due_day=D(2026, 11, 25), status=10,
                     ended_on=D(2026, 11, 25), timeliness="on_time"),
            ])
            changed = november | {"ended_early": 2, "ended_on_time": 1, "open": 3, "received": 6,
                                  "on_time_ratio": 5 / 6}
            await eventually(lambda: reaches(ptp, "2026-11", changed))
            assert await figures(ptp, "2026-11") == changed
    finally:
        await nc.close()
        await service.stop()
