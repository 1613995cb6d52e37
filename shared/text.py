"""Text from outside, made safe to show: on a terminal, in a log line, in an alert or an e-mail.

parwatch shows text it does not control (dead-letter subjects, codes, an
exception's message). Such text can hide or forge what a reader sees: an
escape sequence drives the terminal, a newline forges a second log record,
U+202E turns the rest of a line around, a zero-width character hides in a
code. Which characters do that is read from Unicode's own categories, not
from a hand list:

* ``Cc`` control characters (C0, DEL, C1: NUL, ESC, CR, LF, U+0085, ...);
* ``Cf`` format characters (the bidirectional controls U+200E/U+200F,
  U+061C, U+202A-U+202E, U+2066-U+2069, zero-width characters, U+FEFF, ...);
* ``Zl`` and ``Zp``, the line and paragraph separators U+2028 and U+2029;
* ``Cs`` lone surrogates, which cannot even be written out as UTF-8.

:func:`safe_text` removes them (a line break becomes a space) and caps the
length, for what a person reads; :func:`escape_text` writes them as escapes
instead (``\\n``, ``\\x1b``, ``\\u202e``), for logs, where what was there
matters.
"""

from __future__ import annotations

import unicodedata

#: Unicode categories of the characters that control, reorder, hide or break text.
UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
#: What :func:`safe_text` turns into a space rather than dropping: line breaks and tabs.
_BREAKS = frozenset("\t\n\v\f\r\x1c\x1d\x1e\x85\u2028\u2029")
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}
ELLIPSIS = "…"


def is_unsafe(char: str) -> bool:
    """Whether one character controls, reorders, hides or breaks text (its category is unsafe)."""
    return unicodedata.category(char) in UNSAFE_CATEGORIES


def safe_text(value: object, *, limit: int = 200) -> str:
    """``value`` as text a person can read without being misled: no control, format, separator or surrogate
    character (line breaks and tabs become a space, the rest is dropped), at most ``limit`` characters (cut
    with an ellipsis)."""
    text = value if isinstance(value, str) else str(value)
    if not text.isprintable():  # the fast path: printable text has nothing to remove
        text = "".join(" " if c in _BREAKS else c for c in text if c in _BREAKS or not is_unsafe(c))
    if len(text) > limit:
        return text[: max(limit - 1, 0)] + ELLIPSIS if limit > 0 else ""
    return text


def escape_text(value: object, *, limit: int | None = None, keep: str = "") -> str:
    """``value`` on one line: each unsafe character written as its escape (``\\n``, ``\\x1b``, ``\\u202e``)
    and a backslash doubled, so the line cannot be forged and reads back unambiguously; then at most ``limit``
    UTF-8 bytes (see :func:`clip_bytes`). Characters in ``keep`` are left as they are (a JSON encoder escapes
    newlines by itself)."""
    text = value if isinstance(value, str) else str(value)
    if "\\" in text or not text.isprintable():
        text = "".join(c if c in keep else _escape(c) for c in text)
    return text if limit is None else clip_bytes(text, limit)


def _escape(char: str) -> str:
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    if not is_unsafe(char):
        return char
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def clip_bytes(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` UTF-8 bytes: if longer, its head and its tail with the middle cut out
    and counted (the tail of a traceback names the error, so it is kept)."""
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= limit:
        return text
    marker = f" {ELLIPSIS}[{len(raw)} bytes, cut]{ELLIPSIS} "
    room = limit - len(marker.encode())
    if room <= 0:
        return raw[:limit].decode("utf-8", "ignore")
    head = raw[: room // 2].decode("utf-8", "ignore")
    tail = raw[len(raw) - (room - room // 2):].decode("utf-8", "ignore")
    return f"{head}{marker}{tail}"
