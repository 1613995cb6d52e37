"""Builders for the notifier's unit tests: a small directory, alerts, a fake clock."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

from services.notifier.config import parse_directory
from services.notifier.domain.model import AlertRecord, Directory, EscalationPolicy, Timing
from shared.calendar import WorkingCalendar, load_calendar
from shared.consuming import Delivery
from shared.events import ALERT_FIRING_TYPE, ALERT_RESOLVED_TYPE, Alert, new_event

VN = dt.timezone(dt.timedelta(hours=7))

DIRECTORY_YAML = """\
version: 1
agencies:
  - code: TUY_PHONG
    officials:
      - {id: lead, role: district_leadership, name: Lãnh đạo UBND huyện, email: lead@example.invalid}
  - code: PTP
    officials:
      - {id: ptp-desk, role: officer, name: Một cửa Phòng Tư pháp, email: ptp.desk@example.invalid}
      - {id: ptp-head, role: head, name: Trưởng phòng Tư pháp, email: ptp.head@example.invalid}
  - code: PNV
    officials:
      - {id: pnv-desk, role: officer, name: Một cửa Phòng Nội vụ, email: pnv.desk@example.invalid}
      - {id: pnv-head, role: head, name: Trưởng phòng Nội vụ, email: pnv.head@example.invalid}
      - {id: tech, role: officer, direct_only: true, name: Bộ phận kỹ thuật, webhook: "http://127.0.0.1:9/hook"}
  - code: XA_CHI_CONG
    officials:
      - {id: chicong-desk, role: officer, name: Bộ phận một cửa xã Chí Công, email: chicong@example.invalid}
routes:
  - name: deadletters
    match: {kind: [deadletter]}
    receivers: [tech]
    escalate: false
  - name: kpi
    match: {kind: [kpi_below_target]}
    receivers: [head]
    group_wait: 5m
  - name: default
    receivers: [officer]
"""

# Wednesday 25/11/2026 09:00 in Tuy Phong: a working day, inside working hours.
T0 = dt.datetime(2026, 11, 25, 9, 0, tzinfo=VN)


class FakeClock:
    def __init__(self, now: dt.datetime = T0) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **kw: float) -> dt.datetime:
        self.now += dt.timedelta(**kw)
        return self.now

    def set(self, moment: dt.datetime) -> dt.datetime:
        self.now = moment
        return moment


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def directory() -> Directory:
    return parse_directory(DIRECTORY_YAML, source="test-directory.yaml")


@pytest.fixture(scope="session")
def calendar() -> WorkingCalendar:
    return load_calendar()


@pytest.fixture
def timing() -> Timing:
    return Timing(group_wait=dt.timedelta(seconds=30), group_interval=dt.timedelta(minutes=5),
                  repeat_interval=dt.timedelta(hours=24))


@pytest.fixture
def escalation() -> EscalationPolicy:
    return EscalationPolicy(head_after_hours=8, leadership_after_hours=24, min_severity="warning")


@pytest.fixture(scope="session")
def make_alert() -> Callable[..., AlertRecord]:
    def make(key: str = "dossier_due_soon:H31.12-001", *, kind: str = "dossier_due_soon", severity: str = "warning",
             agency: str = "PTP", ref: str = "H31.12-001", summary: str = "Hồ sơ sắp đến hạn trả kết quả",
             starts_at: dt.datetime = T0 - dt.timedelta(hours=1), state: str = "firing",
             received_at: dt.datetime = T0, ends_at: dt.datetime | None = None,
             resolved_at: dt.datetime | None = None, labels: dict[str, str] | None = None) -> AlertRecord:
        return AlertRecord(alert_key=key, kind=kind, severity=severity, agency_code=agency, ref=ref, summary=summary,
                           starts_at=starts_at, state=state,  # type: ignore[arg-type]
                           received_at=received_at, ends_at=ends_at, resolved_at=resolved_at,
                           labels=labels if labels is not None else {"due_day": "2026-11-27"})

    return make


@pytest.fixture
def make_delivery() -> Callable[..., Delivery]:
    """A parsed alert event as the consumer hands it to ``Notifier.record``."""

    def make(key: str = "dossier_due_soon:H31.12-001", *, resolved: bool = False, event_id: str | None = None,
             source: str = "parwatch/deadline_monitor", seq: int = 1, **fields: Any) -> Delivery:
        data: dict[str, Any] = {
            "alert_key": key, "kind": "dossier_due_soon", "severity": "warning", "agency_code": "PTP",
            "ref": "H31.12-001", "summary": "Hồ sơ sắp đến hạn trả kết quả",
            "starts_at": T0 - dt.timedelta(hours=1), "labels": {"due_day": "2026-11-27"},
        }
        data.update(fields)
        if resolved and "ends_at" not in data:
            data["ends_at"] = T0
        event = new_event(type=ALERT_RESOLVED_TYPE if resolved else ALERT_FIRING_TYPE, source=source,
                          data=Alert(**data), id=event_id)
        return Delivery(event=event, stream="TTHC_ALERTS", stream_seq=seq, subject="tthc.alerts", num_delivered=1)

    return make
