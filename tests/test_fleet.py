"""A fleet: three gateways behind one load balancer, one real xinf-watch process each, sharing their
rule state through one real redis-server (`state.shared`, fleet/feed.py).

A traffic generator plays the load balancer: it appends real gateway lines (the fixtures' nginx
recording, current times) to the three gateways' access logs. The alerts reach one real HTTP
receiver. The same traffic without `state.shared` is the control: it shows what each instance
judging its own share gets wrong, so the shared run's assertions can fail.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import (
    TEMPLATES,
    DaemonProcess,
    Workspace,
    access_line,
    denied_line,
    json_url,
    received_alerts,
    total,
)
from receivers import HTTPReceiver, RedisServer, wait_until
from tools import require_program

pytestmark = pytest.mark.system

KEY = "sk-Yn9ggOg8DoIku"  # chatbot-prod in examples/keys.yaml
ADMIN = "sk-k5TVo3eVxM1FM"  # platform-admin: allowed_ips 127.0.1.10/32
KEY_OK = next(t for t in TEMPLATES if KEY in t.rest and '" 200 ' in t.request)
ADMIN_OK = next(t for t in TEMPLATES if ADMIN in t.rest and '" 200 ' in t.request)
POD_A, POD_B = "10.1.0.5", "10.1.0.6"  # the client's two pods: one baseline, same /16

RULES: list[dict[str, Any]] = [
    {"name": "denied-burst", "kind": "threshold", "when": {"outcome": "denied"}, "by": ["ip"],
     "count": 20, "window": "1m", "severity": "critical", "notify": ["ops"]},
    {"name": "new-ip", "kind": "new_value", "when": {"key_state": "valid"}, "by": ["key"], "value": "ip",
     "learn": "3s", "notify": ["ops"]},
    {"name": "outside-allowed-ips", "kind": "match", "when": {"ip_allowed": False}, "by": ["key", "ip"],
     "notify": ["ops"]},
]  # fmt: skip


class Fleet:
    """Three gateways (gw1..gw3), each with its log, its rules.yaml and its daemon; `send` is the
    load balancer."""

    def __init__(self, root: Path, receiver: HTTPReceiver, shared: str | None) -> None:
        self.gateways = [Workspace(root / f"gw{n}") for n in (1, 2, 3)]
        for n, gw in enumerate(self.gateways, 1):
            gw.log.touch()
            state: dict[str, Any] = {"dir": str(gw.state)}
            if shared:
                state |= {"shared": shared, "instance": f"gw{n}"}
            gw.write_rules(rules=RULES, notify={"ops": [json_url(receiver)]},
                           extra={"state": state, "delivery": {"group_interval": "0s"}})  # fmt: skip
        self.daemons: list[DaemonProcess] = [gw.daemon() for gw in self.gateways]
        self.written = [0, 0, 0]
        self.seq = 0
        self._next = 0

    def start(self) -> None:
        for d in self.daemons:
            d.spawn()
        for d in self.daemons:
            d.wait_for("READY=1", 20)

    def send(self, line_of: Any, count: int = 1, to: int | None = None) -> None:
        """`count` lines made by `line_of(seq)`, to gateway `to` (0-2), or round robin."""
        for _ in range(count):
            self.seq += 1
            n = self._next % 3 if to is None else to
            self._next += to is None
            with self.gateways[n].log.open("a") as f:
                f.write(line_of(self.seq) + "\n")
            self.written[n] += 1

    def wait_parsed(self) -> None:
        """Every gateway's daemon has parsed every line written to its log."""
        for d, n in zip(self.daemons, self.written, strict=True):
            d.wait_until(lambda m, n=n: total(m, "xinf_watch_lines_total", result="parsed") == n,
                         timeout=20, what=f"{n} lines parsed")  # fmt: skip

    def wait_fed(self) -> None:
        """Every daemon's rule engine has been fed every line of the fleet (shared state)."""
        want = sum(self.written)
        for d in self.daemons:
            d.wait_until(lambda m: total(m, "xinf_watch_shared_events_total", direction="fed") == want,
                         timeout=30, what=f"{want} fleet events fed to the rules")  # fmt: skip

    def close(self) -> None:
        for gw in self.gateways:
            gw.close()


def key_line(ip: str) -> Any:
    return lambda seq: access_line(seq, KEY_OK, ip=ip)


