"""Strict parsing of the public contract's CloudEvents."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from shared.events import (
    ALERT_RESOLVED_TYPE,
    DOSSIER_TYPE,
    MAX_MESSAGE_BYTES,
    PLAN_TYPE,
    RATING_TYPE,
    Alert,
    DossierEvent,
    EventRejected,
    encode,
    new_event,
    parse_event,
)

SECRET = "Nguyen Van A 0912345678"

DOSSIER: dict[str, Any] = {
    "specversion": "1.0",
    "id": "evt-1",
    "source": "motcua.binhthuan",
    "type": DOSSIER_TYPE,
    "time": "2026-11-26T08:00:00+07:00",
    "subject": "000.00.20.H12-261126-0001",
    "data": {
        "dossier_code": "000.00.20.H12-261126-0001",
        "sequence": 1,
        "status": 2,
        "occurred_at": "2026-11-26T08:00:00+07:00",
        "received_at": "2026-11-26T08:00:00+07:00",
        "agency_code": "PTP",
        "procedure_code": "1.001234",
        "field_code": "HOTICH",
        "statutory_duration": {"value": 3, "unit": "working_days"},
        "channel": 2,
        "online_payment": True,
        "digitized": False,
        "synced_national": True,
    },
}


def mutated(change) -> bytes:  # type: ignore[no-untyped-def]
    event = copy.deepcopy(DOSSIER)
    change(event)
    return json.dumps(event).encode()


def reason(raw: bytes) -> str:
    """The rejection reason, the same whether the subject names the type it takes (one-pass path) or not."""
    with pytest.raises(EventRejected) as info:
        parse_event(raw)
    with pytest.raises(EventRejected) as on_subject:
        parse_event(raw, accept={DOSSIER_TYPE})
    assert on_subject.value.reason == info.value.reason
    return info.value.reason


def test_valid_dossier_event_parses() -> None:
    event = parse_event(json.dumps(DOSSIER))
    assert parse_event(json.dumps(DOSSIER), accept={DOSSIER_TYPE}) == event
    assert isinstance(event, DossierEvent)
    assert event.data.statutory_duration is not None
    assert event.data.statutory_duration.unit == "working_days"
    assert event.data.occurred_at.utcoffset() is not None


@pytest.mark.parametrize(
    ("change", "field", "text"),
    [
        (lambda e: e["data"].update(applicant_name=SECRET), "data.applicant_name", "Extra inputs"),
        (lambda e: e.update(extension=SECRET), "extension", "Extra inputs"),
        (lambda e: e["data"].update(occurred_at="2026-11-26T08:00:00"), "data.occurred_at", "timezone"),
        (lambda e: e["data"].update(status="2"), "data.status", "integer"),
        (lambda e: e["data"].update(status=11), "data.status", "less than or equal to 10"),
        (lambda e: e["data"].update(channel=True), "data.channel", "integer"),
        (lambda e: e["data"].update(online_payment="yes"), "data.online_payment", "boolean"),
        (lambda e: e["data"].update(agency_code="A" * 65), "data.agency_code", "at most 64"),
        (lambda e: e["data"].update(dossier_code=SECRET), "data.dossier_code", "pattern"),
        (lambda e: e["data"].pop("received_at"), "data", "received_at is required"),
        (lambda e: e["data"].update(sequence=0), "data.sequence", "greater than or equal to 1"),
        (lambda e: e["data"]["statutory_duration"].update(unit="weeks"), "data.statutory_duration.unit", "working_days"),
        (lambda e: e["data"]["statutory_duration"].update(value=-1), "data.statutory_duration.value", "greater than 0"),
        (lambda e: e.update(subject="other"), "event", "subject must equal data.dossier_code"),
        (lambda e: e.update(specversion="0.3"), "specversion", "1.0"),
        (lambda e: e["data"].update(occurred_at=1764118800), "data.occurred_at", "datetime"),
    ],
)
def test_schema_violations_name_the_field_and_never_echo_the_value(change, field: str, text: str) -> None:  # type: ignore[no-untyped-def]
    message = reason(mutated(change))
    assert field in message
    assert text in message
    assert SECRET not in message
    assert "Nguyen" not in message


def test_nan_is_rejected() -> None:
    raw = mutated(lambda e: None).replace(b'"value": 3', b'"value": NaN')
    assert "NaN" in reason(raw)


def test_bad_json_unknown_type_and_size() -> None:
    assert "not valid JSON" in reason(b"{oops")
    assert "JSON object" in reason(b"[1,2]")
    assert "unknown event type" in reason(mutated(lambda e: e.update(type="vn.other")))
    assert "type: field required" in reason(mutated(lambda e: e.pop("type")))
    big = mutated(lambda e: e.update(id="x" * (MAX_MESSAGE_BYTES + 1)))
    assert "limit" in reason(big)


def test_type_not_accepted_on_a_subject() -> None:
    with pytest.raises(EventRejected, match="not accepted"):
        parse_event(json.dumps(DOSSIER), accept={RATING_TYPE})


def test_rating_and_plan_events() -> None:
    rating = {
        "specversion": "1.0", "id": "r1", "source": "kiosk", "type": RATING_TYPE,
        "data": {"dossier_code": "H1", "agency_code": "PTP", "rated_at": "2026-11-26T09:00:00Z",
                 "overall": "very_satisfied", "criteria": {"c1": 2, "c9": 1}},
    }
    assert parse_event(json.dumps(rating)).data.criteria == {"c1": 2, "c9": 1}
    rating["data"]["criteria"] = {"c10": 2}
    with pytest.raises(EventRejected, match="criteria"):
        parse_event(json.dumps(rating))
    plan = {
        "specversion": "1.0", "id": "p1", "source": "pnv", "type": PLAN_TYPE,
        "data": {"plan_id": "KH-146", "task_id": "III.6.2", "agency_code": "PNV", "state": "done",
                 "reported_at": "2026-11-26T09:00:00+07:00", "period": "2026-11", "note": "x" * 2000},
    }
    assert parse_event(json.dumps(plan)).data.period == "2026-11"
    plan["data"]["period"] = "2026-13"
    with pytest.raises(EventRejected, match="data.period"):
        parse_event(json.dumps(plan))
    plan["data"]["period"] = "2026-W27"
    plan["data"]["note"] = "x" * 2001
    with pytest.raises(EventRejected, match="data.note"):
        parse_event(json.dumps(plan))


def test_own_events_round_trip() -> None:
    alert = Alert(
        alert_key="dossier_overdue:H1", kind="dossier_overdue", severity="critical", agency_code="PTP", ref="H1",
        summary="Hồ sơ H1 đã quá hạn", starts_at=parse_event(json.dumps(DOSSIER)).data.occurred_at,
    )
    event = new_event(type=ALERT_RESOLVED_TYPE, source="parwatch/test", data=alert.model_copy(
        update={"ends_at": alert.starts_at}))
    again = parse_event(encode(event))
    assert again.data == event.data
    # parwatch cannot even build an invalid event of its own.
    with pytest.raises(ValueError, match="ends_at"):
        new_event(type=ALERT_RESOLVED_TYPE, source="parwatch/test", data=alert)
