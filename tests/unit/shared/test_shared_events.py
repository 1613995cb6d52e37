"""Strict parsing of the public contract's CloudEvents."""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.events import (
    ALERT_KINDS,
    ALERT_RESOLVED_TYPE,
    DOSSIER_TYPE,
    EARLIEST,
    LATEST,
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
        (lambda e: e["data"].update(applicant_name=SECRET), "unexpected field in data", ""),
        (lambda e: e.update(extension=SECRET), "unexpected field in event", ""),
        (lambda e: e["data"].update(occurred_at="2026-11-26T08:00:00"), "data.occurred_at", "timezone"),
        (lambda e: e["data"].update(status="2"), "data.status", "integer"),
        (lambda e: e["data"].update(status=11), "data.status", "less than or equal to 10"),
        (lambda e: e["data"].update(channel=True), "data.channel", "integer"),
        (lambda e: e["data"].update(online_payment="yes"), "data.online_payment", "boolean"),
        (lambda e: e["data"].update(agency_code="A" * 65), "data.agency_code", "at most 64"),
        (lambda e: e["data"].update(dossier_code=SECRET), "data.dossier_code", "letters, digits"),
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
    assert "applicant_name" not in message and "extension" not in message


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
    for period in ("2026-13", "٢٠٢٦-11", "２０２６", "2026-W٢٧"):  # another script's digits are not a period
        plan["data"]["period"] = period
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


# -- no echo: a reason names fields of the contract only ---------------------------------------------------------

CANARY = "CANARY7f3"
HOSTILE_KEYS = [
    f"{CANARY} Trần Thị B, CCCD 079301234567 https://evil.example/fix",
    f"{CANARY}\n2026-01-01 ERROR notifier forged line",
    f"{CANARY}\x1b[31m\u202eevil",
    f"{CANARY}\x00",
]


@pytest.mark.parametrize("key", HOSTILE_KEYS)
@pytest.mark.parametrize(
    ("put", "expected"),
    [
        (lambda e, k: e["data"].update({k: 1}), "unexpected field in data"),
        (lambda e, k: e.update({k: {"nested": 1}}), "unexpected field in event"),
        (lambda e, k: e["data"]["statutory_duration"].update({k: "x"}), "unexpected field in data.statutory_duration"),
    ],
)
def test_an_invented_key_is_never_named(put, expected: str, key: str) -> None:  # type: ignore[no-untyped-def]
    message = reason(mutated(lambda e: put(e, key)))
    assert message == expected


def test_many_invented_keys_are_said_once() -> None:
    message = reason(mutated(lambda e: e["data"].update({f"{CANARY}{i}": i for i in range(50)})))
    assert message == "unexpected field in data"


def test_a_key_of_a_map_is_named_by_the_map_only() -> None:
    rating = {
        "specversion": "1.0", "id": "r1", "source": "kiosk", "type": RATING_TYPE,
        "data": {"dossier_code": "H1", "agency_code": "PTP", "rated_at": "2026-11-26T09:00:00Z",
                 "overall": "satisfied", "criteria": {f"{CANARY}\u202e": 2, "c2": 7}},
    }
    with pytest.raises(EventRejected) as info:
        parse_event(json.dumps(rating))
    assert CANARY not in info.value.reason
    assert info.value.reason.startswith("data.criteria key: ")
    assert "data.criteria: Input should be 0, 1 or 2" in info.value.reason
    alert = {
        "specversion": "1.0", "id": "a1", "source": "x", "type": "vn.tthc.alert.firing",
        "data": {"alert_key": "k", "kind": "deadletter", "severity": "info", "agency_code": "PTP", "ref": "r",
                 "summary": "s", "starts_at": "2026-11-26T09:00:00Z",
                 "labels": {CANARY * 10: "v", "ok": f"{CANARY}\x1b[2J"}},
    }
    with pytest.raises(EventRejected) as info:
        parse_event(json.dumps(alert))
    assert CANARY not in info.value.reason
    assert "data.labels key: String should have at most 64 characters" in info.value.reason
    assert "data.labels: must not contain control" in info.value.reason


@pytest.mark.parametrize("etype", [f"vn.{CANARY}", f"{CANARY}\n ERROR forged", "x" * 5000])
def test_an_unknown_type_is_not_quoted(etype: str) -> None:
    assert reason(mutated(lambda e: e.update(type=etype))) == "type: unknown event type"


def test_a_type_not_taken_on_a_subject_is_not_quoted_and_the_taken_one_is_said() -> None:
    with pytest.raises(EventRejected) as info:
        parse_event(json.dumps(DOSSIER), accept={RATING_TYPE})
    assert info.value.reason == f"type: not accepted on this subject, which takes {RATING_TYPE}"


# -- tight schema at the door -------------------------------------------------------------------------------------


def test_the_directory_the_seed_plan_and_the_demo_codes_are_codes() -> None:
    import re

    import yaml

    from parwatch import demo
    from shared.events import CODE_PATTERN

    root = Path(__file__).resolve().parents[3]
    agencies = yaml.safe_load((root / "shared/data/agencies.yaml").read_text(encoding="utf-8"))
    plan = yaml.safe_load((root / "services/deadline_monitor/plans/plan-146-2023.yaml").read_text(encoding="utf-8"))
    codes = [agencies["district"]["code"], *(a["code"] for a in agencies["agencies"]), plan["plan_id"],
             *(t["id"] for t in plan["tasks"])]
    procedures = [*demo.COMMUNE_PROCEDURES, *(p for ps in demo.DEPARTMENT_PROCEDURES.values() for p in ps)]
    codes += [c for p in procedures for c in (p.code, p.field_code)]
    assert len(codes) > 60
    assert [c for c in codes if not re.fullmatch(CODE_PATTERN, c)] == []


@pytest.mark.parametrize("field", ["agency_code", "procedure_code", "field_code"])
@pytest.mark.parametrize("code", ["", "A\x00B", "A\x1b[31m", "A\nB", "A\u202eB", "-A", ".A", "A B", "Á", "A" * 65])
def test_codes_are_printable_identifiers(field: str, code: str) -> None:
    message = reason(mutated(lambda e: e["data"].update({field: code})))
    assert message.startswith(f"data.{field}: ")
    assert "A\x00" not in message and "\x1b" not in message and "\u202e" not in message


@pytest.mark.parametrize("code", ["A", "PTP", "XA_VINH_TAN", "1.004227", "III.2.2.3-review", "KH/146", "A" * 64])
def test_codes_that_pass(code: str) -> None:
    event = parse_event(mutated(lambda e: e["data"].update(agency_code=code, procedure_code=code, field_code=code)))
    assert event.data.agency_code == code


def test_plan_and_alert_codes_and_alert_kinds_are_closed() -> None:
    plan = {
        "specversion": "1.0", "id": "p1", "source": "pnv", "type": PLAN_TYPE,
        "data": {"plan_id": "KH\x00146", "task_id": "III\n6", "agency_code": "PNV", "state": "done",
                 "reported_at": "2026-11-26T09:00:00+07:00"},
    }
    with pytest.raises(EventRejected) as info:
        parse_event(json.dumps(plan))
    assert info.value.reason.startswith("data.plan_id: must be a code") and "data.task_id: must be a code" in (
        info.value.reason)
    with pytest.raises(ValueError, match="kind"):
        Alert(alert_key="k", kind="anything_else", severity="info", agency_code="PTP", ref="r", summary="s",
              starts_at=parse_event(json.dumps(DOSSIER)).data.occurred_at)
    assert "unknown_agency" in ALERT_KINDS


@pytest.mark.parametrize("field", ["occurred_at", "received_at", "due_at"])
@pytest.mark.parametrize(
    "when",
    ["9999-12-31T23:00:00-05:00", "0001-01-01T00:00:00+05:00", "1999-12-31T23:59:59Z", "2000-01-01T06:59:59+07:00",
     "2100-01-01T00:00:00Z", "2099-12-31T23:59:59-00:01"],
)
def test_times_lie_between_2000_and_2100(field: str, when: str) -> None:
    message = reason(mutated(lambda e: e["data"].update({field: when})))
    assert message == f"data.{field}: must lie between 2000-01-01 and 2099-12-31 (UTC)"


@pytest.mark.parametrize("when", ["2000-01-01T00:00:00Z", "2000-01-01T07:00:00+07:00", "2099-12-31T23:59:59Z",
                                  "2100-01-01T06:59:59+07:00"])
def test_times_at_the_edges_pass_and_move_to_utc(when: str) -> None:
    event = parse_event(mutated(lambda e: e["data"].update(occurred_at=when) or e.update(time=when)))
    assert event.data.occurred_at.astimezone(dt.timezone.utc).year in (2000, 2099)


def test_envelope_time_is_bounded_and_needs_an_offset() -> None:
    assert reason(mutated(lambda e: e.update(time="9999-12-31T23:00:00-05:00"))).startswith("time: must lie")
    assert reason(mutated(lambda e: e.update(time="2026-11-26T08:00:00"))) == "time: Input should have timezone info"


@pytest.mark.parametrize("field", ["id", "source", "subject"])
@pytest.mark.parametrize("bad", ["a\x00b", "a\x1bb", "a\nb", "a\rb", "a\x7fb", "a\x85b", "a\u202eb", "a\u2028b",
                                 "a\u200bb"])
def test_envelope_text_has_no_control_characters(field: str, bad: str) -> None:
    message = reason(mutated(lambda e: e.update({field: bad})))
    assert message.startswith(f"{field}: must not contain control")


def test_a_note_may_break_lines_but_holds_no_other_control_character() -> None:
    plan = {
        "specversion": "1.0", "id": "p1", "source": "pnv", "type": PLAN_TYPE,
        "data": {"plan_id": "KH-146", "task_id": "III.6.2", "agency_code": "PNV", "state": "done",
                 "reported_at": "2026-11-26T09:00:00+07:00", "note": "Đã xong.\r\n\tChi tiết: xem báo cáo."},
    }
    assert "\n" in parse_event(json.dumps(plan)).data.note
    for bad in ("\x00", "\x1b[2J", "\u202e", "\u2028"):
        plan["data"]["note"] = f"ok {bad}"
        with pytest.raises(EventRejected, match="^data.note: must not contain control or format"):
            parse_event(json.dumps(plan))


_MARKED = st.builds(lambda a, b: a + CANARY + b, st.text(max_size=30), st.text(max_size=30))
_VALUES = st.one_of(_MARKED, st.text(max_size=70), st.integers(), st.floats(allow_nan=False),
                    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()))


