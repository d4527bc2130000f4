"""Names and messages as one line of text, fit to store in the audit log and to show on a terminal.

A POSIX file name is bytes: it may not be UTF-8 (Python holds such bytes as lone surrogates, which no database,
JSON document or terminal takes), and it may hold a newline or an ESC (which would split a line, or drive the
terminal). ``path_text`` is the one form a path is shown and stored in: printable characters as they are,
everything else escaped, and reversibly (``path_from_text`` gives the path back byte for byte):

    ``\\\\``          a backslash
    ``\\n \\r \\t``   newline, carriage return, tab
    ``\\xNN``         another ASCII control character (NN < 80), or a byte that is not UTF-8 (NN >= 80)
    ``\\uNNNN``       a C1 control, a line or paragraph separator, a bidirectional override

``printable`` escapes the same characters but not the backslash, for messages: it leaves a ``path_text`` as it is.

>>> path_text(os.fsdecode(b"/photos/b\\xff\\n.jpg"))
'/photos/b\\\\xff\\\\n.jpg'
>>> path_from_text(path_text(os.fsdecode(b"/photos/b\\xff\\n.jpg"))) == Path(os.fsdecode(b"/photos/b\\xff\\n.jpg"))
True
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["iso_time", "path_from_text", "path_text", "printable"]


def iso_time(value: datetime) -> str:
    """A time as every output of efface writes it: ISO 8601 in UTC with microseconds and ``Z``."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# Characters that break a line or drive a terminal: C0 and C1 controls, DEL, the Unicode line and paragraph
# separators, the bidirectional marks and overrides (a name that reads backwards), and lone surrogates (bytes
# that were not UTF-8).
_UNSAFE = "\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff"
_UNSAFE_IN_PATH = re.compile(f"[\\\\{_UNSAFE}]")
_UNSAFE_IN_MESSAGE = re.compile(f"[{_UNSAFE}]")
_SHORT = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_ESCAPED = re.compile(r"\\(\\|n|r|t|x[0-9a-f]{2}|u[0-9a-f]{4})")
_UNESCAPED = {"\\": "\\", "n": "\n", "r": "\r", "t": "\t"}
# os.fsdecode holds an undecodable byte B as the lone surrogate U+DC00 + B (B >= 0x80).
_SURROGATE_ESCAPE_BASE = 0xDC00


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    short = _SHORT.get(char)
    if short is not None:
        return short
    code = ord(char)
    if code < 0x80:
        return f"\\x{code:02x}"
    if _SURROGATE_ESCAPE_BASE + 0x80 <= code <= _SURROGATE_ESCAPE_BASE + 0xFF:
        return f"\\x{code - _SURROGATE_ESCAPE_BASE:02x}"
    return f"\\u{code:04x}"


def path_text(path: str | os.PathLike[str]) -> str:
    """The path as one line of printable text, escaped losslessly (see the module docstring)."""
    return _UNSAFE_IN_PATH.sub(_escape, os.fspath(path))


def printable(text: str) -> str:
    """A message as one line of printable text: controls, separators, overrides and undecodable bytes escaped.

    Backslashes are kept, so ``printable(path_text(p)) == path_text(p)``.
    """
    return _UNSAFE_IN_MESSAGE.sub(_escape, text)


def _unescape(match: re.Match[str]) -> str:
    body = match.group(1)
    if body in _UNESCAPED:
        return _UNESCAPED[body]
    code = int(body[1:], 16)
    if body[0] == "x" and code >= 0x80:
        return chr(_SURROGATE_ESCAPE_BASE + code)
    return chr(code)


def path_from_text(text: str) -> Path:
    """The path a ``path_text`` stands for, byte for byte (``os.fsencode`` of it gives the name's bytes)."""
    return Path(_ESCAPED.sub(_unescape, text))
