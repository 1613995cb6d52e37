"""The web page's own tables on SQLite and PostgreSQL: password hashes (set, replaced, removed) and the record of
writes (newest first, by action and agency)."""

from __future__ import annotations

import datetime as dt

from services.scoring.web.auth import fingerprint, hash_password, verify_password
from services.scoring.web.store import AuditEntry, WebStore
from shared.db import make_engine

T0 = dt.datetime(2026, 12, 2, 1, 0, tzinfo=dt.UTC)


def test_a_password_hash_is_set_replaced_and_removed(database_url: str) -> None:
    store = WebStore(make_engine(database_url))
    store.create_schema()
    store.create_schema()  # again at the next start: nothing happens
    assert store.password_hash("tuphap-lanhdao") is None
    first = hash_password("mật khẩu thứ nhất")
    store.set_password_hash("tuphap-lanhdao", first, now=T0)
    assert store.password_hash("tuphap-lanhdao") == first
    second = hash_password("mật khẩu thứ hai!")
    store.set_password_hash("tuphap-lanhdao", second, now=T0 + dt.timedelta(hours=1))
    stored = store.password_hash("tuphap-lanhdao")
    assert stored == second and fingerprint(stored) != fingerprint(first)
    assert verify_password(stored, "mật khẩu thứ hai!") and not verify_password(stored, "mật khẩu thứ nhất")
    assert store.remove_password("tuphap-lanhdao") is True
    assert store.remove_password("tuphap-lanhdao") is False
    assert store.password_hash("tuphap-lanhdao") is None


def test_every_write_is_recorded_with_who_and_when(database_url: str) -> None:
    store = WebStore(make_engine(database_url))
    store.create_schema()
    entries = [
        AuditEntry(T0, "tuphap-lanhdao", "plan_report", "PTP", "KH/III.1/2026-12", "ok: report:abc"),
        AuditEntry(T0 + dt.timedelta(minutes=1), "tuphap-lanhdao", "ack", "XA_VINH_TAN", "k", "refused: out of scope"),
        AuditEntry(T0 + dt.timedelta(minutes=2), "tuphap-lanhdao", "silence_add", "PTP", "s1", "ok"),
    ]
    for e in entries:
        store.record(e)
    assert store.audit() == entries[::-1]
    assert store.audit(action="silence_add") == [entries[2]]
    assert store.audit(agencies=["XA_VINH_TAN"]) == [entries[1]]
    assert store.audit(limit=1) == [entries[2]]
    assert store.audit()[0].at == T0 + dt.timedelta(minutes=2)
