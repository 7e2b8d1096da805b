"""The rule engine, kind by kind: when an alert fires, what it says, when it resolves, and its id.

Synthetic events (`ruletools.event`) and small rules files loaded with the real `load_config`;
time is the events' own and `advance(now)`, so nothing sleeps. Window arithmetic: a 1m window
has 30 buckets of 2 s and counts the events of the last 58-60 s; `T0` is on a bucket boundary.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from ruletools import T0, engine, event, feed, firing, key_entry

from xinf_watch.durations import describe_duration
from xinf_watch.keys.registry import KeyRegistry
from xinf_watch.model import Alert, AlertStatus, CredentialKind, Event, KeyState, Outcome
from xinf_watch.rules import eventkinds as eventrules
from xinf_watch.rules.engine import RuleEngine
from xinf_watch.rules.windows import BoundedMap, WindowCounter

DAY = 86400.0


def denied(ts: float, ip: str = "203.0.113.7", **kw: object) -> Event:
    return event(ts, ip=ip, status=401, credential=CredentialKind.NONE, key="none", owner=None,
                 key_state=KeyState.NONE, scope_allowed=None, **kw)  # fmt: skip


def unknown_key(ts: float, fingerprint: str | None, ip: str = "203.0.113.9") -> Event:
    return event(ts, ip=ip, status=401, key="unknown", owner=None, key_state=KeyState.UNKNOWN,
                 scope_allowed=None, fingerprint=fingerprint)  # fmt: skip


# -- the alert as a value (docs/DESIGN.md section 7) ----------------------------------------------------


def test_alert_json_has_the_contract_fields(tmp_path: Path) -> None:
    eng = engine(tmp_path, "- {name: revoked-key-used, kind: match, when: {key_state: revoked}, by: [key]}")
    (alert,) = eng.observe(event(T0 + 0.25, key="bob", key_state=KeyState.REVOKED, status=200))
    data = alert.to_json()
    assert list(data) == ["rule", "kind", "severity", "status", "group", "key", "count", "first_ts",
                          "last_ts", "summary", "source", "id"]  # fmt: skip
    assert data["rule"] == "revoked-key-used" and data["kind"] == "match"
    assert data["severity"] == "warning" and data["status"] == "firing"
    assert data["group"] == {"key": "bob"} and data["key"] == "bob" and data["count"] == 1
    assert data["first_ts"] == data["last_ts"] == "2026-11-28T07:06:00.250Z"
    assert data["source"] == "gateway"
    assert len(data["id"]) == 16 and int(data["id"], 16) >= 0
    assert data["summary"] == "key bob (revoked) used from 10.1.0.5 for models:list: GET /v1/models -> 200"
    json.dumps(data, allow_nan=False)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (59.9, "59s"),
        (60, "1m"),
        (5400, "1h30m"),
        (5430, "1h30m"),
        (7 * DAY, "7d"),
        (DAY + 3600 * 23 + 59, "1d23h"),
    ],  # fmt: skip
)
def test_describe_duration(seconds: float, text: str) -> None:
    assert describe_duration(seconds) == text


# -- match ---------------------------------------------------------------------------------------

MATCH = "- {name: revoked, kind: match, when: {key_state: revoked}, by: [key], cooldown: 10m}"


def revoked(ts: float, key: str = "bob") -> Event:
    return event(ts, key=key, key_state=KeyState.REVOKED, status=401)


def test_match_fires_on_the_first_hit_then_reports_the_cooldown_hits_when_it_ends(tmp_path: Path) -> None:
    eng = engine(tmp_path, MATCH)
    (first,) = eng.observe(revoked(T0))
    assert (first.count, first.first_ts, first.last_ts) == (1, T0, T0)
    # inside the 10m cooldown: counted, not sent
    assert feed(eng, [revoked(T0 + 60), revoked(T0 + 120), revoked(T0 + 599)]) == []
    # the cooldown is over when the next line comes: the three held back are told first...
    (second,) = eng.observe(revoked(T0 + 601))
    assert (second.count, second.first_ts, second.last_ts) == (3, T0 + 60, T0 + 599)
    assert second.summary.startswith("3 more such requests since the alert at 2026-11-28T07:06:00Z, ")
    assert second.id != first.id
    # ...as of the cooldown's end (T0 + 600), which starts a new one that holds this line back
    assert eng.advance(T0 + 1199) == []
    (third,) = eng.advance(T0 + 1201)
    assert (third.count, third.first_ts) == (1, T0 + 601)
    assert third.summary.startswith("1 more such request since the alert at 2026-11-28T07:16:00Z, ")


def test_match_cooldown_is_per_group(tmp_path: Path) -> None:
    eng = engine(tmp_path, MATCH)
    alerts = feed(eng, [revoked(T0, "bob"), revoked(T0 + 1, "carol"), revoked(T0 + 2, "bob")])
    assert [(a.key, a.count) for a in alerts] == [("bob", 1), ("carol", 1)]


def test_match_without_cooldown_fires_for_every_event(tmp_path: Path) -> None:
    eng = engine(
        tmp_path, "- {name: revoked, kind: match, when: {key_state: revoked}, by: [key], cooldown: 0}"
    )
    alerts = feed(eng, [revoked(T0 + i) for i in range(3)])
    assert [a.count for a in alerts] == [1, 1, 1]
    assert len({a.id for a in alerts}) == 3


def test_match_counts_a_slightly_late_hit_in_the_right_place(tmp_path: Path) -> None:
    eng = engine(tmp_path, MATCH)
    feed(eng, [revoked(T0), revoked(T0 + 100), revoked(T0 + 97)])  # the last line is 3 s late
    (alert,) = eng.observe(revoked(T0 + 700))  # the cooldown ended: the held-back hits are told
    assert (alert.count, alert.first_ts, alert.last_ts) == (2, T0 + 97, T0 + 100)


@pytest.mark.parametrize(
    ("fields", "summary"),
    [
        ({"key": "bob", "key_state": KeyState.REVOKED, "status": 401, "reason": "key_disabled"},
         "key bob (revoked) used from 10.1.0.5 for models:list: GET /v1/models -> 401 (key_disabled)"),
        ({"scope": "models:write", "scope_allowed": False, "method": "POST", "status": 403},
         "key alice used from 10.1.0.5 for models:write (not in its permissions): POST /v1/models -> 403"),
        ({"ip": "198.51.100.7", "ip_allowed": False},
         "key alice used from 198.51.100.7 (outside its allowed IPs) for models:list: GET /v1/models -> 200"),
        ({"key": "none", "key_state": KeyState.NONE, "credential": CredentialKind.NONE, "scope": "webui",
          "scope_allowed": None, "path": "/", "ip": "203.0.113.5", "ip_forwarded": True},
         "request without a key from 203.0.113.5 (per X-Forwarded-For) for webui: GET / -> 200"),
        ({"key": "unknown", "key_state": KeyState.UNKNOWN, "fingerprint": "3f9a0c1b2d4e", "status": 401},
         "unknown key 3f9a0c1b2d4e used from 10.1.0.5 for models:list: GET /v1/models -> 401"),
        ({"scope": "public", "path": "/status"}, "key alice used from 10.1.0.5: GET /status -> 200"),
    ],
)  # fmt: skip
def test_match_summary_says_which_key_from_where_for_what(
    tmp_path: Path, fields: dict[str, object], summary: str
) -> None:
    eng = engine(tmp_path, "- {name: every-request, kind: match, cooldown: 0}")
    (alert,) = eng.observe(event(T0, **fields))
    assert alert.summary == summary  # the rule's name is in `rule`, not repeated here


# -- threshold -----------------------------------------------------------------------------------


def threshold(count: int, cooldown: str = "0") -> str:
    return (
        f"- {{name: burst, kind: threshold, when: {{outcome: denied}}, by: [ip], count: {count}, "
        f"window: 1m, cooldown: {cooldown}}}"
    )


def test_threshold_fires_at_count(tmp_path: Path) -> None:
    eng = engine(tmp_path, threshold(5))
    assert feed(eng, [denied(T0 + i) for i in range(1, 5)]) == []
    assert feed(eng, [event(T0 + 4.5, ip="203.0.113.7")]) == []  # allowed: not counted
    assert feed(eng, [denied(T0 + 4.7, ip="198.51.100.1")]) == []  # another group
    (alert,) = eng.observe(denied(T0 + 5))
    assert (alert.rule, alert.kind, alert.status) == ("burst", "threshold", AlertStatus.FIRING)
    assert alert.group == {"ip": "203.0.113.7"} and alert.key == "none"
    assert (alert.count, alert.first_ts, alert.last_ts) == (5, T0 + 1, T0 + 5)
    assert alert.summary == "5 matching requests from ip 203.0.113.7 in 1m"


def test_threshold_resolves_when_the_count_falls_to_half(tmp_path: Path) -> None:
    eng = engine(tmp_path, threshold(10))
    early = [denied(T0 + 0.5 + 0.3 * i) for i in range(5)]  # one bucket, expires at T0+60
    late = [denied(T0 + 30.5 + 0.3 * i) for i in range(5)]
    (fired,) = firing(feed(eng, early + late))
    assert fired.count == 10 and fired.first_ts == T0 + 0.5
    assert eng.advance(T0 + 59.9) == []  # still 10 in the window
    (done,) = eng.advance(T0 + 60)  # 5: half the threshold
    assert done.status is AlertStatus.RESOLVED
    assert done.id == fired.id
    assert (done.count, done.first_ts, done.last_ts) == (10, T0 + 0.5, late[-1].ts)
    assert done.summary == "resolved: down to 5 matching requests from ip 203.0.113.7 in 1m"
    assert eng.advance(T0 + 200) == []


def test_threshold_hovering_at_the_count_does_not_flap(tmp_path: Path) -> None:
    eng = engine(tmp_path, threshold(10))  # no cooldown: only the hysteresis keeps it quiet
    rng = random.Random(7)
    ts, alerts, levels = T0, [], []
    while ts < T0 + 900:  # ~10 requests a minute, sometimes 8, sometimes 12
        ts += rng.uniform(4.5, 7.5)
        alerts += eng.observe(denied(ts))
        alerts += eng.advance(ts + 0.5)
        state = eng.rules[0].groups.data[("203.0.113.7",)]
        assert state.counter is not None
        levels.append((state.episode.firing, state.counter.count(ts + 0.5)))
    assert any(f and level < 10 for f, level in levels), "the test never hovered below the count"
    assert [a.status for a in alerts] == [AlertStatus.FIRING]
    (done,) = eng.advance(ts + 120)
    assert done.status is AlertStatus.RESOLVED and done.id == alerts[0].id


def test_threshold_new_episode_gets_a_new_id(tmp_path: Path) -> None:
    eng = engine(tmp_path, threshold(5))
    first = feed(eng, [denied(T0 + i) for i in range(5)]) + eng.advance(T0 + 120)
    second = feed(eng, [denied(T0 + 300 + i) for i in range(5)]) + eng.advance(T0 + 420)
    assert [a.status for a in first + second] == [AlertStatus.FIRING, AlertStatus.RESOLVED] * 2
    assert first[0].id == first[1].id and second[0].id == second[1].id
    assert first[0].id != second[0].id


def test_threshold_cooldown_holds_back_a_refire_and_its_resolution(tmp_path: Path) -> None:
    eng = engine(tmp_path, threshold(5, cooldown="10m"))
    one = feed(eng, [denied(T0 + 1 + i) for i in range(5)]) + eng.advance(T0 + 70)
    assert [a.status for a in one] == [AlertStatus.FIRING, AlertStatus.RESOLVED]
    # a second episode 100 s later, over within the cooldown: nothing at all is sent
    assert feed(eng, [denied(T0 + 100 + i) for i in range(5)]) + eng.advance(T0 + 170) == []
    # after the cooldown (10m after the first notification) a new episode is sent again
    three = feed(eng, [denied(T0 + 700 + i) for i in range(5)]) + eng.advance(T0 + 770)
    assert [a.status for a in three] == [AlertStatus.FIRING, AlertStatus.RESOLVED]
    assert three[0].id == three[1].id != one[0].id
    assert three[0].first_ts == T0 + 700


def test_threshold_episode_that_outlasts_the_cooldown_is_sent_when_it_ends(tmp_path: Path) -> None:
    eng = engine(tmp_path, threshold(5, cooldown="10m"))
    one = feed(eng, [denied(T0 + 1 + i) for i in range(5)]) + eng.advance(T0 + 70)
    # a sustained burst that starts inside the cooldown: held back, then sent once it is over
    burst = [denied(T0 + 100 + i) for i in range(801)]
    alerts = feed(eng, burst)
    (late,) = alerts
    assert late.status is AlertStatus.FIRING
    assert T0 + 605 <= late.last_ts <= T0 + 607  # at the end of the cooldown, not before
    assert late.first_ts == T0 + 100 and "still firing after the cooldown" in late.summary
    (done,) = eng.advance(T0 + 1000)
    assert done.status is AlertStatus.RESOLVED and done.id == late.id != one[0].id
    assert done.count == 801 and done.last_ts == T0 + 900


def test_threshold_counts_events_a_few_seconds_out_of_order(tmp_path: Path) -> None:
    eng = engine(tmp_path, threshold(5))
    alerts = feed(eng, [denied(T0 + t) for t in (10, 8, 12, 9)])
    assert eng.observe(denied(T0 - 120)) == []  # older than the window: not counted
    (alert,) = alerts + eng.observe(denied(T0 + 11))
    assert (alert.count, alert.first_ts, alert.last_ts) == (5, T0 + 8, T0 + 11)


def test_threshold_group_by_several_fields(tmp_path: Path) -> None:
    rules = "- {name: pair, kind: threshold, by: [key, ip], count: 2, window: 1m, cooldown: 0}"
    eng = engine(tmp_path, rules)
    alerts = feed(eng, [event(T0), event(T0 + 1, ip="10.1.0.6"), event(T0 + 2)])
    (alert,) = alerts
    assert alert.group == {"key": "alice", "ip": "10.1.0.5"} and alert.key == "alice"
    assert alert.summary == "2 matching requests from key alice, ip 10.1.0.5 in 1m"


@pytest.mark.parametrize(
    ("by", "summary"),
    [
        ("[]", "2 matching requests in 1m"),
        ("[scope, ip]", "2 matching requests from ip 10.1.0.5 with scope models:list in 1m"),
    ],
)
def test_threshold_summary_names_the_group(tmp_path: Path, by: str, summary: str) -> None:
    eng = engine(tmp_path, f"- {{name: pair, kind: threshold, by: {by}, count: 2, window: 1m, cooldown: 0}}")
    (alert,) = feed(eng, [event(T0), event(T0 + 1)])
    assert alert.summary == summary


# -- new_value -----------------------------------------------------------------------------------

NEW_IP = (
    "- {name: new-ip, kind: new_value, value: ip, when: {credential: api_key, key_state: valid}, "
    "by: [key], learn: 1m, forget: 1d}"
)


def test_new_value_learns_a_baseline_then_fires_once_per_new_value(tmp_path: Path) -> None:
    eng = engine(tmp_path, NEW_IP)
    learning = [event(T0, ip="10.1.0.5"), event(T0 + 30, ip="10.1.0.6"), event(T0 + 59, ip="10.1.0.8")]
    assert feed(eng, learning) == []  # the baseline never alerts
    assert eng.observe(event(T0 + 120, ip="10.1.0.5")) == []
    (alert,) = eng.observe(event(T0 + 130, ip="10.1.0.7", path="/v1/chat/completions", status=404))
    assert alert.to_json() | {"id": "-"} == {
        "rule": "new-ip", "kind": "new_value", "severity": "warning", "status": "firing",
        "group": {"key": "alice"}, "key": "alice", "count": 1,
        "first_ts": "2026-11-28T07:08:10Z", "last_ts": "2026-11-28T07:08:10Z",
        "summary": "key alice seen from new ip 10.1.0.7 (GET /v1/chat/completions -> 404)",
        "source": "gateway", "id": "-", "value": "10.1.0.7",
    }  # fmt: skip
    assert feed(eng, [event(T0 + 140, ip="10.1.0.7"), event(T0 + 150, ip="10.1.0.6")]) == []
    assert eng.observe(event(T0 + 100, ip="10.1.0.7")) == []  # a late line of a value now known


def test_new_value_learn_period_is_per_group(tmp_path: Path) -> None:
    eng = engine(tmp_path, NEW_IP)
    feed(eng, [event(T0, ip="10.1.0.5")])
    # bob first shows up long after alice: his first minute is his own baseline
    assert (
        feed(eng, [event(T0 + 600, key="bob", ip="10.2.0.1"), event(T0 + 630, key="bob", ip="10.2.0.2")])
        == []
    )
    (alert,) = eng.observe(event(T0 + 661, key="bob", ip="10.2.0.3"))
    assert alert.group == {"key": "bob"} and alert.extra == {"value": "10.2.0.3"}


def test_new_value_forgets_a_value_unseen_for_forget(tmp_path: Path) -> None:
    eng = engine(tmp_path, NEW_IP)
    feed(eng, [event(T0, ip="10.1.0.5")])
    (first,) = eng.observe(event(T0 + 100, ip="10.1.0.9"))
    assert eng.observe(event(T0 + 100 + DAY - 1, ip="10.1.0.9")) == []  # seen again within a day
    # unseen for a whole day since its last sighting: new again, a new alert with a new id
    (again,) = eng.observe(event(T0 + 100 + 2 * DAY, ip="10.1.0.9"))
    assert again.id != first.id and again.extra == {"value": "10.1.0.9"}


def test_new_value_by_subnet(tmp_path: Path) -> None:
    rules = "- {name: new-net, kind: new_value, value: ip/24, by: [key], learn: 10s}"
    eng = engine(tmp_path, rules)
    assert feed(eng, [event(T0, ip="10.1.2.3"), event(T0 + 60, ip="10.1.2.99")]) == []
    (alert,) = eng.observe(event(T0 + 70, ip="10.1.3.1"))
    assert alert.extra == {"value": "10.1.3.0/24"}
    assert alert.summary == "key alice seen from new subnet 10.1.3.0/24 (GET /v1/models -> 200)"
    assert eng.observe(event(T0 + 80, ip="10.1.3.200")) == []


def test_new_value_memory_cap_forgets_the_least_recently_seen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(eventrules, "MAX_VALUES", 3)
    eng = engine(tmp_path, NEW_IP)
    feed(eng, [event(T0, ip="10.0.0.1"), event(T0 + 1, ip="10.0.0.2"), event(T0 + 2, ip="10.0.0.3")])
    feed(eng, [event(T0 + 3, ip="10.0.0.1")])  # .1 is now the most recently seen
    assert len(firing(feed(eng, [event(T0 + 100, ip="10.0.0.4")]))) == 1  # .2 goes
    assert eng.evicted == {"new-ip": 1}
    assert feed(eng, [event(T0 + 101, ip="10.0.0.1"), event(T0 + 102, ip="10.0.0.3")]) == []
    assert len(firing(feed(eng, [event(T0 + 103, ip="10.0.0.2")]))) == 1  # forgotten: new again


# -- spike ---------------------------------------------------------------------------------------

SPIKE = (
    "- {name: spike, kind: spike, when: {key_state: valid}, by: [key], window: 5m, factor: 5, "
    "min_count: 50, baseline: 1h, cooldown: 0}"
)


def steady(start: float, minutes: int, key: str = "alice") -> list[Event]:
    return [event(start + 60 * m, key=key) for m in range(minutes)]


def test_spike_fires_at_factor_times_the_baseline_and_resolves(tmp_path: Path) -> None:
    eng = engine(tmp_path, SPIKE)
    assert feed(eng, steady(T0, 70)) == []  # 1 a minute for 70 minutes: 5 per window
    burst_start = T0 + 70 * 60
    alerts = feed(eng, [event(burst_start + i) for i in range(60)])
    (alert,) = alerts
    assert alert.kind == "spike" and alert.group == {"key": "alice"}
    assert alert.count >= 50  # min_count, and well over 5 x 5
    assert 4.0 <= alert.extra["baseline"] <= 6.0
    assert alert.summary == "50 requests from key alice in 5m, 10.3x the usual 4.8"
    after = feed(eng, steady(burst_start + 120, 20)) + eng.advance(burst_start + 25 * 60)
    (done,) = after
    assert done.status is AlertStatus.RESOLVED and done.id == alert.id
    # resolved in the minute's gap before a line (as the live daemon's timer would): 4, not 5
    assert done.summary == "resolved: down to 4 requests from key alice in 5m"


def test_spike_needs_history(tmp_path: Path) -> None:
    eng = engine(tmp_path, SPIKE)
    # a key's first minutes: no baseline yet, whatever the rate
    assert feed(eng, [event(T0 + i, key="bob") for i in range(200)]) == []


def test_spike_needs_min_count(tmp_path: Path) -> None:
    eng = engine(tmp_path, SPIKE)
    feed(eng, steady(T0, 70))
    # 35 in the window is 7x the usual 5, but fewer than min_count 50
    assert feed(eng, [event(T0 + 70 * 60 + i) for i in range(30)]) == []


# -- distinct ------------------------------------------------------------------------------------

DISTINCT = (
    "- {name: spray, kind: distinct, value: fingerprint, when: {key_state: unknown}, by: [ip], "
    "count: 5, window: 1m, cooldown: 0}"
)


def test_distinct_counts_distinct_values_in_the_window_and_resolves(tmp_path: Path) -> None:
    eng = engine(tmp_path, DISTINCT)
    repeats = [unknown_key(T0 + 1 + i / 10, "aaaaaaaaaaa1") for i in range(10)]  # one key, ten times
    others = [unknown_key(T0 + t, f"bbbbbbbbbbb{t}") for t in (2, 3, 4)]
    no_value = [unknown_key(T0 + 4.5, None)]
    assert feed(eng, repeats + others + no_value) == []  # 4 distinct
    (alert,) = eng.observe(unknown_key(T0 + 5, "ccccccccccc5"))
    assert alert.kind == "distinct" and alert.group == {"ip": "203.0.113.9"} and alert.key == "unknown"
    assert alert.extra == {"distinct": 5}
    assert (alert.count, alert.first_ts, alert.last_ts) == (5, T0 + 1.9, T0 + 5)
    assert alert.summary == "5 distinct unknown keys from ip 203.0.113.9 in 1m"
    assert eng.advance(T0 + 62.5) == []  # 3 left in the last minute
    (done,) = eng.advance(T0 + 63.5)  # 2: half of 5
    assert done.status is AlertStatus.RESOLVED and done.id == alert.id
    assert done.extra == {"distinct": 5}
    assert done.summary == "resolved: down to 2 distinct unknown keys from ip 203.0.113.9 in 1m"


def test_distinct_values_of_other_groups_do_not_add_up(tmp_path: Path) -> None:
    eng = engine(tmp_path, DISTINCT)
    events = [unknown_key(T0 + i, f"{i:012x}", ip=f"203.0.113.{i}") for i in range(20)]
    assert feed(eng, events) == []


# -- key_expiry ----------------------------------------------------------------------------------


class Registry:
    """A registry the test can swap, as a key file reload does."""

    def __init__(self, *entries: object) -> None:
        self.current = KeyRegistry(entries)  # type: ignore[arg-type]

    def __call__(self) -> KeyRegistry:
        return self.current


def key_expiry_engine(tmp_path: Path, rule: str, registry: Registry) -> RuleEngine:
    eng = engine(tmp_path, rule)
    eng.registry = registry
    return eng


def keys() -> Registry:
    return Registry(
        key_entry("alice", owner="a", expires_at=T0 + 3 * DAY, created_at=T0 - 10 * DAY),
        key_entry("bob", owner="b", expires_at=T0 + 30 * DAY, created_at=T0 - 10 * DAY),
        key_entry("carol", owner="c", expires_at=None, created_at=T0 - 100 * DAY),
        key_entry("dave", owner="d", expires_at=T0 + DAY, revoked=True),
        key_entry("erin", owner="e", expires_at=T0 - DAY),
    )


def use(ts: float, key: str, state: KeyState = KeyState.VALID) -> Event:
    return event(ts, key=key, key_state=state)


def test_key_expiry_fires_at_the_first_use_of_a_key_expiring_within(tmp_path: Path) -> None:
    eng = key_expiry_engine(tmp_path, "- {name: expiring, kind: key_expiry, within: 7d}", keys())
    assert eng.advance(T0) == []  # only keys seen in use (only_used)
    used = [use(T0 + 5, "bob"), use(T0 + 6, "dave", KeyState.REVOKED), use(T0 + 7, "erin", KeyState.EXPIRED)]
    assert feed(eng, used) == []  # 30 days left; revoked and expired keys are other rules' business
    (alert,) = eng.observe(use(T0 + 10, "alice"))
    assert alert.to_json() | {"id": "-"} == {
        "rule": "expiring", "kind": "key_expiry", "severity": "warning", "status": "firing",
        "group": {"key": "alice"}, "key": "alice", "count": 1,
        "first_ts": "2026-11-28T07:06:10Z", "last_ts": "2026-11-28T07:06:10Z",
        "summary": "key alice expires in 2d23h (2026-12-01T07:06:00Z)", "source": None, "id": "-",
        "expires_at": "2026-12-01T07:06:00Z",
    }  # fmt: skip
    assert eng.advance(T0 + 3600) == []  # once per episode


def test_key_expiry_resolves_when_the_key_is_rotated_or_removed(tmp_path: Path) -> None:
    registry = keys()
    eng = key_expiry_engine(
        tmp_path, "- {name: expiring, kind: key_expiry, within: 7d, only_used: false, cooldown: 0}", registry
    )
    (alert,) = eng.advance(T0)  # only_used: false: no use needed
    assert alert.key == "alice"
    registry.current = KeyRegistry([key_entry("alice", expires_at=T0 + 300 * DAY)])
    (done,) = eng.advance(T0 + 60)
    assert done.status is AlertStatus.RESOLVED and done.id == alert.id and done.key == "alice"
    assert done.extra == {"expires_at": "2026-12-01T07:06:00Z"}
    registry.current = KeyRegistry([key_entry("alice", expires_at=T0 + 2 * DAY)])
    (again,) = eng.advance(T0 + 120)
    registry.current = KeyRegistry([])
    (gone,) = eng.advance(T0 + 180)
    assert gone.status is AlertStatus.RESOLVED and gone.id == again.id != alert.id
    assert "no longer watched" in gone.summary


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ("", ["alice"]),
        ("no_expiry: true", ["alice", "carol"]),
        ("max_age: 90d", ["alice", "carol"]),
        ("max_age: 5d", ["alice", "bob", "carol"]),  # alice: expiring wins over too old
        ("within: 1d", []),
        ("within: 31d", ["alice", "bob"]),
        ('when: {key: "a*"}, no_expiry: true', ["alice"]),
        ("when: {owner: [b, c]}, within: 31d, no_expiry: true", ["bob", "carol"]),
    ],
)
def test_key_expiry_options(tmp_path: Path, options: str, expected: list[str]) -> None:
    rule = "- {name: hygiene, kind: key_expiry, only_used: false" + (f", {options}" if options else "") + "}"
    alerts = key_expiry_engine(tmp_path, rule, keys()).advance(T0)
    assert [a.key for a in alerts] == expected
    summaries = " ".join(a.summary for a in alerts)
    if "carol" in expected:
        assert "carol has no expiry date" in summaries or "carol is 100d old (max_age" in summaries


# -- absent --------------------------------------------------------------------------------------


def test_absent_fires_after_for_and_resolves_when_lines_come_back(tmp_path: Path) -> None:
    eng = engine(tmp_path, "- {name: silent, kind: absent, for: 15m}")
    assert feed(eng, [event(T0 + i * 10) for i in range(7)]) == []  # last line at T0+60
    assert eng.advance(T0 + 60 + 899) == []
    (alert,) = eng.advance(T0 + 60 + 900)
    assert alert.kind == "absent" and alert.group == {"source": "gateway"} and alert.source == "gateway"
    assert (alert.first_ts, alert.last_ts, alert.count) == (T0 + 60, T0 + 960, 0)
    assert alert.summary == "source gateway produced no lines for 15m"
    assert eng.advance(T0 + 5000) == []
    (back,) = eng.observe(event(T0 + 6000))
    assert back.status is AlertStatus.RESOLVED and back.id == alert.id
    assert back.summary == "resolved: source gateway is writing again" and back.last_ts == T0 + 6000


def test_absent_watches_each_source_and_one_that_never_wrote(tmp_path: Path) -> None:
    eng = engine(
        tmp_path, "- {name: silent, kind: absent, for: 5m, sources: [audit]}", sources=("gateway", "audit")
    )
    gateway = [event(T0 + 60 * i) for i in range(11)]  # only the gateway writes
    alerts = feed(eng, gateway)
    (alert,) = alerts
    assert alert.group == {"source": "audit"} and alert.first_ts == T0  # silent since the start


# -- the rules' index and the filters through the engine -------------------------------------------


def test_booleans_do_not_match_unknown_values_through_the_engine(tmp_path: Path) -> None:
    rules = "- {name: scope, kind: match, when: {scope_allowed: false}, by: [key], cooldown: 0}"
    eng = engine(tmp_path, rules)
    assert eng.observe(event(T0, scope_allowed=None)) == []
    assert eng.observe(event(T0 + 1, scope_allowed=True)) == []
    assert len(eng.observe(event(T0 + 2, scope_allowed=False))) == 1
    assert eng.observe(event(T0 + 3, scope_allowed=None)) == []  # the index remembers per value


def test_rules_fire_in_config_order(tmp_path: Path) -> None:
    rules = """
        - {name: b-second, kind: match, when: {outcome: denied}, cooldown: 0}
        - {name: a-first, kind: match, when: {status: 4xx}, cooldown: 0}
    """
    eng = engine(tmp_path, rules)
    assert [a.rule for a in eng.observe(denied(T0))] == ["b-second", "a-first"]


def test_group_memory_is_capped_and_firing_groups_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    eng = engine(tmp_path, threshold(3))
    rule = eng.rules[0]
    rule.groups.limit = 10
    alerts = feed(eng, [denied(T0 + i / 10, ip="198.51.100.1") for i in range(3)])  # fires
    alerts += feed(eng, [denied(T0 + 1 + i / 100, ip=f"203.0.113.{i}") for i in range(50)])
    assert len(rule.groups) == 10 and eng.evicted == {"burst": 41}
    assert ("198.51.100.1",) in rule.groups  # the firing group survived the flood
    alerts += eng.advance(T0 + 120)
    assert [(a.status, a.group) for a in alerts] == [
        (AlertStatus.FIRING, {"ip": "198.51.100.1"}),
        (AlertStatus.RESOLVED, {"ip": "198.51.100.1"}),
    ]


def test_a_lone_line_far_in_the_future_does_not_move_the_clock(tmp_path: Path) -> None:
    eng = engine(tmp_path, threshold(5) + "\n" + MATCH + "\n- {name: silent, kind: absent, for: 15m}")
    (burst,) = feed(eng, [denied(T0 + i) for i in range(5)])
    stray = revoked(T0 + 3650 * DAY)  # a corrupt date, ten years ahead
    (alert,) = eng.observe(stray)  # still evaluated for its rules, in its own time
    assert alert.rule == "revoked" and alert.first_ts == stray.ts
    assert eng.now == T0 + 4
    # the clock still follows the log: the burst resolves on time, the silence is measured from
    # the last line the log wrote in its own time, not from ten years ahead
    (done,) = eng.observe(event(T0 + 70))
    assert done.status is AlertStatus.RESOLVED and done.id == burst.id and eng.now == T0 + 70
    (silent,) = eng.advance(T0 + 70 + 900)
    assert silent.rule == "silent" and silent.first_ts == T0 + 70


def test_a_log_that_really_jumps_ahead_moves_the_clock_at_its_second_line(tmp_path: Path) -> None:
    eng = engine(tmp_path, threshold(5))
    assert feed(eng, [denied(T0 + i) for i in range(4)]) == []
    morning = T0 + 8 * 3600  # after a quiet night
    assert eng.observe(denied(morning)) == []  # in its own time: not counted with the night's 4
    assert eng.now == T0 + 3
    saved = json.loads(json.dumps(eng.snapshot()))
    again = engine(tmp_path, threshold(5))
    again.restore(saved)  # a restart between the two lines does not lose the first one's say
    for each in (eng, again):
        each.observe(denied(morning + 1))
        assert each.now == morning + 1


def test_observe_never_reads_the_clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    def no_clock() -> float:
        raise AssertionError("the engine read the wall clock")

    eng = engine(tmp_path, threshold(3) + "\n- {name: silent, kind: absent, for: 1m}")
    monkeypatch.setattr(time, "time", no_clock)
    monkeypatch.setattr(time, "monotonic", no_clock)
    feed(eng, [denied(T0 + i) for i in range(5)])
    eng.advance(T0 + 1000)


# -- state: snapshot and restore -------------------------------------------------------------------

ALL_KINDS = "\n".join(
    [
        threshold(5, cooldown="10m"),
        DISTINCT,
        NEW_IP,
        SPIKE,
        MATCH,
        "- {name: expiring, kind: key_expiry, within: 7d}",
        "- {name: silent, kind: absent, for: 15m}",
    ]
)


def mixed_events(start: float, n: int, seed: int) -> list[Event]:
    rng = random.Random(seed)
    out: list[Event] = []
    for i in range(n):
        ts = start + i * 2.5 + rng.uniform(-2, 0)  # slightly out of order
        kind = rng.random()
        if kind < 0.3:
            out.append(denied(ts, ip=f"203.0.113.{rng.randrange(4)}"))
        elif kind < 0.5:
            out.append(unknown_key(ts, f"{rng.randrange(40):012x}", ip=f"198.51.100.{rng.randrange(3)}"))
        elif kind < 0.6:
            out.append(revoked(ts, key=rng.choice(["bob", "carol"])))
        else:
            out.append(event(ts, key=rng.choice(["alice", "bob"]), ip=f"10.1.0.{rng.randrange(12)}"))
    return out


def run_split(tmp_path: Path, events: list[Event], split: int | None) -> list[Alert]:
    registry = keys()
    eng = key_expiry_engine(tmp_path, ALL_KINDS, registry)
    if split is None:
        return feed(eng, events) + eng.advance(events[-1].ts + 3600)
    alerts = feed(eng, events[:split])
    saved = json.loads(json.dumps(eng.snapshot(), allow_nan=False))
    again = key_expiry_engine(tmp_path, ALL_KINDS, registry)
    again.restore(saved)
    return alerts + feed(again, events[split:]) + again.advance(events[-1].ts + 3600)


@pytest.mark.parametrize("split", [1, 137, 500, 999])
def test_snapshot_restore_continues_exactly(tmp_path: Path, split: int) -> None:
    events = mixed_events(T0, 1000, seed=split)
    whole = run_split(tmp_path, events, None)
    assert {a.rule for a in whole} >= {"burst", "spray", "new-ip", "revoked", "expiring", "silent"}
    assert [a.to_json() for a in run_split(tmp_path, events, split)] == [a.to_json() for a in whole]


def test_restore_ignores_rules_that_changed_or_went_and_malformed_state(tmp_path: Path) -> None:
    eng = engine(tmp_path, threshold(5) + "\n" + MATCH)
    feed(eng, [denied(T0 + i) for i in range(4)] + [revoked(T0 + 5)])
    saved = json.loads(json.dumps(eng.snapshot()))
    saved["rules"]["revoked"]["groups"].append(["not", "a", "group"])
    saved["rules"]["revoked"]["groups"].append([["carol"], {"episode": {"count": "many"}}])
    saved["rules"]["revoked"]["groups"].append([["dave"], {"last_notified": "yesterday"}])
    saved["rules"]["gone"] = {"kind": "match", "fields": ["key"], "groups": []}
    # `burst` is now a match rule and `revoked` groups by ip: their state no longer fits
    tmp = tmp_path / "changed"
    tmp.mkdir()
    changed = engine(
        tmp, MATCH.replace("name: revoked", "name: burst") + "\n" + MATCH.replace("[key]", "[ip]")
    )
    changed.restore(saved)
    assert all(len(r.groups) == 0 for r in changed.rules)
    # the same config takes the state (minus the malformed groups) and fires on the 5th denial
    same = engine(tmp, threshold(5) + "\n" + MATCH)
    same.restore(saved)
    assert [len(r.groups) for r in same.rules] == [2, 1]  # bob's 401 is a denial too
    assert [a.rule for a in same.observe(denied(T0 + 4.5))] == ["burst"]
    assert same.observe(revoked(T0 + 6)) == []  # still inside bob's cooldown
    garbage: object
    for garbage in (None, [], {"version": 999}, {"version": 1, "rules": []}, {"version": 1, "now": "x"}):
        fresh = engine(tmp, threshold(5))
        fresh.restore(garbage)
        assert len(fresh.rules[0].groups) == 0


def test_restore_after_a_window_change_starts_the_count_over(tmp_path: Path) -> None:
    eng = engine(tmp_path, threshold(5))
    feed(eng, [denied(T0 + i) for i in range(4)])
    saved = json.loads(json.dumps(eng.snapshot()))
    tmp = tmp_path / "changed"
    tmp.mkdir()
    longer = engine(tmp, threshold(5).replace("window: 1m", "window: 2m"))
    longer.restore(saved)
    assert longer.observe(denied(T0 + 4.5)) == []  # the 4 earlier denials were in 1m buckets


def test_snapshot_is_plain_json(tmp_path: Path) -> None:
    eng = engine(tmp_path, ALL_KINDS)
    assert eng.snapshot()["now"] is None  # nothing seen yet: no infinity in the JSON
    feed(eng, mixed_events(T0, 200, seed=3))
    text = json.dumps(eng.snapshot(), allow_nan=False)
    assert "Infinity" not in text and "NaN" not in text


def test_outcome_is_matched_as_its_value() -> None:
    # the index compares enum members with the filter's strings: they must hash alike
    assert Outcome.DENIED in frozenset({"denied"}) and KeyState.VALID in frozenset({"valid"})


# -- building blocks -------------------------------------------------------------------------------


def test_window_counter_buckets_late_events_and_remembers_the_oldest() -> None:
    counter = WindowCounter(60)  # 30 buckets of 2 s
    for ts in (T0 + 10, T0 + 8.5, T0 + 12, T0 + 9, T0 + 3):  # late ones go to their own bucket
        counter.add(ts, T0 + 12)
    assert [b[:2] for b in counter.buckets] == [[(T0 + 3) // 2, 1], [(T0 + 8) // 2, 2], [(T0 + 10) // 2, 1],
                                                [(T0 + 12) // 2, 1]]  # fmt: skip
    assert counter.count(T0 + 12) == 5 and counter.oldest(T0 + 12) == T0 + 3
    counter.add(T0 - 100, T0 + 12)  # older than the window: dropped
    assert counter.count(T0 + 12) == 5
    assert counter.count(T0 + 61.9) == 5  # the 2-second bucket of T0+3 still counts
    assert counter.count(T0 + 62) == 4 and counter.oldest(T0 + 62) == T0 + 8.5
    assert counter.count(T0 + 200) == 0 and counter.oldest(T0 + 200) is None
    again = WindowCounter(60)
    again.restore(json.loads(json.dumps(counter.snapshot())))
    assert again.buckets == counter.buckets and again.total == counter.total


def test_bounded_map_evicts_the_least_recently_touched_but_keeps_protected_entries() -> None:
    touched = BoundedMap[str, str](3)
    for key in "abc":
        touched.setdefault(key, lambda: "x")
    touched.get("a")
    touched.setdefault("d", lambda: "x")
    assert list(touched.data) == ["c", "a", "d"] and touched.evicted == 1
    protected = BoundedMap[str, str](3, keep=lambda v: v == "firing")
    for key, value in [("a", "firing"), ("b", "x"), ("c", "firing"), ("d", "x"), ("e", "x")]:
        protected.setdefault(key, lambda v=value: v)  # type: ignore[misc]
    assert list(protected.data) == ["a", "c", "e"] and protected.evicted == 2
    everything = BoundedMap[str, str](2, keep=lambda v: True)
    for key in "abc":
        everything.setdefault(key, lambda: "firing")
    assert list(everything.data) == ["b", "c"]  # all protected: the bound wins, the oldest goes


# -- the engine's clock and state at their edges ---------------------------------------------------

SILENT_ANY = "- {name: silent, kind: absent, for: 5m}"  # no `sources:`: every configured source


def test_absent_without_sources_watches_every_source_from_the_engines_start(tmp_path: Path) -> None:
    eng = engine(tmp_path, SILENT_ANY, sources=("gateway", "audit"))
    assert eng.advance(T0) == []  # the daemon's first tick: the clock starts before any line
    alerts = feed(eng, [event(T0 + 60 * i) for i in range(1, 6)])  # only the gateway writes
    (alert,) = alerts
    assert alert.group == {"source": "audit"} and alert.first_ts == T0 and alert.last_ts == T0 + 300


def test_clock_work_runs_every_second_in_a_steady_stream_of_lines(tmp_path: Path) -> None:
    eng = engine(tmp_path, SILENT_ANY, sources=("gateway", "audit"))
    out = [(e.ts, a.group) for e in (event(T0 + i) for i in range(301)) for a in eng.observe(e)]
    assert out == [(T0 + 300, {"source": "audit"})]  # one line a second: each one a tick


def test_a_line_exactly_max_clock_lead_ahead_moves_the_clock(tmp_path: Path) -> None:
    eng = engine(tmp_path, threshold(5))
    eng.observe(denied(T0))
    eng.observe(denied(T0 + 3600))  # MAX_CLOCK_LEAD: still a log that moves on
    assert eng.now == T0 + 3600
    eng.observe(denied(T0 + 3600 + 3600.5))  # beyond it: a lone line waits for the next one
    assert eng.now == T0 + 3600


def test_a_line_in_time_between_two_stray_lines_keeps_the_clock_waiting(tmp_path: Path) -> None:
    eng = engine(tmp_path, threshold(5))
    eng.observe(denied(T0 + 1))
    eng.observe(denied(T0 + 10 * DAY))  # stray
    assert eng.snapshot()["leap_pending"] is True
    eng.observe(denied(T0))  # the log goes on in its own time (a line a second late)
    assert eng.now == T0 + 1 and eng.snapshot()["leap_pending"] is False
    eng.observe(denied(T0 + 20 * DAY))  # another stray: alone again, the clock stays
    assert eng.now == T0 + 1 and eng.snapshot()["leap_pending"] is True
    eng.observe(denied(T0 + 2))
    assert eng.now == T0 + 2 and eng.snapshot()["leap_pending"] is False


def test_a_far_line_after_the_first_tick_waits_for_a_second_one(tmp_path: Path) -> None:
    eng = engine(tmp_path, threshold(5))
    eng.advance(T0)  # the daemon ticked before the first line came
    eng.observe(denied(T0 + 2 * 3600))
    assert eng.now == T0
    eng.observe(denied(T0 + 2 * 3600 + 1))
    assert eng.now == T0 + 2 * 3600 + 1


def test_a_late_line_counts_as_its_source_writing_in_its_own_time(tmp_path: Path) -> None:
    eng = engine(tmp_path, SILENT_ANY.replace("5m", "1m"), sources=("gateway", "audit"))
    feed(eng, [event(T0), event(T0 + 10), event(T0 + 5, source="audit"), event(T0 + 2)])
    assert eng.last_write == T0 + 10  # the gateway's late line does not take its last write back
    assert eng.snapshot()["source_last_seen"] == {"gateway": T0 + 10, "audit": T0 + 5}
    (alert,) = eng.advance(T0 + 65)  # audit silent a minute since its own (late) line
    assert alert.group == {"source": "audit"} and alert.first_ts == T0 + 5


def test_a_late_use_of_a_key_does_not_take_its_last_use_back(tmp_path: Path) -> None:
    eng = engine(tmp_path, threshold(5))
    feed(eng, [use(T0 + 10, "alice"), use(T0 + 5, "alice"), use(T0 + 7, "bob")])
    assert eng.snapshot()["keys_last_used"] == {"alice": T0 + 10, "bob": T0 + 7}


def test_key_expiry_is_checked_each_minute_and_at_a_keys_first_use_not_at_every_line(
    tmp_path: Path,
) -> None:
    registry = Registry(key_entry("kim", expires_at=T0 + 7 * DAY + 30, created_at=T0 - DAY))
    eng = key_expiry_engine(tmp_path, "- {name: expiring, kind: key_expiry, within: 7d}", registry)
    assert eng.observe(use(T0, "kim")) == []  # first use: checked, 7 days and 30 s left
    assert feed(eng, [use(T0 + 31, "kim"), denied(T0 + 45), use(T0 + 59, "kim")]) == []
    (alert,) = eng.observe(use(T0 + 60, "kim"))  # the minute's check: within 7 days now
    assert alert.key == "kim" and alert.first_ts == T0 + 60


def test_state_comes_back_whole_through_json(tmp_path: Path) -> None:
    fresh = engine(tmp_path, threshold(5))
    state = fresh.snapshot()
    assert {k: state[k] for k in ("now", "started", "leap_pending", "next_tick", "next_expiry_check")} == {
        "now": None, "started": None, "leap_pending": False, "next_tick": None, "next_expiry_check": None,
    }  # fmt: skip
    eng = engine(tmp_path, threshold(5) + "\n" + MATCH)
    feed(eng, [denied(T0 + i) for i in range(4)] + [revoked(T0 + 5), use(T0 + 6, "alice")])
    saved = json.loads(json.dumps(eng.snapshot()))
    assert (saved["now"], saved["started"], saved["next_tick"], saved["next_expiry_check"]) == (
        T0 + 6, T0, T0 + 7, T0 + 60
    )  # fmt: skip
    assert saved["leap_pending"] is False
    again = engine(tmp_path, threshold(5) + "\n" + MATCH)
    again.restore(saved)
    assert json.loads(json.dumps(again.snapshot())) == saved
    assert again.now == T0 + 6 and again.started == T0


def test_restore_drops_times_that_are_not_numbers_and_reads_keys_seen(tmp_path: Path) -> None:
    eng = engine(tmp_path, threshold(5))
    eng.restore({
        "version": 1, "now": T0, "source_last_seen": {"gateway": "x", "audit": T0 - 5, "7": True},
        "keys_last_used": {"alice": None, "bob": T0 - 1},
    })  # fmt: skip
    state = eng.snapshot()
    assert state["source_last_seen"] == {"audit": T0 - 5} and state["keys_last_used"] == {"bob": T0 - 1}
    older = engine(tmp_path, threshold(5))
    older.restore({"version": 1, "now": T0, "keys_seen": ["alice", 3]})  # before last use was kept
    assert older.snapshot()["keys_last_used"] == {"alice": T0}
