"""KPI alert rules: when a figure is below its target, with hysteresis. Pure.

A KPI of an agency for the current period (``kpi_below_target``):

* its target and comparison come from the plan files (``shared.plans.Target``:
  ``gt`` for "trên 98%", the value must exceed it; ``ge``, it must reach it);
  a KPI no plan in force sets a target for is not judged;
* fires after ``fire_after`` consecutive evaluations with the value not
  meeting the target;
* resolves after ``resolve_after`` consecutive evaluations with the value
  meeting the target and at or above ``min(1, target + margin)``; a value
  between the target and that threshold keeps a firing alert firing and
  resets the recovery streak;
* an evaluation with no value (no dossier whose flag is known, or fewer than
  the minimum: ``min_dossiers`` for a dossier KPI, ``min_denominator`` plan-task
  occurrences for plan completion) changes nothing;
* when its period is over, a firing alert is resolved ("period closed"),
  with the last value it saw.

A round returns the records' new state and its transitions (an alert fired
or resolved, :class:`Transition`). The service layer turns each transition
into its event and the store writes both in one transaction (the shared
outbox), so a restart never fires again what is already firing. A
transition's event id (``{alert_key}:{n}:firing|resolved``, ``n`` the
record's transitions so far) is the same however often it is delivered.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from services.scoring.domain import Period
from shared.plans import Comparison, PlanTargets, Target

KIND = "kpi_below_target"
FIRING = "vn.tthc.alert.firing"
RESOLVED = "vn.tthc.alert.resolved"

#: How an official reads each KPI (Vietnamese, lower-case first letter).
KPI_NAMES_VI = {
    "on_time": "tỷ lệ hồ sơ đúng hạn",
    "plan_completion": "tỷ lệ hoàn thành nhiệm vụ cải cách hành chính",
    "online_filing": "tỷ lệ hồ sơ nộp trực tuyến",
    "national_sync": "tỷ lệ hồ sơ đồng bộ lên Cổng Dịch vụ công quốc gia",
    "online_service": "tỷ lệ thủ tục hành chính đủ điều kiện được cung cấp dịch vụ công trực tuyến toàn trình",
}


#: Which plan target each KPI is judged against, by the target's id (Plan 146's ids). The plan's online target
#: ("online_procedures") counts procedures offered as full online public services, from the procedure catalog
#: (``online_service``), not dossiers filed online: ``online_filing`` has no plan target, so it raises no alert.
PLAN_TARGET_KPIS = {"on_time_ratio": "on_time", "task_completion": "plan_completion", "national_sync": "national_sync",
                    "online_procedures": "online_service"}


@dataclass(frozen=True)
class KpiTargets:
    """The targets the plan files set, by KPI. ``kpis``: a plan target's id -> the KPI it is judged by."""

    plans: tuple[PlanTargets, ...] = ()
    kpis: Mapping[str, str] = field(default_factory=lambda: dict(PLAN_TARGET_KPIS))

    def target(self, kpi: str, *, district: bool, day: dt.date) -> Target | None:
        """The ratio target of ``kpi`` in force on ``day`` for an agency (``district``: the roll-up), if any.

        A ``per: district`` target is the roll-up's alone; a plan is in force within its validity, a target from
        its ``by`` day. When several plans set one, the last file loaded wins (the operator's after the shipped).
        """
        found: Target | None = None
        for plan in self.plans:
            for t in plan.targets:
                if self.kpis.get(t.id) != kpi or t.unit != "ratio" or not plan.in_force(t, day):
                    continue
                if t.per == "district" and not district:
                    continue
                found = t
        return found


@dataclass(frozen=True)
class Hysteresis:
    margin: float = 0.005
    fire_after: int = 2
    resolve_after: int = 3
    min_denominator: int = 1  # plan-task occurrences (or eligible procedures) plan_completion (online_service) needs
    min_dossiers: int = 20  # dossiers (whose flag is known) a dossier KPI needs to be judged

    def resolve_at(self, target: float) -> float:
        return min(1.0, target + self.margin)

    def minimum(self, kpi: str) -> int:
        """The fewest records in its denominator a KPI needs before it can alert."""
        return self.min_denominator if kpi in ("plan_completion", "online_service") else self.min_dossiers


