"""The clock-driven rule kinds, `absent` and `key_expiry`: evaluated at a time, not on an event.

Both group by what they watch, whatever `by` says: `absent` by source, `key_expiry` by key alias.
- `absent` fires for a source that has written no line for `for` (counted from the engine's
  start for a source that never wrote) and resolves when it writes again.
- `key_expiry` looks at every registry key the rule's `when` (`key`, `owner`) picks, only the
  keys seen in use unless `only_used: false` (and of those, only keys used within
  `unused_after` when it is set: a key whose clients moved to its successor needs no rotation),
  and fires for one that still works but expires
  within `within`, has no expiry (`no_expiry`) or is older than `max_age`. It resolves when that
  is no longer true, or when the key leaves the registry or the filter. Expired and revoked keys
  are not its business: the `match` rules on `key_state` report their use.
The engine decides when to run them (every tick, and key expiry also at a key's first use).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from xinf_watch.durations import describe_duration
from xinf_watch.keys.registry import KeyEntry, KeyRegistry
from xinf_watch.model import Alert, KeyState, format_ts
from xinf_watch.rules.episodes import fire, resolve
from xinf_watch.rules.filters import glob_matcher
from xinf_watch.rules.memory import CompiledRule, Group, GroupState

_Matcher = Callable[[str | None], bool]


def check_absent(
    rule: CompiledRule, now: float, sources: tuple[str, ...], last_seen: Mapping[str, float], started: float
) -> list[Alert]:
    """`sources`: every configured source (the rule's own `sources` narrow it); `last_seen`: when
    each source last wrote; `started`: when the engine first saw time pass."""
    out: list[Alert] = []
    silence = float(rule.config.for_)
    for source in tuple(getattr(rule.config, "sources", ()) or ()) or sources:
        group = (source,)
        state = rule.groups.setdefault(group, GroupState)
        last = last_seen.get(source, started)
        ep = state.episode
        alert = None
        if now - last >= silence and not ep.firing:
            ep.first_ts, ep.last_ts, ep.count, ep.source = last, now, 0, source
            summary = f"source {source} produced no lines for {describe_duration(now - last)}"
            alert = fire(rule, group, state, now, summary)
        elif now - last < silence and ep.firing:
            ep.last_ts = last
            alert = resolve(rule, group, state, f"resolved: source {source} is writing again")
        if alert is not None:
            out.append(alert)
    return out


def check_key_expiry(
    rule: CompiledRule, registry: KeyRegistry, now: float, last_used: Mapping[str, float]
) -> list[Alert]:
    out: list[Alert] = []
    cfg = rule.config
    key_ok = glob_matcher(cfg.when.key) if cfg.when.key is not None else None
    owner_ok = glob_matcher(cfg.when.owner) if cfg.when.owner is not None else None
    present: set[Group] = set()
    for entry in registry.entries:
        if not _watched(entry, cfg, now, last_used) or not _picked(entry, key_ok, owner_ok):
            continue
        group: Group = (entry.alias,)
        present.add(group)
        alert = _judge_key(rule, group, entry, _key_problem(entry, cfg, registry, now), now)
        if alert is not None:
            out.append(alert)
    out += _resolve_unwatched(rule, present, now)
    return out


def _watched(entry: KeyEntry, cfg: Any, now: float, last_used: Mapping[str, float]) -> bool:
    """With `only_used`: whether the key is in use (and, with `unused_after`, recently)."""
    if cfg.only_used:
        used = last_used.get(entry.alias)
        if used is None or (cfg.unused_after is not None and now - used > cfg.unused_after):
            return False  # never used, or its clients moved on (to a successor key)
    return True


def _picked(entry: KeyEntry, key_ok: _Matcher | None, owner_ok: _Matcher | None) -> bool:
    """Whether the rule's `when` (`key`, `owner`) picks the key."""
    if key_ok is not None and not key_ok(entry.alias):
        return False
    return owner_ok is None or owner_ok(entry.owner)


def _judge_key(
    rule: CompiledRule, group: Group, entry: KeyEntry, problem: str | None, now: float
) -> Alert | None:
    """Fire for a key with a problem, resolve a firing one without; None: nothing to send."""
    state = rule.groups.get(group) if problem is None else rule.groups.setdefault(group, GroupState)
    if state is None:
        return None
    ep = state.episode
    if problem and not ep.firing:
        ep.first_ts = ep.last_ts = now
        ep.count, ep.key, ep.source = 1, entry.alias, None
        ep.extra = {"expires_at": format_ts(entry.expires_at)} if entry.expires_at is not None else None
        return fire(rule, group, state, now, problem)
    if problem is None and ep.firing:
        ep.last_ts = now
        return resolve(rule, group, state, f"resolved: key {entry.alias}")
    return None


def _resolve_unwatched(rule: CompiledRule, present: set[Group], now: float) -> list[Alert]:
    """Resolve the firing keys that left the registry or the filter."""
    out: list[Alert] = []
    for group in [g for g in rule.firing if g not in present]:
        gone = rule.groups.peek(group)
        if gone is None:
            del rule.firing[group]
            continue
        gone.episode.last_ts = now
        alert = resolve(rule, group, gone, f"resolved: key {group[0]} is no longer watched (unused or gone)")
        if alert is not None:
            out.append(alert)
    return out


def _key_problem(entry: KeyEntry, cfg: Any, registry: KeyRegistry, now: float) -> str | None:
    """What is wrong with a key that still works, as the alert's summary; None: nothing."""
    if registry.state_of(entry, now) is not KeyState.VALID:
        return None
    if entry.expires_at is not None and entry.expires_at <= now + cfg.within:
        left = describe_duration(round(entry.expires_at - now))
        return f"key {entry.alias} expires in {left} ({format_ts(entry.expires_at)})"
    if entry.expires_at is None and cfg.no_expiry:
        return f"key {entry.alias} has no expiry date"
    if cfg.max_age is not None and entry.created_at is not None and now - entry.created_at > cfg.max_age:
        age, limit = describe_duration(round(now - entry.created_at)), describe_duration(cfg.max_age)
        return f"key {entry.alias} is {age} old (max_age {limit})"
    return None
