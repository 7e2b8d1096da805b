"""The flood limit (`max_alerts`): a rule raising alerts faster than anyone can read them sends one
flood alert for the rest, resolved with their count once the rule calms down; other rules, and a
rule within its budget, are untouched."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from ruletools import T0, engine, event, feed, firing, resolved

from xinf_watch.config.schema import ConfigError
from xinf_watch.model import Alert, AlertStatus, KeyState, Severity
from xinf_watch.rules.engine import RuleEngine
from xinf_watch.rules.episodes import alert_id
from xinf_watch.rules.flood import FLOOD_WINDOW, MAX_HELD_IDS, Flood, FloodGate

WEBUI = (
    "- {name: webui-external, kind: match, when: {path: ['/ui/*']}, by: [ip], cooldown: 0s, "
    "severity: warning, max_alerts: 3}"
)
REVOKED = "- {name: revoked-key-used, kind: match, when: {key_state: revoked}, by: [key], severity: critical}"


def outsider(ts: float, n: int) -> object:
    return event(ts, ip=f"203.0.{n // 250}.{n % 250 + 1}", path="/ui/", key="none", key_state=KeyState.NONE)


def test_a_flood_is_its_first_alerts_and_one_flood_alert(tmp_path: Path) -> None:
    eng = engine(tmp_path, WEBUI)
    out = feed(eng, [outsider(T0 + i, i) for i in range(100)])  # 100 addresses in 100 s
    assert [a.kind for a in out] == ["match", "match", "match", "flood"]
    assert [a.group for a in out[:3]] == [{"ip": "203.0.0.1"}, {"ip": "203.0.0.2"}, {"ip": "203.0.0.3"}]
    (flood,) = firing(out[3:])
    assert flood.rule == "webui-external" and flood.group == {"flood": "webui-external"}
    assert flood.severity.value == "warning" and flood.key == ""
    assert flood.summary == (
        "alert flood: 3 alerts of webui-external in 10m; its further alerts are counted, not sent, "
        "until it calms down"
    )
    # quiet for a window after the last one held back: the flood ends, with what it held back
    last = T0 + 99
    assert eng.advance(last + FLOOD_WINDOW - 1) == []
    (over,) = eng.advance(last + FLOOD_WINDOW)
    assert over.status.value == "resolved" and over.id == flood.id
    assert over.count == 97 and over.extra["held_back"] == 97
    assert over.extra["examples"] == [{"ip": f"203.0.0.{n}"} for n in (4, 5, 6, 7, 8)]
    assert over.summary.startswith(
        "alert flood over: 97 alerts of webui-external held back from 2026-11-28T07:06:03Z to "
        "2026-11-28T07:07:39Z (e.g. ip=203.0.0.4, ip=203.0.0.5,"
    )
    # the budget is whole again: the next outsider is an alert of its own, not a new flood
    (again,) = feed(eng, [outsider(last + FLOOD_WINDOW + 1, 500)])
    assert again.kind == "match" and again.group == {"ip": "203.0.2.1"}
    assert eng.advance(last + 3 * FLOOD_WINDOW) == []


def test_the_budget_slides_alerts_spread_out_never_flood(tmp_path: Path) -> None:
    eng = engine(tmp_path, WEBUI)
    out = feed(eng, [outsider(T0 + i * 240, i) for i in range(30)])  # one every 4 minutes, 2 hours
    assert len(out) == 30 and {a.kind for a in out} == {"match"}
    # but a fourth within any 10 minutes opens one: two of the spread-out ones are still in the window
    out = feed(eng, [outsider(T0 + 30 * 240 + i, 100 + i) for i in range(3)])
    assert [a.kind for a in out] == ["match", "flood"]


def test_a_flood_does_not_hold_back_another_rules_critical_alert(tmp_path: Path) -> None:
    eng = engine(tmp_path, WEBUI + "\n" + REVOKED)
    events = [outsider(T0 + i, i) for i in range(50)]
    events.insert(25, event(T0 + 25, key="old-laptop", key_state=KeyState.REVOKED, status=401))
    out = feed(eng, events)
    (critical,) = [a for a in out if a.rule == "revoked-key-used"]
    assert critical.severity.value == "critical" and critical.group == {"key": "old-laptop"}
    assert len([a for a in out if a.rule == "webui-external"]) == 4  # 3 and the flood


def test_a_held_back_firing_is_never_resolved_and_the_sent_ones_are(tmp_path: Path) -> None:
    rules = (
        "- {name: burst, kind: threshold, when: {outcome: denied}, by: [ip], count: 2, window: 1m, "
        "cooldown: 0s, max_alerts: 2}"
    )
    eng = engine(tmp_path, rules)
    denied = [
        event(T0 + i, ip=f"198.51.100.{i // 2 + 1}", status=401, key="none", key_state=KeyState.NONE)
        for i in range(10)
    ]  # five addresses, each denied twice
    out = feed(eng, denied)
    assert [(a.kind, a.group) for a in out] == [
        ("threshold", {"ip": "198.51.100.1"}),
        ("threshold", {"ip": "198.51.100.2"}),
        ("flood", {"flood": "burst"}),
    ]
    later = eng.advance(T0 + 9 + FLOOD_WINDOW)
    assert sorted((a.kind, a.status.value, a.group.get("ip", "")) for a in later) == [
        ("flood", "resolved", ""),
        ("threshold", "resolved", "198.51.100.1"),
        ("threshold", "resolved", "198.51.100.2"),
    ]
    assert [a for a in later if a.kind == "flood"][0].count == 3


def test_a_rule_without_a_limit_beside_one_with_a_limit_is_untouched(tmp_path: Path) -> None:
    unlimited = REVOKED.replace("severity: critical", "severity: critical, max_alerts: 0")
    eng = engine(tmp_path, WEBUI + "\n" + unlimited)
    events = [outsider(T0 + i, i) for i in range(10)]
    events += [event(T0 + 10 + i, key=f"old-{i}", key_state=KeyState.REVOKED, status=401) for i in range(30)]
    out = feed(eng, events)
    assert [a.kind for a in out if a.rule == "webui-external"] == ["match"] * 3 + ["flood"]
    assert len([a for a in out if a.rule == "revoked-key-used"]) == 30
    assert eng.held_back == {"webui-external": 7}


def test_max_alerts_zero_is_no_limit(tmp_path: Path) -> None:
    eng = engine(tmp_path, WEBUI.replace("max_alerts: 3", "max_alerts: 0"))
    out = feed(eng, [outsider(T0 + i, i) for i in range(300)])
    assert len(out) == 300 and {a.kind for a in out} == {"match"}


def test_the_default_limit_is_20_in_10_minutes(tmp_path: Path) -> None:
    eng = engine(tmp_path, WEBUI.replace(", max_alerts: 3", ""))
    out = feed(eng, [outsider(T0 + i, i) for i in range(1000)])
    assert [a.kind for a in out] == ["match"] * 20 + ["flood"]


def test_a_flood_survives_a_restart_and_ends_once(tmp_path: Path) -> None:
    eng = engine(tmp_path, WEBUI)
    feed(eng, [outsider(T0 + i, i) for i in range(10)])
    saved = eng.snapshot()
    again = engine(tmp_path, WEBUI)
    again.restore(saved)
    assert feed(again, [outsider(T0 + 10 + i, 10 + i) for i in range(5)]) == []  # still flooding
    (over,) = resolved(again.advance(T0 + 14 + FLOOD_WINDOW))
    assert over.kind == "flood" and over.count == 12
    assert again.advance(T0 + 14 + 2 * FLOOD_WINDOW) == []


def test_a_damaged_flood_state_is_ignored(tmp_path: Path) -> None:
    eng: RuleEngine = engine(tmp_path, WEBUI)
    saved = eng.snapshot()
    for damaged in ("x", {"sent": ["a"], "held_ids": [1], "flood": {"started": "x"}}, {"flood": []}):
        fresh = engine(tmp_path, WEBUI)
        fresh.restore(saved | {"floods": {"webui-external": damaged}})
        assert len(feed(fresh, [outsider(T0 + i, i) for i in range(4)])) == 4  # 3 and a flood


@pytest.mark.parametrize(
    ("value", "expected"),
    [("-1", "an integer >= 0"), ("many", "an integer >= 0"), ("2.5", "an integer >= 0")],
)
def test_a_bad_max_alerts_is_refused_naming_the_line(tmp_path: Path, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        engine(tmp_path, WEBUI.replace("max_alerts: 3", f"max_alerts: {value}"))
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'rules.yaml'}:4: rules[0].max_alerts:"), message
    assert expected in message and "\n" not in message


# -- FloodGate on its own: the budget's edge, the bound on held ids, what a flood alert carries ------


def gate_alert(n: int, now: float, status: str = "firing", kind: str = "threshold", **group: str) -> Alert:
    return Alert(rule="burst", kind=kind, severity=Severity.WARNING, status=AlertStatus(status),
                 group=group or {"ip": f"198.51.100.{n}"}, key="", count=1, first_ts=now, last_ts=now,
                 summary="", source=None, id=f"id-{n}")  # fmt: skip


def test_the_oldest_sent_alert_leaves_the_budget_exactly_one_flood_window_later() -> None:
    gate = FloodGate("burst", Severity.WARNING, 2)
    assert gate.admit(gate_alert(1, T0), T0) and gate.admit(gate_alert(2, T0 + 1), T0 + 1)
    (sent,) = gate.admit(gate_alert(3, T0 + FLOOD_WINDOW), T0 + FLOOD_WINDOW)  # T0's went out 10m ago
    assert sent.id == "id-3" and gate.flood is None
    (flood,) = gate.admit(gate_alert(4, T0 + FLOOD_WINDOW + 0.5), T0 + FLOOD_WINDOW + 0.5)  # T0+1's has not
    assert flood.kind == "flood" and gate.held_back_total == 1


def test_held_back_counts_every_firing_held_back_and_starts_at_zero(tmp_path: Path) -> None:
    eng = engine(tmp_path, WEBUI)
    assert eng.held_back == {}
    feed(eng, [outsider(T0 + i, i) for i in range(3)])
    assert eng.held_back == {}  # within the budget: nothing held back
    feed(eng, [outsider(T0 + 3 + i, 3 + i) for i in range(97)])
    assert eng.held_back == {"webui-external": 97}
    eng.advance(T0 + 99 + FLOOD_WINDOW)  # the flood ends; the total is for ever
    assert eng.held_back == {"webui-external": 97}


def test_at_most_max_held_ids_resolutions_are_held_back_the_oldest_forgotten() -> None:
    gate = FloodGate("burst", Severity.WARNING, 1)
    gate.admit(gate_alert(0, T0), T0)
    for n in range(1, MAX_HELD_IDS + 2):  # one more than the bound is held back
        gate.admit(gate_alert(n, T0 + 1), T0 + 1)
    assert len(gate.held_ids) == MAX_HELD_IDS and gate.held_back_total == MAX_HELD_IDS + 1
    later = T0 + 2 * FLOOD_WINDOW
    assert gate.admit(gate_alert(1, later, "resolved"), later) != []  # forgotten: its resolution goes out
    assert gate.admit(gate_alert(2, later, "resolved"), later) == []  # the oldest one still held
    assert gate.admit(gate_alert(MAX_HELD_IDS + 1, later, "resolved"), later) == []  # the newest
    assert gate.admit(gate_alert(2, later, "resolved"), later) != []  # held back once, not for ever


def test_a_flood_alert_carries_its_times_its_id_and_every_example_group() -> None:
    gate = FloodGate("burst", Severity.CRITICAL, 1)
    gate.admit(gate_alert(0, T0), T0)
    (opened,) = gate.admit(gate_alert(1, T0 + 5, key="k1", ip="198.51.100.1"), T0 + 5)
    gate.admit(gate_alert(2, T0 + 7, kind="match", **{"": ""}), T0 + 7)
    gate.admit(gate_alert(3, T0 + 9, kind="match", path="/ui/"), T0 + 9)
    assert (opened.first_ts, opened.last_ts, opened.count) == (T0 + 5, T0 + 5, 1)
    assert opened.id == alert_id("burst", {"flood": "burst"}, T0 + 5) and opened.severity is Severity.CRITICAL
    assert gate.settle(T0 + 9 + FLOOD_WINDOW - 0.001) == []
    (over,) = gate.settle(T0 + 9 + FLOOD_WINDOW)
    assert (over.first_ts, over.last_ts, over.count, over.id) == (T0 + 5, T0 + 9, 3, opened.id)
    assert over.summary == (
        "alert flood over: 3 alerts of burst held back from 2026-11-28T07:06:05Z to 2026-11-28T07:06:09Z "
        "(e.g. key=k1 ip=198.51.100.1, =, path=/ui/)"
    )
    # the next flood of the same rule is another episode: another id
    gate.admit(gate_alert(4, T0 + 3000), T0 + 3000)
    (second,) = gate.admit(gate_alert(5, T0 + 3001), T0 + 3001)
    assert second.kind == "flood" and second.id != opened.id


def test_a_flood_example_of_an_ungrouped_rule_is_a_dash() -> None:
    gate = FloodGate("burst", Severity.WARNING, 1)
    gate.admit(gate_alert(0, T0), T0)
    held = gate_alert(1, T0 + 1)
    gate.admit(Alert(**{**vars_of(held), "group": {}}), T0 + 1)
    (over,) = gate.settle(T0 + 1 + FLOOD_WINDOW)
    assert over.summary.endswith("(e.g. -)") and over.extra["examples"] == [{}]


def vars_of(alert: Alert) -> dict[str, Any]:
    return {f: getattr(alert, f) for f in alert.__dataclass_fields__}


def test_a_gates_state_comes_back_whole_through_json() -> None:
    def restarted(gate: FloodGate) -> FloodGate:
        again = FloodGate("burst", Severity.WARNING, 2)
        again.restore(json.loads(json.dumps(gate.snapshot())))
        assert again.snapshot() == gate.snapshot()
        return again

    gate = FloodGate("burst", Severity.WARNING, 2)
    gate.admit(gate_alert(1, T0), T0)
    gate.admit(gate_alert(2, T0 + 1), T0 + 1)
    gate = restarted(gate)  # the budget it spent is still spent
    (flood,) = gate.admit(gate_alert(3, T0 + 2, ip="198.51.100.3"), T0 + 2)
    assert flood.kind == "flood"
    gate = restarted(gate)  # and the flood, what it held back and the total go on
    assert gate.held_back_total == 1
    assert gate.admit(gate_alert(3, T0 + 3, "resolved"), T0 + 3) == []  # its firing was held back
    (over,) = gate.settle(T0 + 2 + FLOOD_WINDOW)
    assert (over.first_ts, over.last_ts, over.count, over.id) == (T0 + 2, T0 + 2, 1, flood.id)
    assert over.extra["examples"] == [{"ip": "198.51.100.3"}]


@pytest.mark.parametrize(
    "flood",
    [
        {"started": "x", "last": T0, "held_back": 2, "examples": []},
        {"started": T0, "last": "x", "held_back": 2, "examples": []},
        {"started": T0, "last": T0, "held_back": "2", "examples": []},
        {"started": T0, "last": T0, "held_back": 2, "examples": [1]},
        {"started": T0, "last": T0, "held_back": 2, "examples": {"ip": "x"}},
    ],
)
def test_a_damaged_flood_is_no_flood(flood: dict[str, Any]) -> None:
    gate = FloodGate("burst", Severity.WARNING, 2)
    gate.restore({"sent": [], "held_ids": [], "flood": flood, "held_back_total": 2})
    assert gate.flood is None and gate.held_back_total == 2


def test_restored_examples_are_strings_and_a_bad_total_is_zero() -> None:
    gate = FloodGate("burst", Severity.WARNING, 2)
    flood = {"started": T0, "last": T0 + 1, "held_back": 4, "examples": [{"status": 401, 7: None}]}
    gate.restore({"sent": [T0], "held_ids": ["a", 3, "b"], "flood": flood, "held_back_total": True})
    assert gate.flood == Flood(T0, T0 + 1, 4, [{"status": "401", "7": "None"}])
    assert list(gate.held_ids) == ["a", "b"] and list(gate.sent) == [T0] and gate.held_back_total == 0