@dataclass(frozen=True)
class Observation:
    """One KPI of one agency for one current period, as evaluated now."""

    agency_code: str
    kpi: str
    period: Period
    value: float | None
    target: float
    op: Comparison = "ge"

    def meets(self, value: float) -> bool:
        return value > self.target if self.op == "gt" else value >= self.target

    @property
    def alert_key(self) -> str:
        return alert_key(self.agency_code, self.kpi, self.period.key)


def alert_key(agency: str, kpi: str, period_key: str) -> str:
    return f"{KIND}:{agency}:{kpi}:{period_key}"


@dataclass(frozen=True)
class AlertRecord:
    alert_key: str
    agency_code: str
    kpi: str
    period: str  # period key, e.g. 2026-11
    firing: bool = False
    below: int = 0  # consecutive evaluations below target
    above: int = 0  # consecutive evaluations at or above the resolve threshold
    transitions: int = 0  # fired or resolved so far (part of the event ids)
    value: float | None = None
    target: float | None = None
    started_at: dt.datetime | None = None
    ends_at: dt.datetime | None = None
    last_evaluated_at: dt.datetime | None = None


@dataclass(frozen=True)
class Transition:
    """An alert fired or resolved: the event to send. ``record`` is the record after it."""

    type: str  # FIRING or RESOLVED
    event_id: str  # {alert_key}:{transitions}:firing|resolved
    summary: str
    at: dt.datetime
    record: AlertRecord


def percent_vi(value: float, *, digits: int = 1) -> str:
    """``0.962`` -> ``96,2%``; ``0.98`` -> ``98%`` (Vietnamese decimal comma)."""
    text = f"{value * 100:.{digits}f}".rstrip("0").rstrip(".")
    return text.replace(".", ",") + "%"


def value_vi(value: float, target: float) -> str:
    """The value with enough digits that it never reads as equal to the target."""
    digits = 1
    while digits < 4 and value < target and round(value * 100, digits) >= round(target * 100, digits):
        digits += 1
    return percent_vi(value, digits=digits)


def summary_firing(
    *, kpi: str, agency_name: str, period: Period, value: float, target: float, op: Comparison = "ge"
) -> str:
    name = KPI_NAMES_VI[kpi]
    head = f"{name[0].upper()}{name[1:]} của {agency_name} {period.label_vi} là {value_vi(value, target)}, "
    if op == "gt":
        return head + f"chưa đạt mục tiêu trên {percent_vi(target)}"
    return head + f"dưới mục tiêu {percent_vi(target)}"


def summary_resolved(
    *, kpi: str, agency_name: str, period: Period, value: float, target: float, op: Comparison = "ge"
) -> str:
    name = KPI_NAMES_VI[kpi]
    head = f"{name[0].upper()}{name[1:]} của {agency_name} {period.label_vi} đã đạt {percent_vi(value)}, "
    if op == "gt":
        return head + f"vượt mục tiêu trên {percent_vi(target)}"
    return head + f"không còn dưới mục tiêu {percent_vi(target)}"


def summary_closed(*, kpi: str, agency_name: str, period: Period, value: float | None, target: float) -> str:
    label = period.label_vi
    head = f"{label[0].upper()}{label[1:]} đã kết thúc"
    if value is None:
        return f"{head}; cảnh báo {KPI_NAMES_VI[kpi]} của {agency_name} được đóng lại"
    return (
        f"{head}; {KPI_NAMES_VI[kpi]} của {agency_name} chốt ở {value_vi(value, target)} "
        f"(mục tiêu {percent_vi(target)})"
    )


def _transition(record: AlertRecord, *, event_type: str, summary: str, now: dt.datetime) -> Transition:
    kind = "firing" if event_type == FIRING else "resolved"
    return Transition(type=event_type, event_id=f"{record.alert_key}:{record.transitions}:{kind}", summary=summary,
                      at=now, record=record)


