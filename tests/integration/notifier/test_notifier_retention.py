"""The notifier's retention on SQLite and PostgreSQL, with fixed times: seen keys, resolved alerts, the log,
failures, digests and silences go after their time; firing alerts, pending assignments and unsent notices stay."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import BigInteger, inspect, select, text
from sqlmodel import Session

from services.notifier.store import (
    AlertRow,
    AssignmentRow,
    DigestRow,
    Failure,
    FailureRow,
    IncomingAlert,
    LogEntry,
    LogRow,
    SeenEvent,
    SilenceRow,
    Store,
)
from shared.db import make_engine
from shared.events import ALERT_FIRING_TYPE, Alert
from shared.outbox import Message
from shared.retention import Retention

UTC = dt.timezone.utc
NOW = dt.datetime(2027, 3, 1, 3, 0, tzinfo=UTC)
DAYS = dt.timedelta(days=1)
OLD = NOW - 500 * DAYS
YOUNG = NOW - 30 * DAYS
RETENTION = Retention(dedup=400 * DAYS, history=400 * DAYS, log=400 * DAYS, chunk=500)


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    engine = make_engine(database_url)
    store = Store(engine)
    store.create_schema()
    yield store
    engine.dispose()


def alert(key: str, *, state: str, at: dt.datetime) -> AlertRow:
    return AlertRow(alert_key=key, kind="dossier_overdue", severity="warning", agency_code="PTP", ref=key,
                    summary="Hồ sơ quá hạn", labels={}, state=state, starts_at=at, received_at=at,
                    ends_at=at if state == "resolved" else None, resolved_at=at if state == "resolved" else None)


def assignment(key: str, receiver: str, *, done: bool) -> AssignmentRow:
    return AssignmentRow(alert_key=key, receiver_id=receiver, episode=OLD, route="agency", created_at=OLD, done=done)


def add(store: Store, *rows: object) -> None:
    with Session(store.engine) as session, session.begin():
        session.add_all(rows)


def log_entry(key: str) -> LogEntry:
    return LogEntry(receiver_id="ptp-truongphong", channel="smtp", agency_code="PTP", alert_key=key,
                    state="firing", kind="dossier_overdue", severity="warning", notice_key=f"{key}:n")


def keys(store: Store, column) -> list[str]:  # type: ignore[no-untyped-def]
    with store.engine.connect() as conn:
        return sorted(str(v) for v in conn.execute(select(column)).scalars())


def test_what_is_old_and_done_goes_and_what_may_still_be_sent_stays(store: Store) -> None:
    add(
        store,
        SeenEvent(source="parwatch/deadline_monitor", event_id="old", received_at=OLD),
        SeenEvent(source="parwatch/deadline_monitor", event_id="young", received_at=YOUNG),
        alert("resolved-old", state="resolved", at=OLD),
        assignment("resolved-old", "a", done=True),
        assignment("resolved-old", "b", done=True),
        alert("resolved-old-pending", state="resolved", at=OLD),
        assignment("resolved-old-pending", "a", done=False),  # someone still to be told it resolved
        alert("firing-old", state="firing", at=OLD),
        alert("resolved-young", state="resolved", at=YOUNG),
        DigestRow(kind="weekly", period_key="2025-W40", agency_code="PTP", created_at=OLD),
        DigestRow(kind="weekly", period_key="2027-W08", agency_code="PTP", created_at=YOUNG),
        SilenceRow(id="ended-old", matchers={}, starts_at=OLD, ends_at=OLD + DAYS, comment="Tết", created_at=OLD),
        SilenceRow(id="active", matchers={}, starts_at=OLD, ends_at=NOW + DAYS, comment="lâu dài", created_at=OLD),
    )
    with store.engine.begin() as conn:
        Store.log_sent(conn, [log_entry("old")], outbox_id=2**40, now=OLD)  # outbox ids are 64-bit
        Store.log_sent(conn, [log_entry("young")], outbox_id=2**40 + 1, now=YOUNG)
        for at in (OLD, YOUNG):
            failure = Failure(receiver_id="ptp-truongphong", channel="smtp", agency_code="PTP", kind="alerts",
                              notice_keys=["k"], reason="550 refused", attempts=3, created_at=at)
            Store.log_failure(conn, failure, now=at)
        store.outbox.add(conn, [Message(topic="smtp", key="ptp", payload="{}", message_id="unsent")], now=OLD)

    deleted = store.prune(RETENTION, now=NOW)

    assert deleted == {"notifier_alert": 1, "notifier_assignment": 2, "notifier_seen_event": 1, "notifier_log": 1,
                       "notifier_failure": 1, "notifier_digest": 1, "notifier_silence": 1, "notifier_ack": 0}
    assert keys(store, SeenEvent.event_id) == ["young"]
    assert keys(store, AlertRow.alert_key) == ["firing-old", "resolved-old-pending", "resolved-young"]
    assert keys(store, AssignmentRow.alert_key) == ["resolved-old-pending"]
    assert keys(store, LogRow.alert_key) == ["young"] and keys(store, LogRow.outbox_id) == [str(2**40 + 1)]
    assert len(keys(store, FailureRow.id)) == 1
    assert keys(store, DigestRow.period_key) == ["2027-W08"]
    assert keys(store, SilenceRow.id) == ["active"]
    assert store.outbox.size() == 1  # a notice not delivered yet is never pruned, however old
    # A young duplicate is still recognised; the old one, beyond the alert stream's 90 days, is taken as new.
    again = [IncomingAlert(source="parwatch/deadline_monitor", event_id=i, type=ALERT_FIRING_TYPE,
                           alert=Alert(alert_key=f"k-{i}", kind="dossier_overdue", severity="warning",
                                       agency_code="PTP", ref="H.1", summary="Hồ sơ quá hạn", starts_at=NOW))
             for i in ("young", "old")]
    assert store.record_alerts(again, now=NOW) == [False, True]
    assert store.prune(RETENTION, now=NOW) == dict.fromkeys(deleted, 0)


def test_an_older_32_bit_log_column_is_widened_at_start(store: Store) -> None:
    if store.engine.dialect.name != "postgresql":
        pytest.skip("SQLite's integers are 64-bit whatever the declared type")
    with store.engine.begin() as conn:
        conn.execute(text("ALTER TABLE notifier_log ALTER COLUMN outbox_id TYPE INTEGER"))
    store.create_schema()
    types = {c["name"]: c["type"] for c in inspect(store.engine).get_columns("notifier_log")}
    assert isinstance(types["outbox_id"], BigInteger)
