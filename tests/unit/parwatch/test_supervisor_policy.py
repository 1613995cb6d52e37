"""The supervisor's restart decisions (injected clock) and its handling of real child processes."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest

from parwatch import supervisor as sup_module
from parwatch.supervisor import (
    Child,
    RestartPolicy,
    RestartTracker,
    ServiceView,
    StackSettings,
    Supervisor,
    plan_services,
)
from shared.settings import CommonSettings


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


NO_LOOP = RestartPolicy(crash_loop_crashes=1000)


def crash_after(tracker: RestartTracker, clock: FakeClock, ran: float):  # type: ignore[no-untyped-def]
    tracker.started()
    clock.advance(ran)
    return tracker.exited()


def test_backoff_doubles_up_to_the_maximum() -> None:
    clock = FakeClock()
    tracker = RestartTracker(NO_LOOP, clock=clock)
    delays = []
    for _ in range(8):
        decision = crash_after(tracker, clock, 0.5)
        delays.append(decision.delay)
        clock.advance(decision.delay)
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]
    assert tracker.consecutive == 8


def test_restart_is_due_only_after_the_delay() -> None:
    clock = FakeClock()
    tracker = RestartTracker(NO_LOOP, clock=clock)
    tracker.started()
    assert not tracker.waiting and not tracker.due()
    decision = tracker.exited()
    assert decision.restart_at == clock.t + 1
    clock.advance(0.99)
    assert tracker.waiting and not tracker.due()
    clock.advance(0.02)
    assert tracker.due()
    tracker.restarting()
    assert not tracker.waiting and tracker.restarts == 1


def test_a_stable_run_resets_the_backoff() -> None:
    clock = FakeClock()
    tracker = RestartTracker(NO_LOOP, clock=clock)
    assert crash_after(tracker, clock, 1).delay == 1
    assert crash_after(tracker, clock, 1).delay == 2
    assert crash_after(tracker, clock, 1).delay == 4
    assert crash_after(tracker, clock, NO_LOOP.stable_after).delay == 1


def test_a_crash_loop_keeps_trying_but_slowly_and_ends_after_a_quiet_window() -> None:
    clock = FakeClock()
    policy = RestartPolicy()
    tracker = RestartTracker(policy, clock=clock)
    decisions = []
    for _ in range(policy.crash_loop_crashes):
        d = crash_after(tracker, clock, 0.2)
        decisions.append(d)
        clock.advance(d.delay)
    assert [d.crash_loop for d in decisions] == [False] * (policy.crash_loop_crashes - 1) + [True]
    assert decisions[-1].delay == policy.crash_loop_delay
    assert tracker.due()  # still restarted: a crash loop slows down, it never gives up
    again = crash_after(tracker, clock, 0.2)
    assert again.crash_loop and again.delay == policy.crash_loop_delay
    clock.advance(again.delay)
    quiet = crash_after(tracker, clock, policy.crash_loop_window + 1)
    assert not quiet.crash_loop and quiet.delay == policy.backoff.first


def make_supervisor(tmp_path: Path, clock: FakeClock, **settings: object) -> Supervisor:
    return Supervisor(
        common=CommonSettings(data_dir=tmp_path),
        settings=StackSettings(**settings),  # type: ignore[arg-type]
        environ={},
        data_dir=tmp_path,
        policy=NO_LOOP,
        clock=clock,
    )


def child(args: list[str], clock: FakeClock, *, stdout=None) -> Child:  # type: ignore[no-untyped-def]
    return Child(
        name="worker", args=(sys.executable, *args), env={"PATH": "/usr/bin:/bin"},
        tracker=RestartTracker(NO_LOOP, clock=clock), stdout=stdout,
    )


def test_a_child_that_exits_is_restarted_after_its_backoff(tmp_path: Path) -> None:
    clock = FakeClock()
    sup = make_supervisor(tmp_path, clock)
    worker = child(["-c", "raise SystemExit(3)"], clock)
    sup.children.append(worker)
    worker.start()
    worker.tracker.started()
    assert worker.proc is not None
    worker.proc.wait(timeout=10)

    sup.check_children()
    assert worker.proc is None and worker.tracker.waiting
    sup.check_children()
    assert worker.proc is None  # the fake clock has not moved: no restart yet
    clock.advance(1.0)
    sup.check_children()
    assert worker.proc is not None and worker.tracker.restarts == 1
    worker.proc.wait(timeout=10)
    sup.check_children()
    assert worker.tracker.consecutive == 2
    clock.advance(1.9)
    sup.check_children()
    assert worker.proc is None
    clock.advance(0.1)
    sup.check_children()
    assert worker.proc is not None and worker.tracker.restarts == 2
    worker.proc.wait(timeout=10)


def test_no_restart_while_stopping_and_stop_terminates_then_kills(tmp_path: Path) -> None:
    clock = FakeClock()
    sup = make_supervisor(tmp_path, clock, stop_timeout=0.5)
    log = tmp_path / "stubborn.log"
    with open(log, "wb") as out:
        polite = child(["-c", "import time; time.sleep(60)"], clock)
        stubborn = child(
            ["-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
                   "time.sleep(60)"],
            clock,
            stdout=out,
        )
        for c in (polite, stubborn):
            sup.children.append(c)
            c.start()
        deadline = time.monotonic() + 10
        while b"ready" not in log.read_bytes():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        procs = [polite.proc, stubborn.proc]
        sup.request_stop()
        assert sup.stopping
        sup.stop_services()
    assert procs[0] is not None and procs[0].returncode == -signal.SIGTERM
    assert procs[1] is not None and procs[1].returncode == -signal.SIGKILL
    assert polite.proc is None and stubborn.proc is None


def test_services_without_a_main_module_are_missing_and_ports_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "dossier_tracker").mkdir()
    (tmp_path / "dossier_tracker" / "__main__.py").write_text("")
    monkeypatch.setattr(sup_module, "service_dir", lambda name: tmp_path / name)
    plans = {p.name: p for p in plan_services({"PARWATCH_TRACKER_PORT": "19101"})}
    assert list(plans) == ["dossier_tracker", "deadline_monitor", "scoring", "notifier"]
    assert plans["dossier_tracker"].present and plans["dossier_tracker"].port == 19101
    assert plans["dossier_tracker"].port_env == "PARWATCH_TRACKER_PORT"
    assert not plans["scoring"].present and plans["scoring"].port == 9103
    assert plans["notifier"].port == 9104 and plans["deadline_monitor"].port == 9102
    only = plan_services({}, only=["notifier"])
    assert [p.name for p in only] == ["notifier"]


def test_the_url_block_names_every_url(tmp_path: Path) -> None:
    sup = make_supervisor(tmp_path, FakeClock())
    sup.nats_url = "nats://127.0.0.1:14222"
    sup.monitor_url = "http://127.0.0.1:18222"
    block = sup.urls_block(
        [
            ServiceView("dossier_tracker", 9101, "up"),
            ServiceView("deadline_monitor", 9102, "crashed"),
            ServiceView("scoring", 9103, "up"),
            ServiceView("notifier", None, "missing"),
        ]
    )
    assert "nats://127.0.0.1:14222" in block and "http://127.0.0.1:18222" in block
    assert "http://127.0.0.1:9101/metrics" in block and "http://127.0.0.1:9101/health" in block
    assert "http://127.0.0.1:9103/docs" in block
    assert "http://127.0.0.1:9103/web/" in block  # the officials' web page, beside the others
    assert "restarting with backoff" in block
    assert "notifier          missing" in block
    assert str(tmp_path) in block


def test_nats_url_from_the_environment_means_no_embedded_server(tmp_path: Path) -> None:
    sup = Supervisor(
        common=CommonSettings(nats_url="nats://127.0.0.1:4999", data_dir=tmp_path),
        settings=StackSettings(),
        environ={},
        data_dir=tmp_path,
    )
    sup.start_nats()
    assert sup.nats is None and sup.nats_url == "nats://127.0.0.1:4999"
