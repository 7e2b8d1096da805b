"""Resolution of firing threshold and distinct groups (`eventkinds.settle`): a group is looked at
again only once its level can have fallen to half. That must change when the engine looks, never
what it finds: the same alerts as looking at every group every second, and far fewer looks when
thousands of groups fire at once."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from ruletools import T0, engine, event, feed

from xinf_watch.model import Alert, KeyState
from xinf_watch.rules import eventkinds as eventrules
from xinf_watch.rules.memory import NEVER

RULES = """
- {name: burst, kind: threshold, when: {outcome: denied}, by: [ip], count: 5, window: 1m, cooldown: 0s,
   max_alerts: 0}
- {name: spray, kind: distinct, value: fingerprint, when: {key_state: unknown}, by: [ip], count: 4,
   window: 2m, cooldown: 0s, max_alerts: 0}
"""


def attack(seed: int) -> list[object]:
    """Denied requests with unknown keys from a few addresses, in bursts and lulls, some late."""
    rng = random.Random(seed)
    events, ts = [], T0
    for _ in range(3000):
        ts += rng.choice([0.05, 0.3, 1.0, 4.0, 30.0])
        at = ts - rng.choice([0.0, 0.0, 0.0, 7.0])  # now and then a line a few seconds late
        ip = f"203.0.113.{rng.randrange(6)}"
        fingerprint = f"{rng.randrange(12):012x}"
        events.append(event(at, ip=ip, status=401, key="unknown", key_state=KeyState.UNKNOWN,
                            fingerprint=fingerprint))  # fmt: skip
    return events


def run(tmp_path: Path, events: list[object]) -> list[Alert]:
    eng = engine(tmp_path, RULES)
    out = feed(eng, events)  # type: ignore[arg-type]
    out += eng.advance(T0 + 10 * 86400)
    return out


@pytest.mark.parametrize("seed", range(12))
def test_looking_only_when_a_group_can_have_fallen_finds_what_looking_every_second_does(
    tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = attack(seed)
    skipping = run(tmp_path, events)
    monkeypatch.setattr(eventrules, "_settle_at", lambda rule, state, level: NEVER)  # every second
    every_second = run(tmp_path, events)
    resolved = [a for a in every_second if a.status.value == "resolved"]
    assert len(resolved) >= 10, "the attack resolved too few episodes to compare"
    assert [a.to_json() for a in skipping] == [a.to_json() for a in every_second]


def test_thousands_of_firing_groups_are_not_counted_every_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    eng = engine(tmp_path, RULES)
    burst = [event(T0 + i / 1000, ip=f"10.9.{i // 5 // 250}.{i // 5 % 250}", status=401, key="none",
                   key_state=KeyState.NONE) for i in range(5 * 2000)]  # fmt: skip
    assert len(feed(eng, burst)) == 2000  # 2,000 addresses, each at the threshold
    looks = []
    real_levels = eventrules._levels
    monkeypatch.setattr(eventrules, "_levels", lambda *a: looks.append(1) or real_levels(*a))
    resolved = []
    for second in range(1, 121):  # two minutes of the clock, ticking every second
        resolved += eng.advance(T0 + 10 + second)
    assert len(resolved) == 2000  # every one resolved once its window emptied...
    assert len(looks) <= 2 * 2000  # ...each looked at about once, not 120 times
