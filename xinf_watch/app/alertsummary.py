"""`replay --summary`: how often each rule would have alerted, per UTC day and per group.

What an operator reads to tune rules on their own logs before enabling them. Pure: the rules, the
alert transitions of a replay and its line counts in, a `Summary` out; `format_table` and `to_json`
are its two renderings. `app/replay.py` and `app/replaycmd.py` only collect the inputs.

Counting:
- A firing transition is one alert (what reaches a channel); a resolution is counted apart, in
  `resolved`, as it closes an episode already counted. Episodes that start within a rule's
  cooldown are never emitted, so they are not counted either: the figures are what would be sent.
- Days are UTC calendar days of the log timestamps. A firing's day is that of its `last_ts`, the
  hit that raised it. The days of a summary run from the first record's day to the last one's
  (widened to any alert outside them), and the average per day divides by all of them: days
  without a firing count, and so do a partial first and last day.
- Top groups: the groups with the most firings (ties by group text), `top` of them per rule; in
  the total, a group's firings under every rule add up (the key or address that alerts most).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

from xinf_watch.model import Alert, AlertStatus, LineResult, format_ts

DEFAULT_TOP = 5


class RuleLike(Protocol):
    """What the summary needs of a rule (a `RuleConfig` is one)."""

    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def severity(self) -> str: ...


@dataclass(frozen=True, slots=True)
class RuleSummary:
    rule: str
    kind: str
    severity: str
    firings: int
    resolved: int
    per_day: dict[str, int]  # every day of the summary, in order, zeros included
    groups: int  # distinct groups that fired
    top_groups: tuple[tuple[dict[str, str], int], ...]

    @property
    def per_day_average(self) -> float:
        return self.firings / len(self.per_day) if self.per_day else 0.0

    @property
    def max_day(self) -> tuple[str, int] | None:
        """The (first) day with the most firings; None when the rule never fired."""
        if not self.firings:
            return None
        return max(self.per_day.items(), key=lambda item: item[1])  # max keeps the first of equals


@dataclass(frozen=True, slots=True)
class Summary:
    rules: tuple[RuleSummary, ...]
    total: RuleSummary  # every rule together: a group's firings under any rule add up
    days: tuple[str, ...]
    lines: dict[str, int]  # parsed, unparsed, skipped
    first_ts: float | None  # first and last record
    last_ts: float | None


def summarize(
    rules: Sequence[RuleLike],
    alerts: Iterable[Alert],
    lines: Mapping[str, int],
    span: tuple[float, float] | None,
    top: int = DEFAULT_TOP,
) -> Summary:
    """The summary of a replay: its configured rules, alert transitions, line counts by result
    (`LineResult` values) and first and last record time (None: no record)."""
    firing: dict[str, list[tuple[str, dict[str, str]]]] = {r.name: [] for r in rules}  # (day, group)
    resolved: Counter[str] = Counter()
    meta = {r.name: (r.kind, str(r.severity)) for r in rules}
    for alert in alerts:
        meta.setdefault(alert.rule, (alert.kind, alert.severity.value))  # not among `rules`
        if alert.status is AlertStatus.RESOLVED:
            resolved[alert.rule] += 1
        else:
            firing.setdefault(alert.rule, []).append((_day(alert.last_ts), alert.group))
    days = _days(span, [day for hits in firing.values() for day, _ in hits])
    summaries = tuple(
        _rule_summary(name, *meta[name], hits, resolved[name], days, top) for name, hits in firing.items()
    )
    everything = [hit for hits in firing.values() for hit in hits]
    total = _rule_summary("(all rules)", "", "", everything, sum(resolved.values()), days, top)
    counts = {result.value: lines.get(result.value, 0) for result in LineResult}
    return Summary(summaries, total, days, counts, *(span or (None, None)))


def _rule_summary(
    name: str,
    kind: str,
    severity: str,
    hits: list[tuple[str, dict[str, str]]],
    resolved: int,
    days: tuple[str, ...],
    top: int,
) -> RuleSummary:
    per_day = dict.fromkeys(days, 0)
    for day, _ in hits:
        per_day[day] += 1
    by_group = Counter(_group_text(group) for _, group in hits)
    group_of = {_group_text(group): group for _, group in hits}
    ranked = sorted(by_group.items(), key=lambda item: (-item[1], item[0]))[:top]
    return RuleSummary(
        rule=name,
        kind=kind,
        severity=severity,
        firings=len(hits),
        resolved=resolved,
        per_day=per_day,
        groups=len(by_group),
        top_groups=tuple((group_of[text], n) for text, n in ranked),
    )


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).date().isoformat()


def _days(span: tuple[float, float] | None, alert_days: list[str]) -> tuple[str, ...]:
    known = [date.fromisoformat(d) for d in ({_day(t) for t in span} if span else set()) | set(alert_days)]
    if not known:
        return ()
    first, last = min(known), max(known)
    return tuple((first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1))


def _group_text(group: Mapping[str, str]) -> str:
    return " ".join(f"{field}={value}" for field, value in group.items()) or "(one group)"


# -- renderings ---------------------------------------------------------------------------------


def format_table(summary: Summary) -> str:
    """A header (lines, span), one row per rule and a total row, aligned columns."""
    n = summary.lines
    out = [
        f"lines: {sum(n.values()):,} ({n['parsed']:,} parsed, {n['unparsed']:,} unparsed, "
        f"{n['skipped']:,} skipped)",
        f"span: {_span_text(summary)}",
        "",
    ]
    rows = [["RULE", "KIND", "SEVERITY", "FIRINGS", "PER DAY", "MAX DAY", "GROUPS", "TOP GROUPS"]]
    rows += [_row(r) for r in (*summary.rules, summary.total)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    right = {3, 4, 6}  # the counts
    for row in rows:
        cells = [c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(row)]
        out.append("  ".join(cells).rstrip())
    out.append("")
    days = f"{len(summary.days)} UTC day{'s' if len(summary.days) != 1 else ''}"
    out.append(f"firings: alerts raised (resolutions not counted); per day: over the {days} the logs cover")
    return "".join(line + "\n" for line in out)


def _row(r: RuleSummary) -> list[str]:
    best = r.max_day
    tops = ", ".join(f"{_group_text(group)} ({count})" for group, count in r.top_groups)
    return [
        r.rule,
        r.kind,
        r.severity,
        f"{r.firings:,}",
        f"{r.per_day_average:,.1f}",
        f"{best[1]:,} on {best[0]}" if best else "-",
        f"{r.groups:,}",
        tops or "-",
    ]


def _span_text(summary: Summary) -> str:
    if summary.first_ts is None or summary.last_ts is None:
        return "no records"
    days = summary.days
    which = days[0] if len(days) == 1 else f"{days[0]} .. {days[-1]}"
    return (
        f"{format_ts(summary.first_ts)} .. {format_ts(summary.last_ts)} "
        f"({len(days)} UTC day{'s' if len(days) != 1 else ''}: {which})"
    )


def to_json(summary: Summary) -> dict[str, Any]:
    """The machine-readable summary (`replay --summary --json`)."""
    return {
        "lines": dict(summary.lines),
        "first_ts": None if summary.first_ts is None else format_ts(summary.first_ts),
        "last_ts": None if summary.last_ts is None else format_ts(summary.last_ts),
        "days": list(summary.days),
        "rules": [_rule_json(r) for r in summary.rules],
        "total": {k: v for k, v in _rule_json(summary.total).items() if k not in _RULE_ONLY},
    }


_RULE_ONLY = ("rule", "kind", "severity")


def _rule_json(r: RuleSummary) -> dict[str, Any]:
    best = r.max_day
    return {
        "rule": r.rule,
        "kind": r.kind,
        "severity": r.severity,
        "firings": r.firings,
        "resolved": r.resolved,
        "per_day_average": round(r.per_day_average, 3),
        "max_day": {"day": best[0], "firings": best[1]} if best else None,
        "per_day": dict(r.per_day),
        "groups": r.groups,
        "top_groups": [{"group": dict(group), "firings": n} for group, n in r.top_groups],
    }
