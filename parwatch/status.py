"""The live status `parwatch up` and `parwatch demo` show on the terminal.

The figures are read the way an operator reads them: each service's
``/metrics`` over HTTP, parsed with prometheus_client's parser. A figure whose
service does not answer, or does not export it yet, is shown as ``?``, never
as zero.

On a terminal the status is a block of a few lines redrawn in place
(:class:`Console`, plain ANSI: no library, no network); anywhere else (CI, a
pipe, a file) it is one ``status:`` line printed at a slow interval, so a log
of the output stays readable. Everything per event (each alert, each
notification) goes to the log file in the data folder, never here.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO

from prometheus_client.parser import text_string_to_metric_families

#: Shown for a figure that cannot be read (its service is down, or does not export it).
UNKNOWN = "?"


@dataclass(frozen=True)
class Figures:
    """The handful of figures the status shows, summed over every label; ``None``: not readable."""

    events: float | None = None  # parwatch_events_total, every stream and result (dossier_tracker)
    rejected: float | None = None  # parwatch_events_total{result="rejected"}
    dossiers_open: float | None = None  # parwatch_dossiers_open, every state (dossier_tracker)
    dossiers_overdue: float | None = None  # parwatch_dossiers_open{state="overdue"}
    alerts_firing: float | None = None  # parwatch_monitor_alerts_firing (deadline_monitor)
    notifications_sent: float | None = None  # parwatch_notifications_total{result="sent"} (notifier)
    notifications_failed: float | None = None  # parwatch_notifications_total{result="failed"}


Sample = tuple[str, Mapping[str, str], float]


@dataclass(frozen=True)
class Exposition:
    """What one or more ``/metrics`` texts hold: the metric names declared, and every sample."""

    names: frozenset[str]
    samples: tuple[Sample, ...]

    def sum(self, name: str, **labels: str) -> float | None:
        """The sum of a metric's samples whose labels match: 0 for a declared metric without a matching
        sample, ``None`` for a metric no text declares (its service did not answer)."""
        if name not in self.names:
            return None
        return float(sum(v for n, lab, v in self.samples
                         if n == name and all(lab.get(k) == want for k, want in labels.items())))


def parse_exposition(texts: Iterable[str]) -> Exposition:
    """Parse Prometheus text expositions; a text that does not parse counts as not answered."""
    names: set[str] = set()
    samples: list[Sample] = []
    for text in texts:
        try:
            families = list(text_string_to_metric_families(text))
        except ValueError:
            continue
        for family in families:
            names.add(family.name)
            if family.type == "counter":
                names.add(f"{family.name}_total")  # the parser names a counter's family without its suffix
            samples += [(s.name, s.labels, s.value) for s in family.samples]
    return Exposition(frozenset(names), tuple(samples))


def figures_from_metrics(texts: Iterable[str]) -> Figures:
    """The status figures from the ``/metrics`` texts of the services that answered."""
    e = parse_exposition(texts)
    return Figures(
        events=e.sum("parwatch_events_total"),
        rejected=e.sum("parwatch_events_total", result="rejected"),
        dossiers_open=e.sum("parwatch_dossiers_open"),
        dossiers_overdue=e.sum("parwatch_dossiers_open", state="overdue"),
        alerts_firing=e.sum("parwatch_monitor_alerts_firing"),
        notifications_sent=e.sum("parwatch_notifications_total", result="sent"),
        notifications_failed=e.sum("parwatch_notifications_total", result="failed"),
    )


def event_rate(before: Figures | None, after: Figures, seconds: float) -> float | None:
    """Events per second between two readings; ``None`` without two readings, or across a counter reset
    (the tracker restarted: its in-memory counter starts from zero)."""
    if before is None or before.events is None or after.events is None or seconds <= 0:
        return None
    if after.events < before.events:
        return None
    return (after.events - before.events) / seconds


@dataclass(frozen=True)
class Status:
    """One reading of the stack: the figures, the event rate, and each service's health."""

    figures: Figures
    rate: float | None
    services: tuple[tuple[str, str], ...]  # (name, up | degraded | starting | crashed | missing)
    uptime: float = 0.0
    extra: tuple[str, ...] = ()  # lines a companion (the demo feed) adds


def _n(value: float | None) -> str:
    return UNKNOWN if value is None else f"{value:,.0f}"


def _rate(value: float | None) -> str:
    return UNKNOWN if value is None else f"{value:,.1f}/s"


