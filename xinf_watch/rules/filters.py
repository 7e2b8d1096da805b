"""The `when:` filter language of rules.yaml, compiled once per rule into one predicate on `Event`.

Semantics (docs/DESIGN.md section 3): every field given must match (AND); a list means any of its
items (OR). Booleans (`ip_allowed`, `ip_forwarded`, `scope_allowed`) match only events where the
value is known: an event whose `scope_allowed` is None (permissions unknown) matches neither
`scope_allowed: true` nor `false`. `scope`, `path`, `key` and `owner` take shell globs; `user_agent`
is a regular expression searched in the user agent (within a time bound, userregex.py: no match
when it runs out); `status` takes codes and classes (`4xx`);
`method` ignores case. `ip` / `ip_not_in` compare the address (an IPv4-mapped IPv6 address such
as `::ffff:10.1.2.3` as its IPv4 address); an address that does not parse is in no network, so
`ip_not_in: internal` matches it (an origin we cannot place is treated as outside).

The fields of `INDEXED` take few values (enums, booleans, and the scope, which comes from the route
table): `admits(when, values)` answers them for one combination of values, so the engine can pick
the rules an event can match once per combination, and `compile_filter(when, indexed=False)` leaves
them out of the predicate. Checks
are ordered cheapest first. IP parsing is cached in a bounded dict shared by all rules.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from fnmatch import translate
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Any

from xinf_watch.addresses import ip_in, parse_ip
from xinf_watch.caches import remember
from xinf_watch.model import Event
from xinf_watch.userregex import UserRegex

Predicate = Callable[[Event], bool]
Network = IPv4Network | IPv6Network

# Fields with a handful of possible values: the engine indexes rules by them (see `admits`).
INDEXED = ("credential", "key_state", "outcome", "scope_allowed", "ip_allowed", "ip_forwarded", "scope")
_BOOLEANS = frozenset({"scope_allowed", "ip_allowed", "ip_forwarded"})
_GLOBS = frozenset({"key", "owner", "scope", "path"})


_IP_MATCH_CACHE_MAX = 16384  # addresses per matcher; beyond, a flood of new ones: start over


def ip_matcher(networks: Iterable[Network]) -> Callable[[str], bool]:
    """`ip_in(text, networks)` for one set of networks, remembered per address (a few thousand
    clients make most lines; testing one against the networks costs more than the rest of a rule)."""
    nets = tuple(networks)
    seen: dict[str, bool] = {}

    def inside(text: str) -> bool:
        hit = seen.get(text)
        if hit is None:
            hit = remember(seen, text, ip_in(text, nets), _IP_MATCH_CACHE_MAX)
        return hit

    return inside


_SUBNET_CACHE: dict[tuple[str, int], str] = {}
_SUBNET_CACHE_MAX = 16384


def subnet_of(text: str, prefix: int) -> str:
    """`10.1.2.3`, 24 -> `10.1.2.0/24`; IPv6 addresses use `prefix` as given if it is > 32, else 64.

    Text that is not an address is returned as it is.
    """
    cached = _SUBNET_CACHE.get((text, prefix))
    if cached is not None:
        return cached
    addr = parse_ip(text)
    if addr is None:
        result = text
    else:
        bits = prefix if addr.version == 4 or prefix > 32 else 64
        result = str(ip_network(f"{addr}/{min(bits, addr.max_prefixlen)}", strict=False))
    return remember(_SUBNET_CACHE, (text, prefix), result, _SUBNET_CACHE_MAX)


def _values(value: Any) -> tuple[str, ...]:
    return tuple(str(getattr(v, "value", v)) for v in value)


def glob_matcher(patterns: Iterable[str]) -> Callable[[str | None], bool]:
    """Shell-glob matching against any of `patterns`; None matches nothing."""
    patterns = tuple(patterns)
    exact = frozenset(p for p in patterns if not any(c in p for c in "*?["))
    wild = [p for p in patterns if p not in exact]
    if not wild:
        return lambda value: value in exact
    # one regex for all the wildcard patterns: a single match per event instead of one per pattern
    wild_match = re.compile("|".join(f"(?:{translate(p)})" for p in wild)).match

    def match(value: str | None) -> bool:
        if value is None:
            return False
        return value in exact or wild_match(value) is not None

    return match


def _glob_check(field: str, patterns: Sequence[str]) -> Predicate:
    if not any(c in p for p in patterns for c in "*?["):
        exact = frozenset(patterns)
        return lambda e: getattr(e, field) in exact  # None is in no set of strings
    match = glob_matcher(patterns)
    return lambda e: match(getattr(e, field))


def _ip_check(networks: Sequence[Network], inside: bool) -> Predicate:
    within = ip_matcher(networks)
    if inside:
        return lambda e: within(e.ip)
    return lambda e: not within(e.ip)


def _indexed_clauses(when: Any) -> list[tuple[str, Callable[[Any], bool]]]:
    """(field, test of its value) for the `INDEXED` fields the filter sets."""
    out: list[tuple[str, Callable[[Any], bool]]] = []
    for field in INDEXED:
        wanted = getattr(when, field, None)
        if wanted is None:
            continue
        if field in _BOOLEANS:
            out.append((field, lambda value, x=bool(wanted): value is x))  # type: ignore[misc]
        elif field in _GLOBS:
            out.append((field, glob_matcher(_values(wanted))))
        else:  # enum members hash and compare as their string values; None is in no set of strings
            out.append((field, frozenset(_values(wanted)).__contains__))
    return out


def admits(when: Any, values: Sequence[Any]) -> bool:
    """Whether the filter's `INDEXED` clauses accept an event with these values (in that order)."""
    given = dict(zip(INDEXED, values, strict=True))
    return all(test(given[field]) for field, test in _indexed_clauses(when))


