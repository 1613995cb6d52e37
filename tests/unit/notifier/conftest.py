"""Builders for the notifier's unit tests: a small directory (``directory.yaml``), alerts."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest

from services.notifier.config import load_directory
from services.notifier.domain.model import AlertRecord, Directory, EscalationPolicy, Timing
from shared.calendar import WorkingCalendar, load_calendar

VN = dt.timezone(dt.timedelta(hours=7))
DIRECTORY = Path(__file__).with_name("directory.yaml")

# Wednesday 25/11/2026 09:00 in Tuy Phong: a working day, inside working hours.
T0 = dt.datetime(2026, 11, 25, 9, 0, tzinfo=VN)


@pytest.fixture(scope="session")
def directory() -> Directory:
    return load_directory(DIRECTORY)


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
