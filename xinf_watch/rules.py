"""The rule engine: events and a clock in, alert transitions out (DESIGN.md sections 3 and 7).

Pure: no threads, files, sockets or wall clock. Time is the events' own (`observe`) or what the
caller passes to `advance(now)`; `now` never goes backwards, and events up to a window late are
still counted in their own time bucket, so lines a few seconds out of order are fine.

Lifecycle per (rule, group):
- `match` fires for every matching event; within `cooldown` of the last notification further
  hits are only counted and reported with the next one (its `count` and `first_ts` cover them).
- `threshold`, `spike` and `distinct` fire when their condition starts to hold and resolve when it
  has clearly stopped: the value must fall to half the firing level (hysteresis), so a count
  hovering at the threshold does not flap. An episode that starts within `cooldown` of the last
  notification of that group is tracked but not notified (neither its firing nor, if it ends
  inside the cooldown, its resolution); one that outlasts the cooldown is notified then.
- `new_value` fires once per value new to its group (after the group's `learn` period); a value
  unseen for `forget` is new again.
- `key_expiry` and `absent` are evaluated on the clock (`advance`, every `TICK` seconds of event
  time; key expiry every `KEY_EXPIRY_EVERY` and at the first use of a key) and resolve when their
  condition clears.
Each alert's `id` hashes (rule, group, episode start): stable for the firing and its resolution,
new for the next episode. Alerts come out in a deterministic order (rules in config order, groups
in the order they fired), so a replay prints the same lines every time.

Speed: rules are indexed by the few-valued fields of their filters (`filters.INDEXED`): each
combination of those values met in the events gets, once, the list of rules it can match.

Memory is bounded: groups per rule (`rulestate.MAX_GROUPS`, firing groups evicted last), values per
new_value group (`MAX_VALUES`), distinct values per group (twice the rule's count); `evicted`
counts what was forgotten. `snapshot()` / `restore()` carry all of the state over a restart.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from xinf_watch.filters import admits, glob_matcher
from xinf_watch.keys import KeyEntry, KeyRegistry
from xinf_watch.model import Alert, AlertStatus, Event, KeyState, format_ts
from xinf_watch.rulestate import NEVER, CompiledRule, Episode, Group, GroupState, finite_or_none, gc_paused

TICK = 1.0
MAX_VALUES = 1_000
KEY_EXPIRY_EVERY = 60.0
STATE_VERSION = 1

Handler = Callable[["CompiledRule", Event], Alert | None]
_CLOCK_KINDS = ("threshold", "spike", "distinct", "absent", "key_expiry")
_KEYED_STATES = frozenset({KeyState.VALID, KeyState.EXPIRED, KeyState.REVOKED})


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


def alert_id(rule: str, group: dict[str, str], episode: float) -> str:
    text = "\0".join([rule, *(f"{k}={v}" for k, v in sorted(group.items())), f"{episode:.3f}"])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class RuleEngine:
    """Evaluates every configured rule; `registry` is a getter so a key reload is seen at once."""

    def __init__(
        self,
        rules: Sequence[Any],
        registry: Callable[[], KeyRegistry],
        sources: Iterable[str] = (),
    ) -> None:
        self.rules = [CompiledRule(r) for r in rules]
        self.registry = registry
        self.sources = tuple(sources)
        self.now = NEVER
        self.started: float | None = None
        self.next_tick = NEVER
        self.next_expiry_check = NEVER
        self.source_last_seen: dict[str, float] = {}
        self.keys_seen: set[str] = set()
        handlers: dict[str, Handler] = {
            "match": self._match,
            "threshold": self._threshold,
            "distinct": self._distinct,
            "new_value": self._new_value,
            "spike": self._spike,
        }
        self._event_rules = [(r, handlers[r.kind]) for r in self.rules if r.kind in handlers]
        self._clock_rules = [r for r in self.rules if r.kind in _CLOCK_KINDS]
        self._expiry_rules = [r for r in self.rules if r.kind == "key_expiry"]
        # (credential, key_state, outcome, scope_allowed, ip_allowed, ip_forwarded) -> rules to try
        self._plans: dict[tuple[Any, ...], tuple[tuple[CompiledRule, Handler], ...]] = {}

    # -- input ---------------------------------------------------------------------------------

    def observe(self, event: Event) -> list[Alert]:
        out: list[Alert] = []
        ts = event.ts
        if self.started is None:
            self.started = ts
        if ts > self.now:
            self.now = ts
        last = self.source_last_seen.get(event.source)
        if last is None or ts > last:
            self.source_last_seen[event.source] = ts
        new_key = event.key_state in _KEYED_STATES and event.key not in self.keys_seen
        if new_key:
            self.keys_seen.add(event.key)
        index = (
            event.credential, event.key_state, event.outcome,
            event.scope_allowed, event.ip_allowed, event.ip_forwarded,
        )  # fmt: skip
        plan = self._plans.get(index)
        if plan is None:
            plan = self._plans[index] = tuple(
                (rule, handler) for rule, handler in self._event_rules if admits(rule.config.when, index)
            )
        for rule, handler in plan:
            if rule.residual(event):
                alert = handler(rule, event)
                if alert is not None:
                    out.append(alert)
        if new_key and self._expiry_rules:
            out.extend(self._check_key_expiry(self.now))  # a key's first use: check it at once
        if self.now >= self.next_tick:
            out.extend(self.advance(self.now))
        return out

    def advance(self, now: float) -> list[Alert]:
        """Time-driven transitions at `now`: resolutions, absent sources, expiring keys."""
        if self.started is None:
            self.started = now
        if now > self.now:
            self.now = now
        now = self.now
        self.next_tick = now + TICK
        out: list[Alert] = []
        if now >= self.next_expiry_check:
            self.next_expiry_check = now + KEY_EXPIRY_EVERY
            out.extend(self._check_key_expiry(now))
        for rule in self._clock_rules:
            if rule.kind == "absent":
                out.extend(self._check_absent(rule, now))
            elif rule.kind != "key_expiry" and rule.firing:
                out.extend(self._settle(rule, now))
            out.extend(self._notify_held_back(rule, now))
        return out

    @property
    def evicted(self) -> dict[str, int]:
        return {r.name: r.evicted for r in self.rules if r.evicted}

    # -- state ---------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """All of the engine's state as JSON-able data (no raw credentials: aliases and hashes)."""
        with gc_paused():
            rules = {rule.name: rule.snapshot() for rule in self.rules}
        return {
            "version": STATE_VERSION,
            "now": finite_or_none(self.now),
            "started": self.started,
            "next_tick": finite_or_none(self.next_tick),
            "next_expiry_check": finite_or_none(self.next_expiry_check),
            "source_last_seen": dict(self.source_last_seen),
            "keys_seen": sorted(self.keys_seen),
            "rules": rules,
        }

    def restore(self, data: Any) -> None:
        """Take over a `snapshot()` (from JSON); rules that no longer exist, or changed kind or
        grouping, are ignored, and so is state that does not have the expected shape."""
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            return
        for name in ("now", "next_tick", "next_expiry_check"):
            value = _number(data.get(name))
            setattr(self, name, NEVER if value is None else value)
        self.started = _number(data.get("started"))
        seen = data.get("source_last_seen")
        if isinstance(seen, dict):
            self.source_last_seen = {
                k: v for k, v in seen.items() if isinstance(k, str) and _number(v) is not None
            }
        keys = data.get("keys_seen")
        if isinstance(keys, list):
            self.keys_seen = {k for k in keys if isinstance(k, str)}
        rules = data.get("rules")
        if isinstance(rules, dict):
            with gc_paused():
                for rule in self.rules:
                    rule.restore(rules.get(rule.name))

    # -- alert construction --------------------------------------------------------------------

    def _alert(
        self,
        rule: CompiledRule,
        status: AlertStatus,
        group: Group,
        ep: Episode,
        summary: str,
        id_extra: dict[str, str] | None = None,
    ) -> Alert:
        group_dict = rule.group_dict(group)
        return Alert(
            rule=rule.name,
            kind=rule.kind,
            severity=rule.severity,
            status=status,
            group=group_dict,
            key=group_dict.get("key", ep.key),
            count=ep.count,
            first_ts=ep.first_ts,
            last_ts=ep.last_ts,
            summary=summary,
            source=ep.source,
            id=alert_id(rule.name, {**group_dict, **(id_extra or {})}, ep.started),
            extra=dict(ep.extra or {}),
        )

    def _fire(
        self, rule: CompiledRule, group: Group, state: GroupState, at: float, summary: str
    ) -> Alert | None:
        """Start an episode (its hits already in `state.episode`); None while in the cooldown."""
        ep = state.episode
        ep.firing = True
        ep.started = ep.first_ts
        ep.summary = summary
        rule.firing[group] = None
        ep.notified = at - state.last_notified >= rule.cooldown
        if not ep.notified:
            return None
        state.last_notified = at
        return self._alert(rule, AlertStatus.FIRING, group, ep, summary)

    def _resolve(self, rule: CompiledRule, group: Group, state: GroupState, summary: str) -> Alert | None:
        ep = state.episode
        rule.firing.pop(group, None)
        alert = self._alert(rule, AlertStatus.RESOLVED, group, ep, summary) if ep.notified else None
        state.episode = Episode()
        return alert

    def _notify_held_back(self, rule: CompiledRule, now: float) -> list[Alert]:
        """Episodes that began inside the cooldown and are still firing once it is over."""
        out: list[Alert] = []
        for group in rule.firing:
            state = rule.groups.data.get(group)
            if state is None or state.episode.notified or now - state.last_notified < rule.cooldown:
                continue
            ep = state.episode
            ep.notified = True
            state.last_notified = now
            summary = f"{ep.summary} (still firing after the cooldown, since {format_ts(ep.first_ts)})"
            out.append(self._alert(rule, AlertStatus.FIRING, group, ep, summary))
        return out

    # -- event-driven kinds --------------------------------------------------------------------

    def _match(self, rule: CompiledRule, event: Event) -> Alert | None:
        group = rule.group_of(event)
        state = rule.groups.setdefault(group, GroupState)
        ep = state.episode
        ep.extend(event.ts, event.key, event.source)
        if event.ts - state.last_notified < rule.cooldown:
            return None  # counted, reported with the next notification
        state.last_notified = event.ts
        ep.started = event.ts
        summary = (
            f"{rule.name}: {event.method} {event.path} -> {event.status} with key {event.key} "
            f"({event.key_state.value}, scope {event.scope}) from {event.ip}"
        )
        if ep.count > 1:
            summary += f"; {ep.count} such requests since {format_ts(ep.first_ts)}"
        alert = self._alert(rule, AlertStatus.FIRING, group, ep, summary)
        state.episode = Episode()
        return alert

    def _start_episode(self, state: GroupState, event: Event, level: int, first_ts: float | None) -> Episode:
        ep = state.episode
        ep.count = level
        ep.first_ts = event.ts if first_ts is None else min(first_ts, event.ts)
        ep.last_ts = max(event.ts, ep.first_ts)
        ep.key = event.key
        ep.source = event.source
        return ep

    def _threshold(self, rule: CompiledRule, event: Event) -> Alert | None:
        cfg = rule.config
        group = rule.group_of(event)
        state = rule.groups.setdefault(group, rule.new_state)
        counter = state.counter
        assert counter is not None
        now = self.now
        counter.add(event.ts, now)
        if state.episode.firing:
            state.episode.extend(event.ts, event.key, event.source)
            return None
        level = counter.count(now)
        if level < cfg.count:
            return None
        ep = self._start_episode(state, event, level, counter.oldest(now))
        where = _describe_group(rule, group)
        summary = f"{level} requests matching {rule.name} {where} in {describe_duration(cfg.window)}"
        return self._fire(rule, group, state, ep.last_ts, summary)

    def _distinct(self, rule: CompiledRule, event: Event) -> Alert | None:
        cfg = rule.config
        assert rule.value_of is not None
        value = rule.value_of(event)
        if value is None:
            return None
        group = rule.group_of(event)
        state = rule.groups.setdefault(group, GroupState)
        values = state.values
        now = self.now
        since = now - cfg.window
        _forget_before(values, since)
        seen = values.get(value)
        if seen is not None:
            if event.ts > seen:
                del values[value]
                values[value] = event.ts  # most recently seen last
        elif event.ts >= since and len(values) < 2 * cfg.count:
            values[value] = event.ts
        level = len(values)
        ep = state.episode
        if ep.firing:
            ep.extend(event.ts, event.key, event.source)
            ep.extra = {"distinct": max(level, (ep.extra or {}).get("distinct", 0))}
            return None
        if level < cfg.count:
            return None
        ep = self._start_episode(state, event, level, min(values.values()))
        ep.extra = {"distinct": level}
        summary = (
            f"{level} distinct {cfg.value} values {_describe_group(rule, group)} "
            f"in {describe_duration(cfg.window)}"
        )
        return self._fire(rule, group, state, ep.last_ts, summary)

    def _new_value(self, rule: CompiledRule, event: Event) -> Alert | None:
        cfg = rule.config
        assert rule.value_of is not None
        value = rule.value_of(event)
        if value is None:
            return None
        ts = event.ts
        group = rule.group_of(event)
        state = rule.groups.setdefault(group, GroupState)
        if state.first_seen is None or ts < state.first_seen:
            state.first_seen = ts
        values = state.values
        last = values.get(value)
        if last is not None:
            if ts <= last:
                return None  # a late line about a value already known
            del values[value]
            values[value] = ts  # most recently seen last
            if ts - last < cfg.forget:
                return None
        else:
            values[value] = ts
            if len(values) > MAX_VALUES:
                _forget_before(values, self.now - cfg.forget)
                while len(values) > MAX_VALUES:
                    del values[next(iter(values))]  # the least recently seen
                    rule.evicted_values += 1
        if ts - state.first_seen < cfg.learn:
            return None  # still learning this group's baseline
        ep = Episode(first_ts=ts, last_ts=ts, count=1, key=event.key, source=event.source, started=ts)
        ep.extra = {"value": value}
        summary = (
            f"{_name_group(rule, group)} seen from new {cfg.value} {value} "
            f"({event.method} {event.path} -> {event.status})"
        )
        return self._alert(rule, AlertStatus.FIRING, group, ep, summary, {cfg.value: value})

    def _spike(self, rule: CompiledRule, event: Event) -> Alert | None:
        cfg = rule.config
        group = rule.group_of(event)
        state = rule.groups.setdefault(group, rule.new_state)
        if state.first_seen is None or event.ts < state.first_seen:
            state.first_seen = event.ts
        counter, long_counter = state.counter, state.long_counter
        assert counter is not None and long_counter is not None
        now = self.now
        counter.add(event.ts, now)
        long_counter.add(event.ts, now)
        if state.episode.firing:
            state.episode.extend(event.ts, event.key, event.source)
            return None
        level = counter.count(now)
        if level < cfg.min_count:
            return None
        expected = _expected(state, cfg, now)
        if expected is None or level < cfg.factor * expected:
            return None
        ep = self._start_episode(state, event, level, counter.oldest(now))
        ep.extra = {"baseline": round(expected, 3)}
        where, window = _describe_group(rule, group), describe_duration(cfg.window)
        if expected:
            summary = (
                f"{level} requests {where} in {window}, {level / expected:.1f}x the usual {expected:.1f}"
            )
        else:
            quiet = describe_duration(cfg.baseline)
            summary = f"{level} requests {where} in {window} after {quiet} of near silence"
        return self._fire(rule, group, state, ep.last_ts, summary)

    # -- clock-driven ---------------------------------------------------------------------------

    def _settle(self, rule: CompiledRule, now: float) -> list[Alert]:
        """Resolve the firing groups of a threshold, spike or distinct rule that fell to half."""
        out = []
        cfg = rule.config
        for group in list(rule.firing):
            state = rule.groups.data.get(group)
            if state is None or not state.episode.firing:
                del rule.firing[group]  # evicted (the memory bound won): nothing left to resolve
                continue
            if rule.kind == "distinct":
                _forget_before(state.values, now - cfg.window)
                level, firing_level = len(state.values), float(cfg.count)
            else:
                assert state.counter is not None
                level = state.counter.count(now)
                firing_level = float(cfg.count if rule.kind == "threshold" else cfg.min_count)
                if rule.kind == "spike":
                    firing_level = max(firing_level, cfg.factor * (_expected(state, cfg, now) or 0.0))
            if level * 2 <= firing_level:
                summary = (
                    f"resolved: {rule.name} {_describe_group(rule, group)}, "
                    f"now {level} in {describe_duration(cfg.window)}"
                )
                alert = self._resolve(rule, group, state, summary)
                if alert is not None:
                    out.append(alert)
        return out

    def _check_absent(self, rule: CompiledRule, now: float) -> list[Alert]:
        out: list[Alert] = []
        cfg = rule.config
        silence = float(cfg.for_)
        for source in tuple(getattr(cfg, "sources", ()) or ()) or self.sources:
            group = (source,)
            state = rule.groups.setdefault(group, GroupState)
            last = self.source_last_seen.get(source, self.started if self.started is not None else now)
            ep = state.episode
            alert = None
            if now - last >= silence and not ep.firing:
                ep.first_ts, ep.last_ts, ep.count, ep.source = last, now, 0, source
                summary = f"source {source} produced no lines for {describe_duration(now - last)}"
                alert = self._fire(rule, group, state, now, summary)
            elif now - last < silence and ep.firing:
                ep.last_ts = last
                alert = self._resolve(rule, group, state, f"resolved: source {source} is writing again")
            if alert is not None:
                out.append(alert)
        return out

    def _check_key_expiry(self, now: float) -> list[Alert]:
        out: list[Alert] = []
        registry = self.registry()
        for rule in self._expiry_rules:
            out.extend(self._check_rule_key_expiry(rule, registry, now))
        return out

    def _check_rule_key_expiry(self, rule: CompiledRule, registry: KeyRegistry, now: float) -> list[Alert]:
        out: list[Alert] = []
        cfg = rule.config
        key_ok = glob_matcher(cfg.when.key) if cfg.when.key is not None else None
        owner_ok = glob_matcher(cfg.when.owner) if cfg.when.owner is not None else None
        present: set[Group] = set()
        for entry in registry.entries:
            if cfg.only_used and entry.alias not in self.keys_seen:
                continue
            if key_ok is not None and not key_ok(entry.alias):
                continue
            if owner_ok is not None and not owner_ok(entry.owner):
                continue
            group: Group = (entry.alias,)
            present.add(group)
            problem = _key_problem(entry, cfg, registry, now)
            state = rule.groups.get(group) if problem is None else rule.groups.setdefault(group, GroupState)
            if state is None:
                continue
            ep = state.episode
            if problem and not ep.firing:
                ep.first_ts = ep.last_ts = now
                ep.count, ep.key, ep.source = 1, entry.alias, None
                ep.extra = (
                    {"expires_at": format_ts(entry.expires_at)} if entry.expires_at is not None else None
                )
                alert = self._fire(rule, group, state, now, problem)
            elif problem is None and ep.firing:
                ep.last_ts = now
                alert = self._resolve(rule, group, state, f"resolved: key {entry.alias}")
            else:
                alert = None
            if alert is not None:
                out.append(alert)
        for group in [g for g in rule.firing if g not in present]:  # left the registry or the filter
            state = rule.groups.data.get(group)
            if state is None:
                del rule.firing[group]
                continue
            state.episode.last_ts = now
            alert = self._resolve(rule, group, state, f"resolved: key {group[0]} is no longer watched")
            if alert is not None:
                out.append(alert)
        return out


def _key_problem(entry: KeyEntry, cfg: Any, registry: KeyRegistry, now: float) -> str | None:
    """What is wrong with a key that still works; expired and revoked keys are other rules' business."""
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


def _expected(state: GroupState, cfg: Any, now: float) -> float | None:
    """Requests the group usually makes in one window, from its own history; None: too new."""
    assert state.counter is not None and state.long_counter is not None and state.first_seen is not None
    history = min(cfg.baseline, now - state.first_seen - cfg.window)
    if history < cfg.window:
        return None
    before = state.long_counter.count(now) - state.counter.count(now)
    return float(before) * float(cfg.window) / float(history)


def _forget_before(values: dict[str, float], since: float) -> None:
    """Drop values last seen before `since`; `values` is ordered least recently seen first."""
    while values:
        oldest = next(iter(values))
        if values[oldest] >= since:
            return
        del values[oldest]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _name_group(rule: CompiledRule, group: Group) -> str:
    return ", ".join(f"{k} {v}" for k, v in zip(rule.group_fields, group, strict=True)) or "all requests"


def _describe_group(rule: CompiledRule, group: Group) -> str:
    return f"for {_name_group(rule, group)}" if group else "overall"
