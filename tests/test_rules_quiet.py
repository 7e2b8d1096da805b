"""What keeps the rules quiet on normal traffic and loud on incidents (issue 8), kind by kind.

- new_value `known` networks and learning that never absorbs an address far from the group's own;
- spike `daily`: a group judged against the same time of day on previous days and its own busiest
  window, so a nightly batch or a CI burst is normal and a runaway client is not;
- key_expiry `unused_after`: a key whose clients moved to a successor is not nagged about;
- notifications held back by a cooldown say how things stand when they are sent: a match rule's
  held-back hits are told when the cooldown ends, a threshold's level is the current one.
"""

from __future__ import annotations

from pathlib import Path

from ruletools import T0, engine, event, feed, firing, key_entry, resolved
from test_rules import DAY, Registry

from xinf_watch.model import Event, KeyState
from xinf_watch.rules.engine import RuleEngine

HOUR = 3600.0
NEW_NET = (
    "- {name: new-ip, kind: new_value, value: ip/24, when: {credential: api_key, key_state: valid}, "
    "by: [key], learn: 7d, forget: 30d, known: [internal, allowed_ips]}"
)


# -- new_value: networks ------------------------------------------------------------------------


def test_addresses_in_known_networks_are_never_new(tmp_path: Path) -> None:
    eng = engine(tmp_path, NEW_NET)
    first = [event(T0, ip="10.244.1.17")]
    # a week later, pods on other nodes, other /24s of the internal networks: nothing to tell
    later = [event(T0 + 8 * DAY + i, ip=f"10.244.{i}.{i + 3}") for i in range(40)]
    later += [event(T0 + 9 * DAY, ip="192.168.7.7"), event(T0 + 9 * DAY + 1, ip="::1")]
    assert feed(eng, first + later) == []


def test_a_keys_own_allowed_ips_are_known(tmp_path: Path) -> None:
    eng = engine(tmp_path, NEW_NET)
    partner = [
        event(T0 + 10 * DAY + i, key="partner", ip=f"198.51.100.{i}", ip_allowed=True) for i in range(9)
    ]
    assert feed(eng, partner) == []
    # the same key outside its allowed_ips is news (key-outside-allowed-ips says so too)
    (alert,) = eng.observe(event(T0 + 11 * DAY, key="partner", ip="203.0.113.50", ip_allowed=False))
    assert alert.extra == {"value": "203.0.113.0/24"} and alert.group == {"key": "partner"}


def test_an_outside_address_fires_even_while_the_key_learns(tmp_path: Path) -> None:
    """The attacker's request may be the first the rule sees for a key: it is never the baseline."""
    eng = engine(tmp_path, NEW_NET)
    (alert,) = eng.observe(event(T0, ip="203.0.113.7"))
    assert alert.summary == "key alice seen from new subnet 203.0.113.0/24 (GET /v1/models -> 200)"
    # still learning: an address near one the key has shown joins the baseline quietly...
    assert eng.observe(event(T0 + HOUR, ip="203.0.120.9")) == []
    # ...one far from all of them does not
    (far,) = eng.observe(event(T0 + 2 * HOUR, ip="198.51.100.4"))
    assert far.extra == {"value": "198.51.100.0/24"}


def test_after_learning_every_new_outside_subnet_fires_once(tmp_path: Path) -> None:
    eng = engine(tmp_path, NEW_NET)
    feed(eng, [event(T0, ip="10.0.0.1"), event(T0 + 60, ip="203.0.113.7")])  # fires once, learned
    assert eng.observe(event(T0 + 8 * DAY, ip="203.0.113.99")) == []  # same /24
    (alert,) = eng.observe(event(T0 + 8 * DAY + 5, ip="203.0.114.1"))  # near, but learning is over
    assert alert.extra == {"value": "203.0.114.0/24"}
    assert eng.observe(event(T0 + 8 * DAY + 6, ip="203.0.114.2")) == []


def test_without_known_networks_the_first_address_seeds_the_baseline(tmp_path: Path) -> None:
    rules = "- {name: new-ip, kind: new_value, value: ip, by: [key], learn: 1h}"
    eng = engine(tmp_path, rules)
    assert feed(eng, [event(T0, ip="203.0.113.7"), event(T0 + 60, ip="203.0.113.8")]) == []
    (far,) = eng.observe(event(T0 + 120, ip="198.51.100.4"))  # learning, but far from both
    assert far.extra == {"value": "198.51.100.4"}