def step(
    record: AlertRecord, obs: Observation, *, policy: Hysteresis, now: dt.datetime, agency_name: str
) -> tuple[AlertRecord, Transition | None]:
    """One evaluation of one KPI: the updated record, and its transition if it fired or resolved."""
    record = replace(record, last_evaluated_at=now, target=obs.target)
    if obs.value is None:
        return record, None
    value = obs.value
    record = replace(record, value=value)
    if not record.firing:
        below = record.below + 1 if not obs.meets(value) else 0
        if below < policy.fire_after:
            return replace(record, below=below, above=0), None
        fired = replace(record, firing=True, below=0, above=0, transitions=record.transitions + 1, started_at=now,
                        ends_at=None)
        summary = summary_firing(kpi=obs.kpi, agency_name=agency_name, period=obs.period, value=value,
                                 target=obs.target, op=obs.op)
        return fired, _transition(fired, event_type=FIRING, summary=summary, now=now)
    above = record.above + 1 if obs.meets(value) and value >= policy.resolve_at(obs.target) else 0
    if above < policy.resolve_after:
        return replace(record, above=above, below=0), None
    return _resolve(
        record,
        now=now,
        summary=summary_resolved(kpi=obs.kpi, agency_name=agency_name, period=obs.period, value=value,
                                 target=obs.target, op=obs.op),
    )


def close(record: AlertRecord, *, now: dt.datetime, agency_name: str) -> tuple[AlertRecord, Transition]:
    """Resolve a firing alert whose period is over."""
    period = Period.parse(record.period)
    target = record.target if record.target is not None else 1.0
    return _resolve(
        record,
        now=now,
        summary=summary_closed(kpi=record.kpi, agency_name=agency_name, period=period, value=record.value,
                               target=target),
    )


def _resolve(record: AlertRecord, *, now: dt.datetime, summary: str) -> tuple[AlertRecord, Transition]:
    resolved = replace(record, firing=False, below=0, above=0, transitions=record.transitions + 1, ends_at=now)
    return resolved, _transition(resolved, event_type=RESOLVED, summary=summary, now=now)


@dataclass(frozen=True)
class Evaluation:
    """What one evaluation round changes in the stored records, and the transitions to send."""

    upserts: list[AlertRecord]
    deletes: list[str]
    transitions: list[Transition]


def evaluate(
    records: Mapping[str, AlertRecord],
    observations: Iterable[Observation],
    *,
    policy: Hysteresis,
    now: dt.datetime,
    names: Mapping[str, str],
    current: set[str],
    min_gap: dt.timedelta = dt.timedelta(0),
) -> Evaluation:
    """One round over every observed KPI plus the records of periods no longer current.

    ``current``: the keys of the periods being evaluated now; a record of any
    other period is over (resolved if firing, else forgotten).

    ``min_gap``: an evaluation counts toward a streak only if at least this
    long passed since the record's last one, so several replicas evaluating
    the same shared records do not shorten the streaks.
    """
    upserts: list[AlertRecord] = []
    transitions: list[Transition] = []
    for obs in observations:
        key = obs.alert_key
        record = records.get(key)
        if record is None:
            if obs.value is None:
                continue  # nothing to remember about a KPI without a value
            record = AlertRecord(alert_key=key, agency_code=obs.agency_code, kpi=obs.kpi, period=obs.period.key)
        if record.last_evaluated_at is not None and now - record.last_evaluated_at < min_gap:
            continue
        updated, transition = step(record, obs, policy=policy, now=now,
                                   agency_name=names.get(obs.agency_code, obs.agency_code))
        if updated != record:
            upserts.append(updated)
        if transition is not None:
            transitions.append(transition)
    deletes: list[str] = []
    for key, record in records.items():
        if record.period in current:
            continue
        if record.firing:
            closed, transition = close(record, now=now, agency_name=names.get(record.agency_code, record.agency_code))
            upserts.append(closed)
            transitions.append(transition)
        else:
            deletes.append(key)
    return Evaluation(upserts=upserts, deletes=deletes, transitions=transitions)
