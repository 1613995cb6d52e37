"""scoring's backlog settings: the names and defaults of deadline_monitor's, under scoring's own env prefix, and
scoring's own dossier state consumer as the part of the backlog it reads itself."""

from __future__ import annotations

import datetime as dt

import pytest

from services.deadline_monitor.settings import MonitorSettings
from services.scoring import handlers
from services.scoring.settings import ScoringSettings

NAMES = ("catch_up_threshold", "backlog_lag", "backlog_idle_seconds", "upstream_consumer")


def test_the_backlog_settings_are_the_monitors_by_name_and_default() -> None:
    scoring, monitor = ScoringSettings(), MonitorSettings()
    assert {n: getattr(scoring, n) for n in NAMES} == {n: getattr(monitor, n) for n in NAMES} == {
        "catch_up_threshold": 1000, "backlog_lag": dt.timedelta(hours=3), "backlog_idle_seconds": 2.0,
        "upstream_consumer": "TTHC_DOSSIER:dossier_tracker",
    }


def test_the_backlog_settings_are_read_under_scorings_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARWATCH_SCORING_BACKLOG_LAG", "PT30M")
    monkeypatch.setenv("PARWATCH_SCORING_BACKLOG_IDLE_SECONDS", "15")
    monkeypatch.setenv("PARWATCH_SCORING_CATCH_UP_THRESHOLD", "50")
    monkeypatch.setenv("PARWATCH_SCORING_UPSTREAM_CONSUMER", "")
    monkeypatch.setenv("PARWATCH_MONITOR_BACKLOG_LAG", "PT1H")
    settings = ScoringSettings()
    assert [getattr(settings, n) for n in NAMES] == [50, dt.timedelta(minutes=30), 15.0, ""]


def test_an_upstream_consumer_is_a_stream_and_a_durable() -> None:
    with pytest.raises(ValueError, match="upstream_consumer"):
        ScoringSettings(upstream_consumer="dossier_tracker")


def test_scorings_own_part_is_its_dossier_state_consumer() -> None:
    assert handlers.snapshot_consumer("scoring") == ("PARWATCH_DOSSIER_STATE", "scoring_state")
