"""The live status: its figures read from metrics texts, its rendering, and the terminal it draws on."""

from __future__ import annotations

import io
import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from parwatch.status import (
    Console,
    Figures,
    Status,
    StatusReader,
    event_rate,
    figures_from_metrics,
    for_the_console,
    render_block,
    render_line,
)


def tracker_text(*, accepted: float, rejected: float = 0, overdue: float = 0, in_time: float = 0) -> str:
    registry = CollectorRegistry()
    events = Counter("parwatch_events_total", "events", ["stream", "result"], registry=registry)
    events.labels(stream="TTHC_DOSSIER", result="accepted").inc(accepted)
    events.labels(stream="TTHC_RATING", result="rejected").inc(rejected)
    opened = Gauge("parwatch_dossiers_open", "open", ["agency", "state"], registry=registry)
    opened.labels(agency="PTP", state="overdue").set(overdue)
    opened.labels(agency="XA_VINH_HAO", state="in_time").set(in_time)
    return generate_latest(registry).decode()


def monitor_text(firing: dict[str, float]) -> str:
    registry = CollectorRegistry()
    gauge = Gauge("parwatch_monitor_alerts_firing", "firing", ["kind"], registry=registry)
    for kind, n in firing.items():
        gauge.labels(kind=kind).set(n)
    return generate_latest(registry).decode()


def notifier_text(*, sent: float, failed: float = 0) -> str:
    registry = CollectorRegistry()
    notes = Counter("parwatch_notifications_total", "notices", ["channel", "result"], registry=registry)
    notes.labels(channel="email", result="sent").inc(sent)
    notes.labels(channel="log", result="sent").inc(1)
    notes.labels(channel="email", result="failed").inc(failed)
    notes.labels(channel="email", result="suppressed").inc(7)
    return generate_latest(registry).decode()


def test_the_figures_add_up_every_label_of_each_service() -> None:
    figures = figures_from_metrics([
        tracker_text(accepted=120, rejected=3, overdue=4, in_time=10),
        monitor_text({"dossier_overdue": 4, "kpi_below_target": 2}),
        notifier_text(sent=5, failed=1),
    ])
    assert figures == Figures(events=123, rejected=3, dossiers_open=14, dossiers_overdue=4, alerts_firing=6,
                              notifications_sent=6, notifications_failed=1)


def test_a_service_that_did_not_answer_gives_unknown_figures_not_zeros() -> None:
    figures = figures_from_metrics([tracker_text(accepted=1), "this is not an exposition {"])
    assert figures.events == 1
    assert figures.alerts_firing is None and figures.notifications_sent is None
    line = render_line(Status(figures=figures, rate=None, services=(("notifier", "crashed"),)))
    assert "alerts ? firing" in line and "notifications ? sent" in line and "notifier crashed" in line


def test_a_declared_metric_without_samples_counts_zero() -> None:
    text = "# HELP parwatch_monitor_alerts_firing firing\n# TYPE parwatch_monitor_alerts_firing gauge\n"
    assert figures_from_metrics([text]).alerts_firing == 0


def test_the_event_rate_is_the_counter_difference_over_the_seconds_and_unknown_across_a_reset() -> None:
    assert event_rate(Figures(events=100), Figures(events=130), 3.0) == 10.0
    assert event_rate(None, Figures(events=130), 3.0) is None
    assert event_rate(Figures(events=130), Figures(events=5), 3.0) is None  # the tracker restarted
    assert event_rate(Figures(events=None), Figures(events=5), 3.0) is None


def test_the_reader_keeps_the_previous_reading_for_the_rate() -> None:
    now = [1000.0]
    reader = StatusReader(clock=lambda: now[0])
    first = reader.read([tracker_text(accepted=50)], services=[("dossier_tracker", "up")])
    now[0] += 5
    second = reader.read([tracker_text(accepted=150)], services=[("dossier_tracker", "up")], extra=["demo: live"])
    assert first.rate is None
    assert second.rate == 20.0 and second.uptime == 5.0 and second.extra == ("demo: live",)


