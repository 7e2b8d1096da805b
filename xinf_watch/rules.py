"""The rule engine: events and a clock in, alert transitions out (DESIGN.md sections 3 and 7).

Pure: no threads, files, sockets or wall clock. Time is the events' own (`observe`) or what the
caller passes to `advance(now)`; `now` never goes backwards, and events up to a window late are
still counted in their own time bucket, so lines a few seconds out of order are fine.

Lifecycle per (rule, group):
- `match` fires for every matching event; within `cooldown` of the last notification further
  hits are only counted and reported with the next one.
- `threshold`, `spike` and `distinct` fire when their condition starts to hold and resolve when it
  has clearly stopped: the value must fall to half the firing level (hysteresis), so a count
  hovering at the threshold does not flap. An episode that starts within `cooldown` of the last
  notification of that group is tracked but not notified (neither its firing nor its resolution).
- `new_value` fires once per value new to its group (after the group's `learn` period).
- `key_expiry` and `absent` are evaluated on the clock (every `TICK` seconds of event time) and
  resolve when their condition clears.
Each alert's `id` hashes (rule, group, episode start): stable for the firing and its resolution.

Memory is bounded: groups per rule (`MAX_GROUPS`), values per new_value group
(`MAX_VALUES`), and distinct values per group are capped; `evicted` counts what was forgotten.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from xinf_watch.filters import Predicate, compile_filter, subnet_of
from xinf_watch.keys import KeyRegistry
from xinf_watch.model import Alert, AlertStatus, Event, KeyState, Severity, format_ts
from xinf_watch.windows import BoundedMap, WindowCounter

TICK = 1.0
MAX_GROUPS = 20_000
MAX_VALUES = 1_000
KEY_EXPIRY_EVERY = 60.0

Group = tuple[str, ...]


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


@dataclass(slots=True)
class Episode:
    """One group's current firing episode (or its counting state between episodes)."""

    first_ts: float = 0.0
    last_ts: float = 0.0
    count: int = 0
    key: str = "none"
    source: str | None = None
    firing: bool = False
    notified: bool = False  # False while firing inside the cooldown: nothing is sent for it
    started: float = 0.0


@dataclass(slots=True)
class GroupState:
    counter: WindowCounter | None = None
    long_counter: WindowCounter | None = None  # spike baseline
    values: dict[str, float] = field(default_factory=dict)  # new_value / distinct: value -> last seen
    first_seen: float = 0.0
    last_notified: float = float("-inf")
    episode: Episode = field(default_factory=Episode)


class CompiledRule:
    def __init__(self, config: Any) -> None:
        self.config = config
        self.name: str = config.name
        self.kind: str = config.kind
        self.severity: Severity = Severity(config.severity)
        self.by: tuple[str, ...] = tuple(config.by)
        # clock-driven kinds group by what they watch, whatever `by` says
        self.group_fields = {"absent": ("source",), "key_expiry": ("key",)}.get(self.kind, self.by)
        self.cooldown: float = float(config.cooldown)
        self.matches: Predicate = compile_filter(config.when)
        self.groups: BoundedMap[Group, GroupState] = BoundedMap(MAX_GROUPS)
        self.firing: set[Group] = set()
        value = getattr(config, "value", None)
        self.value_of: Callable[[Event], str] | None = _value_getter(value) if value else None

    def group_of(self, event: Event) -> Group:
        return tuple(str(getattr(event, f)) for f in self.by)

    def group_dict(self, group: Group) -> dict[str, str]:
        return dict(zip(self.group_fields, group, strict=True))

    @property
    def evicted(self) -> int:
        return self.groups.evicted


