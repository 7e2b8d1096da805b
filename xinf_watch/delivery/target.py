"""What every delivery target is: the `Target` protocol, `DeliveryError`, and target names.

A target is one place alerts are sent to: one URL or apprise config file of a notify group
(`ops[1]`, `ops[2]`: `entry_target`), a whole notify group (rows an earlier release queued per
group), or the Alertmanager (`ALERTMANAGER`). Each has its own queue in the outbox. The names are
plain strings so that the outbox (state/outbox.py) can store them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

ALERTMANAGER = "alertmanager"  # the target name of the Alertmanager, beside the notify group names


class DeliveryError(Exception):
    """A target did not accept an alert; the message names no secret."""


class Target(Protocol):
    group_interval: float  # > 0: group the alerts of a rule (see delivery/sender.py)
    max_batch: int  # alerts one `send` takes, at most

    def send(self, alerts: Sequence[dict[str, Any]]) -> None: ...


def entry_target(group: str, n: int) -> str:
    """The target name of the `n`th (from 1) URL or config file of a notify group: `ops[2]`."""
    return f"{group}[{n}]"


def group_of(target: str) -> str:
    """The notify group (or `alertmanager`) a target name belongs to (group names have no `[`)."""
    return target.partition("[")[0]
