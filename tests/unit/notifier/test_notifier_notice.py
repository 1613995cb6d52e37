"""A notice as it waits in the outbox: where it goes, in which order, what is left once the log was checked."""

from __future__ import annotations

import datetime as dt

from services.notifier.service import Notice
from shared.outbox import Pending

T0 = dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.timezone.utc)


def item(key: str, notice_key: str) -> dict[str, object]:
    return {"notice_key": notice_key, "alert_key": key, "state": "firing", "level": 0, "repeat": 0,
            "kind": "dossier_overdue", "severity": "warning", "agency_code": "PTP", "ref": key, "summary": "Hồ sơ",
            "starts_at": T0.isoformat(), "ends_at": None, "labels": {}}


def alerts(channel: str = "smtp", receiver: str = "ptp-desk", keys: tuple[str, ...] = ("a1", "a2")) -> Notice:
    items = [item(k, f"{k}@x:firing") for k in keys]
    return Notice(channel, {"type": "alerts", "receiver": receiver, "role": "officer", "agency": "PTP",
                            "notice_keys": [i["notice_key"] for i in items], "items": items})


def pending(notice: Notice) -> Pending:
    m = notice.message()
    return Pending(id=1, topic=m.topic, key=m.key, payload=m.payload, message_id=m.message_id, attempts=0,
                   created_at=T0)


def test_a_notice_goes_to_its_channel_in_order_per_receiver_with_a_stable_delivery_id():
    m = alerts().message()
    assert (m.topic, m.key) == ("smtp", "smtp:ptp-desk")
    assert "Hồ sơ" in m.payload  # UTF-8 text, not escapes
    assert m.message_id == alerts().message().message_id and m.message_id.startswith("parwatch-")
    others = {alerts(channel="webhook").message().message_id, alerts(receiver="ptp-head").message().message_id,
              alerts(keys=("a1",)).message().message_id}
    assert m.message_id not in others and len(others) == 3
    assert Notice.of(pending(alerts())) == alerts()


def test_what_the_log_holds_is_left_out_and_the_rest_is_logged():
    notice = alerts()
    assert notice.without(set()) == notice
    rest = notice.without({"a1@x:firing"})
    assert rest is not None and rest.notice_keys == ["a2@x:firing"]
    assert [i["alert_key"] for i in rest.body["items"]] == ["a2"]
    assert notice.without({"a1@x:firing", "a2@x:firing", "other"}) is None
    [entry] = rest.log_entries()
    assert (entry.receiver_id, entry.channel, entry.agency_code, entry.alert_key, entry.state, entry.notice_key) == (
        "ptp-desk", "smtp", "PTP", "a2", "firing", "a2@x:firing")


def test_a_digest_is_sent_whole_or_not_at_all():
    key = "digest:weekly:2026-W48:PTP"
    digest = Notice("smtp", {"type": "digest", "receiver": "ptp-head", "role": "head", "agency": "PTP",
                             "notice_key": key, "notice_keys": [key], "digest": {"kind": "weekly"}})
    assert digest.without({"something else"}) == digest
    assert digest.without({key}) is None
    [entry] = digest.log_entries()
    assert (entry.alert_key, entry.state, entry.kind, entry.severity, entry.notice_key) == (
        key, "digest", "weekly", "info", key)