def _value_getter(value: str) -> Callable[[Event], str]:
    if value.startswith("ip/"):
        prefix = int(value[3:])
        return lambda e: subnet_of(e.ip, prefix)
    return lambda e: str(getattr(e, value))


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
        self.now = float("-inf")
        self.started: float | None = None
        self.next_tick = float("-inf")
        self.next_expiry_check = float("-inf")
        self.source_last_seen: dict[str, float] = {}
        self.keys_seen: set[str] = set()
        self._event_rules = [r for r in self.rules if r.kind not in ("key_expiry", "absent")]
        self._clock_rules = [r for r in self.rules if r.kind in ("key_expiry", "absent")]

    # -- input ---------------------------------------------------------------------------------

    def observe(self, event: Event) -> list[Alert]:
        out: list[Alert] = []
        ts = event.ts
        if self.started is None:
            self.started = ts
        if ts > self.now:
            self.now = ts
        self.source_last_seen[event.source] = max(ts, self.source_last_seen.get(event.source, ts))
        if event.key_state is not KeyState.NONE and event.key_state is not KeyState.UNKNOWN:
            self.keys_seen.add(event.key)
        for rule in self._event_rules:
            if rule.matches(event):
                handler = _HANDLERS[rule.kind]
                alert = handler(self, rule, event)
                if alert is not None:
                    out.append(alert)
        if self.now >= self.next_tick:
            out.extend(self.advance(self.now))
        return out

    def advance(self, now: float) -> list[Alert]:
        """Time-driven transitions at `now`: resolutions, absent sources, expiring keys."""
        if self.started is None:
            self.started = now
        self.now = max(self.now, now)
        now = self.now
        self.next_tick = now + TICK
        out: list[Alert] = []
        for rule in self.rules:
            if rule.kind in ("threshold", "spike", "distinct"):
                out.extend(self._resolve_cleared(rule, now))
            elif rule.kind == "absent":
                out.extend(self._check_absent(rule, now))
        if now >= self.next_expiry_check:
            self.next_expiry_check = now + KEY_EXPIRY_EVERY
            for rule in self._clock_rules:
                if rule.kind == "key_expiry":
                    out.extend(self._check_key_expiry(rule, now))
        return out

    @property
    def evicted(self) -> dict[str, int]:
        return {r.name: r.evicted for r in self.rules if r.evicted}

    # -- alert construction --------------------------------------------------------------------

    def _alert(
        self,
        rule: CompiledRule,
        status: AlertStatus,
        group: Group,
        ep: Episode,
        summary: str,
        extra: dict[str, Any] | None = None,
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
            id=alert_id(
                rule.name, {**group_dict, **{k: str(v) for k, v in (extra or {}).items()}}, ep.started
            ),
            extra=extra or {},
        )

    def _fire(
        self,
        rule: CompiledRule,
        group: Group,
        state: GroupState,
        summary: str,
        extra: dict[str, Any] | None = None,
    ) -> Alert | None:
        ep = state.episode
        ep.firing = True
        ep.started = ep.first_ts
        rule.firing.add(group)
        ep.notified = ep.last_ts - state.last_notified >= rule.cooldown
        if not ep.notified:
            return None
        state.last_notified = ep.last_ts
        return self._alert(rule, AlertStatus.FIRING, group, ep, summary, extra)

    def _resolve(
        self, rule: CompiledRule, group: Group, state: GroupState, now: float, summary: str
    ) -> Alert | None:
        ep = state.episode
        rule.firing.discard(group)
        alert = None
        if ep.notified:
            alert = self._alert(rule, AlertStatus.RESOLVED, group, ep, summary)
        state.episode = Episode()
        return alert

    # -- event-driven kinds --------------------------------------------------------------------

    def _match(self, rule: CompiledRule, event: Event) -> Alert | None:
        group = rule.group_of(event)
        state = rule.groups.setdefault(group, GroupState)
        ep = state.episode
        if ep.count == 0:
            ep.first_ts = event.ts
        ep.count += 1
        ep.last_ts = event.ts
        ep.key = event.key
        ep.source = event.source
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

    def _count_in_episode(self, state: GroupState, event: Event, level: int) -> None:
        ep = state.episode
        if not ep.firing:
            ep.count = level
            ep.first_ts = event.ts if ep.first_ts == 0.0 or level == 1 else ep.first_ts
        else:
            ep.count += 1
        ep.last_ts = event.ts
        ep.key = event.key
        ep.source = event.source

    def _threshold(self, rule: CompiledRule, event: Event) -> Alert | None:
        cfg = rule.config
        group = rule.group_of(event)
        state = rule.groups.setdefault(group, GroupState)
        if state.counter is None:
            state.counter = WindowCounter(cfg.window)
        state.counter.add(event.ts, self.now)
        level = state.counter.count(self.now)
        self._count_in_episode(state, event, level)
        if state.episode.firing or level < cfg.count:
            return None
        where = _describe_group(rule, group)
        return self._fire(
            rule,
            group,
            state,
            f"{level} requests matching {rule.name} {where} in {describe_duration(cfg.window)}",
        )

    def _distinct(self, rule: CompiledRule, event: Event) -> Alert | None:
        cfg = rule.config
        assert rule.value_of is not None
        group = rule.group_of(event)
        state = rule.groups.setdefault(group, GroupState)
        value = rule.value_of(event)
        values = state.values
        if value in values or len(values) < 2 * cfg.count:
            values[value] = event.ts
        _forget_older(values, self.now - cfg.window)
        level = len(values)
        self._count_in_episode(state, event, level)
        if state.episode.firing or level < cfg.count:
            return None
        return self._fire(
            rule,
            group,
            state,
            f"{level} distinct {cfg.value} values {_describe_group(rule, group)} "
            f"in {describe_duration(cfg.window)}",
            {"distinct": level},
        )

    def _new_value(self, rule: CompiledRule, event: Event) -> Alert | None:
        cfg = rule.config
        assert rule.value_of is not None
        group = rule.group_of(event)
        state = rule.groups.setdefault(group, GroupState)
        if not state.values and state.first_seen == 0.0:
            state.first_seen = event.ts
        value = rule.value_of(event)
        values = state.values
        last = values.get(value)
        values[value] = event.ts
        if last is not None and event.ts - last < cfg.forget:
            return None
        if len(values) > MAX_VALUES:
            _forget_older(values, self.now - cfg.forget)
            while len(values) > MAX_VALUES:
                del values[next(iter(values))]
                rule.groups.evicted += 1
        if event.ts - state.first_seen < cfg.learn:
            return None  # still learning this group's baseline
        ep = Episode(
            first_ts=event.ts, last_ts=event.ts, count=1, key=event.key, source=event.source, started=event.ts
        )
        field_name = cfg.value
        return self._alert(
            rule,
            AlertStatus.FIRING,
            group,
            ep,
            f"{_name_group(rule, group)} seen from new {field_name} {value} "
            f"({event.method} {event.path} -> {event.status})",
            {"value": value},
        )

    def _spike(self, rule: CompiledRule, event: Event) -> Alert | None:
        cfg = rule.config
        group = rule.group_of(event)
        state = rule.groups.setdefault(group, GroupState)
        if state.counter is None:
            state.counter = WindowCounter(cfg.window)
            state.long_counter = WindowCounter(cfg.baseline + cfg.window)
            state.first_seen = event.ts
        assert state.long_counter is not None
        state.counter.add(event.ts, self.now)
        state.long_counter.add(event.ts, self.now)
        level = state.counter.count(self.now)
        self._count_in_episode(state, event, level)
        if state.episode.firing or level < cfg.min_count:
            return None
        expected = _expected(state, cfg, self.now)
        if expected is None or level < cfg.factor * expected:
            return None
        return self._fire(
            rule,
            group,
            state,
            f"{level} requests {_describe_group(rule, group)} in {describe_duration(cfg.window)}, "
            f"{level / max(expected, 1e-9):.1f}x the usual {expected:.1f}"
            if expected
            else f"{level} requests {_describe_group(rule, group)} in {describe_duration(cfg.window)} "
            f"after {describe_duration(cfg.baseline)} of near silence",
            {"baseline": round(expected, 3)},
        )

    # -- clock-driven ---------------------------------------------------------------------------

    def _resolve_cleared(self, rule: CompiledRule, now: float) -> list[Alert]:
        out = []
        cfg = rule.config
        for group in list(rule.firing):
            state = rule.groups.get(group)
            if state is None:
                rule.firing.discard(group)
                continue
            if rule.kind == "distinct":
                _forget_older(state.values, now - cfg.window)
                level, firing_level = len(state.values), cfg.count
            else:
                assert state.counter is not None
                level = state.counter.count(now)
                firing_level = cfg.count if rule.kind == "threshold" else cfg.min_count
                if rule.kind == "spike":
                    expected = _expected(state, cfg, now) or 0.0
                    firing_level = max(firing_level, cfg.factor * expected)
            if level * 2 < firing_level:
                alert = self._resolve(
                    rule,
                    group,
                    state,
                    now,
                    f"resolved: {rule.name} {_describe_group(rule, group)}, "
                    f"now {level} in {describe_duration(cfg.window)}",
                )
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
            if now - last >= silence and not ep.firing:
                ep.first_ts, ep.last_ts, ep.count, ep.source = last, now, 0, source
                alert = self._fire(
                    rule,
                    group,
                    state,
                    f"source {source} produced no lines for {describe_duration(now - last)}",
                )
                if alert is not None:
                    out.append(alert)
            elif now - last < silence and ep.firing:
                ep.last_ts = last
                alert = self._resolve(rule, group, state, now, f"resolved: source {source} is writing again")
                if alert is not None:
                    out.append(alert)
        return out

    def _check_key_expiry(self, rule: CompiledRule, now: float) -> list[Alert]:
        out: list[Alert] = []
        cfg = rule.config
        registry = self.registry()
        wanted_keys = _globset(getattr(cfg.when, "key", None))
        wanted_owners = _globset(getattr(cfg.when, "owner", None))
        for entry in registry.entries:
            if getattr(cfg, "only_used", True) and entry.alias not in self.keys_seen:
                continue
            if wanted_keys is not None and entry.alias not in wanted_keys:
                continue
            if wanted_owners is not None and (entry.owner or "") not in wanted_owners:
                continue
            problem = None
            if not entry.revoked:
                if entry.expires_at is not None and now < entry.expires_at <= now + cfg.within:
                    problem = (
                        f"key {entry.alias} expires in {describe_duration(round(entry.expires_at - now))}"
                        f" ({format_ts(entry.expires_at)})"
                    )
                elif entry.expires_at is None and getattr(cfg, "no_expiry", False):
                    problem = f"key {entry.alias} has no expiry date"
                elif (
                    cfg.max_age is not None
                    and entry.created_at is not None
                    and now - entry.created_at > cfg.max_age
                ):
                    problem = (
                        f"key {entry.alias} is {describe_duration(round(now - entry.created_at))} old "
                        f"(max_age {describe_duration(cfg.max_age)})"
                    )
            group = (entry.alias,)
            state = rule.groups.setdefault(group, GroupState)
            ep = state.episode
            if problem and not ep.firing:
                ep.first_ts = ep.last_ts = now
                ep.count, ep.key = 1, entry.alias
                alert = self._fire(
                    rule,
                    group,
                    state,
                    problem,
                    {"expires_at": format_ts(entry.expires_at)} if entry.expires_at else None,
                )
                if alert is not None:
                    out.append(alert)
            elif problem is None and ep.firing:
                ep.last_ts = now
                alert = self._resolve(rule, group, state, now, f"resolved: key {entry.alias}")
                if alert is not None:
                    out.append(alert)
        return out


