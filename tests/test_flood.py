"""The flood limit (`max_alerts`): a rule raising alerts faster than anyone can read them sends one
flood alert for the rest, resolved with their count once the rule calms down; other rules, and a
rule within its budget, are untouched."""

from __future__ import annotations

from pathlib import Path

import pytest
from ruletools import T0, engine, event, feed, firing, resolved

from xinf_watch.config import ConfigError
from xinf_watch.flood import FLOOD_WINDOW
from xinf_watch.model import KeyState
from xinf_watch.rules import RuleEngine

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