@settings(max_examples=300, deadline=None)
@given(data=st.dictionaries(st.sampled_from(["agency_code", "procedure_code", "field_code", "occurred_at",
                                             "received_at", "due_at", "sequence"]), _VALUES, max_size=4),
       envelope=st.dictionaries(st.sampled_from(["id", "source", "subject", "time"]), _VALUES, max_size=2),
       invented=st.dictionaries(_MARKED, _VALUES, max_size=2))
def test_whatever_the_door_lets_in_every_store_can_keep(
    data: dict[str, Any], envelope: dict[str, Any], invented: dict[str, Any]
) -> None:
    """Property: an accepted event has no control, format or separator character in any string, and only times
    that move to UTC (no OverflowError) within 2000-2100; a rejected one says why without any value or key."""
    from shared.text import is_unsafe

    raw = mutated(lambda e: e["data"].update(data | invented) or e.update(envelope))
    try:
        event = parse_event(raw, accept={DOSSIER_TYPE})
    except EventRejected as exc:
        assert CANARY not in exc.reason
        return
    assert not invented
    for value in [*event.model_dump().values(), *event.data.model_dump().values()]:
        if isinstance(value, str):
            assert not any(is_unsafe(c) for c in value), repr(value)
        if isinstance(value, dt.datetime):
            assert EARLIEST <= value.astimezone(dt.timezone.utc) < LATEST
