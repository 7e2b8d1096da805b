"""Routing: the targets an alert of a rule goes to (`targets_for`), and the targets a config
builds (`build_targets`).

Each URL (or apprise config file) of a notify group is a target of its own, `ops[1]`, `ops[2]`
(`targets_for`): its own queue in the outbox, its own backoff, and, in the daemon, its own lane
thread (`sender.Lanes`), so a dead or slow URL delays only itself. Every alert also goes to the
Alertmanager, when one is configured.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from xinf_watch.delivery.alertmanager import DEFAULT_EVENT_TTL, AlertmanagerTarget
from xinf_watch.delivery.apprise_target import AppriseTarget
from xinf_watch.delivery.target import ALERTMANAGER, Target, entry_target


def targets_for(
    rule_notify: Sequence[str], notify_groups: Mapping[str, Sequence[str]], alertmanager_url: str | None
) -> list[str]:
    """The target names an alert of a rule goes to: each entry of its notify groups (a queue of its
    own), then Alertmanager (all alerts)."""
    groups = dict.fromkeys(g for g in rule_notify if g in notify_groups)
    names = [entry_target(g, n) for g in groups for n in range(1, len(notify_groups[g]) + 1)]
    if alertmanager_url:
        names.append(ALERTMANAGER)
    return names


def build_targets(
    notify_groups: Mapping[str, Sequence[str]],
    alertmanager_url: str | None,
    *,
    group_interval: float = 0.0,
    resend_interval: float = 60.0,
    event_ttl: float = DEFAULT_EVENT_TTL,
) -> dict[str, Target]:
    if alertmanager_url and ALERTMANAGER in notify_groups:
        raise ValueError(f"a notify group may not be called {ALERTMANAGER!r} when alertmanager is configured")
    targets: dict[str, Target] = {}
    for name, entries in notify_groups.items():
        for n, entry in enumerate(entries, 1):
            targets[entry_target(name, n)] = AppriseTarget(entry_target(name, n), [entry], group_interval)
        # the rows an earlier release queued per group (all its URLs in one row) still go out
        targets[name] = AppriseTarget(name, entries, group_interval)
    if alertmanager_url:
        targets[ALERTMANAGER] = AlertmanagerTarget(
            alertmanager_url, resend_interval=resend_interval, event_ttl=event_ttl
        )
    return targets
