"""Scoring alerts against a simulation's ground truth (simulate/run.py's truth.json): which firing
alerts caught an incident, which were expected notices, which were noise. The alerts come from a
replay of the simulation's files (`app.replay.replay_alerts`).

Rules of the scoring:
- Only `firing` transitions count (each one is a notification somebody reads); `resolved` ones
  are not counted.
- A firing alert is a true positive when its rule is one of an incident's catching rules
  (incidents.CATCHING_RULES), its group matches the incident (a `key` group value is one of the
  incident's key aliases, an `ip` value one of its addresses or a network holding one; a group
  with neither is matched by the alert's `key`), and [first_ts, last_ts] overlaps
  [start - 1 min, end + 15 min].
- Otherwise, an alert of a notice rule (incidents.NOTICE_RULES: key-expiring) about a key that
  is still used at or after the alert's first_ts is an expected notice: neither true nor false.
- Every other firing alert is a false positive. An incident is caught when a true positive
  matches it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from ipaddress import ip_network
from typing import Any

from xinf_watch.addresses import ip_in

BEFORE = 60.0  # an alert may start this long before the incident's first request
AFTER = 900.0  # ... and this long after its last one


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass(slots=True)
class RuleScore:
    rule: str
    firing: int = 0
    true_positives: int = 0
    false_positives: int = 0
    notices: int = 0
    caught: set[str] = field(default_factory=set)  # incident ids this rule caught
    listed: int = 0  # incidents this rule is a catching rule of

    def add(self, other: RuleScore) -> None:
        self.firing += other.firing
        self.true_positives += other.true_positives
        self.false_positives += other.false_positives
        self.notices += other.notices
        self.caught |= other.caught
        self.listed += other.listed


@dataclass(slots=True)
class Score:
    days: float
    incidents: int
    rules: dict[str, RuleScore]
    caught: list[str]  # incident ids
    missed: list[dict[str, Any]]  # truth entries of the incidents no alert caught
    false_positives: list[dict[str, Any]]  # the alerts

    @property
    def firing(self) -> int:
        return sum(r.firing for r in self.rules.values())

    @property
    def false_positive_count(self) -> int:
        return len(self.false_positives)

    def to_json(self) -> dict[str, Any]:
        return {
            "days": self.days,
            "incidents": self.incidents,
            "caught": len(self.caught),
            "firing": self.firing,
            "false_positives": self.false_positive_count,
            "false_positives_per_day": round(self.false_positive_count / self.days, 2),
            "rules": {
                name: {
                    "firing": r.firing,
                    "true_positives": r.true_positives,
                    "false_positives": r.false_positives,
                    "notices": r.notices,
                    "incidents_caught": len(r.caught),
                    "incidents_listed": r.listed,
                    "false_positives_per_day": round(r.false_positives / self.days, 2),
                }
                for name, r in sorted(self.rules.items())
            },
            "missed": self.missed,
            "false_positive_alerts": self.false_positives,
        }


def _ip_matches(value: str, ips: Iterable[str]) -> bool:
    if "/" not in value:
        return value in ips
    try:
        net = ip_network(value, strict=False)
    except ValueError:
        return False
    return any(ip_in(ip, (net,)) for ip in ips)


def group_matches(alert: dict[str, Any], incident: dict[str, Any]) -> bool:
    group: dict[str, str] = alert.get("group") or {}
    decided = False
    for name, value in group.items():
        if name.startswith("key"):
            if value not in incident["keys"]:
                return False
            decided = True
        elif name.startswith("ip"):
            if not _ip_matches(value, incident["ips"]):
                return False
            decided = True
    return decided or alert.get("key") in incident["keys"]


def _overlaps(alert: dict[str, Any], incident: dict[str, Any]) -> bool:
    return (
        _ts(alert["first_ts"]) <= _ts(incident["end"]) + AFTER
        and _ts(alert["last_ts"]) >= _ts(incident["start"]) - BEFORE
    )


def score(alerts: Iterable[dict[str, Any]], truth: dict[str, Any]) -> Score:
    days = (_ts(truth["end"]) - _ts(truth["start"])) / 86400
    incidents: list[dict[str, Any]] = truth["incidents"]
    rules: dict[str, RuleScore] = {}
    for incident in incidents:
        for name in incident["rules"]:
            rules.setdefault(name, RuleScore(name)).listed += 1
    notices = {(rule, n["key"]): _ts(n["last_use"]) for n in truth["notices"] for rule in n["rules"]}
    caught: set[str] = set()
    false_positives = []
    for alert in alerts:
        if alert.get("status") != "firing":
            continue
        rs = rules.setdefault(alert["rule"], RuleScore(alert["rule"]))
        rs.firing += 1
        hits = [
            i["id"]
            for i in incidents
            if alert["rule"] in i["rules"] and group_matches(alert, i) and _overlaps(alert, i)
        ]
        if hits:
            rs.true_positives += 1
            rs.caught.update(hits)
            caught.update(hits)
        elif _ts(alert["first_ts"]) <= notices.get((alert["rule"], alert.get("key")), -1.0):
            rs.notices += 1
        else:
            rs.false_positives += 1
            false_positives.append(alert)
    return Score(
        days,
        len(incidents),
        rules,
        sorted(caught),
        [i for i in incidents if i["id"] not in caught],
        false_positives,
    )
