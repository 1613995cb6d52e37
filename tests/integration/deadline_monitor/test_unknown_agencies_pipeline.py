"""300 invented agency codes through the real services on a real nats-server: bounded labels, one alert, one desk.

dossier_tracker, deadline_monitor, scoring and notifier run as ``create_app``
wires them (SQLite each, a nats-server of the test's own, an injected clock);
events for 300 agency codes outside the directory, plus one dossier of a
known unit, are published as an integrating system would. Then:

* every ``agency`` label of every scrape is a directory code, ``unknown`` or
  the district's, so the series count is bounded by the directory's size, and
  the invented dossiers are all counted under ``unknown``;
* the monitor publishes one ``unknown_agency`` alert and no alert for an
  invented code; the notifier sends it, and an alert for an invented code
  published as an older monitor would have, to the technical desk alone: with
  routes that would otherwise climb to the district leadership, no leader
  hears of anything;
* no invented code (each holds the canary ``CANARY``) appears in any label,
  alert or rendered notification.

That nothing more goes out is shown by a dispatch pass the test runs itself
leaving the notifier's outbox empty, never by waiting a while.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path

import nats
from prometheus_client import CollectorRegistry

from services.deadline_monitor.app import create_app as create_monitor
from services.deadline_monitor.settings import MonitorSettings
from services.dossier_tracker.app import create_app as create_tracker
from services.dossier_tracker.settings import TrackerSettings
from services.notifier.app import create_app as create_notifier
from services.notifier.domain.model import Official
from services.notifier.notify import Message, SendResult
from services.notifier.settings import NotifierSettings
from services.scoring.app import create_app as create_scoring
from services.scoring.settings import ScoringSettings
from shared.agencies import UNKNOWN, load_agencies
from shared.embedded import free_port
from shared.events import ALERT_FIRING_TYPE, PLAN_TYPE, RATING_TYPE, Alert, encode, new_event, parse_event
from shared.settings import CommonSettings
from shared.streams import ALERTS, DOSSIER_EVENTS, PLAN_EVENTS, RATING_EVENTS
from shared.testing import dossier_event, metric_samples, metric_value, publish_event, wait_until

INVENTED = 300
AGENCIES = load_agencies()
ALLOWED = set(AGENCIES.codes) | {AGENCIES.district_code, UNKNOWN}
NOW = dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC)  # Wednesday 09:00 in Tuy Phong
LEADER, DESK = "ubnd-chutich", "vhtt-kythuat"
#: Routes a missing role climbs: officer, head, then the district leadership.
DIRECTORY = """\
version: 1
agencies:
  - code: TUY_PHONG
    officials:
      - {id: ubnd-chutich, role: district_leadership, name: Chủ tịch UBND huyện, email: lanhdao@example.invalid}
  - code: PTP
    officials:
      - {id: tuphap-motcua, role: officer, name: Một cửa Phòng Tư pháp, email: tuphap@example.invalid}
  - code: PVHTT
    officials:
      - {id: vhtt-kythuat, role: officer, direct_only: true, name: Bộ phận kỹ thuật, email: kythuat@example.invalid}
routes:
  - {name: deadletters, match: {kind: [deadletter]}, receivers: [vhtt-kythuat], escalate: false}
  - {name: default, receivers: [officer]}
"""


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


class Capture:
    """The notifier's log channel, keeping what it would send."""

    name = "log"

    def __init__(self) -> None:
        self.sent: list[tuple[str, Message]] = []

    async def send(self, official: Official, message: Message) -> SendResult:
        self.sent.append((official.id, message))
        return SendResult.sent()


def invented(i: int) -> str:
    return f"ZZCANARY{i:03d}"


def contract_event(type_: str, data: dict, *, subject: str) -> dict:
    return {"specversion": "1.0", "id": str(uuid.uuid4()), "source": "cong.test", "type": type_,
            "time": "2026-11-20T08:00:00+07:00", "subject": subject, "datacontenttype": "application/json",
            "data": data}


