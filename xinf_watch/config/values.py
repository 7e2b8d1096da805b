"""The values inside rules.yaml: durations, names, paths, networks, URLs, regexes, references.

Each `check_*` takes a raw YAML value and returns the typed value or raises `ValueError` with a
finished message, `<what is wrong> (expected <what>)`; `each` applies one to every item of a list
(a scalar is a one-item list) and reports bad items under their index. Checks that need the rest
of the file (network names, notify groups, source names, the rules file's directory, the
environment) get a `LoadContext`, built from the raw data before validation so that a reference can
be checked even when other sections have problems of their own.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit

from pydantic import ValidationInfo

from xinf_watch.config.yamlsource import Problems, did_you_mean, not_one_of, show
from xinf_watch.formats import jsonlog, nginx
from xinf_watch.userregex import UserRegex

Network = IPv4Network | IPv6Network
T = TypeVar("T")

SOURCE_FORMATS = ("nginx", "json", "haproxy", "xinference", "xinference-audit", "regex")
NGINX_PRESETS = tuple(nginx.NGINX_PRESETS)
JSON_PRESETS = tuple(jsonlog.JSON_PRESETS)
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
INTERNAL_NETWORKS: tuple[Network, ...] = tuple(
    ip_network(cidr)
    for cidr in ("127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "::1/128", "fc00::/7")
)
DURATION_EXPECT = "expected e.g. 30s, 5m, 1h"

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_NAME = re.compile(r"[^\s]+\Z")
_KEY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\Z")
_ENV = re.compile(r"\$\{([^}]*)\}")
_VERSION = re.compile(r"v?\d+(\.\d+)*\Z")
_USERINFO = re.compile(r"\A([^:/@]*:/*)?.*@", re.DOTALL)  # scheme: and slashes, then all up to the last @


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


@dataclass(frozen=True, slots=True)
class LoadContext:
    base_dir: Path  # relative paths are relative to this (the rules file's directory)
    environ: Mapping[str, str]
    networks: Mapping[str, tuple[Network, ...]]
    notify_groups: tuple[str, ...] | None  # None: the notify section is broken, references not checked
    source_names: tuple[str, ...] | None  # the same for sources

    def notify_group(self, value: Any) -> str:
        return _reference(value, self.notify_groups, "a notify group", "notify")

    def source_name(self, value: Any) -> str:
        return _reference(value, self.source_names, "a source name", "sources")

    def network_ref(self, value: Any) -> tuple[Network, ...]:
        """A CIDR, or the name of a network from `networks:` (or the built-in `internal`)."""
        if isinstance(value, str) and value in self.networks:
            return self.networks[value]
        if isinstance(value, str) and _KEY_NAME.match(value) and not value[0].isdigit():
            names = list(self.networks)
            return fail(
                f"{show(value)} is not a network name or CIDR (expected one of {', '.join(names)}, "
                f"or a CIDR such as 10.0.0.0/8{did_you_mean(value, names)})"
            )
        return (check_network(value),)


def _reference(value: Any, known: tuple[str, ...] | None, what: str, section: str) -> str:
    if not isinstance(value, str):
        return fail(f"{show(value)} is not {what} (expected a string)")
    if known is not None and value not in known:
        if not known:
            return fail(
                f"{show(value)} is not {what} (expected a name defined under {section}:, which has none)"
            )
        return fail(not_one_of(value, what, known))
    return value


def fail(message: str) -> NoReturn:
    raise ValueError(message)


def load_context(data: Any, base_dir: Path, environ: Mapping[str, str]) -> LoadContext:
    """What validators need to know about the whole file, read leniently from the raw data."""
    data = data if isinstance(data, dict) else {}
    networks: dict[str, tuple[Network, ...]] = {}
    raw_networks = data.get("networks")
    for name, cidrs in (raw_networks if isinstance(raw_networks, dict) else {}).items():
        parsed = []
        for cidr in cidrs if isinstance(cidrs, list) else [cidrs]:
            with contextlib.suppress(ValueError):  # reported where it is written
                parsed.append(check_network(cidr))
        networks[name] = tuple(parsed)
    networks.setdefault("internal", INTERNAL_NETWORKS)
    notify, sources = data.get("notify"), data.get("sources")
    notify_groups = tuple(notify) if isinstance(notify, dict) else (() if notify is None else None)
    source_names = None
    if isinstance(sources, list):
        source_names = tuple(
            s["name"] for s in sources if isinstance(s, dict) and isinstance(s.get("name"), str)
        )
    return LoadContext(base_dir, environ, networks, notify_groups, source_names)


def _context(info: ValidationInfo | None) -> LoadContext:
    ctx = info.context if info is not None else None
    if isinstance(ctx, LoadContext):
        return ctx
    return LoadContext(Path.cwd(), os.environ, {"internal": INTERNAL_NETWORKS}, None, None)


def listify(value: Any) -> Any:
    return [value] if value is not None and not isinstance(value, list | tuple | dict) else value


def each(
    check: Callable[[Any, LoadContext], T],
    *,
    empty: bool,
    finish: Callable[[list[T]], Any] = tuple,
    optional: bool = False,
    default_all: bool = False,
) -> Callable[[Any, ValidationInfo | None], Any]:
    """A validator applying `check` to each item (a scalar is one item); bad items by index."""

    def validate(value: Any, info: ValidationInfo | None) -> Any:
        ctx = _context(info)
        if value is None and optional:
            return None
        if default_all and isinstance(value, tuple) and not value:  # the default: all sources
            return ctx.source_names or ()
        is_list = isinstance(value, list | tuple)
        items = list(value) if is_list else ([] if value is None else [value])
        if not items and not empty:
            raise ValueError("the list is empty (expected at least one item)")
        out: list[T] = []
        problems: list[tuple[tuple[str | int, ...], str]] = []
        for index, item in enumerate(items):
            where: tuple[str | int, ...] = (index,) if is_list else ()
            try:
                out.append(check(item, ctx))
            except Problems as exc:
                problems.extend((where + sub, message) for sub, message in exc.items)
            except ValueError as exc:
                problems.append((where, str(exc)))
        if problems:
            raise Problems(problems)
        return finish(out)

    return validate


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
    if not isinstance(value, str) or not _KEY_NAME.match(value):
        return fail(f"{show(value)} is not a valid name (expected letters, digits, _ . -, e.g. office)")
    return value


def _resolve(value: Any, base: Path | None) -> str:
    """Absolute, against the rules file's directory; built in code (no file): as given."""
    if isinstance(value, Path):
        value = str(value)
    if not isinstance(value, str) or (base is not None and not value.strip()):
        return fail(f"{show(value)} is not a path (expected a file path)")
    if base is None:
        return value
    return os.path.normpath(os.path.join(base, os.path.expanduser(value)))


