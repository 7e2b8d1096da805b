"""The `summary` of an alert: one line a person can act on without the rest of the alert.

The alert already carries the rule's name, so a summary never repeats it: it says what happened
in the terms of the log (which key, in what state, from where, for which scope, which request)
and, for the counting kinds, how many in which window. Every word comes from `Event` fields, the
group and the rule's settings; an `Event` holds no raw credential (an unknown key appears only
as its short fingerprint), so neither does a summary.

    match      key mlops-ci used from 127.0.1.52 for models:write (not in its permissions):
               POST /v1/models -> 403 (insufficient_scope)
    threshold  20 matching requests from ip 127.77.40.2 in 1m
    distinct   10 distinct unknown keys from ip 127.88.66.6 in 5m
    new_value  key analyst-notebook seen from new ip 127.0.1.140 (GET /v1/models -> 200)
    spike      60 requests from key alice in 5m, 12.0x the usual 5.0
    resolved   resolved: down to 10 matching requests from ip 127.88.70.2 in 1m
"""

from __future__ import annotations

from collections.abc import Sequence

from xinf_watch.durations import describe_duration
from xinf_watch.model import Event, KeyState, ScopeDenial, format_ts

# group fields that say where requests came from ("from ip ..."); the others say what they were
_ORIGINS = frozenset({"ip", "key", "owner", "source"})
# scopes that tell a reader nothing the path does not: no permission needed, or a route we do not know
_UNTOLD_SCOPES = frozenset({"public", "unmatched"})


def request(event: Event) -> str:
    """`POST /v1/models -> 403`, and the source's reason when it gives one."""
    text = f"{event.method} {event.path} -> {event.status}"
    return f"{text} ({event.reason})" if event.reason else text


# what refused a scope, said the way Xinference would
_SCOPE_DENIALS = {
    ScopeDenial.PERMISSIONS: "not in its permissions",
    ScopeDenial.API_KEY_LIMIT: (
        "API keys may only use models:list/models:read under Xinference's advanced auth"
    ),
}


def match(event: Event, count: int, since: float) -> str:
    """One matching request; `count` > 1: the cooldown held back others since `since`."""
    notes = []
    if event.ip_allowed is False:
        notes.append("outside its allowed IPs")
    if event.ip_forwarded:
        notes.append("per X-Forwarded-For")
    origin = f"from {event.ip} ({', '.join(notes)})" if notes else f"from {event.ip}"
    if event.key_state is KeyState.NONE:
        head = f"request without a key {origin}"
    else:
        head = f"{_key(event)} used {origin}"
    if event.scope_allowed is False:
        head += f" for {event.scope} ({_SCOPE_DENIALS[event.scope_denied_by or ScopeDenial.PERMISSIONS]})"
    elif event.scope not in _UNTOLD_SCOPES:
        head += f" for {event.scope}"
    summary = f"{head}: {request(event)}"
    if count > 1:
        summary += f"; {count} such requests since {format_ts(since)}"
    return summary


def threshold(level: int, fields: Sequence[str], group: Sequence[str], window: float) -> str:
    return _sentence(f"{level} matching requests", _group(fields, group), f"in {describe_duration(window)}")


# What a distinct rule counts, in words; other fields read "distinct <field> values".
_DISTINCT_NOUNS = {"fingerprint": "unknown keys", "ip": "client IPs", "key": "keys"}


# What a distinct rule counts, in words; other fields read "distinct <field> values".
_DISTINCT_NOUNS = {"fingerprint": "unknown keys", "ip": "client IPs", "key": "keys"}


def distinct_noun(value: str) -> str:
    return "distinct " + _DISTINCT_NOUNS.get(value, f"{value} values")


def distinct(level: int, value: str, fields: Sequence[str], group: Sequence[str], window: float) -> str:
    counted = f"{level} {distinct_noun(value)}"
    return _sentence(counted, _group(fields, group), f"in {describe_duration(window)}")


def spike(
    level: int, expected: float, fields: Sequence[str], group: Sequence[str], window: float, baseline: float
) -> str:
    """A rate against the group's usual one; `expected` 0: the group was (nearly) silent before."""
    head = _sentence(f"{level} requests", _group(fields, group), f"in {describe_duration(window)}")
    if expected:
        return f"{head}, {level / expected:.1f}x the usual {expected:.1f}"
    return f"{head} after {describe_duration(baseline)} of near silence"


def back_to_normal(
    counted: str, level: int, fields: Sequence[str], group: Sequence[str], window: float
) -> str:
    """The resolution of a counting rule: `counted` is what it counts (`matching requests`...)."""
    where, within = _group(fields, group), f"in {describe_duration(window)}"
    return "resolved: " + _sentence(f"down to {level} {counted}", where, within)


def new_value(value_field: str, value: str, fields: Sequence[str], group: Sequence[str], event: Event) -> str:
    """A value new to its group: `key alice seen from new subnet 10.1.3.0/24 (GET ...)`."""
    is_address = value_field == "ip" or value_field.startswith("ip/")
    what = "subnet" if value_field.startswith("ip/") else value_field
    new = f"new {what} {value}"
    subject = ", ".join(f"{f} {v}" for f, v in zip(fields, group, strict=True))
    if subject:
        return f"{subject} seen {'from' if is_address else 'with'} {new} ({request(event)})"
    return f"{new} seen ({request(event)})"


def _key(event: Event) -> str:
    state = event.key_state
    if state is KeyState.UNKNOWN:
        return f"unknown key {event.fingerprint}" if event.fingerprint else "unknown key"
    if state is KeyState.VALID:
        return f"key {event.key}"
    return f"key {event.key} ({state.value})"


def _group(fields: Sequence[str], group: Sequence[str]) -> str:
    """`from ip 10.1.0.5`, `from key alice with scope admin`; "" for a rule without `by`."""
    origins = [f"{f} {v}" for f, v in zip(fields, group, strict=True) if f in _ORIGINS]
    others = [f"{f} {v}" for f, v in zip(fields, group, strict=True) if f not in _ORIGINS]
    return _sentence(
        f"from {', '.join(origins)}" if origins else "", f"with {', '.join(others)}" if others else ""
    )


def _sentence(*parts: str) -> str:
    return " ".join(part for part in parts if part)