def events() -> list[tuple[str, dict]]:
    """Dossiers received on 2/11, due 10/11 (overdue now): 300 of invented units and one of Phòng Tư pháp;
    ratings and plan reports of invented units."""
    out = []
    for i, agency in [*((i, invented(i)) for i in range(INVENTED)), (INVENTED, "PTP")]:
        out.append((DOSSIER_EVENTS, dossier_event(f"H-{i}", 2, "2026-11-02T08:00:00+07:00", seq=1, agency=agency,
                                                  due_at="2026-11-10T17:00:00+07:00")))
    for i in range(20):
        out.append((RATING_EVENTS, contract_event(RATING_TYPE, {
            "dossier_code": f"H-{i}", "agency_code": invented(i), "rated_at": "2026-11-20T08:00:00+07:00",
            "overall": "satisfied"}, subject=f"H-{i}")))
    for i in range(5):
        out.append((PLAN_EVENTS, contract_event(PLAN_TYPE, {
            "plan_id": "KH-146", "task_id": f"T-{i}", "agency_code": invented(i), "state": "done",
            "reported_at": "2026-11-20T08:00:00+07:00"}, subject=f"T-{i}")))
    return out


def agency_labels(registry: CollectorRegistry) -> tuple[set[str], int]:
    """The ``agency`` label values of a scrape and how many series carry one."""
    samples = [dict(labels) for _, labels in metric_samples(registry)]
    with_agency = [s["agency"] for s in samples if "agency" in s]
    return set(with_agency), len(with_agency)


def bounded(registry: CollectorRegistry) -> None:
    values, series = agency_labels(registry)
    assert values <= ALLOWED, values - ALLOWED
    per_agency = max((sum(1 for _, labels in metric_samples(registry) if dict(labels).get("agency") == v)
                      for v in values), default=0)
    assert series <= len(ALLOWED) * per_agency
    assert "CANARY" not in str(metric_samples(registry))


