"""The demo's synthetic district: deterministic, contract-valid, ordered, realistic."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter, defaultdict
from collections.abc import Sequence

import pytest

from parwatch.demo import (
    PLANS_DIR,
    DistrictFeed,
    FeedMessage,
    PlanTask,
    current_plan_copy,
    load_agencies,
    load_plan_tasks,
    plan_occurrences,
    run_tag_for,
)
from shared.calendar import VN_TZ, load_calendar
from shared.events import DOSSIER_TYPE, PLAN_TYPE, RATING_TYPE, EventRejected, parse_event
from shared.streams import DOSSIER_EVENTS, PLAN_EVENTS, RATING_EVENTS

START = dt.datetime(2026, 3, 2, 0, 0, tzinfo=VN_TZ)  # a Monday
END = START + dt.timedelta(days=30)
CALENDAR = load_calendar()
AGENCIES = load_agencies()
TASKS = (
    PlanTask("KH-TEST", "T.1", ("PNV",), None, dt.date(2026, 1, 1), dt.date(2026, 12, 31)),
    PlanTask("KH-TEST", "T.2", ("XA_CHI_CONG", "XA_HOA_MINH"), "month", dt.date(2026, 1, 1), dt.date(2026, 12, 31)),
    PlanTask("KH-TEST", "T.3", ("PTNMT",), "week", dt.date(2026, 1, 1), dt.date(2026, 12, 31)),
)


def feed(seed: int = 146, *, tasks: Sequence[PlanTask] = TASKS) -> DistrictFeed:
    return DistrictFeed(seed=seed, start=START, run_tag="T0", calendar=CALENDAR, agencies=AGENCIES, plan_tasks=tasks)


@pytest.fixture(scope="module")
def month_feed() -> tuple[DistrictFeed, list[FeedMessage]]:
    f = feed()
    return f, f.advance(END)


@pytest.fixture(scope="module")
def month(month_feed: tuple[DistrictFeed, list[FeedMessage]]) -> list[FeedMessage]:
    return month_feed[1]


@pytest.fixture(scope="module")
def parsed(month: list[FeedMessage]) -> list[tuple[FeedMessage, object]]:
    return [(m, parse_event(m.body)) for m in month if m.kind != "malformed"]


def dossier_events(parsed):  # type: ignore[no-untyped-def]
    return [e for m, e in parsed if m.kind == "dossier"]


def test_same_seed_same_messages_whatever_the_steps() -> None:
    in_one = feed().advance(START + dt.timedelta(days=3))
    stepwise: list[FeedMessage] = []
    other = feed()
    moment = START
    while moment < START + dt.timedelta(days=3):
        moment += dt.timedelta(hours=7)
        stepwise += other.advance(min(moment, START + dt.timedelta(days=3)))
    assert [m.body for m in in_one] == [m.body for m in stepwise]
    assert [m.body for m in feed(seed=147).advance(START + dt.timedelta(days=3))] != [m.body for m in in_one]


def test_every_message_but_the_malformed_ones_meets_the_contract(month: list[FeedMessage]) -> None:
    kinds = Counter(m.kind for m in month)
    assert kinds["malformed"] > 0
    subjects = {"dossier": DOSSIER_EVENTS, "rating": RATING_EVENTS, "plan": PLAN_EVENTS, "malformed": DOSSIER_EVENTS}
    types = {"dossier": DOSSIER_TYPE, "rating": RATING_TYPE, "plan": PLAN_TYPE}
    for m in month:
        assert m.subject == subjects[m.kind]
        if m.kind == "malformed":
            with pytest.raises(EventRejected):
                parse_event(m.body)
            continue
        event = parse_event(m.body)
        assert event.type == types[m.kind]
        assert event.id == m.msg_id  # Nats-Msg-Id is the event id
    assert len({m.msg_id for m in month}) == len(month)


def test_sequences_and_times_are_ordered_per_dossier_across_backfill_and_live(month_feed, parsed) -> None:  # type: ignore[no-untyped-def]
    f, _ = month_feed
    live = f.pull_forward(END + dt.timedelta(seconds=1), 500)
    live += f.pull_forward(END + dt.timedelta(seconds=2), 500)
    histories: dict[str, list] = defaultdict(list)
    for e in dossier_events(parsed):
        histories[e.data.dossier_code].append(e.data)
    for m in live:
        if m.kind == "dossier":
            histories[m.dossier_code].append(parse_event(m.body).data)  # type: ignore[arg-type]
    resumed = 0
    for code, events in histories.items():
        times = [e.occurred_at for e in events]
        assert times == sorted(times), code
        assert len(set(times)) == len(times), code
        sequences = [e.sequence for e in events]
        if sequences[0] is not None:
            assert sequences == list(range(1, len(events) + 1)), code
        else:
            assert all(s is None for s in sequences), code
        resumed += any(e.occurred_at > END for e in events) and any(e.occurred_at <= END for e in events)
    assert resumed > 0  # live mode went on with dossiers opened in the backfill


def test_hundreds_of_dossiers_a_working_day_mostly_online(parsed) -> None:  # type: ignore[no-untyped-def]
    received = [e.data for e in dossier_events(parsed) if e.data.status == 2]
    per_day = Counter(d.received_at.astimezone(VN_TZ).date() for d in received)
    working = [day for day in per_day if CALENDAR.is_working_day(day)]
    assert len(working) >= 18
    assert all(100 <= per_day[day] <= 600 for day in working)
    channels = Counter(d.channel for d in received)
    assert 0.5 <= channels[2] / len(received) <= 0.7
    agencies = {d.agency_code for d in received}
    assert agencies <= {a.code for a in AGENCIES}
    assert {a.code for a in AGENCIES if a.kind == "commune"} <= agencies
    assert {"PTNMT", "PTP", "PTCKH"} <= agencies


def test_the_mix_has_pauses_ends_of_every_kind_and_some_late_dossiers(parsed) -> None:  # type: ignore[no-untyped-def]
    histories: dict[str, list] = defaultdict(list)
    for e in dossier_events(parsed):
        histories[e.data.dossier_code].append(e.data)
    statuses = Counter(d.status for events in histories.values() for d in events)
    assert all(statuses[s] > 0 for s in range(1, 11)), statuses
    # A supplement request (5) is followed by processing again (4).
    resumed = sum(
        1
        for events in histories.values()
        for a, b in zip(events, events[1:], strict=False)
        if a.status == 5 and b.status == 4
    )
    assert resumed > 0
    # Late: ended (first 9/10/3/7/8) after the due day the source sent.
    ended, late = 0, 0
    for events in histories.values():
        end = next((d for d in events if d.status in (3, 7, 8, 9, 10)), None)
        if end is None or events[-1].due_at is None or not any(d.status == 2 for d in events):
            continue
        ended += 1
        late += end.occurred_at.astimezone(VN_TZ).date() > events[-1].due_at.astimezone(VN_TZ).date()
    assert ended > 500
    assert 0.005 <= late / ended <= 0.15
    units = Counter(events[0].statutory_duration.unit for events in histories.values() if events[0].statutory_duration)
    assert set(units) == {"working_days", "days", "hours"}
    assert units["working_days"] > units["days"] + units["hours"]


def test_ratings_follow_their_dossier_and_use_the_nine_criteria(parsed) -> None:  # type: ignore[no-untyped-def]
    last_status: dict[str, dt.datetime] = {}
    agency: dict[str, str] = {}
    ended = set()
    for m, e in parsed:
        if m.kind == "dossier":
            last_status[e.data.dossier_code] = e.data.occurred_at
            agency[e.data.dossier_code] = e.data.agency_code
            if e.data.status in (9, 10):
                ended.add(e.data.dossier_code)
    ratings = [e.data for m, e in parsed if m.kind == "rating"]
    assert len(ratings) > 0.4 * len(ended)
    for r in ratings:
        assert r.dossier_code in ended
        assert r.agency_code == agency[r.dossier_code]
        assert r.rated_at > last_status[r.dossier_code] - dt.timedelta(days=3)
    with_criteria = [r for r in ratings if r.criteria]
    assert len(with_criteria) > len(ratings) / 2
    assert all(set(r.criteria) == {f"c{i}" for i in range(1, 10)} for r in with_criteria)
    overall = Counter(r.overall for r in ratings)
    assert overall["very_satisfied"] + overall["satisfied"] > 9 * overall["unsatisfied"] > 0


def test_plan_reports_name_the_plan_tasks_and_their_owners(parsed) -> None:  # type: ignore[no-untyped-def]
    reports = [e.data for m, e in parsed if m.kind == "plan"]
    assert reports
    owners = {t.task_id: t.owners for t in TASKS}
    for r in reports:
        assert r.plan_id == "KH-TEST"
        assert r.agency_code in owners[r.task_id]
        if r.task_id == "T.1":
            assert r.period is None
        elif r.task_id == "T.2":
            assert re.fullmatch(r"2026-\d\d", r.period)
        else:
            assert re.fullmatch(r"2026-W\d\d", r.period)


def test_no_plan_files_no_plan_reports() -> None:
    assert not [m for m in feed(tasks=()).advance(START + dt.timedelta(days=5)) if m.kind == "plan"]


def test_the_plan_files_of_deadline_monitor_give_dated_or_recurring_tasks() -> None:
    if not PLANS_DIR.is_dir():
        pytest.skip(f"{PLANS_DIR} does not exist yet: the demo sends no plan reports")
    tasks = load_plan_tasks(PLANS_DIR, AGENCIES)
    assert tasks
    codes = {a.code for a in AGENCIES}
    assert all(t.owners and set(t.owners) <= codes for t in tasks)
    assert {t.every for t in tasks} <= {None, "week", "month", "year"}


def test_live_mode_stamps_events_at_the_wall_clock_and_opens_new_dossiers() -> None:
    f = feed()
    f.advance(START + dt.timedelta(days=2))
    now = START + dt.timedelta(days=2, hours=1)
    live = f.pull_forward(now, 200)
    dossiers = [m for m in live if m.kind == "dossier"]
    assert 200 - 10 <= len([m for m in live if m.kind in ("dossier", "rating")]) <= 200
    assert all(now <= m.at < now + dt.timedelta(seconds=1) for m in live)
    assert [m.at for m in live] == sorted(m.at for m in live)
    new = {m.dossier_code for m in dossiers if parse_event(m.body).data.sequence in (1, None)}  # type: ignore[union-attr]
    assert new


def test_no_personal_data_fields_and_synthetic_codes(month: list[FeedMessage]) -> None:
    allowed = {
        "dossier_code", "sequence", "status", "occurred_at", "agency_code", "procedure_code", "field_code",
        "received_at", "due_at", "statutory_duration", "channel", "online_payment", "digitized", "synced_national",
    }
    for m in month:
        if m.kind == "dossier":
            data = json.loads(m.body)["data"]
            assert set(data) <= allowed
            assert re.fullmatch(r"[A-Z0-9]+-\d{6}-T0\d{5}", data["dossier_code"])


def test_run_tags_keep_runs_apart() -> None:
    a = run_tag_for(dt.datetime(2026, 3, 2, 8, 0, 0, tzinfo=dt.timezone.utc))
    b = run_tag_for(dt.datetime(2026, 3, 2, 8, 0, 1, tzinfo=dt.timezone.utc))
    assert a != b
    assert re.fullmatch(r"[0-9A-Z]{1,6}", a)


def test_start_without_offset_is_refused() -> None:
    with pytest.raises(ValueError, match="offset"):
        DistrictFeed(seed=1, start=dt.datetime(2026, 3, 2), run_tag="X", calendar=CALENDAR, agencies=AGENCIES)


# -- the demo's plan: Plan 146 copied to the current year; reports on its tracked occurrences ---------------


@pytest.fixture(scope="module")
def demo_plan_2026(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return current_plan_copy(tmp_path_factory.mktemp("plans"), year=2026)


def test_the_demo_plan_is_plan_146_copied_to_the_whole_current_year(demo_plan_2026) -> None:  # type: ignore[no-untyped-def]
    from services.deadline_monitor.plan import load_plan

    plan = load_plan(demo_plan_2026)
    assert demo_plan_2026.name == "plan-146-2026.yaml"
    assert (plan.plan_id, plan.copied_from) == ("KH-146-2026-TP", "KH-146-2023-TP")
    assert (plan.valid_from, plan.valid_until) == (dt.date(2026, 1, 1), dt.date(2026, 12, 31))
    occurrences = plan_occurrences(demo_plan_2026, calendar=CALENDAR)
    assert occurrences and {o.period[:4] for o in occurrences} <= {"", "2026"}


def test_plan_reports_name_tracked_occurrences_history_first(demo_plan_2026) -> None:  # type: ignore[no-untyped-def]
    occurrences = plan_occurrences(demo_plan_2026, calendar=CALENDAR)
    f = DistrictFeed(seed=146, start=START, run_tag="T0", calendar=CALENDAR, agencies=AGENCIES,
                     occurrences=occurrences)
    messages = f.advance(START + dt.timedelta(days=10))
    reports = [(m, parse_event(m.body).data) for m in messages if m.kind == "plan"]
    tracked = {(o.plan_id, o.task_id, o.agency_code, o.period) for o in occurrences}
    named = [(r.plan_id, r.task_id, r.agency_code, r.period or "") for _, r in reports]
    assert named and set(named) <= tracked  # every report meets an occurrence the monitor tracks
    assert len(named) == len(set(named))  # each occurrence reported once
    history = [m for m, _ in reports if m.at <= START]
    due_before = [o for o in occurrences if o.due_day < START.date() - dt.timedelta(days=10)]
    assert 0.85 * len(due_before) <= len(history)  # most duties of the months before were done
    assert [m.at for m, _ in reports[: len(history)]] == sorted(m.at for m, _ in reports[: len(history)])
    assert all(m.at > START for m, _ in reports[len(history):])  # then the feed's own days
    assert {r.state for _, r in reports} == {"done"}
    again = DistrictFeed(seed=146, start=START, run_tag="T0", calendar=CALENDAR, agencies=AGENCIES,
                         occurrences=occurrences, history=False)
    assert not [m for m in again.advance(START + dt.timedelta(days=1)) if m.kind == "plan" and m.at <= START]


def test_random_reports_name_a_period_near_their_day() -> None:
    f = feed()
    for m in f.advance(END):
        if m.kind != "plan":
            continue
        r = parse_event(m.body).data
        day = m.at.astimezone(VN_TZ).date()
        if r.task_id == "T.2":
            assert r.period in (f"{day:%Y-%m}", f"{day - dt.timedelta(days=28):%Y-%m}")
