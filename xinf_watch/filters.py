"""The `when:` filter language of rules.yaml, compiled once per rule into one predicate on `Event`.

Semantics (DESIGN.md section 3): every field given must match (AND); a list means any of its
items (OR). Booleans (`ip_allowed`, `ip_forwarded`, `scope_allowed`) match only events where the
value is known: an event whose `scope_allowed` is None (permissions unknown) matches neither
`scope_allowed: true` nor `false`. `scope`, `path`, `key` and `owner` take shell globs; `user_agent`
is a regular expression searched in the user agent; `status` takes codes and classes (`4xx`).

Checks are ordered cheapest first. IP parsing is cached in a bounded dict shared by all rules.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from fnmatch import fnmatchcase
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Any

from xinf_watch.model import Event

Predicate = Callable[[Event], bool]
Network = IPv4Network | IPv6Network

_IP_CACHE: dict[str, IPv4Address | IPv6Address | None] = {}
_IP_CACHE_MAX = 65536


def parse_ip(text: str) -> IPv4Address | IPv6Address | None:
    addr = _IP_CACHE.get(text, False)
    if addr is False:
        if len(_IP_CACHE) >= _IP_CACHE_MAX:
            _IP_CACHE.clear()  # attacker-sized input: start over rather than grow
        try:
            addr = ip_address(text)
        except ValueError:
            addr = None
        _IP_CACHE[text] = addr
    return addr  # type: ignore[return-value]


def ip_in(text: str, networks: Iterable[Network]) -> bool:
    addr = parse_ip(text)
    return addr is not None and any(addr in net for net in networks)


_SUBNET_CACHE: dict[tuple[str, int], str] = {}


def subnet_of(text: str, prefix: int) -> str:
    """`10.1.2.3`, 24 -> `10.1.2.0/24`; IPv6 addresses use `prefix` as given if it is > 32, else 64."""
    cached = _SUBNET_CACHE.get((text, prefix))
    if cached is not None:
        return cached
    if len(_SUBNET_CACHE) >= _IP_CACHE_MAX:
        _SUBNET_CACHE.clear()
    addr = parse_ip(text)
    if addr is None:
        result = text
    else:
        bits = prefix if addr.version == 4 or prefix > 32 else 64
        result = str(ip_network(f"{addr}/{min(bits, addr.max_prefixlen)}", strict=False))
    _SUBNET_CACHE[(text, prefix)] = result
    return result


def _globs(patterns: Iterable[str]) -> Callable[[str | None], bool]:
    exact = frozenset(p for p in patterns if not any(c in p for c in "*?["))
    wild = tuple(p for p in patterns if p not in exact)

    def match(value: str | None) -> bool:
        if value is None:
            return False
        return value in exact or any(fnmatchcase(value, p) for p in wild)

    return match


def _status_matcher(values: Iterable[Any]) -> Callable[[int], bool]:
    codes: set[int] = set()
    classes: set[int] = set()
    for value in values:
        text = str(value).lower()
        if re.fullmatch(r"[1-5]xx", text):
            classes.add(int(text[0]))
        else:
            codes.add(int(text))
    return lambda status: status in codes or status // 100 in classes


def _values(value: Any) -> tuple[str, ...]:
    return tuple(str(getattr(v, "value", v)) for v in value)


def compile_filter(when: Any) -> Predicate:
    """One predicate for a `FilterConfig`; fields left unset (None) are not checked."""
    checks: list[Predicate] = []

    def add_in(field: str, allowed: frozenset[str]) -> None:
        checks.append(lambda e: str(getattr(e, field)) in allowed)

    for field in ("source", "credential", "key_state", "outcome", "method", "reason"):
        value = getattr(when, field, None)
        if value is not None:
            if field == "reason":
                reasons = frozenset(_values(value))
                checks.append(lambda e: e.reason in reasons)
            else:
                add_in(field, frozenset(_values(value)))
    for field in ("ip_allowed", "ip_forwarded", "scope_allowed"):
        value = getattr(when, field, None)
        if value is not None:
            expected = bool(value)
            checks.append(lambda e, f=field, x=expected: getattr(e, f) is x)  # type: ignore[misc]
    if (status := getattr(when, "status", None)) is not None:
        status_ok = _status_matcher(status)
        checks.append(lambda e: status_ok(e.status))
    for field in ("key", "owner", "scope", "path"):
        value = getattr(when, field, None)
        if value is not None:
            matcher = _globs(_values(value))
            checks.append(lambda e, f=field, m=matcher: m(getattr(e, f)))  # type: ignore[misc]
    if (agent := getattr(when, "user_agent", None)) is not None:
        pattern = agent if isinstance(agent, re.Pattern) else re.compile(str(agent))
        checks.append(lambda e: e.user_agent is not None and pattern.search(e.user_agent) is not None)
    if (nets := getattr(when, "ip", None)) is not None:
        inside = tuple(nets)
        checks.append(lambda e: ip_in(e.ip, inside))
    if (nets := getattr(when, "ip_not_in", None)) is not None:
        outside = tuple(nets)
        checks.append(lambda e: not ip_in(e.ip, outside))

    if not checks:
        return lambda e: True
    if len(checks) == 1:
        return checks[0]
    frozen = tuple(checks)
    return lambda e: all(check(e) for check in frozen)