def _expected(state: GroupState, cfg: Any, now: float) -> float | None:
    """Requests the group usually makes in one window, from its own history; None: too new."""
    assert state.counter is not None and state.long_counter is not None
    history = min(cfg.baseline, now - state.first_seen - cfg.window)
    if history < cfg.window:
        return None
    before = state.long_counter.count(now) - state.counter.count(now)
    return float(before) * cfg.window / history


def _forget_older(values: dict[str, float], since: float) -> None:
    stale = [v for v, seen in values.items() if seen < since]
    for v in stale:
        del values[v]


def _globset(values: Any) -> frozenset[str] | None:
    return None if values is None else frozenset(str(v) for v in values)


def _name_group(rule: CompiledRule, group: Group) -> str:
    return ", ".join(f"{k} {v}" for k, v in zip(rule.group_fields, group, strict=True)) or "all requests"


def _describe_group(rule: CompiledRule, group: Group) -> str:
    return f"for {_name_group(rule, group)}" if group else "overall"


_HANDLERS: dict[str, Callable[[RuleEngine, CompiledRule, Event], Alert | None]] = {
    "match": RuleEngine._match,
    "threshold": RuleEngine._threshold,
    "distinct": RuleEngine._distinct,
    "new_value": RuleEngine._new_value,
    "spike": RuleEngine._spike,
}