def test_known_is_only_for_address_values(tmp_path: Path) -> None:
    from xinf_watch.config.schema import ConfigError

    rules = "- {name: new-agent, kind: new_value, value: user_agent, by: [key], known: [internal]}"
    try:
        engine(tmp_path, rules)
    except ConfigError as exc:
        assert "rules[0].known: only for addresses (expected value: ip or ip/N, not user_agent)" in str(exc)
    else:
        raise AssertionError("known accepted for a user_agent rule")


# -- spike: daily baselines ---------------------------------------------------------------------

DAILY = (
    "- {name: rate-spike, kind: spike, when: {key_state: valid}, by: [key], window: 5m, factor: 5, "
    "min_count: 100, baseline: 7d, daily: true, cooldown: 0}"
)


def per_minute(start: float, minutes: int, rate: int, key: str = "alice") -> list[Event]:
    """`rate` requests a minute, evenly spread, for `minutes` minutes from `start`."""
    return [event(start + 60 * m + 60 * i / rate, key=key) for m in range(minutes) for i in range(rate)]


def day_of_traffic(day_start: float, key: str = "alice", batch_rate: int = 0) -> list[Event]:
    """4 a minute during the day (08-20h), 1 a minute at night; a batch from 02:00 for an hour."""
    events: list[Event] = []
    for hour in range(24):
        start = day_start + hour * HOUR
        if batch_rate and hour == 2:
            events += per_minute(start, 60, batch_rate, key)
        else:
            events += per_minute(start, 60, 4 if 8 <= hour < 20 else 1, key)
    return events


def run(eng: RuleEngine, events: list[Event]) -> list[Event | object]:
    return firing(feed(eng, sorted(events, key=lambda e: e.ts)))  # type: ignore[return-value]


def test_a_nightly_batch_is_normal_after_its_first_night(tmp_path: Path) -> None:
    eng = engine(tmp_path, DAILY)
    # a batch at 60 a minute (15x the daytime rate), every night at 02:00, for five nights
    alerts = run(eng, [e for day in range(5) for e in day_of_traffic(T0 + day * DAY, batch_rate=60)])
    assert alerts == []


def test_a_runaway_client_at_20x_its_rate_fires_and_resolves(tmp_path: Path) -> None:
    eng = engine(tmp_path, DAILY)
    week = [e for day in range(3) for e in day_of_traffic(T0 + day * DAY)]
    assert run(eng, week) == []
    runaway_start = T0 + 3 * DAY + 14 * HOUR
    alerts = feed(eng, per_minute(runaway_start, 30, 80))  # 20x its usual 4 a minute
    (alert,) = firing(alerts)
    assert alert.rule == "rate-spike" and alert.group == {"key": "alice"}
    assert alert.summary.startswith("100 requests from key alice in 5m, ")
    after = feed(eng, per_minute(runaway_start + 30 * 60, 20, 4))
    (done,) = resolved(after)
    assert done.id == alert.id


def test_bursts_the_key_already_makes_are_not_news_at_another_hour(tmp_path: Path) -> None:
    """A CI key: idle, then a few hundred requests in minutes, at whatever hour a pipeline runs."""
    eng = engine(tmp_path, DAILY)
    events: list[Event] = []
    for day, hour in enumerate([9, 15, 11, 17, 8]):
        start = T0 + day * DAY + hour * HOUR
        events += [event(start + i, key="ci") for i in range(300)]  # 300 in 5 minutes
    events += [event(T0 + 5 * DAY + 13 * HOUR + i, key="ci") for i in range(300)]
    alerts = run(eng, events)
    # The very first burst has no history, the later ones are no busier than the key's own peak.
    assert alerts == []


def test_the_first_day_of_a_key_is_its_history(tmp_path: Path) -> None:
    eng = engine(tmp_path, DAILY)
    assert run(eng, per_minute(T0, 30, 200)) == []  # busy from its first minute: nothing to compare


def test_daily_baseline_needs_a_day_of_history_in_the_config(tmp_path: Path) -> None:
    from xinf_watch.config.schema import ConfigError

    try:
        engine(tmp_path, DAILY.replace("baseline: 7d", "baseline: 2h"))
    except ConfigError as exc:
        assert "rules[0].baseline: 2h is shorter than a day" in str(exc)
    else:
        raise AssertionError("daily spike with a 2h baseline accepted")


def test_daily_state_survives_a_restart(tmp_path: Path) -> None:
    import json

    whole = engine(tmp_path, DAILY)
    history = [e for day in range(3) for e in day_of_traffic(T0 + day * DAY, batch_rate=60)]
    feed(whole, history)
    restarted = engine(tmp_path, DAILY)
    restarted.restore(json.loads(json.dumps(whole.snapshot())))
    night = day_of_traffic(T0 + 3 * DAY, batch_rate=60)
    runaway = per_minute(T0 + 4 * DAY + 14 * HOUR, 10, 80)
    assert [a.to_json() for a in feed(restarted, night + runaway)] == [
        a.to_json() for a in feed(whole, night + runaway)
    ]
    assert len(firing(feed(engine(tmp_path, DAILY), runaway))) == 0  # without history: no alert