async def test_invented_agencies_stay_one_label_one_alert_and_reach_the_technical_desk_alone(
    own_nats_server, tmp_path: Path
) -> None:
    clock = Clock(NOW)

    def common(name: str) -> CommonSettings:
        return CommonSettings(nats_url=own_nats_server.url, database_url=f"sqlite:///{tmp_path / name}.db",
                              data_dir=tmp_path)

    tracker, _ = create_tracker(common("tracker"), TrackerSettings(port=0), clock=clock)
    monitor, monitor_app = create_monitor(
        common("monitor"), MonitorSettings(port=0, include_shipped_plans=False, tick_interval=3600, backlog_idle_seconds=0.5),
        clock=clock)
    scoring, _ = create_scoring(common("scoring"), ScoringSettings(port=0, evaluate_interval=3600), clock=clock)
    (tmp_path / "directory.yaml").write_text(DIRECTORY, encoding="utf-8")
    notifier, notifier_app = create_notifier(
        common("notifier"),
        NotifierSettings(port=free_port(), directory=tmp_path / "directory.yaml", group_wait=dt.timedelta(0),
                         quiet_hours=False, tick_interval=3600),
        clock=clock,
    )
    capture = Capture()
    notifier_app.state.notifier.channels["log"] = capture  # e-mail goes to the log channel without an SMTP host
    services = [tracker, monitor, scoring, notifier]
    nc = await nats.connect(own_nats_server.url)
    try:
        for service in services:
            await service.start()
        js = nc.jetstream()
        for subject, event in events():
            await publish_event(js, subject, event)
        # An alert for an invented code, as a monitor of an older version would have raised it.
        legacy = new_event(type=ALERT_FIRING_TYPE, source="parwatch/old_monitor", id="legacy:1", data=Alert(
            alert_key="dossier_overdue:H-999", kind="dossier_overdue", severity="critical", agency_code=invented(999),
            ref="H-999", summary=f"Hồ sơ H-999 của {invented(999)} đã quá hạn", starts_at=NOW))
        await publish_event(js, ALERTS, encode(legacy), msg_id=legacy.id)

        # -- every event stored and counted; every agency label bounded by the directory -----------------------
        async def tracker_done() -> bool:
            return metric_value(tracker.registry, "parwatch_events_total", stream="TTHC_DOSSIER",
                                result="accepted") == INVENTED + 1

        await wait_until(tracker_done, timeout=60)
        await wait_until(lambda: metric_value(tracker.registry, "parwatch_dossiers_open", agency=UNKNOWN,
                                              state="overdue") == INVENTED, timeout=30)
        assert metric_value(tracker.registry, "parwatch_dossiers_open", agency="PTP", state="overdue") == 1
        await wait_until(lambda: metric_value(scoring.registry, "parwatch_period_dossiers", agency=UNKNOWN,
                                              period="month", figure="overdue") == INVENTED, timeout=60)
        await wait_until(lambda: metric_value(scoring.registry, "parwatch_period_dossiers", agency=UNKNOWN,
                                              period="month", figure="rated") == 20, timeout=60)
        for service in services:
            bounded(service.registry)

        # -- one unknown_agency alert, for the district; none for an invented code -----------------------------
        monitor_store = monitor_app.state.store

        async def monitor_done() -> bool:
            info = await js.consumer_info("PARWATCH_DOSSIER_STATE", "deadline_monitor_dossiers")
            plan = await js.consumer_info("PARWATCH_ACCEPTED", "deadline_monitor_plan")
            return (info.delivered.consumer_seq >= INVENTED + 1 and info.num_pending == 0
                    and info.num_ack_pending == 0 and plan.delivered.consumer_seq >= 5 and plan.num_pending == 0
                    and plan.num_ack_pending == 0 and not unsettled() and monitor_store.outbox_size() == 0)

        def unsettled() -> bool:
            """Dossiers stored while the monitor held them: events three weeks old are history, settled once
            nothing newer comes (``backlog_idle_seconds``)."""
            with monitor_store.transaction() as work:
                return bool(work.unsettled(limit=1))

        await wait_until(monitor_done, timeout=60)
        stream = await js.stream_info("TTHC_ALERTS")
        alerts = [parse_event((await js.get_msg("TTHC_ALERTS", seq)).data)
                  for seq in range(stream.state.first_seq, stream.state.last_seq + 1)]
        alerts = [a for a in alerts if a.source == "parwatch/deadline_monitor"]
        assert sorted((a.data.kind, a.data.agency_code) for a in alerts) == [
            ("dossier_overdue", "PTP"), ("unknown_agency", AGENCIES.district_code)]
        [unknown] = [a for a in alerts if a.data.kind == "unknown_agency"]
        assert unknown.data.severity == "warning"
        assert unknown.data.labels["dossiers"].isdigit() and "parwatch agencies unknown" in unknown.data.summary
        assert "CANARY" not in json.dumps([a.model_dump(mode="json") for a in alerts])

        # -- the notifier: the technical desk alone hears of it; no leader hears of anything --------------------
        notifier_store = notifier_app.state.store
        await wait_until(lambda: len(notifier_store.load_dispatch_state(now=clock()).alerts) == len(alerts) + 1,
                         timeout=30)
        await notifier_app.state.notifier.tick(clock())
        await wait_until(lambda: notifier_store.outbox.size() == 0 and len(capture.sent) == 3, timeout=30)
        sent = sorted((receiver, m.data["agency"]["code"]) for receiver, m in capture.sent)
        assert sent == [("tuphap-motcua", "PTP"), (DESK, "TUY_PHONG"), (DESK, UNKNOWN)]
        desk = {m.data["agency"]["code"]: m for receiver, m in capture.sent if receiver == DESK}
        assert "mã đơn vị ngoài danh mục" in desk["TUY_PHONG"].subject
        assert "Dữ liệu mang mã đơn vị không có trong danh mục đơn vị" in desk["TUY_PHONG"].text
        assert "Đơn vị không có trong danh mục" in desk[UNKNOWN].subject
        for _, message in capture.sent:
            rendered = message.subject + message.text + message.html + json.dumps(message.data, ensure_ascii=False)
            assert "CANARY" not in rendered
        assert LEADER not in {receiver for receiver, _ in capture.sent}
        # A month later the known unit's overdue dossier has escalated to the leader; the others never do.
        clock.now += dt.timedelta(days=30)
        await notifier_app.state.notifier.tick(clock())
        await wait_until(lambda: notifier_store.outbox.size() == 0, timeout=30)
        to_leader = [m for receiver, m in capture.sent if receiver == LEADER]
        assert {m.data["agency"]["code"] for m in to_leader if m.data["type"] == "alerts"} == {"PTP"}
        for m in to_leader:  # the monthly digests too say nothing of codes outside the directory
            assert "danh mục" not in m.text and "CANARY" not in m.text + json.dumps(m.data, ensure_ascii=False)
        assert metric_value(notifier.registry, "parwatch_alerts_total", kind="unknown_agency",
                            severity="warning") == 1
    finally:
        for service in reversed(services):
            await service.stop()
        await nc.close()
