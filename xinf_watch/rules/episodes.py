"""How a group's episode turns into alert transitions: firing, resolution, cooldown, alert ids.

Every rule kind ends here. An episode is one stretch of a group's condition holding; `fire` starts
it and `resolve` ends it. An episode that starts within `cooldown` of the group's last
notification is tracked but not notified (neither its firing nor, if it ends inside the cooldown,
its resolution); `notify_held_back` sends one that outlasts the cooldown once the cooldown is over.

An alert's `id` hashes (rule, group, episode start): the firing and its resolution share it, the
next episode gets a new one, so receivers can de-duplicate (docs/DESIGN.md section 7).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from xinf_watch.model import Alert, AlertStatus, format_ts
from xinf_watch.rules.memory import CompiledRule, Episode, Group, GroupState


def alert_id(rule: str, group: dict[str, str], episode: float) -> str:
    text = "\0".join([rule, *(f"{k}={v}" for k, v in sorted(group.items())), f"{episode:.3f}"])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def make_alert(
    rule: CompiledRule,
    status: AlertStatus,
    group: Group,
    ep: Episode,
    summary: str,
    id_extra: dict[str, str] | None = None,
) -> Alert:
    """The alert for `ep`; `id_extra` adds to what the id hashes (new_value: the new value)."""
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


def fire(rule: CompiledRule, group: Group, state: GroupState, at: float, summary: str) -> Alert | None:
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
    return make_alert(rule, AlertStatus.FIRING, group, ep, summary)


def resolve(rule: CompiledRule, group: Group, state: GroupState, summary: str) -> Alert | None:
    """End the episode; an episode nobody was told about ends silently."""
    ep = state.episode
    rule.firing.pop(group, None)
    alert = make_alert(rule, AlertStatus.RESOLVED, group, ep, summary) if ep.notified else None
    state.episode = Episode()
    return alert


Describe = Callable[[CompiledRule, Group, GroupState, float], str | None]


def notify_held_back(rule: CompiledRule, now: float, describe_now: Describe) -> list[Alert]:
    """Episodes that began inside the cooldown and are still firing once it is over; their summary
    says how things stand now (`describe_now`), not what they were when the episode began."""
    out: list[Alert] = []
    for group in rule.firing:
        state = rule.groups.peek(group)
        if state is None or state.episode.notified or now - state.last_notified < rule.cooldown:
            continue
        ep = state.episode
        ep.notified = True
        state.last_notified = now
        current = describe_now(rule, group, state, now) or ep.summary
        summary = f"{current} (still firing after the cooldown, since {format_ts(ep.first_ts)})"
        out.append(make_alert(rule, AlertStatus.FIRING, group, ep, summary))
    return out
