"""What reaches people is escaped: `visible` is the one function that renders text from logs and
files (paths, user agents, file names, a receiver's error body) for a person, and `LogFormatter`
applies it to every log record the daemon writes.

Rules:
- Control characters (C0, DEL, C1), format characters (bidi embeddings, overrides and isolates
  U+202A-U+202E and U+2066-U+2069, marks, zero-width characters, tags), line and paragraph
  separators and lone surrogates are written as `\\xNN` / `\\uNNNN` / `\\UNNNNNNNN`: nothing read
  from outside can start a line, move the cursor, clear the screen or reorder what follows. All
  other text is kept as it is (a backslash too: `\\x1b` in the output may have been typed).
- The alert JSON in a notification body is read by people too: `visible_json` writes the same
  characters as JSON escapes (`\u2028`, `\u202e`: raw, they are valid JSON, yet break the line
  or reorder it), so the line stays one line and parses to exactly the data.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
import unicodedata
from collections.abc import Mapping
from typing import Any

import orjson

_HIDDEN = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})  # control, format, surrogate, line/para separator
_NOT_PLAIN = re.compile(r"[^\x20-\x7e]")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if unicodedata.category(char) not in _HIDDEN:
        return char
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _json_escape(match: re.Match[str]) -> str:
    char = match.group()
    if unicodedata.category(char) not in _HIDDEN:
        return char
    code = ord(char)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def visible_json(data: Any) -> str:
    """`data` as one line of JSON with every character `visible` escapes written as a JSON escape."""
    text = orjson.dumps(data).decode()
    if text.isascii() and "\x7f" not in text:
        return text
    return _NOT_PLAIN.sub(_json_escape, text)


def visible(text: object) -> str:
    """`text` (made a str) with every character that could forge or hide text written as an escape."""
    s = str(text)
    if s.isascii() and s.isprintable():
        return s
    return _NOT_PLAIN.sub(_escape, s)


def tell(message: str) -> None:
    """`message` on stderr, through `visible`: the default voice of stages that take a `log` callable."""
    print(visible(message), file=sys.stderr, flush=True)


def _arg(value: object) -> object:
    return value if isinstance(value, int | float) else visible(value)


class LogFormatter(logging.Formatter):
    """Escapes what a record carries: its arguments, or its whole message when it has none (a
    message composed before logging). Line breaks of a format string itself stay line breaks; a
    traceback keeps its frames, and its exception text is escaped."""

    def format(self, record: logging.LogRecord) -> str:
        if record.args:
            msg = "\n".join(visible(line) for line in str(record.msg).split("\n"))
            args: object = record.args
            if isinstance(args, Mapping):
                args = {k: _arg(v) for k, v in args.items()}
            else:
                args = tuple(_arg(a) for a in record.args)
            record = logging.makeLogRecord({**record.__dict__, "msg": msg, "args": args})
        else:
            record = logging.makeLogRecord({**record.__dict__, "msg": visible(record.getMessage())})
        return super().format(record)

    def formatException(self, ei: Any) -> str:
        """The traceback's frames (our code) as they are; the exception's own text escaped."""
        exc = traceback.TracebackException(*ei)
        what = [visible(line.rstrip("\n")) for line in exc.format_exception_only()]
        return "".join(["Traceback (most recent call last):\n", *exc.stack.format(), "\n".join(what)])