def a_status() -> Status:
    figures = figures_from_metrics([
        tracker_text(accepted=12345, rejected=2, overdue=21, in_time=1000),
        monitor_text({"dossier_overdue": 17}),
        notifier_text(sent=51),
    ])
    return Status(figures=figures, rate=19.96, uptime=3725, extra=("demo: 12,345 messages",),
                  services=(("dossier_tracker", "up"), ("deadline_monitor", "up"), ("scoring", "degraded"),
                            ("notifier", "up")))


def test_the_block_shows_the_handful_of_figures_and_the_log_file() -> None:
    block = render_block(a_status(), log_path="var/parwatch.log")
    text = "\n".join(block)
    assert len(block) <= 8
    assert "up 01:02:05" in block[0] and "var/parwatch.log" in block[0]
    assert "20.0/s" in text and "12,347 in all" in text and "2 rejected" in text
    assert "1,021" in text and "21 overdue" in text
    assert "17" in block[3] and "firing" in block[3]
    assert "52" in block[4] and "sent" in block[4]
    assert "scoring degraded" in text and "notifier up" in text
    assert block[-1].strip() == "demo: 12,345 messages"


def test_the_plain_line_is_one_line_with_the_same_figures() -> None:
    line = render_line(a_status())
    assert "\n" not in line and line.startswith("status: ")
    for part in ("events 20.0/s", "dossiers 1,021 open, 21 overdue", "alerts 17 firing", "notifications 52 sent",
                 "dossier_tracker up", "demo: 12,345 messages"):
        assert part in line


def test_a_live_console_redraws_the_block_in_place_and_writes_lines_above_it() -> None:
    out = io.StringIO()
    console = Console(out, live=True, width=lambda: 200)
    console.status(a_status(), log_path="var/parwatch.log")
    height = len(render_block(a_status(), log_path="var/parwatch.log"))
    assert "\x1b[1A" not in out.getvalue()  # nothing to erase the first time
    out.seek(0), out.truncate()
    console.say("notifier exited (code 1)")
    written = out.getvalue()
    erase = "\x1b[1A\x1b[2K" * height
    assert written.startswith(erase + "notifier exited (code 1)\n")
    assert written.endswith("notifier up\n  demo: 12,345 messages\n")  # the block again, below the line
    out.seek(0), out.truncate()
    console.close()
    console.say("parwatch stopped cleanly")
    assert out.getvalue() == "parwatch stopped cleanly\n"  # the last status stays on the screen


def test_a_plain_console_prints_a_status_line_and_never_moves_the_cursor() -> None:
    out = io.StringIO()
    console = Console(out, live=False)
    console.status(a_status(), log_path="var/parwatch.log")
    console.say("a line")
    console.status(a_status(), log_path="var/parwatch.log")
    lines = out.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines] == ["status", "a line", "status"]
    assert "\x1b" not in out.getvalue()


def record(name: str, level: int) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, "msg", None, None)


def test_only_lifecycle_lines_and_warnings_reach_the_terminal() -> None:
    assert for_the_console(record("parwatch.supervisor", logging.INFO))
    assert for_the_console(record("parwatch.demo", logging.WARNING))
    assert for_the_console(record("nats.aio.client", logging.ERROR))
    assert not for_the_console(record("services.notifier.service", logging.INFO))
    assert not for_the_console(record("parwatchx", logging.INFO))
    assert not for_the_console(record("httpx", logging.INFO))
    assert not for_the_console(record("parwatch.demo", logging.INFO))  # its progress is a line of the status


def test_a_live_block_is_cut_to_the_terminal_width_so_the_redraw_count_holds() -> None:
    out = io.StringIO()
    console = Console(out, live=True, width=lambda: 40)
    console.status(a_status(), log_path="var/parwatch.log")
    assert max(len(line) for line in out.getvalue().splitlines()) == 39
