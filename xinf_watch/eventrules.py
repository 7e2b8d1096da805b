"""The event-driven rule kinds: what one matching event does to its group, and their resolution.

Each handler takes a rule, an event its filter admitted and the time to evaluate it at, and
returns the alert the event causes, if any (`HANDLERS`, by kind):
- `match` fires for every event; within `cooldown` of the last notification further hits are only
  counted and reported with the next one (its `count` and `first_ts` cover them).
- `threshold`, `spike` and `distinct` fire when their condition starts to hold. `settle`, run on
  the clock, resolves them once it has clearly stopped: the level must fall to half the firing
  level (hysteresis), so a count hovering at the threshold does not flap.
- `new_value` fires once per value new to its group, after the group's `learn` period; a value
  unseen for `forget` is new again.
Events up to a window late are still counted in their own time bucket.

Memory: values per new_value group are capped at `MAX_VALUES` (the least recently seen go first,
counted in the rule's `evicted_values`), distinct values per group at twice the rule's count.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from xinf_watch import summaries
from xinf_watch.episodes import fire, make_alert, resolve
from xinf_watch.model import Alert, AlertStatus, Event
from xinf_watch.rulestate import CompiledRule, Episode, GroupState

MAX_VALUES = 1_000

Handler = Callable[[CompiledRule, Event, float], Alert | None]


def match(rule: CompiledRule, event: Event, now: float) -> Alert | None:
    group = rule.group_of(event)
    state = rule.groups.setdefault(group, GroupState)
    ep = state.episode
    ep.extend(event.ts, event.key, event.source)
    if event.ts - state.last_notified < rule.cooldown:
        return None  # counted, reported with the next notification
    state.last_notified = event.ts
    ep.started = event.ts
    alert = make_alert(rule, AlertStatus.FIRING, group, ep, summaries.match(event, ep.count, ep.first_ts))
    state.episode = Episode()
    return alert


def threshold(rule: CompiledRule, event: Event, now: float) -> Alert | None:
    cfg = rule.config
    group = rule.group_of(event)
    state = rule.groups.setdefault(group, rule.new_state)
    counter = state.counter
    assert counter is not None
    counter.add(event.ts, now)
    if state.episode.firing:
        state.episode.extend(event.ts, event.key, event.source)
        return None
    level = counter.count(now)
    if level < cfg.count:
        return None
    ep = _start_episode(state, event, level, counter.oldest(now))
    summary = summaries.threshold(level, rule.group_fields, group, cfg.window)
    return fire(rule, group, state, ep.last_ts, summary)


def distinct(rule: CompiledRule, event: Event, now: float) -> Alert | None:
    cfg = rule.config
    value = rule.value_of(event)
    if value is None:
        return None
    group = rule.group_of(event)
    state = rule.groups.setdefault(group, GroupState)
    values = state.values
    since = now - cfg.window
    _forget_before(values, since)
    seen = _seen_again(values, value, event.ts)
    if seen is None and event.ts >= since and len(values) < 2 * cfg.count:
        values[value] = event.ts
    level = len(values)
    ep = state.episode
    if ep.firing:
        ep.extend(event.ts, event.key, event.source)
        ep.extra = {"distinct": max(level, (ep.extra or {}).get("distinct", 0))}
        return None
    if level < cfg.count:
        return None
    ep = _start_episode(state, event, level, min(values.values()))
    ep.extra = {"distinct": level}
    summary = summaries.distinct(level, cfg.value, rule.group_fields, group, cfg.window)
    return fire(rule, group, state, ep.last_ts, summary)


def new_value(rule: CompiledRule, event: Event, now: float) -> Alert | None:
    cfg = rule.config
    value = rule.value_of(event)
    if value is None:
        return None
    ts = event.ts
    group = rule.group_of(event)
    state = rule.groups.setdefault(group, GroupState)
    if state.first_seen is None or ts < state.first_seen:
        state.first_seen = ts
    values = state.values
    last = _seen_again(values, value, ts)
    if last is not None:
        if ts <= last or ts - last < cfg.forget:
            return None  # a late line about a known value, or one seen again within `forget`
    else:
        values[value] = ts
        if len(values) > MAX_VALUES:
            _forget_before(values, now - cfg.forget)
            while len(values) > MAX_VALUES:
                del values[next(iter(values))]  # the least recently seen
                rule.evicted_values += 1
    if ts - state.first_seen < cfg.learn:
        return None  # still learning this group's baseline
    ep = Episode(first_ts=ts, last_ts=ts, count=1, key=event.key, source=event.source, started=ts)
    ep.extra = {"value": value}
    summary = summaries.new_value(cfg.value, value, rule.group_fields, group, event)
    return make_alert(rule, AlertStatus.FIRING, group, ep, summary, {cfg.value: value})


def spike(rule: CompiledRule, event: Event, now: float) -> Alert | None:
    cfg = rule.config
    group = rule.group_of(event)
    state = rule.groups.setdefault(group, rule.new_state)
    if state.first_seen is None or event.ts < state.first_seen:
        state.first_seen = event.ts
    counter, long_counter = state.counter, state.long_counter
    assert counter is not None and long_counter is not None
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
    ep = _start_episode(state, event, level, counter.oldest(now))
    ep.extra = {"baseline": round(expected, 3)}
    summary = summaries.spike(level, expected, rule.group_fields, group, cfg.window, cfg.baseline)
    return fire(rule, group, state, ep.last_ts, summary)


HANDLERS: dict[str, Handler] = {
    "match": match,
    "threshold": threshold,
    "distinct": distinct,
    "new_value": new_value,
    "spike": spike,
}


def settle(rule: CompiledRule, now: float) -> list[Alert]:
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
            counted = summaries.distinct_noun(cfg.value)
        else:
            assert state.counter is not None
            level = state.counter.count(now)
            firing_level = float(cfg.count if rule.kind == "threshold" else cfg.min_count)
            counted = "matching requests" if rule.kind == "threshold" else "requests"
            if rule.kind == "spike":
                firing_level = max(firing_level, cfg.factor * (_expected(state, cfg, now) or 0.0))
        if level * 2 <= firing_level:
            summary = summaries.back_to_normal(counted, level, rule.group_fields, group, cfg.window)
            alert = resolve(rule, group, state, summary)
            if alert is not None:
                out.append(alert)
    return out


def _start_episode(state: GroupState, event: Event, level: int, first_ts: float | None) -> Episode:
    ep = state.episode
    ep.count = level
    ep.first_ts = event.ts if first_ts is None else min(first_ts, event.ts)
    ep.last_ts = max(event.ts, ep.first_ts)
    ep.key = event.key
    ep.source = event.source
    return ep


def _expected(state: GroupState, cfg: Any, now: float) -> float | None:
    """Requests the group usually makes in one window, from its own history; None: too new."""
    assert state.counter is not None and state.long_counter is not None and state.first_seen is not None
    history = min(cfg.baseline, now - state.first_seen - cfg.window)
    if history < cfg.window:
        return None
    before = state.long_counter.count(now) - state.counter.count(now)
    return float(before) * float(cfg.window) / float(history)


def _seen_again(values: dict[str, float], value: str, ts: float) -> float | None:
    """When `value` was last seen (None: not remembered); a sighting newer than that moves it to
    the end of `values`, which is ordered least recently seen first."""
    last = values.get(value)
    if last is not None and ts > last:
        del values[value]
        values[value] = ts
    return last


def _forget_before(values: dict[str, float], since: float) -> None:
    """Drop values last seen before `since`; `values` is ordered least recently seen first."""
    while values:
        oldest = next(iter(values))
        if values[oldest] >= since:
            return
        del values[oldest]