@pytest.fixture
def receiver() -> Iterator[HTTPReceiver]:
    r = HTTPReceiver().start()
    yield r
    r.stop()


def alerts_by_rule(receiver: HTTPReceiver) -> collections.Counter[str]:
    return collections.Counter(a["rule"] for a in received_alerts(receiver) if a["status"] == "firing")


def settle(fleet: Fleet, *, shared: bool) -> None:
    fleet.wait_parsed()
    if shared:
        fleet.wait_fed()


def expect_alerts(receiver: HTTPReceiver, want: dict[str, int]) -> None:
    """The receiver has got `want` firing alerts per rule, and no more come within a second
    (a duplicate, a late one)."""
    wait_until(lambda: alerts_by_rule(receiver) == want, timeout=15, what=f"alerts {want}")
    time.sleep(1.0)
    assert alerts_by_rule(receiver) == want


def play_before_outage(fleet: Fleet, *, shared: bool) -> None:
    # The client's two pods, each sticky to one gateway, form the key's baseline while it learns.
    fleet.send(key_line(POD_A), 3, to=0)
    fleet.send(key_line(POD_B), 3, to=1)
    settle(fleet, shared=shared)
    time.sleep(3.0)  # learning is over
    # The load balancer moves the pods between gateways: the same two addresses, nothing new.
    fleet.send(key_line(POD_A), 2, to=1)
    fleet.send(key_line(POD_A), 2, to=2)
    fleet.send(key_line(POD_B), 2, to=0)
    fleet.send(key_line(POD_B), 2, to=2)
    # 30 denied requests from one address, spread evenly: 10 per gateway, threshold 20.
    fleet.send(lambda seq: denied_line(seq, "198.51.100.7"), 30)
    # The admin key from outside its allow-list, once, on one gateway.
    fleet.send(lambda seq: access_line(seq, ADMIN_OK, ip="203.0.113.9"), to=2)
    settle(fleet, shared=shared)


def test_a_fleet_sharing_rule_state_raises_each_alert_once_through_a_redis_restart(
    tmp_path: Path, receiver: HTTPReceiver
) -> None:
    redis = RedisServer(require_program("redis-server"), tmp_path).start()
    fleet = Fleet(tmp_path, receiver, redis.url)
    try:
        fleet.start()
        play_before_outage(fleet, shared=True)
        expect_alerts(receiver, {"denied-burst": 1, "outside-allowed-ips": 1})

        redis.stop()
        for d in fleet.daemons:
            d.wait_until(lambda m: total(m, "xinf_watch_shared_state_up") == 0, timeout=10,
                         what="shared state down")  # fmt: skip
        # During the outage: ordinary traffic everywhere, the admin key from outside on gw1 and the
        # key from a new address on gw2. Each is alerted at once, by the gateway that saw it.
        fleet.send(key_line(POD_A), 12)
        fleet.send(lambda seq: access_line(seq, ADMIN_OK, ip="203.0.113.10"), to=0)
        fleet.send(key_line("10.9.0.1"), to=1)
        fleet.wait_parsed()
        outage_alerts = {"denied-burst": 1, "outside-allowed-ips": 2, "new-ip": 1}
        expect_alerts(receiver, outage_alerts)

        redis.start()  # the same port, its saved data
        for d in fleet.daemons:
            d.wait_until(lambda m: total(m, "xinf_watch_shared_state_up") == 1, timeout=20,
                         what="shared state back")  # fmt: skip
        settle(fleet, shared=True)  # every instance has judged the others' outage lines
        expect_alerts(receiver, outage_alerts)

        metrics = [d.metrics() for d in fleet.daemons]
        for d in fleet.daemons:
            d.terminate()
    finally:
        fleet.close()
        redis.stop()

    alerts = received_alerts(receiver)
    per_transition = collections.Counter((a["id"], a["status"]) for a in alerts)
    print("\nalerts:", sorted((a["rule"], a["group"].get("ip", ""), a["status"]) for a in alerts))
    assert set(per_transition.values()) == {1}, per_transition  # none twice
    assert alerts_by_rule(receiver) == outage_alerts  # and none since
    assert {a["group"]["ip"] for a in alerts if a["rule"] == "outside-allowed-ips"} == {
        "203.0.113.9",
        "203.0.113.10",
    }
    assert [a["value"] for a in alerts if a["rule"] == "new-ip"] == ["10.9.0.1"]
    burst = next(a for a in alerts if a["rule"] == "denied-burst")
    assert burst["group"] == {"ip": "198.51.100.7"} and burst["count"] >= 20
    for m, n in zip(metrics, fleet.written, strict=True):
        assert total(m, "xinf_watch_lines_total", result="parsed") == n  # no line lost or read twice
        assert total(m, "xinf_watch_shared_events_total", direction="published") == n
        assert total(m, "xinf_watch_shared_events_total", direction="fed") == sum(fleet.written)
        assert total(m, "xinf_watch_shared_events_pending") == 0
        assert total(m, "xinf_watch_shared_events_dropped_total") == 0
    # each alert is counted by the one instance that sent it
    assert sum(total(m, "xinf_alerts_total") for m in metrics) == len(alerts)


