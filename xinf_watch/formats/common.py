"""What the log parsers share: the `Parser` type and lenient value conversions.

The conversions never raise and return `None` for absent values. Logs write "absent" as `-`
(nginx, HAProxy, Apache) or `""` (JSON logs); both become `None`. Numbers that do not parse
become `None` too: a bad byte count must not cost the whole record.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import orjson

from xinf_watch.model import LineResult, Record

# A parser turns one line (without its newline) into a record, or says why it is not one.
Parser = Callable[[str], Record | LineResult]

ABSENT = frozenset(("", "-"))

_HTTP_VERSION = re.compile(r"HTTP/[0-9.]+", re.ASCII)
_NGINX_ESCAPE = re.compile(rb"\\x([0-9A-Fa-f]{2})")
_HAPROXY_ESCAPE = re.compile(rb"#([0-9A-Fa-f]{2})")
_GO_DURATION_PART = re.compile(r"([0-9]*\.?[0-9]+)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def json_object(line: str) -> dict[str, Any] | LineResult:
    """One JSON-lines record as a dict: blank -> SKIPPED, anything but an object -> UNPARSED."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return LineResult.SKIPPED if not line.strip() else LineResult.UNPARSED
    return obj if type(obj) is dict else LineResult.UNPARSED


def split_request(request: str) -> tuple[str, str]:
    """`"GET /v1/models HTTP/1.1"` -> ("GET", "/v1/models"); no method and URI -> ("", "")."""
    parts = request.split(" ")
    if len(parts) == 3 and parts[0] and parts[2].startswith("HTTP/"):
        return parts[0], parts[1]
    method, sep, rest = request.partition(" ")
    if not sep or not method or not rest:
        return "", ""
    uri, sep, version = rest.rpartition(" ")
    if sep and _HTTP_VERSION.fullmatch(version):
        return method, uri
    return method, rest  # HTTP/0.9, or a request line cut short


# A byte count of 14 digits (10 TB) or more in one line is no real response: such a field is
# dropped, so that the metrics' sums of them stay well inside 64 bits (JSON, the state database).
BYTE_DIGITS = 13
MAX_BYTES = 10**BYTE_DIGITS


def to_int(text: str | None) -> int | None:
    """A non-negative decimal integer (ASCII digits only), else None."""
    if text is None or len(text) > 20 or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def byte_count(text: str | None) -> int | None:
    """A byte count as logged (ASCII digits, at most `BYTE_DIGITS`), else None."""
    return to_int(text) if text is not None and len(text) <= BYTE_DIGITS else None


def to_float(text: str | None) -> float | None:
    if text is None or len(text) > 40:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def sum_of_times(text: str | None) -> float | None:
    """nginx `$upstream_response_time`: `0.012`, `-`, `0.1, 0.2` or `0.1 : 0.2` (one per upstream tried)."""
    if text is None or text in ABSENT:
        return None
    total = 0.0
    seen = False
    for part in text.replace(":", ",").split(","):
        value = to_float(part.strip())
        if value is not None:
            total += value
            seen = True
    return total if seen else None


def go_duration(text: str) -> float | None:
    """Go's `time.Duration.String()` form (`52.453547ms`, `1m2.5s`) -> seconds."""
    if not text or len(text) > 64:
        return None
    sign = -1.0 if text[0] == "-" else 1.0
    pos = 1 if text[0] in "+-" else 0
    if pos == len(text):
        return None
    total = 0.0
    while pos < len(text):
        m = _GO_DURATION_PART.match(text, pos)
        if m is None:
            return None
        total += float(m.group(1)) * _GO_UNITS[m.group(2)]
        pos = m.end()
    return sign * total


def unescape_nginx(text: str) -> str:
    """Undo nginx's default log escaping (`"` -> `\\x22`, bytes >= 0x7f -> `\\xHH`)."""
    return _unescape(text, _NGINX_ESCAPE) if "\\x" in text else text


def unescape_haproxy(text: str) -> str:
    """Undo HAProxy's log escaping of captures and the request (`"`, `#`, `{|}`, controls -> `#HH`)."""
    return _unescape(text, _HAPROXY_ESCAPE) if "#" in text else text


def _unescape(text: str, escape: re.Pattern[bytes]) -> str:
    """`text` with each match of `escape` (its group 1: two hex digits) replaced by that byte.

    The callers test for their escape marker first: most values have none, and they run for
    several fields of every line.
    """
    raw = escape.sub(lambda m: bytes((int(m.group(1), 16),)), text.encode("utf-8", "surrogatepass"))
    return raw.decode("utf-8", "replace")
