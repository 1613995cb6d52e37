"""KPI targets come from the plan files alone: which target is in force, its comparison ("trên 98%" is ``gt``),
and the minimum of records a KPI needs before it can alert."""

from __future__ import annotations

import datetime as dt

from services.scoring.alerts import (
    FIRING,
    RESOLVED,
    AlertRecord,
    Hysteresis,
    KpiTargets,
    Observation,
    alert_key,
    evaluate,
)
from services.scoring.domain import Period
from shared.plans import SHIPPED_PLANS, PlanSources, PlanTargets, Target, load_plan_targets, plan_files

UTC = dt.UTC
D = dt.date
T0 = dt.datetime(2026, 11, 20, 3, 0, tzinfo=UTC)
NOV = Period.parse("2026-11")
NAMES = {"PTP": "Phòng Tư pháp"}


def target(tid: str, value: float, op: str = "ge", **kw: object) -> Target:
    return Target(id=tid, title="chỉ tiêu", unit="ratio", op=op, value=value, **kw)  # type: ignore[arg-type]


def plan(*targets: Target, valid: tuple[dt.date, dt.date] = (D(2026, 1, 1), D(2026, 12, 31))) -> PlanTargets:
    return PlanTargets(plan_id="p", valid_from=valid[0], valid_until=valid[1], targets=targets)


def run(values, *, op: str, target_value: float = 0.98):
    policy = Hysteresis(margin=0.005, fire_after=1, resolve_after=1)
    records: dict[str, AlertRecord] = {}
    decided = []
    for i, value in enumerate(values):
        obs = [Observation(agency_code="PTP", kpi="on_time", period=NOV, value=value, target=target_value, op=op)]
        result = evaluate(records, obs, policy=policy, now=T0 + dt.timedelta(minutes=i), names=NAMES,
                          current={NOV.key})
        records.update({r.alert_key: r for r in result.upserts})
        decided += [(i, t.type, t.summary) for t in result.transitions]
    return decided, records.get(alert_key("PTP", "on_time", NOV.key))


def test_gt_fires_at_exactly_the_target_and_says_above() -> None:
    decided, record = run([0.98], op="gt")
    assert [(i, kind) for i, kind, _ in decided] == [(0, FIRING)]
    assert decided[0][2] == "Tỷ lệ hồ sơ đúng hạn của Phòng Tư pháp tháng 11/2026 là 98%, chưa đạt mục tiêu trên 98%"
    assert record.firing


def test_ge_does_not_fire_at_exactly_the_target() -> None:
    decided, _ = run([0.98, 0.98], op="ge")
    assert decided == []


def test_gt_resolves_above_the_target_and_its_margin() -> None:
    decided, _ = run([0.5, 0.984, 0.99], op="gt")
    assert [(i, kind) for i, kind, _ in decided] == [(0, FIRING), (2, RESOLVED)]
    assert decided[1][2].endswith("đã đạt 99%, vượt mục tiêu trên 98%")


def test_a_full_target_resolves_at_exactly_one() -> None:
    decided, _ = run([0.5, 1.0], op="ge", target_value=1.0)
    assert [(i, kind) for i, kind, _ in decided] == [(0, FIRING), (1, RESOLVED)]


def test_only_mapped_ratio_targets_in_force_count() -> None:
    targets = KpiTargets(plans=(plan(target("on_time_ratio", 0.98, "gt"), target("online_procedures", 1.0),
                                     target("national_sync", 1.0, by=D(2026, 8, 30))),))
    on_time = targets.target("on_time", district=False, day=D(2026, 11, 20))
    assert on_time is not None and (on_time.value, on_time.op) == (0.98, "gt")
    # The plan's online target counts procedures, not dossiers filed online: no target for online_filing.
    assert targets.target("online_filing", district=False, day=D(2026, 11, 20)) is None
    assert targets.target("national_sync", district=False, day=D(2026, 8, 29)) is None
    assert targets.target("national_sync", district=False, day=D(2026, 8, 30)) is not None
    assert targets.target("on_time", district=False, day=D(2027, 1, 1)) is None  # outside the plan's validity


def test_a_district_target_is_the_roll_ups_alone_and_the_last_plan_wins() -> None:
    targets = KpiTargets(plans=(plan(target("on_time_ratio", 0.9)),
                                plan(target("task_completion", 0.95, per="district"), target("on_time_ratio", 0.95))))
    assert targets.target("plan_completion", district=False, day=D(2026, 6, 1)) is None
    assert targets.target("plan_completion", district=True, day=D(2026, 6, 1)) is not None
    found = targets.target("on_time", district=False, day=D(2026, 6, 1))
    assert found is not None and found.value == 0.95


def test_no_plan_no_target() -> None:
    assert KpiTargets().target("on_time", district=True, day=D(2026, 6, 1)) is None


def test_the_minimum_is_of_dossiers_for_dossier_kpis_and_of_occurrences_for_plan_completion() -> None:
    policy = Hysteresis(min_denominator=2, min_dossiers=20)
    assert [policy.minimum(k) for k in ("on_time", "online_filing", "national_sync", "plan_completion")] == [
        20, 20, 20, 2]


def test_the_shipped_plan_146_sets_the_targets_scoring_judges() -> None:
    files = plan_files(include_shipped=True, plans_dir=None)
    assert files and all(f.parent == SHIPPED_PLANS for f in files)
    assert PlanSources(include_shipped_plans=False).files() == []
    plan_146 = next(p for p in load_plan_targets(files) if p.valid_from.year == 2023)
    targets = KpiTargets(plans=(plan_146,))
    found = targets.target("on_time", district=False, day=D(2023, 9, 1))
    assert found is not None and (found.value, found.op) == (0.98, "gt")  # "trên 98%"
    sync = targets.target("national_sync", district=False, day=D(2023, 9, 1))
    assert sync is not None and (sync.value, sync.op) == (1.0, "ge")
    assert targets.target("national_sync", district=False, day=D(2023, 8, 1)) is None  # "by 30/8/2023"
    assert targets.target("online_filing", district=False, day=D(2023, 9, 1)) is None
    assert targets.target("on_time", district=False, day=D(2026, 9, 1)) is None  # the 2023 plan is over
