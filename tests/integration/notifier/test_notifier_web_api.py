"""The notifier's API for the officials' web page on a real database (ASGI, in process): who an official is
(never an address), silences added, listed and expired as `parwatch silence` does, and the loopback-or-token rule."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest
from fastapi import FastAPI

from services.notifier.store import Store
from services.notifier.web_api import WebApi
from shared.db import make_engine


def client(database_url: str, directory, clock, *, token: str | None = None,  # type: ignore[no-untyped-def]
           host: str = "127.0.0.1") -> tuple[httpx.AsyncClient, Store]:
    store = Store(make_engine(database_url))
    store.create_schema()
    app = FastAPI()
    app.include_router(WebApi(store=store, directory=directory, clock=clock, api_token=token).router())
    transport = httpx.ASGITransport(app=app, client=(host, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://notifier.test"), store


async def test_an_official_is_known_by_agency_role_and_scope_never_by_address(database_url, directory, clock) -> None:
    http, _ = client(database_url, directory, clock)
    async with http:
        r = await http.get("/officials/ptp-head")
        assert r.status_code == 200
        body = r.json()
        assert body == {"id": "ptp-head", "agency_code": "PTP", "role": "head", "title": "Trưởng phòng Tư pháp",
                        "agency_name": "Phòng Tư pháp", "scope": ["PTP"]}
        assert "@" not in r.text
        assert (await http.get("/officials/lead")).json()["scope"] == ["*"]  # the district leadership
        assert (await http.get("/officials/nobody")).status_code == 404


async def test_silences_are_added_listed_and_expired(database_url, directory, clock) -> None:
    http, store = client(database_url, directory, clock)
    async with http:
        r = await http.post("/silences", json={"agencies": ["PTP"], "kinds": ["dossier_due_soon"], "hours": 2,
                                               "comment": "Họp giao ban"})
        assert r.status_code == 201, r.text
        made = r.json()
        assert made["state"] == "active" and made["matchers"] == {"agencies": ["PTP"], "kinds": ["dossier_due_soon"]}
        assert dt.datetime.fromisoformat(made["ends_at"]) - dt.datetime.fromisoformat(made["starts_at"]) \
            == dt.timedelta(hours=2)
        assert [s["id"] for s in (await http.get("/silences")).json()["silences"]] == [made["id"]]
        assert [s.id for s in store.silences(now=clock())] == [made["id"]]
        r = await http.post(f"/silences/{made['id']}/expire")
        assert r.status_code == 200 and r.json()["state"] == "expired"
        assert (await http.get("/silences")).json()["silences"] == []
        assert [s["id"] for s in (await http.get("/silences", params={"all": 1})).json()["silences"]] == [made["id"]]
        assert (await http.post("/silences/nope/expire")).status_code == 404


@pytest.mark.parametrize("body", [
    {"hours": 2, "comment": "mọi thứ"},  # no matcher: would mute everything
    {"agencies": ["NOWHERE"], "hours": 2, "comment": "x"},
    {"kinds": ["no_such_kind"], "hours": 2, "comment": "x"},
    {"agencies": ["PTP"], "hours": 2, "comment": "   "},
    {"agencies": ["PTP"], "hours": 0, "comment": "x"},
])
async def test_a_bad_silence_is_refused(database_url, directory, clock, body) -> None:
    http, store = client(database_url, directory, clock)
    async with http:
        r = await http.post("/silences", json=body)
        assert r.status_code == 422
        assert store.silences(now=clock()) == []


async def test_only_this_machine_or_the_token_holder_may_call(database_url, directory, clock) -> None:
    remote, _ = client(database_url, directory, clock, host="192.0.2.7")
    async with remote:
        assert (await remote.get("/officials/ptp-head")).status_code == 403
        assert (await remote.post("/silences", json={"agencies": ["PTP"], "hours": 1, "comment": "x"})
                ).status_code == 403
    tokened, _ = client(database_url, directory, clock, token="t0ken", host="192.0.2.7")
    async with tokened:
        assert (await tokened.get("/officials/ptp-head")).status_code == 403
        ok = await tokened.get("/officials/ptp-head", headers={"Authorization": "Bearer t0ken"})
        assert ok.status_code == 200
