"""Alert text for people: a notification's title and body, and the alerts read back from a body.

Rules:
- Every alert reaches people as a readable title and body whose last paragraph holds the alert
  JSON, one alert per line (docs/DESIGN.md section 7); Alertmanager gets it as labels and
  annotations instead (delivery/alertmanager.py).
- Text for people (titles, bodies, and elsewhere Alertmanager's labels and summary and the
  targets' error texts) goes through `visible.visible`: a path or an error body cannot forge a
  line or hide text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from xinf_watch.visible import visible, visible_json

_STANDARD = ("rule", "kind", "severity", "status", "group", "key", "count", "first_ts", "last_ts",
             "summary", "source", "id")  # fmt: skip


def notification_text(alert: dict[str, Any]) -> tuple[str, str]:
    """A title and body for people, the body ending with the alert JSON on its own line. Every
    value is shown through `visible`: a path or user agent cannot add a line or hide text."""
    rule, status = visible(alert.get("rule", "?")), visible(alert.get("status", "firing"))
    severity, summary = visible(alert.get("severity", "")), visible(alert.get("summary", ""))
    title = f"[{status.upper()}] {rule} ({severity}): {summary}"
    lines = [f"{rule} is {status.upper()} ({severity}, {visible(alert.get('kind', '?'))} rule)", summary, ""]
    group = alert.get("group") or {}
    details: list[tuple[str, Any]] = [("key", alert.get("key"))]
    details += [(str(k), v) for k, v in group.items() if k != "key" or v != alert.get("key")]
    details += [("count", alert.get("count")), ("from", alert.get("first_ts")), ("to", alert.get("last_ts")),
                ("source", alert.get("source"))]  # fmt: skip
    details += [(k, v) for k, v in alert.items() if k not in _STANDARD]
    shown = [(visible(k) + ":", visible(v)) for k, v in details if v is not None]
    shown.append(("id:", visible(alert.get("id"))))
    width = max(len(k) for k, _ in shown)
    lines += [f"{k:<{width}} {v}" for k, v in shown]
    lines += ["", visible_json(alert)]
    return title, "\n".join(lines)


def group_text(alerts: Sequence[dict[str, Any]]) -> tuple[str, str]:
    """A title and body for the alerts of one group (one rule and severity): a line for each, then,
    after an empty line, each alert's JSON on its own line. One alert reads as `notification_text`."""
    if len(alerts) == 1:
        return notification_text(alerts[0])
    first = alerts[0]
    rule, severity = visible(first.get("rule", "?")), visible(first.get("severity", ""))
    resolved = sum(a.get("status") == "resolved" for a in alerts)
    firing = len(alerts) - resolved
    counts = ", ".join(f"{n} {what}" for n, what in ((firing, "firing"), (resolved, "resolved")) if n)
    title = f"[{'FIRING' if firing else 'RESOLVED'}] {rule} ({severity}): {len(alerts)} alerts ({counts})"
    kind = visible(first.get("kind", "?"))
    lines = [f"{rule}: {len(alerts)} alerts, {counts} ({severity}, {kind} rule)", ""]
    for a in alerts:
        status = visible(a.get("status", "firing")).upper()
        lines.append(f"{visible(a.get('last_ts'))} {status}: {visible(a.get('summary', ''))}")
    lines.append("")
    lines += [visible_json(a) for a in alerts]
    return title, "\n".join(lines)


def alerts_in(body: str) -> list[dict[str, Any]]:
    """The alerts a notification body carries: the JSON lines of its last paragraph."""
    return [orjson.loads(line) for line in body.rstrip("\n").rsplit("\n\n", 1)[-1].splitlines()]
