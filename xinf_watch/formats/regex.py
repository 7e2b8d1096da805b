"""User-supplied regular expressions with named groups, for access logs no other format reads.

Rules:

* Groups: `ts`, `ip`, `status`, and `path` or `request` (a whole `"METHOD uri HTTP/x"` request
  line) are required; `method`, `credential`, `bytes`, `duration` (seconds), `user_agent`,
  `request_id`, `reason` are optional. Any other group name is an error (it is most likely a typo that would
  silently lose a field); use `(?:...)` for groups that are not fields.
* The pattern must match the whole line (`fullmatch`); a line it does not match is unparsed, a
  blank line skipped. It runs with a time bound (userregex.py): a match that runs out of time
  (catastrophic backtracking) is no match, so the line is unparsed. A `ts` that no parser reads,
  or a `status` that is not a number, makes the line unparsed; `-` and empty optional fields are absent.
* `ts` is read best effort: epoch seconds (ms/us/ns by size), ISO 8601, or `dd/Mon/yyyy:HH:MM:SS`
  with optional fraction and zone (nginx `$time_local`, HAProxy); the last value is cached.
* A source with a container `wrapper` may leave `ts` out: its lines then carry no time of their own
  (uvicorn's access lines on a container's stdout), and take the container runtime's
  (`time_from_runtime`: the records come out with `NO_TIME`, which the pipeline replaces).
"""

from __future__ import annotations

import math

from xinf_watch.formats.common import ABSENT, Parser, byte_count, split_request, to_float
from xinf_watch.formats.timeparse import LastValueCache, parse_any
from xinf_watch.model import LineResult, Record
from xinf_watch.userregex import UserRegex

GROUPS = (
    "ts", "ip", "method", "path", "request", "status",
    "credential", "bytes", "duration", "user_agent", "request_id", "reason",
)  # fmt: skip
NO_TIME = math.nan  # the time of a record whose line has none: its reader supplies it (ingest/wrappers.py)


def compile_regex(pattern: str | None, *, time_from_runtime: bool = False) -> Parser:
    """A parser for a user pattern; ValueError for a syntax error or missing/unknown groups.
    `time_from_runtime`: the lines are unwrapped from a container log, `ts` may be left out."""
    if not isinstance(pattern, str) or not pattern:
        raise ValueError("regex format needs a pattern")
    try:
        compiled = UserRegex(pattern)
    except ValueError as e:
        raise ValueError(f"regex pattern: {e}") from None
    names = compiled.groupindex
    unknown = sorted(set(names) - set(GROUPS))
    if unknown:
        raise ValueError(
            f"regex pattern: unknown group(s) {', '.join(unknown)} (expected {', '.join(GROUPS)})"
        )
    required = ("ip", "status") if time_from_runtime else ("ts", "ip", "status")
    missing = [name for name in required if name not in names]
    if "path" not in names and "request" not in names:
        missing.append("path (or request)")
    if missing:
        raise ValueError(f"regex pattern has no named group {', '.join(missing)}")
    return _build_parser(compiled)


def _build_parser(compiled: UserRegex) -> Parser:
    fullmatch = compiled.fullmatch
    has = set(compiled.groupindex)
    ts_of = LastValueCache(parse_any)
    timed = "ts" in has

    def optional(groups: dict[str, str | None], name: str) -> str | None:
        value = groups.get(name)
        return None if value is None or value in ABSENT else value

    def parse(line: str) -> Record | LineResult:
        if not line.strip():
            return LineResult.SKIPPED
        m = fullmatch(line)
        if m is None:
            return LineResult.UNPARSED
        groups = m.groupdict()
        ts_text, ip, status_text = groups.get("ts"), groups["ip"], groups["status"]
        ts = ts_of(ts_text) if ts_text else None if timed else NO_TIME
        if ts is None or not ip or not status_text or not status_text.isascii() or not status_text.isdigit():
            return LineResult.UNPARSED
        if len(status_text) > 3:
            return LineResult.UNPARSED
        path = groups.get("path")
        method = groups.get("method")
        if path is None or ("request" in has and method is None):
            request = groups.get("request")
            request_method, request_path = split_request(request) if request else ("", "")
            path = request_path if path is None else path
            method = request_method if method is None else method
        duration = optional(groups, "duration")
        return Record(
            ts=ts,
            ip=ip,
            method=method or "",
            path=path,
            status=int(status_text),
            credential=optional(groups, "credential"),
            bytes=byte_count(optional(groups, "bytes")),
            duration=to_float(duration),
            user_agent=optional(groups, "user_agent"),
            request_id=optional(groups, "request_id"),
            reason=optional(groups, "reason"),
        )

    return parse
