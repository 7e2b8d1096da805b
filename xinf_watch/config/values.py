"""The plain values inside rules.yaml: durations, names, closed sets, regexes, versions, routes.

Each `check_*` takes a raw YAML value and returns the typed value or raises `ValueError` with a
finished message, `<what is wrong> (expected <what>)` (`fail` raises it); `one_of` makes the check
for a value of a closed set. The checks here need nothing but the value. Those that need the rest
of the file, and `each` (a check applied to every item of a list), are in `config/context.py`;
network values are in `config/networks.py`, paths and URLs in `config/locations.py`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

from xinf_watch.config.yamlsource import did_you_mean, not_one_of, show
from xinf_watch.formats import jsonlog, jsonpresets, nginx
from xinf_watch.userregex import UserRegex

SOURCE_FORMATS = ("nginx", "json", "haproxy", "xinference", "xinference-audit", "regex")
NGINX_PRESETS = tuple(nginx.NGINX_PRESETS)
JSON_PRESETS = tuple(jsonpresets.JSON_PRESETS)
EVENT_FIELDS = (
    "ts", "source", "ip", "ip_forwarded", "method", "path", "status", "outcome", "reason", "credential",
    "key", "owner", "key_state", "scope", "scope_allowed", "ip_allowed", "user_agent", "request_id",
    "fingerprint",
)  # fmt: skip
# The same lists as the parsers' (formats/jsonlog.py, formats/regex.py, formats/haproxy.py), so
# that a mistake is reported here with its line rather than later without one.
JSON_FIELDS = (*jsonlog.REQUIRED_FIELDS, *jsonlog.OPTIONAL_FIELDS, "duration_unit")
HAPROXY_FIELDS = ("captures",)
REGEX_GROUPS = (
    "ts", "ip", "method", "path", "request", "status", "credential", "bytes", "duration", "user_agent",
    "request_id",
)  # fmt: skip
DURATION_EXPECT = "expected e.g. 30s, 5m, 1h"
KEY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\Z")  # a name that is a mapping key (networks, notify groups)

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_NAME = re.compile(r"[^\s]+\Z")
_VERSION = re.compile(r"v?\d+(\.\d+)*\Z")


def parse_duration(text: str | int | float) -> float:
    """`30s`, `5m`, `1h30m`, `250ms`, `7d`, `2w`, or a bare number of seconds; ValueError otherwise."""
    if isinstance(text, bool):
        raise ValueError(f"not a duration: {text!r}")
    if isinstance(text, int | float):
        if not math.isfinite(text) or text < 0:
            raise ValueError(f"not a duration: {text!r}")
        return float(text)
    if not isinstance(text, str):
        raise ValueError(f"not a duration: {text!r}")
    s = text.strip()
    try:
        return parse_duration(float(s))
    except ValueError:
        pass
    total, pos = 0.0, 0
    while pos < len(s):
        match = _DURATION_PART.match(s, pos)
        if not match:
            raise ValueError(f"not a duration: {text!r}")
        total += float(match.group(1)) * _UNIT[match.group(2)]
        pos = match.end()
    if pos == 0:
        raise ValueError(f"not a duration: {text!r}")
    return total


def format_duration(seconds: float) -> str:
    """The short spelling of a duration: 90 -> `1m30s`, 0.25 -> `250ms`; parse_duration reads it back."""
    if 0 < seconds < 1:
        return f"{seconds * 1000:g}ms"
    out, rest = "", seconds
    for unit in ("w", "d", "h", "m"):
        whole = int(rest // _UNIT[unit])
        if whole:
            out, rest = out + f"{whole}{unit}", rest - whole * _UNIT[unit]
    return out + (f"{rest:g}s" if rest or not out else "")


def fail(message: str) -> NoReturn:
    raise ValueError(message)


def listify(value: Any) -> Any:
    return [value] if value is not None and not isinstance(value, list | tuple | dict) else value


def one_of(what: str, options: Iterable[str], *, optional: bool = False) -> Callable[..., str]:
    """A check for a value of a closed set (`optional`: None passes, for an optional field)."""
    names = tuple(str(o) for o in options)

    def check(value: Any, _ctx: Any = None) -> str:
        if value in names or (optional and value is None):
            return value  # type: ignore[no-any-return]
        return fail(not_one_of(value, what, names))

    return check


def check_duration(*, positive: bool) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        try:
            seconds = parse_duration(value)
        except ValueError:
            return fail(f"{show(value)} is not a duration ({DURATION_EXPECT})")
        if positive and seconds <= 0:
            return fail(f"{show(value)} is not a positive duration ({DURATION_EXPECT})")
        return seconds

    return check


def check_name(value: Any) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        return fail(f"{show(value)} is not a name (expected a name without spaces, e.g. gateway)")
    return value


def check_key_name(value: Any) -> str:
    """A name that is a mapping key (networks, notify groups): letters, digits, `_.-`."""
    if not isinstance(value, str) or not KEY_NAME.match(value):
        return fail(f"{show(value)} is not a valid name (expected letters, digits, _ . -, e.g. office)")
    return value


def check_regex_source(value: Any, *, time_optional: bool = False) -> str | None:
    """A regex source's pattern: compiles, and has the groups ts, ip, status, and path or request
    (`time_optional`: ts may be left out, the source has a container wrapper with its own time)."""
    if value is None:
        return None
    if not isinstance(value, str):
        return fail(f"{show(value)} is not a string (expected a regular expression)")
    try:
        groups = set(UserRegex(value).groupindex)
    except ValueError as exc:
        return fail(f"{exc} (expected a Python regular expression)")
    unknown = sorted(groups - set(REGEX_GROUPS))
    if unknown:
        return fail("group " + not_one_of(unknown[0], "a record field", REGEX_GROUPS))
    missing = [g for g in ("ts", "ip", "status") if g not in groups and not (g == "ts" and time_optional)]
    if "path" not in groups and "request" not in groups:
        missing.append("path")
    if missing:
        return fail(
            f"regex has no named group {', '.join(missing)} (expected named groups ts, ip, status, "
            "and path or request)"
        )
    return value


def check_log_format(value: Any) -> str | None:
    """An nginx log_format string (with $variables), or the name of a preset."""
    if value is None or (isinstance(value, str) and (value in NGINX_PRESETS or "$" in value)):
        return value
    return fail(
        f"{show(value)} is not an nginx log_format (expected a preset, {' or '.join(NGINX_PRESETS)}, "
        f"or a string of $variables{did_you_mean(value, NGINX_PRESETS)})"
    )


def check_version(value: Any) -> str | None:
    """An Xinference version: "4", "2.11"; a YAML number with a dot is refused (2.10 reads as 2.1)."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and _VERSION.match(value):
        return value
    if isinstance(value, float):
        return fail(f'{show(value)} is a number (expected a quoted version, e.g. "{value}")')
    return fail(f'{show(value)} is not a version (expected e.g. "4" or "2.11")')


def check_value_field(value: Any) -> str:
    """An event field, or `ip/<prefix>`: the client IP's subnet (prefix applied to IPv4 and IPv6)."""
    if isinstance(value, str) and value.startswith("ip/"):
        prefix = value[3:]
        if prefix.isdigit() and 1 <= int(prefix) <= 128:
            return value
        return fail(f"{show(value)} is not a subnet of ip (expected ip/<prefix length 1-128>, e.g. ip/24)")
    return one_of("an event field", EVENT_FIELDS)(value)


def check_method(value: Any, _ctx: Any = None) -> str:
    if isinstance(value, str) and value.isalpha():
        return value.upper()
    return fail(f"{show(value)} is not an HTTP method (expected e.g. GET, POST)")


def check_text(value: Any, _ctx: Any = None) -> str:
    if isinstance(value, str) and value:
        return value
    return fail(f"{show(value)} is not a non-empty string (expected a string)")


def check_route_path(value: Any, _ctx: Any = None) -> str:
    if isinstance(value, str) and value[:1] in ("/", "*"):
        return value
    return fail(f"{show(value)} is not a path (expected a path or glob starting with /, e.g. /v1/*)")
