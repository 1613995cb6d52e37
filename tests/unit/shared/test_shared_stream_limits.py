"""What ensure_streams does to an existing stream (reconcile, pure) and the settings of limits and retention."""

from __future__ import annotations

import dataclasses
import json

import pytest
from nats.js.api import DiscardPolicy, StreamConfig
from pydantic import ValidationError

from shared.settings import CommonSettings
from shared.streams import DAY, LIMITS_RECORD, STREAM_BY_NAME, STREAMS, GiB, MiB, limits_of, reconcile, stream_specs

DOSSIER = STREAM_BY_NAME["TTHC_DOSSIER"]


def older_parwatchs(spec=DOSSIER) -> StreamConfig:  # type: ignore[no-untyped-def]
    """A stream as parwatch created it before budgets: no byte limit, oldest dropped, no record of its limits."""
    config = spec.config(replicas=1)
    return dataclasses.replace(config, max_bytes=-1, discard=DiscardPolicy.OLD, metadata=None)


def test_every_stream_has_a_byte_budget_that_holds_its_largest_message_and_the_sum_fits_a_small_server() -> None:
    assert all(0 < s.max_msg_size <= s.max_bytes for s in STREAMS)
    assert sum(s.max_bytes for s in STREAMS) < 7 * GiB  # docs/running.md: ~6.1 GiB, under the deploy's 20 GB store


def test_a_full_stream_refuses_new_messages_but_dead_letters_drop_their_oldest() -> None:
    assert {s.name for s in STREAMS if s.discard == DiscardPolicy.OLD} == {"TTHC_DEADLETTER"}
    assert DOSSIER.config().discard == DiscardPolicy.NEW


def test_an_older_parwatchs_stream_gets_parwatchs_limits_and_a_record_of_them() -> None:
    result = reconcile(older_parwatchs(), DOSSIER, replicas=1, stored_bytes=10 * MiB)
    assert result.config.max_bytes == 2 * GiB and result.config.discard == DiscardPolicy.NEW
    assert set(result.changed) == {"max_bytes", "discard", "metadata"}
    assert result.kept == {} and result.held == {}
    assert json.loads(result.config.metadata[LIMITS_RECORD]) == DOSSIER.limits(replicas=1)


def test_limits_an_operator_changed_are_kept_and_parwatchs_needs_are_added() -> None:
    ours = DOSSIER.config(replicas=1)
    edited = dataclasses.replace(
        ours,
        max_bytes=5 * GiB,
        max_age=float(730 * DAY),
        subjects=["tthc.dossier.events.legacy"],  # the operator's subject stays; parwatch's comes back
        duplicate_window=60.0,  # under parwatch's: raised again
        allow_atomic=None,
        metadata={**ours.metadata, "_nats.req.level": "0", "team": "ops"},  # type: ignore[dict-item]
    )
    result = reconcile(edited, dataclasses.replace(DOSSIER, allow_atomic=True), replicas=1, stored_bytes=0)
    assert result.kept == {"max_bytes": 5 * GiB, "max_age": 730 * DAY}
    assert result.config.max_bytes == 5 * GiB and result.config.max_age == 730 * DAY
    assert result.config.subjects == ["tthc.dossier.events.legacy", "tthc.dossier.events"]
    assert result.config.duplicate_window == DOSSIER.duplicate_window_s
    assert result.config.allow_atomic is True
    assert result.config.metadata["team"] == "ops" and "_nats.req.level" not in result.config.metadata
    # The record still holds parwatch's values: the operator's stay theirs at the next start too.
    again = reconcile(result.config, DOSSIER, replicas=1, stored_bytes=0)
    assert again.kept == {"max_bytes": 5 * GiB, "max_age": 730 * DAY}
    assert "max_bytes" not in again.changed and "max_age" not in again.changed


def test_a_longer_duplicate_window_and_more_replicas_set_by_an_operator_stay() -> None:
    ours = DOSSIER.config(replicas=1)
    edited = dataclasses.replace(ours, duplicate_window=float(DAY), num_replicas=3)
    result = reconcile(edited, DOSSIER, replicas=1, stored_bytes=0)
    assert result.config.duplicate_window == DAY and result.config.num_replicas == 3
    assert result.kept == {"num_replicas": 3} and result.changed == {}


def test_new_defaults_reach_a_stream_whose_limits_parwatch_set() -> None:
    ours = DOSSIER.config(replicas=1)
    bigger = dataclasses.replace(DOSSIER, max_bytes=3 * GiB)
    result = reconcile(ours, bigger, replicas=3, stored_bytes=0)
    assert result.config.max_bytes == 3 * GiB and result.config.num_replicas == 3 and result.kept == {}


def test_a_budget_smaller_than_what_the_stream_holds_waits_and_is_tried_again() -> None:
    result = reconcile(older_parwatchs(), DOSSIER, replicas=1, stored_bytes=3 * GiB)
    assert result.held == {"max_bytes": 2 * GiB} and result.config.max_bytes == -1
    assert "max_bytes" not in json.loads(result.config.metadata[LIMITS_RECORD])  # not parwatch's yet: next start
    later = reconcile(result.config, DOSSIER, replicas=1, stored_bytes=GiB)
    assert later.config.max_bytes == 2 * GiB and later.held == {}


def test_limits_of_reads_unset_values_as_no_limit() -> None:
    assert limits_of(StreamConfig(name="X")) == {
        "max_bytes": -1, "max_age": 0, "max_msgs": -1, "max_msg_size": -1, "num_replicas": 1, "discard": "old"
    }


def test_settings_size_the_streams_and_the_history_streams_retention() -> None:
    settings = CommonSettings(stream_max_bytes={"TTHC_DOSSIER": "4GiB"}, input_retention_days=500,
                              retention_dedup_days=500, retention_history_days=600)
    specs = {s.name: s for s in settings.stream_specs()}
    assert specs["TTHC_DOSSIER"].max_bytes == 4 * GiB
    assert specs["TTHC_RATING"].max_bytes == STREAM_BY_NAME["TTHC_RATING"].max_bytes
    assert specs["TTHC_DOSSIER"].max_age_days == 500 and specs["PARWATCH_ACCEPTED"].max_age_days == 500
    assert specs["TTHC_ALERTS"].max_age_days == 90
    retention = settings.retention()
    assert retention.dedup.days == 500 and retention.keys.days == 600


@pytest.mark.parametrize(
    "values",
    [
        {"stream_max_bytes": {"TTHC_NOPE": "1GiB"}},
        {"stream_max_bytes": {"TTHC_DOSSIER": "1KiB"}},  # not even one message of the largest size
        {"retention_dedup_days": 30},  # dedup keys would go while the input streams can deliver the events again
        {"input_retention_days": 500},  # the same, the other way round
        {"retention_history_days": 399},
    ],
)
def test_settings_that_would_lose_or_double_count_are_refused(values: dict) -> None:
    with pytest.raises(ValidationError):
        CommonSettings(**values)


def test_stream_specs_refuses_an_unknown_stream() -> None:
    with pytest.raises(ValueError, match="unknown stream"):
        stream_specs(max_bytes={"NOPE": 1}, history_days=400)
