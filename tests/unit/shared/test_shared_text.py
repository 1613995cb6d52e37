"""Text from outside made safe to show (shared.text), and log records one line each (shared.logs)."""

from __future__ import annotations

import json
import logging
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.logs import MAX_RECORD_BYTES, JsonFormatter, OneLineFormatter
from shared.text import clip_bytes, escape_text, is_unsafe, safe_text

BIDI = ["\u200e", "\u200f", "\u061c", "\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068",
        "\u2069"]
CONTROLS = ["\x00", "\x07", "\x1b", "\x7f", "\x9b", "\u200b", "\ufeff", "\ud800"]
BREAKS = ["\n", "\r", "\t", "\x0b", "\x85", "\u2028", "\u2029"]


@pytest.mark.parametrize("char", BIDI + CONTROLS)
def test_safe_text_strips_controls_and_bidirectional_characters(char: str) -> None:
    assert safe_text(f"PTP{char}X") == "PTPX"


@pytest.mark.parametrize("char", BREAKS)
def test_safe_text_turns_a_line_break_into_a_space(char: str) -> None:
    assert safe_text(f"PTP{char}X") == "PTP X"


def test_safe_text_turns_line_breaks_into_spaces_and_keeps_vietnamese() -> None:
    assert safe_text("Hồ sơ\nquá hạn\r\n\tngay") == "Hồ sơ quá hạn   ngay"
    assert safe_text("Phòng Tư pháp — ok") == "Phòng Tư pháp — ok"
    assert safe_text("\x1b[31mred\x1b[0m") == "[31mred[0m"  # no ESC left: the terminal sees plain text


def test_safe_text_caps_the_length() -> None:
    assert safe_text("x" * 500, limit=10) == "x" * 9 + "…"
    assert safe_text("short", limit=10) == "short"
    assert safe_text(12345) == "12345"


@settings(max_examples=200, deadline=None)
@given(st.text(), st.integers(min_value=1, max_value=300))
def test_safe_text_never_lets_an_unsafe_character_through(text: str, limit: int) -> None:
    out = safe_text(text, limit=limit)
    assert len(out) <= limit
    assert not any(is_unsafe(c) for c in out)


def test_escape_text_shows_what_was_there_on_one_line() -> None:
    assert escape_text("a\nb\x1b[2J\u202ec\\d") == "a\\nb\\x1b[2J\\u202ec\\\\d"
    assert escape_text("Hồ sơ") == "Hồ sơ"
    assert escape_text("a\nb", keep="\n") == "a\nb"


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_escape_text_leaves_no_unsafe_character(text: str) -> None:
    assert not any(is_unsafe(c) for c in escape_text(text))


def test_clip_bytes_keeps_head_and_tail_within_the_limit() -> None:
    text = "HEAD" + "ệ" * 10_000 + "TAIL"
    out = clip_bytes(text, 200)
    assert len(out.encode()) <= 200
    assert out.startswith("HEAD") and out.endswith("TAIL") and "bytes, cut" in out
    assert clip_bytes("short", 200) == "short"


# -- log records ---------------------------------------------------------------------------------------------------

FORGED = "evil\n2026-01-01 00:00:00 ERROR notifier forged: \x1b[31m\u202e"


def _record(msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise KeyError(FORGED)
        except KeyError:
            exc_info = sys.exc_info()
    return logging.LogRecord("shared.consumer", logging.WARNING, __file__, 1, msg, args, exc_info)


@pytest.mark.parametrize("exc", [False, True])
def test_a_text_record_is_one_escaped_line(exc: bool) -> None:
    formatter = OneLineFormatter("%(levelname)s %(name)s: %(message)s")
    line = formatter.format(_record("rejected reason=%s", FORGED, exc=exc))
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\u202e" not in line
    assert line.startswith("WARNING shared.consumer: rejected reason=evil\\n2026-01-01")
    if exc:
        assert "Traceback (most recent call last):\\n" in line and "KeyError" in line


@pytest.mark.parametrize("exc", [False, True])
def test_a_json_record_is_one_line_and_keeps_its_traceback_in_a_field(exc: bool) -> None:
    line = JsonFormatter().format(_record("rejected reason=%s", FORGED, exc=exc))
    assert "\n" not in line and "\x1b" not in line and "\u202e" not in line and "\u2028" not in line
    out = json.loads(line)
    assert out["msg"].startswith("rejected reason=evil\\n2026")
    if exc:
        assert out["exc"].startswith("Traceback (most recent call last):\n") and "KeyError" in out["exc"]
    else:
        assert "exc" not in out


@pytest.mark.parametrize("formatter", [OneLineFormatter("%(message)s"), JsonFormatter()], ids=["text", "json"])
@pytest.mark.parametrize("payload", ["x" * 48_000, '"\\' * 24_000, "\x00" * 48_000, "ệ" * 20_000])
def test_no_record_is_longer_than_the_cap(formatter: logging.Formatter, payload: str) -> None:
    line = formatter.format(_record("message=%s", payload, exc=True))
    assert len(line.encode()) <= MAX_RECORD_BYTES
    assert "KeyError" in line  # the traceback's tail, naming the error, is kept


def test_the_service_logging_setup_puts_the_formatter_on_every_logger(capsys: pytest.CaptureFixture[str]) -> None:
    from shared.service import setup_logging
    from shared.settings import CommonSettings

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging(CommonSettings(log_format="text"), service="test")
        logging.getLogger("nats.aio.client").error("third party says %s", FORGED)
        err = capsys.readouterr().err
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    assert err.count("\n") == 1 and "third party says evil\\n2026" in err
