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
Events up to a window late are still counted in their own time bucket. A spike group's baseline,
what it usually does in one window, is `rules/baselines.py`'s.

Memory: values per new_value group are capped at `MAX_VALUES` (the least recently seen go first,
counted in the rule's `evicted_values`), distinct values per group at twice the rule's count.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

from xinf_watch.model import Alert, AlertStatus, Event, format_ts
from xinf_watch.rules import baselines, summaries
from xinf_watch.rules.episodes import fire, make_alert, resolve
from xinf_watch.rules.filters import subnet_of
from xinf_watch.rules.memory import NEVER, CompiledRule, Episode, Group, GroupState
from xinf_watch.rules.windows import BUCKETS

MAX_VALUES = 1_000
SETTLE_SLACK = 1e-6  # seconds: a group is looked at this much early, whatever the float rounding

Handler = Callable[[CompiledRule, Event, float], Alert | None]


def match(rule: CompiledRule, event: Event, now: float) -> Alert | None:
    group = rule.group_of(event)
    state = rule.groups.setdefault(group, GroupState)
    ep = state.episode
    ep.extend(event.ts, event.key, event.source)
    if event.ts - state.last_notified < rule.cooldown:
        ep.summary = summaries.match(event, 1, event.ts)  # the latest held-back hit, for `flush_held`
        rule.held[group] = None
        return None
    state.last_notified = event.ts
    ep.started = event.ts
    alert = make_alert(rule, AlertStatus.FIRING, group, ep, summaries.match(event, ep.count, ep.first_ts))
    state.episode = Episode()
    rule.held.pop(group, None)
    return alert


def flush_held(rule: CompiledRule, now: float) -> list[Alert]:
    """match: the hits a cooldown held back, in one alert once the cooldown is over, so that they
    are told while they are news (not days later with the next hit)."""
    out: list[Alert] = []
    for group in list(rule.held):
        state = rule.groups.peek(group)
        if state is None or state.episode.count == 0:
            del rule.held[group]  # evicted by the memory bound
            continue
        if now - state.last_notified < rule.cooldown:
            continue
        ep = state.episode
        since = state.last_notified
        # told when the cooldown ended, as the live daemon's timer tells them (a replay may only
        # get here with the next line, a day later: that line must not fall in a new cooldown)
        state.last_notified, ep.started = since + rule.cooldown, ep.last_ts
        more = "1 more such request" if ep.count == 1 else f"{ep.count} more such requests"
        summary = f"{more} since the alert at {format_ts(since)}, the latest: {ep.summary}"
        out.append(make_alert(rule, AlertStatus.FIRING, group, ep, summary))
        state.episode = Episode()
        del rule.held[group]
    return out


def threshold(rule: CompiledRule, event: Event, now: float) -> Alert | None:
    cfg = rule.config
    group = rule.group_of(event)
    state = rule.groups.setdefault(group, rule.new_state)
    counter = state.counter
    assert counter is not None
    level = counter.add(event.ts, now)
    if state.episode.firing:
        state.episode.extend(event.ts, event.key, event.source)
        return None
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
    if rule.is_known is not None and rule.is_known(event):
        return None  # inside a network the rule knows: never new
    values = state.values
    last = _seen_again(values, value, ts)
    if last is not None:
        if ts <= last or ts - last < cfg.forget:
            return None  # a late line about a known value, or one seen again within `forget`
        learned = False
    else:
        learned = ts - state.first_seen < cfg.learn and _joins_baseline(rule, state, event.ip)
        values[value] = ts
        if len(values) > MAX_VALUES:
            _forget_before(values, now - cfg.forget)
            while len(values) > MAX_VALUES:
                del values[next(iter(values))]  # the least recently seen
                rule.evicted_values += 1
    if learned:
        return None  # part of this group's baseline
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
    assert counter is not None
    level = counter.add(event.ts, now)
    if long_counter is not None:
        long_counter.add(event.ts, now)
    if state.hours is not None:
        baselines.count_daily(state, event.ts, now, level, cfg)
    if state.episode.firing:
        state.episode.extend(event.ts, event.key, event.source)
        return None
    if level < cfg.min_count:
        return None
    expected = baselines.expected(state, cfg, now)
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
    """Resolve the firing groups of a threshold, spike or distinct rule that fell to half.

    Runs every second of the clock; a threshold or distinct group is looked at again only once
    its level can have fallen (`_settle_at`), so thousands of groups firing under an attack do not
    cost thousands of counts a second."""
    out = []
    cfg = rule.config
    for group in list(rule.firing):
        state = rule.groups.peek(group)
        if state is None or not state.episode.firing:
            del rule.firing[group]  # evicted (the memory bound won): nothing left to resolve
            continue
        if now < state.settle_at:
            continue
        level, firing_level = _levels(rule, state, now)
        if level * 2 > firing_level:
            state.settle_at = _settle_at(rule, state, firing_level)
        else:
            counted = (
                summaries.distinct_noun(cfg.value)
                if rule.kind == "distinct"
                else ("matching requests" if rule.kind == "threshold" else "requests")
            )
            summary = summaries.back_to_normal(counted, level, rule.group_fields, group, cfg.window)
            alert = resolve(rule, group, state, summary)
            if alert is not None:
                out.append(alert)
    return out


def _settle_at(rule: CompiledRule, state: GroupState, firing_level: float) -> float:
    """The earliest time a firing group's level can be at most half `firing_level`: when enough of
    its oldest buckets (threshold) or values (distinct) have expired; more events only delay that.
    A spike's level is judged against a baseline that moves: looked at every time (NEVER)."""
    keep = int(firing_level // 2)  # the level it must fall to
    if rule.kind == "threshold":
        counter = state.counter
        assert counter is not None
        remaining = counter.total
        for index, count, _ in counter.buckets:  # oldest first; a bucket goes at (index + BUCKETS) * width
            remaining -= count
            if remaining <= keep:
                return float((index + BUCKETS) * counter.width) - SETTLE_SLACK
        return NEVER
    if rule.kind == "distinct":
        # A value goes no sooner than `window` after it was last seen, so the level cannot be down
        # to `keep` before the drop-th oldest sighting is that old. Not the drop-th in the dict's
        # order: a late value sits behind newer ones, and a sighting moving a newer one to the end
        # puts it in front. A new sighting only makes one later; a new value means one more to drop.
        drop = len(state.values) - keep
        if drop <= 0:
            return NEVER
        return heapq.nsmallest(drop, state.values.values())[-1] + float(rule.config.window) - SETTLE_SLACK
    return NEVER


def _levels(rule: CompiledRule, state: GroupState, now: float) -> tuple[int, float]:
    """A counting rule's level for a group now, and the level at which it fires."""
    cfg = rule.config
    if rule.kind == "distinct":
        _forget_before(state.values, now - cfg.window)
        return len(state.values), float(cfg.count)
    assert state.counter is not None
    level = state.counter.count(now)
    if rule.kind == "threshold":
        return level, float(cfg.count)
    return level, max(float(cfg.min_count), cfg.factor * (baselines.expected(state, cfg, now) or 0.0))


def describe_now(rule: CompiledRule, group: Group, state: GroupState, now: float) -> str | None:
    """The summary of a counting rule's firing group as things stand at `now` (for a notification
    sent later than the firing, which must not repeat the level of the moment it started)."""
    cfg = rule.config
    if rule.kind == "threshold":
        level, _ = _levels(rule, state, now)
        return summaries.threshold(level, rule.group_fields, group, cfg.window)
    if rule.kind == "distinct":
        level, _ = _levels(rule, state, now)
        return summaries.distinct(level, cfg.value, rule.group_fields, group, cfg.window)
    if rule.kind == "spike":
        level, _ = _levels(rule, state, now)
        expected = baselines.expected(state, cfg, now) or 0.0
        return summaries.spike(level, expected, rule.group_fields, group, cfg.window, cfg.baseline)
    return None


def _start_episode(state: GroupState, event: Event, level: int, first_ts: float | None) -> Episode:
    ep = state.episode
    ep.count = level
    ep.first_ts = event.ts if first_ts is None else min(first_ts, event.ts)
    ep.last_ts = max(event.ts, ep.first_ts)
    ep.key = event.key
    ep.source = event.source
    return ep


def _joins_baseline(rule: CompiledRule, state: GroupState, ip: str) -> bool:
    """While a group learns, a new address joins its baseline silently if it is near one the group
    has used (same /16, IPv6 /48); without `known` networks, the first address seeds the baseline.
    An address far from every one the group has used always fires, learning or not."""
    if not rule.value_is_address:
        return True  # not an address: everything the group shows while learning is its baseline
    values = state.values
    if not values:
        return rule.is_known is None
    wide = _wide_network(ip)
    if state.networks is None or len(state.networks) > 2 * MAX_VALUES:  # rebuilt now and then
        state.networks = {_wide_network(seen.partition("/")[0]) for seen in values}
    near = wide in state.networks
    state.networks.add(wide)
    return near


def _wide_network(ip: str) -> str:
    """The /16 (IPv6: /48) around an address, as a key to compare with (not necessarily a CIDR)."""
    if ":" not in ip:
        first, _, rest = ip.partition(".")
        return f"{first}.{rest.partition('.')[0]}"  # 10.244.3.7 -> 10.244: cheaper than subnet_of
    return subnet_of(ip, 16 if ip.startswith("::ffff:") else 48)


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
