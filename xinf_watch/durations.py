"""Durations said the way a person reads them (`1h30m`), for alerts and reports alike.

A leaf: it imports nothing of xinf-watch, so the rule engine (`rules/summaries.py`, `rules/clockkinds.py`)
and the key tools (`keys/audit.py`) say a duration the same way without depending on each other.
"""

from __future__ import annotations


def describe_duration(seconds: float) -> str:
    """45s, 5m, 1h30m, 1d23h: at most two units, rounded down."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
        elif parts:
            break
        if len(parts) == 2:
            break
    return "".join(parts)