# -- key_expiry: keys nobody uses any more --------------------------------------------------------


def test_a_key_whose_clients_moved_on_is_not_nagged(tmp_path: Path) -> None:
    rule = "- {name: key-expiring, kind: key_expiry, within: 7d, unused_after: 2d, cooldown: 0}"
    registry = Registry(
        key_entry("old", owner="etl", expires_at=T0 + 5 * DAY),
        key_entry("successor", owner="etl", expires_at=T0 + 90 * DAY),
    )
    eng = engine(tmp_path, rule)
    eng.registry = registry
    (alert,) = firing(eng.observe(event(T0, key="old")))
    assert alert.group == {"key": "old"} and "expires in 5d" in alert.summary
    # its clients switch to the successor; two days later the old key is no longer watched
    feed(eng, [event(T0 + h * HOUR, key="successor") for h in range(1, 48)])
    assert [a.summary for a in resolved(eng.advance(T0 + 2 * DAY + HOUR))] == [
        "resolved: key old is no longer watched (unused or gone)"
    ]
    assert firing(eng.advance(T0 + 4 * DAY)) == []
    # used again: it matters again, at the next expiry check (every minute)
    used_again = eng.observe(event(T0 + 4 * DAY + 60, key="old")) + eng.advance(T0 + 4 * DAY + 121)
    assert len(firing(used_again)) == 1


# -- what a late notification says ---------------------------------------------------------------


def test_match_hits_held_back_by_the_cooldown_are_told_when_it_ends(tmp_path: Path) -> None:
    rules = "- {name: revoked, kind: match, when: {key_state: revoked}, by: [key], cooldown: 10m}"
    eng = engine(tmp_path, rules)
    revoked = [event(T0 + s, key="bob", key_state=KeyState.REVOKED, status=401) for s in (0, 60, 120)]
    (first,) = feed(eng, revoked)
    assert first.count == 1
    assert eng.advance(T0 + 599) == []
    (later,) = eng.advance(T0 + 600)
    assert later.count == 2 and later.id != first.id
    assert later.summary == (
        "2 more such requests since the alert at 2026-11-28T07:06:00Z, the latest: key bob (revoked) "
        "used from 10.1.0.5 for models:list: GET /v1/models -> 401"
    )
    # days later, one more hit is news of its own: no "since" reaching back days
    (alone,) = eng.observe(event(T0 + 4 * DAY, key="bob", key_state=KeyState.REVOKED, status=401))
    assert alone.count == 1 and "since" not in alone.summary


def test_a_threshold_notified_after_its_cooldown_says_the_current_level(tmp_path: Path) -> None:
    rules = "- {name: burst, kind: threshold, when: {outcome: denied}, by: [ip], count: 5, window: 1m}"
    eng = engine(tmp_path, rules)
    denied = {"status": 401, "key": "none", "key_state": KeyState.NONE, "ip": "203.0.113.7"}
    (first,) = firing(feed(eng, [event(T0 + i, **denied) for i in range(5)]))
    assert first.summary == "5 matching requests from ip 203.0.113.7 in 1m"
    eng.advance(T0 + 120)  # quiet: resolves (inside the cooldown: silently)
    # a new episode inside the cooldown, still going strong when the cooldown ends
    feed(eng, [event(T0 + 500 + i, **denied) for i in range(50)])
    (late,) = firing(feed(eng, [event(T0 + 560 + i, **denied) for i in range(45)]))
    # the level when the episode began was 5; the notification tells today's (the last minute's)
    assert late.summary.startswith("49 matching requests from ip 203.0.113.7 in 1m (still firing")


def test_a_gap_in_the_log_is_silence_the_absent_rule_sees(tmp_path: Path) -> None:
    """Replay moves the clock with the lines: the line after a quiet day must not hide the day."""
    eng = engine(tmp_path, "- {name: source-silent, kind: absent, for: 15m, cooldown: 0}")
    assert feed(eng, [event(T0 + i) for i in range(60)]) == []
    # a lone line far ahead does not move the clock (a wrong date); the second one does
    fired, back = feed(eng, [event(T0 + DAY), event(T0 + DAY + 1)])
    assert (fired.status.value, back.status.value, fired.id) == ("firing", "resolved", back.id)
    assert fired.summary == "source gateway produced no lines for 23h59m"