def compile_filter(when: Any, *, indexed: bool = True) -> Predicate:
    """One predicate for a `FilterConfig`; fields left unset (None) are not checked.

    `indexed=False` leaves out the fields of `INDEXED`: the caller answers them with `admits`.
    """
    checks = _indexed_checks(when) if indexed else []
    checks += _value_checks(when)
    checks += _pattern_checks(when)
    checks += _ip_checks(when)
    return _all_of(checks)


def _indexed_checks(when: Any) -> list[Predicate]:
    return [
        lambda e, f=field, test=test: test(getattr(e, f))  # type: ignore[misc]
        for field, test in _indexed_clauses(when)
    ]


def _value_checks(when: Any) -> list[Predicate]:
    """`source`, `reason`, `method` and `status`: set lookups."""
    checks: list[Predicate] = []
    for field in ("source", "reason"):
        value = getattr(when, field, None)
        if value is not None:
            allowed = frozenset(_values(value))
            checks.append(lambda e, f=field, a=allowed: getattr(e, f) in a)  # type: ignore[misc]
    if (method := getattr(when, "method", None)) is not None:
        methods = frozenset(m.upper() for m in _values(method))
        checks.append(lambda e: e.method in methods or e.method.upper() in methods)
    if (status := getattr(when, "status", None)) is not None:
        codes = status.covered()  # a config.filters.StatusSet
        checks.append(lambda e: e.status in codes)
    return checks


def _pattern_checks(when: Any) -> list[Predicate]:
    """The globs of `key`, `owner` and `path`, then the `user_agent` regular expression (`scope`'s
    globs are indexed)."""
    checks: list[Predicate] = []
    for field in ("key", "owner", "path"):
        value = getattr(when, field, None)
        if value is not None:
            checks.append(_glob_check(field, _values(value)))
    if (agent := getattr(when, "user_agent", None)) is not None:
        pattern = agent if isinstance(agent, UserRegex) else UserRegex(str(agent))  # time-bounded
        checks.append(lambda e: e.user_agent is not None and pattern.search(e.user_agent) is not None)
    return checks


def _ip_checks(when: Any) -> list[Predicate]:
    checks: list[Predicate] = []
    if (nets := getattr(when, "ip", None)) is not None:
        checks.append(_ip_check(nets, inside=True))
    if (nets := getattr(when, "ip_not_in", None)) is not None:
        checks.append(_ip_check(nets, inside=False))
    return checks


def always(event: Event) -> bool:
    """The predicate of a filter that checks nothing (the engine skips calling it)."""
    return True


def _all_of(checks: Sequence[Predicate]) -> Predicate:
    """The conjunction, without a generator per call (this runs for every event and rule)."""
    if not checks:
        return always
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        a, b = checks
        return lambda e: a(e) and b(e)
    if len(checks) == 3:
        a, b, c = checks
        return lambda e: a(e) and b(e) and c(e)
    frozen = tuple(checks)

    def every(e: Event) -> bool:
        for check in frozen:  # noqa: SIM110 - all() would build a generator per event
            if not check(e):
                return False
        return True

    return every