def test_without_shared_state_each_gateway_judges_its_share_alone(
    tmp_path: Path, receiver: HTTPReceiver
) -> None:
    """The control: the same traffic, no `state.shared`. The burst stays under every gateway's
    threshold, and the pods' moves look like new addresses on the gateways that had not seen them."""
    fleet = Fleet(tmp_path, receiver, None)
    try:
        fleet.start()
        play_before_outage(fleet, shared=False)
        expect_alerts(receiver, {"new-ip": 2, "outside-allowed-ips": 1})
        for d in fleet.daemons:
            d.terminate()
    finally:
        fleet.close()


def test_an_instance_killed_mid_run_rejoins_without_losing_or_doubling_a_line(
    tmp_path: Path, receiver: HTTPReceiver
) -> None:
    """kill -9 of one instance while the fleet takes a burst: restarted, it reads its lines again
    from its last commit and publishes them again; every instance still judges each of the fleet's
    lines once, and the burst is one alert."""
    redis = RedisServer(require_program("redis-server"), tmp_path).start()
    fleet = Fleet(tmp_path, receiver, redis.url)
    try:
        fleet.start()
        fleet.send(lambda seq: denied_line(seq, "198.51.100.8"), 12)  # 4 per gateway
        fleet.daemons[1].kill()
        fleet.send(lambda seq: denied_line(seq, "198.51.100.8"), 15)  # 27 in all, 9 on the stopped one
        fleet.daemons[1].start()
        settle(fleet, shared=True)
        expect_alerts(receiver, {"denied-burst": 1})
        metrics = [d.metrics() for d in fleet.daemons]
        for d in fleet.daemons:
            d.terminate()
    finally:
        fleet.close()
        redis.stop()
    for m, n in zip(metrics, fleet.written, strict=True):
        assert total(m, "xinf_watch_lines_total", result="parsed") == n
        assert total(m, "xinf_watch_shared_events_total", direction="fed") == sum(fleet.written)
    burst = next(a for a in received_alerts(receiver) if a["rule"] == "denied-burst")
    assert burst["count"] >= 20


def test_an_instance_that_cannot_reach_redis_at_start_works_alone_until_it_can(
    tmp_path: Path, receiver: HTTPReceiver
) -> None:
    redis = RedisServer(require_program("redis-server"), tmp_path)  # not started yet: the port is closed
    fleet = Fleet(tmp_path, receiver, redis.url)
    one = fleet.daemons[0]
    try:
        one.start()
        one.wait_until(lambda m: total(m, "xinf_watch_shared_state_up") == 0, what="shared state down")
        fleet.send(lambda seq: access_line(seq, ADMIN_OK, ip="203.0.113.11"), to=0)
        expect_alerts(receiver, {"outside-allowed-ips": 1})  # judged alone, sent at once
        assert total(one.metrics(), "xinf_watch_shared_events_pending") == 1
        redis.start()
        published = {"xinf_watch_shared_events_pending": 0, "xinf_watch_shared_state_up": 1}
        one.wait_until(lambda m: all(total(m, k) == v for k, v in published.items()), 20, "published")
        two = fleet.daemons[1].start()  # it reads the first one's late event: its alert is already claimed
        two.wait_until(lambda m: total(m, "xinf_watch_shared_events_total", direction="fed") == 1, what="fed")
        expect_alerts(receiver, {"outside-allowed-ips": 1})
        one.terminate()
        two.terminate()
    finally:
        fleet.close()
        redis.stop()
    stderr = one.stderr()
    assert stderr.count("unreachable") == 1 and stderr.count("shared state: connected") == 1, stderr
