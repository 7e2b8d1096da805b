"""Timestamp parsing for the log parsers: strings and numbers as logs write them -> Unix seconds (UTC).

Every function returns `None` for what it cannot read and never raises. Times without a zone are
taken as UTC. `LastValueCache` wraps any of them: access logs repeat the same timestamp string for
every request in a second, so remembering only the last string and its value removes nearly all of
the parsing cost without an unbounded cache.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime

MONTHS = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), start=1
    )
}

# 28/Nov/2026:07:05:56 +0000 (nginx $time_local, Apache %t), with or without fraction and zone.
_CLF = re.compile(
    r"\[?([0-9]{1,2})/([A-Za-z]{3})/([0-9]{4}):([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]{1,9})?"
    r"(?: ?([+-])([0-9]{2}):?([0-9]{2}))?\]?",
    re.ASCII,
)
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)


def epoch_seconds(value: float) -> float | None:
    """An epoch number in seconds, milliseconds, microseconds or nanoseconds -> seconds."""
    if not math.isfinite(value):
        return None
    magnitude = abs(value)
    # Seconds stay below 1e11 until the year 5138; the other units are at least 1000x larger.
    if magnitude >= 1e17:
        return value / 1e9
    if magnitude >= 1e14:
        return value / 1e6
    if magnitude >= 1e11:
        return value / 1e3
    return float(value)


def parse_clf(text: str) -> float | None:
    """`28/Nov/2026:07:05:56 +0000`, `28/Nov/2026:07:11:45.037` (no zone: UTC)."""
    m = _CLF.fullmatch(text)
    if m is None:
        return None
    day, mon, year, hour, minute, second, frac, sign, off_h, off_m = m.groups()
    month = MONTHS.get(mon.capitalize())
    if month is None:
        return None
    try:
        ts = datetime(int(year), month, int(day), int(hour), int(minute), int(second), tzinfo=UTC).timestamp()
    except (ValueError, OverflowError):
        return None
    if frac:
        ts += float(frac)
    if sign:
        offset = int(off_h) * 3600 + int(off_m) * 60
        ts += -offset if sign == "+" else offset
    return ts


def parse_iso8601(text: str) -> float | None:
    """ISO 8601 / RFC 3339 (`2026-11-28T07:06:41+00:00`, `...41.123456789Z`, `2026-11-28 07:06:41,494`)."""
    if len(text) < 8 or len(text) > 64 or not text[:4].isdigit():
        return None
    try:
        dt = datetime.fromisoformat(text)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return dt.timestamp()
    except (ValueError, OverflowError):
        return None


def parse_epoch_text(text: str) -> float | None:
    """`1795849757.5353775`, `1795849757537` (ms) ... as text."""
    if len(text) > 40 or _NUMBER.fullmatch(text) is None:
        return None
    try:
        return epoch_seconds(float(text))
    except (ValueError, OverflowError):
        return None


def parse_any(text: str) -> float | None:
    """Best effort: epoch number, ISO 8601, or the nginx/Apache/HAProxy `dd/Mon/yyyy:HH:MM:SS` form."""
    text = text.strip()
    if not text:
        return None
    first = text[0]
    if first == "[" or (len(text) > 2 and text[2] == "/") or (len(text) > 1 and text[1] == "/"):
        return parse_clf(text)
    ts = parse_epoch_text(text)
    if ts is not None:
        return ts
    return parse_iso8601(text)


class LastValueCache:
    """Remembers the last string given to `parse` and its result."""

    __slots__ = ("_parse", "_last_text", "_last_value")

    def __init__(self, parse: Callable[[str], float | None]) -> None:
        self._parse = parse
        self._last_text: str | None = None
        self._last_value: float | None = None

    def __call__(self, text: str) -> float | None:
        if text == self._last_text:
            return self._last_value
        value = self._parse(text)
        self._last_text = text
        self._last_value = value
        return value
