"""The flood limit: how many alerts one rule may raise, and the one alert that stands for the rest.

An alert is a promise that a person should look now; five hundred thousand of them (one per
address an attacker made up) are a promise nobody can keep, and they fill the outbox, the journal
and every receiver. So each rule may send at most `max_alerts` firing alerts in any `FLOOD_WINDOW`
(10 minutes, sliding). A firing alert over that budget is held back: not sent, not journaled,
counted. The first one held back opens the rule's flood, told as one alert of kind `flood`
(group `{"flood": "<rule>"}`, the rule's severity), and every firing is held back while it lasts;
when `FLOOD_WINDOW` has passed with nothing more held back, the flood resolves, its count and a
few of the groups it held back in the resolution. The resolution of an alert whose firing was
held back is held back too.

Resolutions, and the flood's own alerts, never count against the budget. A rule with
`max_alerts: 0` has no limit.

Pure, like the engine: the caller passes its clock.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from xinf_watch.model import ONE_OFF_KINDS, Alert, AlertStatus, Severity, format_ts
from xinf_watch.rules.episodes import alert_id

FLOOD_WINDOW = 600.0
MAX_EXAMPLES = 5
MAX_HELD_IDS = 10_000  # firings held back whose resolution is still to come (oldest forgotten)
FLOOD_KIND = "flood"


@dataclass
class Flood:
    """A rule's flood: the firing alerts held back from `started` to `last`."""

    started: float
    last: float
    held_back: int = 0
    examples: list[dict[str, str]] = field(default_factory=list)


class FloodGate:
    """One rule's budget of firing alerts, and its flood while the budget is spent."""

    def __init__(self, rule: str, severity: Severity, max_alerts: int) -> None:
        self.rule = rule
        self.severity = severity
        self.max_alerts = max_alerts
        self.sent: deque[float] = deque(maxlen=max_alerts)  # when the latest firings went out
        self.held_ids: OrderedDict[str, None] = OrderedDict()
        self.flood: Flood | None = None
        self.held_back_total = 0  # every firing ever held back (xinf_watch_alerts_held_back_total)

    def admit(self, alert: Alert, now: float) -> list[Alert]:
        """What goes out for `alert`: itself, nothing, or the alert that opens a flood."""
        if alert.status is AlertStatus.RESOLVED:
            if alert.id in self.held_ids:
                del self.held_ids[alert.id]
                return []
            return [alert]
        within_budget = len(self.sent) < self.max_alerts or now - self.sent[0] >= FLOOD_WINDOW
        if self.flood is None and within_budget:
            self.sent.append(now)
            return [alert]
        return self._hold(alert, now)

    def _hold(self, alert: Alert, now: float) -> list[Alert]:
        if alert.kind not in ONE_OFF_KINDS:  # a resolution will follow: hold that back too
            self.held_ids[alert.id] = None
            if len(self.held_ids) > MAX_HELD_IDS:
                self.held_ids.popitem(last=False)
        opened = self.flood is None
        flood = self.flood = self.flood or Flood(started=now, last=now)
        flood.last = now
        flood.held_back += 1
        self.held_back_total += 1
        if len(flood.examples) < MAX_EXAMPLES:
            flood.examples.append(dict(alert.group))
        if not opened:
            return []
        summary = (
            f"alert flood: {self.max_alerts} alerts of {self.rule} in {FLOOD_WINDOW / 60:.0f}m; "
            f"its further alerts are counted, not sent, until it calms down"
        )
        return [self._alert(AlertStatus.FIRING, flood, summary)]

    def settle(self, now: float) -> list[Alert]:
        """The flood's resolution, once `FLOOD_WINDOW` has passed with nothing held back."""
        flood = self.flood
        if flood is None or now - flood.last < FLOOD_WINDOW:
            return []
        self.flood = None
        examples = ", ".join(" ".join(f"{k}={v}" for k, v in g.items()) or "-" for g in flood.examples)
        summary = (
            f"alert flood over: {flood.held_back} alerts of {self.rule} held back "
            f"from {format_ts(flood.started)} to {format_ts(flood.last)} (e.g. {examples})"
        )
        return [self._alert(AlertStatus.RESOLVED, flood, summary)]

    def _alert(self, status: AlertStatus, flood: Flood, summary: str) -> Alert:
        group = {"flood": self.rule}
        return Alert(
            rule=self.rule,
            kind=FLOOD_KIND,
            severity=self.severity,
            status=status,
            group=group,
            key="",
            count=flood.held_back,
            first_ts=flood.started,
            last_ts=flood.last,
            summary=summary,
            source=None,
            id=alert_id(self.rule, group, flood.started),
            extra={"held_back": flood.held_back, "examples": list(flood.examples)},
        )

    # -- state ---------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        flood = self.flood
        return {
            "sent": list(self.sent),
            "held_ids": list(self.held_ids),
            "flood": None if flood is None else vars(flood).copy(),
            "held_back_total": self.held_back_total,
        }

    def restore(self, data: Any) -> None:
        """Take over a `snapshot()`; anything of the wrong shape is ignored."""
        if not isinstance(data, dict):
            return
        sent = data.get("sent")
        if isinstance(sent, list) and all(_is_number(t) for t in sent):
            self.sent.extend(float(t) for t in sent)
        held = data.get("held_ids")
        if isinstance(held, list):
            self.held_ids = OrderedDict((i, None) for i in held[-MAX_HELD_IDS:] if isinstance(i, str))
        self.flood = _flood(data.get("flood"))
        total = data.get("held_back_total")
        self.held_back_total = total if isinstance(total, int) and not isinstance(total, bool) else 0


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _flood(data: Any) -> Flood | None:
    if not isinstance(data, dict):
        return None
    started, last, held_back = data.get("started"), data.get("last"), data.get("held_back")
    examples = data.get("examples")
    if not (_is_number(started) and _is_number(last) and isinstance(held_back, int)):
        return None
    if not isinstance(examples, list) or not all(isinstance(g, dict) for g in examples):
        return None
    groups = [{str(k): str(v) for k, v in g.items()} for g in examples]
    return Flood(float(started), float(last), held_back, groups)
