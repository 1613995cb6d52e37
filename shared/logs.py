"""Log records, one line each, whatever they carry.

A log line may quote what came from outside: an exception's message, a
subject, a code. The formatters here make every record one line of bounded
length, whatever its arguments, for every logger of the process (they sit on
the root handler): control, format and line-separator characters are written
as escapes (:func:`shared.text.escape_text`), a traceback stays on the
record's line (escaped in text, in the ``exc`` field in JSON), and a record
is at most :data:`MAX_RECORD_BYTES` UTF-8 bytes, its middle cut out if
longer (the head says what happened, the tail of a traceback names the
error). So no input forges a second record, drives the reader's terminal, or
fills the log with one message.
"""

from __future__ import annotations

import json
import logging

from shared.text import clip_bytes, escape_text

#: The longest log record, in UTF-8 bytes (a whole line, traceback included).
MAX_RECORD_BYTES = 4096
_MSG_BYTES = 2048  # JSON: the message's share of a record; the traceback's follows
_EXC_BYTES = 1792


class OneLineFormatter(logging.Formatter):
    """:class:`logging.Formatter` whose record, traceback included, is one escaped line of bounded length."""

    def format(self, record: logging.LogRecord) -> str:
        return escape_text(super().format(record), limit=MAX_RECORD_BYTES)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``ts``, ``level``, ``logger``, ``msg`` and, with an exception, ``exc``.

    Free text is escaped as in the text format (the traceback keeps its line breaks, which JSON escapes), and
    the fields shrink until the line fits :data:`MAX_RECORD_BYTES`: JSON's own escapes can double a string.
    """

    def format(self, record: logging.LogRecord) -> str:
        msg = escape_text(record.getMessage())
        exc = escape_text(self.formatException(record.exc_info), keep="\n") if record.exc_info else None
        head = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": escape_text(record.levelname, limit=32),
            "logger": escape_text(record.name, limit=128),
        }
        line = ""
        for share in (1, 2, 4, 8):
            out = head | {"msg": clip_bytes(msg, _MSG_BYTES // share)}
            if exc is not None:
                out["exc"] = clip_bytes(exc, _EXC_BYTES // share)
            line = json.dumps(out, ensure_ascii=False)
            if len(line.encode("utf-8")) <= MAX_RECORD_BYTES:
                break
        return line


def one_line_handler(fmt: str, *, json_lines: bool = False) -> logging.Handler:
    """A stderr handler with :class:`OneLineFormatter` (``fmt``) or :class:`JsonFormatter`."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if json_lines else OneLineFormatter(fmt))
    return handler