def _base_dir(info: ValidationInfo | None) -> Path | None:
    ctx = info.context if info is not None else None
    return ctx.base_dir if isinstance(ctx, LoadContext) else None


def check_glob(value: Any, info: ValidationInfo | None) -> str:
    return _resolve(value, _base_dir(info))


def check_path(value: Any, info: ValidationInfo | None) -> Path:
    return Path(_resolve(value, _base_dir(info)))


def check_network(value: Any) -> Network:
    if isinstance(value, IPv4Network | IPv6Network):
        return value
    text = str(value) if isinstance(value, str | int) and not isinstance(value, bool) else None
    try:
        return ip_network(text) if text is not None else fail("")
    except ValueError as exc:
        if text is not None and "host bits set" in str(exc):
            net = ip_network(text, strict=False)
            return fail(f"{show(value)} has host bits set (expected the network address {net})")
    return fail(f"{show(value)} is not a network (expected a CIDR such as 10.0.0.0/8 or 2001:db8::/32)")


def check_env(value: Any, ctx: LoadContext) -> str:
    """`${VAR}` replaced from the environment; an unset variable is named in the error."""
    if not isinstance(value, str):
        return fail(f"{show(value)} is not a string (expected a URL)")

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in ctx.environ:
            return fail(
                f'environment variable "{name}" is not set (expected it in xinf-watch\'s environment)'
            )
        return ctx.environ[name]

    return _ENV.sub(replace, value)


def check_notify_target(raw: str, value: str, ctx: LoadContext) -> str:
    """An apprise URL (`scheme://...`) of a scheme apprise knows, with a port in range, or the path
    of an existing apprise config file; `value` is `raw` with its ${VAR}s replaced. A URL is never
    shown in an error (it carries secrets), only its scheme."""
    if "://" in value:
        from xinf_watch.delivery.alerts import notify_url_problem  # apprise is loaded only to check a URL

        problem = notify_url_problem(value)
        return value if problem is None else fail(problem)
    path = _resolve(value, ctx.base_dir)
    if not os.path.isfile(path):
        shown = "the value of " + raw if "${" in raw else show(raw)
        return fail(f"{shown} is not a file (expected an apprise URL or apprise config file)")
    return path


def check_url(value: Any, info: ValidationInfo | None) -> str:
    url = check_env(value, _context(info))
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return fail(f"{show(value)} is not an http(s) URL (expected e.g. http://127.0.0.1:9093)")
    return url


def _is_redis_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        _ = parts.port  # ValueError unless a number in range (a password's unescaped / ends the host)
    except ValueError:  # and a broken [IPv6] host
        return False
    if parts.scheme == "unix":
        return bool(parts.path)
    after_host = parts.path + parts.query + parts.fragment  # an @ there: a password cut short
    return parts.scheme in ("redis", "rediss") and bool(parts.hostname) and "@" not in after_host


def check_redis_url(value: Any, info: ValidationInfo | None) -> str:
    """redis(s)://[user:password@]host[:port][/db] or unix://path. An error shows the value as
    written (not the environment's), all between the scheme and the last `@` masked: a password
    with an unescaped / ? or # is not parsed as one (it ends the host early, and is refused)."""
    url = check_env(value, _context(info))
    if not _is_redis_url(url):
        shown = _USERINFO.sub(lambda m: f"{m.group(1) or ''}***@", value)
        return fail(f"{show(shown)} is not a Redis URL (expected e.g. redis://127.0.0.1:6379/0)")
    return url


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        ip_address(host)  # ValueError unless an IPv6 address
    elif ":" in host or not host:
        raise ValueError(text)
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(text)
    return host, int(port)


def check_listen(value: Any) -> str:
    try:
        parse_listen(value if isinstance(value, str) else "")
    except ValueError:
        return fail(
            f"{show(value)} is not a listen address (expected host:port, e.g. 127.0.0.1:9877 or [::1]:9877)"
        )
    return value  # type: ignore[no-any-return]


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