def _uptime(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _services(status: Status, sep: str) -> str:
    return sep.join(f"{name} {state}" for name, state in status.services)


def render_block(status: Status, *, log_path: str) -> list[str]:
    """The few lines redrawn on a terminal."""
    f = status.figures
    lines = [
        f"── status (up {_uptime(status.uptime)}; every alert and notice goes to {log_path}) ──",
        f"  events         {_rate(status.rate):>10}   {_n(f.events)} in all, {_n(f.rejected)} rejected",
        f"  dossiers       {_n(f.dossiers_open):>10}   open, {_n(f.dossiers_overdue)} overdue",
        f"  alerts         {_n(f.alerts_firing):>10}   firing",
        f"  notifications  {_n(f.notifications_sent):>10}   sent, {_n(f.notifications_failed)} failed",
        f"  services       {_services(status, ' · ')}",
    ]
    lines += [f"  {line}" for line in status.extra]
    return lines


def render_line(status: Status) -> str:
    """The one line printed at a slow interval when the output is not a terminal."""
    f = status.figures
    parts = [
        f"events {_rate(status.rate)} ({_n(f.events)} in all, {_n(f.rejected)} rejected)",
        f"dossiers {_n(f.dossiers_open)} open, {_n(f.dossiers_overdue)} overdue",
        f"alerts {_n(f.alerts_firing)} firing",
        f"notifications {_n(f.notifications_sent)} sent, {_n(f.notifications_failed)} failed",
        f"services {_services(status, ', ')}",
        *status.extra,
    ]
    return "status: " + " · ".join(parts)


class StatusReader:
    """Turns scrapes into :class:`Status` readings, keeping the previous one for the event rate."""

    def __init__(self, *, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.started = clock()
        self._last: tuple[float, Figures] | None = None

    def read(self, texts: Iterable[str], *, services: Sequence[tuple[str, str]],
             extra: Sequence[str] = ()) -> Status:
        now = self.clock()
        figures = figures_from_metrics(texts)
        before = self._last
        rate = event_rate(before[1] if before else None, figures, now - before[0] if before else 0.0)
        self._last = (now, figures)
        return Status(figures=figures, rate=rate, services=tuple(services), uptime=now - self.started,
                      extra=tuple(extra))


# -- the terminal -------------------------------------------------------------------------------------------

_UP_AND_CLEAR = "\x1b[1A\x1b[2K"  # cursor one line up, erase that line


class Console:
    """The supervisor's output: plain lines (the URL block, lifecycle messages) and the status.

    ``live`` (a terminal): the status block is redrawn in place; a line said meanwhile is written above it.
    Otherwise the status is a ``status:`` line each time :meth:`status` is called (the caller paces it).
    """

    def __init__(self, out: IO[str], *, live: bool, width: Callable[[], int] | None = None) -> None:
        self.out = out
        self.live = live
        self.width = width or (lambda: shutil.get_terminal_size().columns)
        self._drawn = 0  # lines of the status block now on the screen
        self._block: list[str] = []
        # Log records may come from other threads (the demo feed's) and from the signal handler, which runs in
        # the main thread, possibly while it draws: re-entrant, so that never deadlocks.
        self._lock = threading.RLock()

    def say(self, text: str) -> None:
        with self._lock:
            self._erase()
            self.out.write(text + "\n")
            self._draw()
            self.out.flush()

    def status(self, status: Status, *, log_path: str) -> None:
        with self._lock:
            if self.live:
                self._erase()
                self._block = render_block(status, log_path=log_path)
                self._draw()
            else:
                self.out.write(render_line(status) + "\n")
            self.out.flush()

    def close(self) -> None:
        """Leave the last status on the screen; what follows is written below it."""
        with self._lock:
            self._drawn = 0
            self._block = []

    def _erase(self) -> None:
        self.out.write(_UP_AND_CLEAR * self._drawn)
        self._drawn = 0

    def _draw(self) -> None:
        """Each line cut to the terminal's width: a wrapped line would throw off the count of lines to erase."""
        if self.live and self._block:
            width = max(20, self.width() - 1)
            self.out.write("\n".join(line[:width] for line in self._block) + "\n")
            self._drawn = len(self._block)


class ConsoleHandler(logging.Handler):
    """Log records for the terminal, written through the :class:`Console` so they do not tear the status."""

    def __init__(self, console: Console, formatter: logging.Formatter) -> None:
        super().__init__()
        self.console = console
        self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.console.say(self.format(record))
        except Exception:  # a broken terminal must not stop the supervisor
            self.handleError(record)


#: Loggers whose INFO lines the live status already shows (the demo feed's progress): the log file only.
SHOWN_IN_STATUS = frozenset({"parwatch.demo"})


def for_the_console(record: logging.LogRecord) -> bool:
    """What reaches the terminal: warnings and errors, and the supervisor's own lifecycle lines
    (``parwatch.*`` loggers at INFO, but for what the status shows); everything else only reaches the log file."""
    if record.levelno >= logging.WARNING:
        return True
    if record.name in SHOWN_IN_STATUS:
        return False
    return record.name == "parwatch" or record.name.startswith("parwatch.")


__all__ = [
    "Console",
    "ConsoleHandler",
    "Figures",
    "Status",
    "StatusReader",
    "event_rate",
    "figures_from_metrics",
    "for_the_console",
    "render_block",
    "render_line",
]
