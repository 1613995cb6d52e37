"""kpi_below_target rules: firing, hysteresis against flapping, period closing, Vietnamese summaries."""

from __future__ import annotations

import datetime as dt

import pytest

from services.scoring.alerts import (
    FIRING,
    RESOLVED,
    AlertRecord,
    Hysteresis,
    Observation,
    alert_key,
    evaluate,
    percent_vi,
    summary_firing,
    value_vi,
)
from services.scoring.domain import Period

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 11, 20, 3, 0, tzinfo=UTC)
NOV = Period.parse("2026-11")
NAMES = {"PTP": "Phòng Tư pháp", "TUY_PHONG": "toàn huyện Tuy Phong"}
POLICY = Hysteresis(margin=0.005, fire_after=2, resolve_after=3)


def run(values, *, target: float = 0.98, policy: Hysteresis = POLICY, kpi: str = "on_time"):
    """Evaluate a sequence of values; returns the decided event types per round and the final record."""
    records: dict[str, AlertRecord] = {}
    decided = []
    for i, value in enumerate(values):
        now = T0 + dt.timedelta(minutes=i)
        obs = [Observation(agency_code="PTP", kpi=kpi, period=NOV, value=value, target=target)]
        result = evaluate(records, obs, policy=policy, now=now, names=NAMES, current={NOV.key})
        for r in result.upserts:
            records[r.alert_key] = r
        decided += [(i, t.type) for t in result.transitions]
    return decided, records.get(alert_key("PTP", kpi, NOV.key))


def test_fires_after_consecutive_evaluations_below_target() -> None:
    decided, record = run([0.97, 0.97])
    assert decided == [(1, FIRING)]
    assert record.firing and record.started_at == T0 + dt.timedelta(minutes=1)


def test_a_single_dip_does_not_fire() -> None:
    decided, record = run([0.97, 0.99, 0.97, 0.99])
    assert decided == []
    assert not record.firing


def test_exactly_at_target_is_not_below() -> None:
    decided, _ = run([0.98, 0.98, 0.98])
    assert decided == []


def test_resolves_only_at_target_plus_margin_for_enough_evaluations() -> None:
    # fires, then hovers between the target and target + margin: stays firing
    decided, record = run([0.97, 0.97, 0.98, 0.982, 0.98, 0.984, 0.98])
    assert decided == [(1, FIRING)]
    assert record.firing
    decided, record = run([0.97, 0.97, 0.985, 0.99, 0.97, 0.99, 0.99, 0.99])
    assert decided == [(1, FIRING), (7, RESOLVED)]  # the dip at round 4 restarted the recovery streak
    assert not record.firing and record.ends_at == T0 + dt.timedelta(minutes=7)


def test_flapping_around_the_threshold_sends_one_alert() -> None:
    values = [0.97, 0.97] + [0.979, 0.981] * 20
    decided, record = run(values)
    assert decided == [(1, FIRING)]
    assert record.firing


def test_target_of_one_resolves_at_one() -> None:
    decided, _ = run([0.9, 0.9, 1.0, 1.0, 1.0], target=1.0, kpi="national_sync")
    assert decided == [(1, FIRING), (4, RESOLVED)]


def test_no_value_changes_nothing() -> None:
    decided, record = run([0.97, None, 0.97])
    assert decided == [(2, FIRING)]  # None neither breaks nor extends the streak
    decided, record = run([0.97, 0.97, None, None, None, None])
    assert decided == [(1, FIRING)] and record.firing


def test_event_ids_are_stable_per_transition() -> None:
    records: dict[str, AlertRecord] = {}
    ids = []
    for i, value in enumerate([0.5, 0.5, 1, 1, 1, 0.5, 0.5]):
        obs = [Observation(agency_code="PTP", kpi="on_time", period=NOV, value=value, target=0.98)]
        result = evaluate(records, obs, policy=POLICY, now=T0 + dt.timedelta(minutes=i), names=NAMES,
                          current={NOV.key})
        records |= {r.alert_key: r for r in result.upserts}
        ids += [t.event_id for t in result.transitions]
    key = "kpi_below_target:PTP:on_time:2026-11"
    assert ids == [f"{key}:1:firing", f"{key}:2:resolved", f"{key}:3:firing"]


def test_a_transition_carries_the_record_it_left() -> None:
    obs = [Observation(agency_code="PTP", kpi="on_time", period=NOV, value=0.5, target=0.98)]
    policy = Hysteresis(fire_after=1, resolve_after=1)
    result = evaluate({}, obs, policy=policy, now=T0, names=NAMES, current={NOV.key})
    (fired,) = result.upserts
    (transition,) = result.transitions
    assert transition.record == fired and fired.firing and fired.started_at == T0
    assert (transition.type, transition.at) == (FIRING, T0)
    # Evaluated again while firing and still below: nothing to send, only the record's last evaluation moves.
    again = evaluate({fired.alert_key: fired}, obs, policy=policy, now=T0 + dt.timedelta(minutes=1), names=NAMES,
                     current={NOV.key})
    assert again.transitions == [] and again.deletes == []
    assert [r.last_evaluated_at for r in again.upserts] == [T0 + dt.timedelta(minutes=1)]


def test_min_gap_keeps_replicas_from_shortening_streaks() -> None:
    obs = [Observation(agency_code="PTP", kpi="on_time", period=NOV, value=0.5, target=0.98)]
    first = evaluate({}, obs, policy=POLICY, now=T0, names=NAMES, current={NOV.key},
                     min_gap=dt.timedelta(seconds=30)).upserts[0]
    assert first.below == 1
    soon = evaluate({first.alert_key: first}, obs, policy=POLICY, now=T0 + dt.timedelta(seconds=5), names=NAMES,
                    current={NOV.key}, min_gap=dt.timedelta(seconds=30))
    assert soon.upserts == [] and soon.transitions == []
    later = evaluate({first.alert_key: first}, obs, policy=POLICY, now=T0 + dt.timedelta(seconds=31), names=NAMES,
                     current={NOV.key}, min_gap=dt.timedelta(seconds=30))
    assert later.upserts[0].firing and [t.type for t in later.transitions] == [FIRING]


def test_period_end_resolves_a_firing_alert_and_forgets_a_quiet_one() -> None:
    _, firing = run([0.9, 0.9])
    quiet = AlertRecord(alert_key=alert_key("PTP", "national_sync", NOV.key), agency_code="PTP",
                        kpi="national_sync", period=NOV.key, value=1.0, target=1.0)
    records = {firing.alert_key: firing, quiet.alert_key: quiet}
    dec = Period.parse("2026-12")
    result = evaluate(records, [], policy=POLICY, now=T0 + dt.timedelta(days=11), names=NAMES, current={dec.key})
    assert result.deletes == [quiet.alert_key]
    (closed,) = result.upserts
    (transition,) = result.transitions
    assert transition.type == RESOLVED and transition.record == closed and not closed.firing
    assert transition.event_id == f"{firing.alert_key}:2:resolved"
    assert transition.summary == (
        "Tháng 11/2026 đã kết thúc; tỷ lệ hồ sơ đúng hạn của Phòng Tư pháp chốt ở 90% (mục tiêu 98%)"
    )


def test_running_period_without_observations_keeps_its_alert() -> None:
    _, firing = run([0.9, 0.9])
    records = {firing.alert_key: firing}
    result = evaluate(records, [], policy=POLICY, now=T0 + dt.timedelta(hours=1), names=NAMES, current={NOV.key})
    assert result.upserts == [] and result.deletes == [] and result.transitions == []


def test_firing_summary_is_vietnamese_with_decimal_comma() -> None:
    text = summary_firing(kpi="on_time", agency_name="Phòng Tư pháp", period=NOV, value=0.962, target=0.98)
    assert text == "Tỷ lệ hồ sơ đúng hạn của Phòng Tư pháp tháng 11/2026 là 96,2%, dưới mục tiêu 98%"


@pytest.mark.parametrize(
    ("value", "text"), [(0.98, "98%"), (0.962, "96,2%"), (1.0, "100%"), (0.0, "0%"), (2 / 3, "66,7%")]
)
def test_percent_vi(value: float, text: str) -> None:
    assert percent_vi(value) == text


def test_value_never_reads_as_the_target_it_is_below() -> None:
    assert value_vi(0.9799, 0.98) == "97,99%"
    assert value_vi(0.97996, 0.98) == "97,996%"
