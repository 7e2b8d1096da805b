"""The fleet's link to Redis (fleet/link.py) against a real redis-server: the round trips, the
claims, two instances sharing one burst, Redis going away and coming back, and a password that
must stay out of every error and log line.

No daemon process: each instance is a `FleetSync` with its own real `Pipeline` (`defer_rules`)
over the fixtures' nginx recording. Time for the backoff is a `Clock` the test moves by hand.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from paths import FIXTURES
from receivers import RedisServer
from tools import require_module, require_program

from xinf_watch.app.fleetsync import FleetSync
from xinf_watch.app.pipeline import Pipeline
from xinf_watch.config.schema import empty_config, load_config
from xinf_watch.config.sources import SourceConfig
from xinf_watch.fleet.feed import FleetFeed, claim_name
from xinf_watch.fleet.link import (
    CLAIM_PREFIX,
    CLAIM_TTL,
    RETRY_MAX,
    WARMUP,
    SharedLink,
    SharedStateDown,
    redacted,
)
from xinf_watch.keys.files import load_registry
from xinf_watch.keys.registry import KeyRegistry
from xinf_watch.model import Alert

redis_client = require_module("redis")  # a dependency since state.shared: an older install lacks it
pytestmark = pytest.mark.system

LINES = (FIXTURES / "nginx/access_combined_key.log").read_text(encoding="utf-8").splitlines()
BURST_IP = "127.77.40.2"  # 40 requests denied within 20 s of the recording
BURST = [line for line in LINES if line.startswith(BURST_IP + " ") and '" 401 ' in line]
RULES = """\
sources: [{{name: gateway, path: /var/log/gateway.log, format: nginx, log_format: combined_key}}]
keys: [{keys}]
rules:
  - {{name: denied-burst, kind: threshold, when: {{outcome: denied}}, by: [ip], count: 30, window: 1m}}
"""


def no_clock() -> float | None:
    return None  # the rules' time is the events' own: nothing to advance


class Clock:
    """`monotonic` for a SharedLink: moves only when the test says."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    redis = RedisServer(require_program("redis-server"), tmp_path).start()
    yield redis
    redis.stop()


def pipeline(tmp_path: Path, defer_rules: bool = True) -> Pipeline:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.format(keys=FIXTURES / "keys.yaml"), encoding="utf-8")
    config = load_config(rules)
    return Pipeline.build(config, load_registry(config.keys), defer_rules=defer_rules)


def read(p: Pipeline, lines: Sequence[str]) -> list[Alert]:
    alerts: list[Alert] = []
    for line in lines:
        alerts.extend(p.process_line("gateway", line))
    return alerts


def spy_claims(monkeypatch: pytest.MonkeyPatch, link: SharedLink) -> list[tuple[str, bool]]:
    """Every claim `link` makes after its first round trip, with its answer."""
    made: list[tuple[str, bool]] = []
    claim: Callable[[Sequence[str]], list[bool]] = link.claim

    def recording(names: Sequence[str]) -> list[bool]:
        answers = claim(names)
        made.extend(zip(names, answers, strict=True))
        return answers

    monkeypatch.setattr(link, "claim", recording)
    return made


def test_the_burst_needs_both_halves() -> None:
    """The recording as the tests below use it (so their assertions can fail)."""
    assert len(BURST) == 40 and len(BURST[0::2]) == len(BURST[1::2]) == 20


# -- SharedLink ----------------------------------------------------------------------------------


def test_exchange_publishes_and_reads_back_in_one_round_trip(
    server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    trips: list[int] = []
    execute = redis_client.client.Pipeline.execute

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        trips.append(len(self.command_stack))
        return execute(self, *args, **kwargs)

    monkeypatch.setattr(redis_client.client.Pipeline, "execute", counted)
    gw1, gw2 = SharedLink(server.url), SharedLink(server.url)
    assert gw1.up is None
    first = gw1.exchange(["a:firing"], [b"one", b"two"], None)
    assert [p for _, p in first] == [b"one", b"two"]
    assert trips == [4] and gw1.up is True  # a claim, two XADDs and the XREAD: one pipeline
    assert [p for _, p in gw2.exchange([], [b"three"], None)] == [b"one", b"two", b"three"]
    after = gw1.exchange([], [], first[-1][0])
    assert [p for _, p in after] == [b"three"]
    ids = [i for i, _ in first + after]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-")))) and len(set(ids)) == 3


def test_a_new_instance_reads_the_last_hour_of_the_stream(server: RedisServer) -> None:
    SharedLink(server.url).exchange([], [b"old"], None)
    assert [p for _, p in SharedLink(server.url).exchange([], [], None)] == [b"old"]
    later = SharedLink(server.url, wall=lambda: time.time() + WARMUP + 60)  # the entry is 61 min old
    assert later.exchange([], [], None) == []


def test_the_first_claimer_wins(server: RedisServer) -> None:
    gw1, gw2 = SharedLink(server.url), SharedLink(server.url)
    assert gw1.claim(["x:firing", "y:firing"]) == [True, True]
    assert gw2.claim(["x:firing", "z:firing", "x:resolved"]) == [False, True, True]
    assert gw1.claim(["z:firing", "x:firing"]) == [False, False]
    gw2.exchange(["w:firing"], [], None)  # claims made with an exchange are claims too
    assert gw1.claim(["w:firing"]) == [False]
    raw = redis_client.Redis.from_url(server.url)
    try:
        assert CLAIM_TTL - 60 < raw.ttl(CLAIM_PREFIX + "x:firing") <= CLAIM_TTL
    finally:
        raw.close()


def test_redis_down_raises_and_the_link_waits_before_trying_again(server: RedisServer) -> None:
    clock = Clock()
    link = SharedLink(server.url, monotonic=clock)
    link.exchange([], [b"before"], None)
    server.stop()
    with pytest.raises(SharedStateDown) as caught:
        link.exchange([], [b"lost"], None)
    assert link.up is False and str(caught.value) == link.error
    assert link.error.startswith("ConnectionError: ") and str(server.port) in link.error
    server.start()  # back on its port already: the link does not even try before its second is up
    clock.now += 0.9
    with pytest.raises(SharedStateDown):
        link.claim(["a:firing"])
    assert link.up is False
    clock.now += 0.1
    assert link.claim(["a:firing"]) == [True] and link.up is True
    assert [p for _, p in link.exchange([], [], None)] == [b"before"]  # "lost" never reached it


def test_failures_in_a_row_double_the_wait_up_to_the_maximum(
    server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A turn every half second for a minute of Redis down: the link connects at 0, 1, 3, 7, 15,
    25, 35 ... s, not 120 times; once it is back, the wait starts again from one second."""
    clock = Clock()
    attempts: list[float] = []
    connect = socket.socket.connect

    def counting(sock: socket.socket, address: Any) -> None:
        if address[1] == server.port:
            attempts.append(clock.now - 1000.0)
        connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", counting)
    link = SharedLink(server.url, monotonic=clock)
    server.stop()

    def turns(seconds: float) -> int:
        """A turn every half second; how many reached Redis."""
        ok = 0
        for _ in range(int(seconds * 2)):
            try:
                link.exchange([], [], None)
                ok += 1
            except SharedStateDown:
                pass
            clock.now += 0.5
        return ok

    assert turns(60) == 0
    assert attempts == [0, 1, 3, 7, 15, 25, 35, 45, 55]
    assert RETRY_MAX == 10
    server.start()
    assert turns(10) == 10  # the attempt at 65 s connects, and every turn after it
    server.stop()
    attempts.clear()
    assert turns(4) == 0
    assert attempts == [70, 71, 73]


# -- FleetSync: two instances --------------------------------------------------------------------


def test_a_burst_split_between_two_instances_is_alerted_once(
    tmp_path: Path, server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole recording dealt alternately to gw1 and gw2, 100 lines a turn: the 40 denied requests
    of the burst are 20 on each, under the threshold of 30 for either alone."""
    control = {name: pipeline(tmp_path, defer_rules=False) for name in ("gw1", "gw2")}
    assert read(control["gw1"], LINES[0::2]) == [] and read(control["gw2"], LINES[1::2]) == []

    pipelines = {name: pipeline(tmp_path) for name in ("gw1", "gw2")}
    syncs = {
        name: FleetSync(FleetFeed(name), SharedLink(server.url), logging.getLogger(name))
        for name in pipelines
    }
    claims = {name: spy_claims(monkeypatch, sync.link) for name, sync in syncs.items()}
    sent: dict[str, list[Alert]] = {"gw1": [], "gw2": []}
    for start in range(0, len(LINES), 100):
        for offset, name in enumerate(("gw1", "gw2")):
            assert read(pipelines[name], LINES[start + offset : start + 100 : 2]) == []  # deferred
            sent[name] += syncs[name].turn(pipelines[name], no_clock)
    for name in ("gw1", "gw2"):  # each reads what the other published after its last turn
        sent[name] += syncs[name].turn(pipelines[name], no_clock)

    alerts = sent["gw1"] + sent["gw2"]  # the burst fires, and resolves as the recording goes on
    assert sorted((a.rule, a.group["ip"], a.status.value) for a in alerts) == [
        ("denied-burst", BURST_IP, "firing"),
        ("denied-burst", BURST_IP, "resolved"),
    ]
    assert len({a.id for a in alerts}) == 1
    for alert in alerts:  # each made by both, sent by the one that claimed it first
        sender, other = ("gw1", "gw2") if alert in sent["gw1"] else ("gw2", "gw1")
        assert (claim_name(alert), True) in claims[sender]
        assert (claim_name(alert), False) in claims[other]
    assert len(claims["gw1"] + claims["gw2"]) == 4
    for offset, sync in enumerate(syncs.values()):
        assert sync.feed.fed_events == len(LINES) and sync.feed.published_events == len(LINES[offset::2])
        assert sync.feed.pending_events() == 0 and sync.feed.invalid == 0 and not sync.behind
        sync.link.close()


def test_redis_down_the_instance_goes_local_and_claims_its_alerts_when_back(
    tmp_path: Path, server: RedisServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis goes away; gw1 alone sees the whole burst, alerts at once (unclaimed) and keeps its
    events. Redis back, gw1 claims the alert before publishing the events, so gw2, judging them
    late, makes the same alert and does not send it."""
    caplog.set_level(logging.INFO)
    clocks = {name: Clock() for name in ("gw1", "gw2")}
    pipelines = {name: pipeline(tmp_path) for name in clocks}
    syncs = {name: FleetSync(FleetFeed(name), SharedLink(server.url, monotonic=clocks[name]),
                             logging.getLogger(f"test.{name}")) for name in clocks}  # fmt: skip
    gw1, gw2 = syncs["gw1"], syncs["gw2"]
    read(pipelines["gw1"], LINES[:10])
    assert gw1.turn(pipelines["gw1"], no_clock) == [] and gw2.turn(pipelines["gw2"], no_clock) == []

    server.stop()
    read(pipelines["gw1"], BURST)
    (burst,) = gw1.turn(pipelines["gw1"], no_clock)
    assert burst.rule == "denied-burst" and gw1.link.up is False
    assert list(gw1.feed.unclaimed) == [claim_name(burst)] and gw1.feed.pending_events() == 40
    assert gw1.feed.fed_events == 10 + 40  # its own events, straight into its engine
    assert gw2.turn(pipelines["gw2"], no_clock) == [] and gw2.link.up is False
    for _ in range(3):  # more turns while down: nothing twice, nothing new to say
        clocks["gw1"].now += 0.3
        assert gw1.turn(pipelines["gw1"], no_clock) == []

    server.start()
    for clock in clocks.values():
        clock.now += 5
    gw2_claims = spy_claims(monkeypatch, gw2.link)
    assert gw1.turn(pipelines["gw1"], no_clock) == []  # its own events came back: fed already
    assert gw1.link.up is True and not gw1.feed.unclaimed and gw1.feed.pending_events() == 0
    assert gw1.feed.fed_events == 50 and gw1.feed.published_events == 50
    assert gw2.turn(pipelines["gw2"], no_clock) == []
    assert gw2_claims == [(claim_name(burst), False)]  # gw2 made it too: gw1 had claimed it
    assert gw2.feed.fed_events == 50

    said = [
        (r.name, r.levelname, r.getMessage().split(";")[0])
        for r in caplog.records
        if r.name.startswith("test.")
    ]
    up = f"shared state: connected to {server.url}"
    down = f"shared state: {server.url} unreachable ({gw1.link.error})"
    assert said == [("test.gw1", "INFO", up), ("test.gw2", "INFO", up), ("test.gw1", "WARNING", down),
                    ("test.gw2", "WARNING", down.replace(gw1.link.error, gw2.link.error)),
                    ("test.gw1", "INFO", up), ("test.gw2", "INFO", up)]  # fmt: skip


# -- the password ----------------------------------------------------------------------------------

PASSWORD = "Sup3r-s3cret-Pw"


@pytest.mark.parametrize(
    ("userinfo", "secrets"),
    [(":Wr0ng-pa55word", ["Wr0ng-pa55word"]), ("default:p%40ss%2Fw0rd", ["p%40ss%2Fw0rd", "p@ss/w0rd"])],
)
def test_a_wrong_password_is_never_shown(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, userinfo: str, secrets: list[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    redis = RedisServer(require_program("redis-server"), tmp_path, password=PASSWORD).start()
    try:
        assert SharedLink(redis.url).claim(["a:firing"]) == [True]  # the right one works
        url = f"redis://{userinfo}@127.0.0.1:{redis.port}/0"
        user = userinfo.split(":")[0]
        assert redacted(url) == f"redis://{user}:***@127.0.0.1:{redis.port}/0"
        assert redacted(redis.url) == f"redis://:***@127.0.0.1:{redis.port}/0"
        source = SourceConfig(name="gateway", path="", format="nginx", log_format="combined_key")
        p = Pipeline.build(empty_config(), KeyRegistry(()), extra_sources=[source], defer_rules=True)
        clock = Clock()
        sync = FleetSync(FleetFeed("gw1"), SharedLink(url, monotonic=clock), logging.getLogger("test.gw1"))
        read(p, LINES[:5])
        assert sync.turn(p, no_clock) == []
        assert sync.link.up is False and "AuthenticationError" in sync.link.error
        redis.stop()  # and unreachable, the password still in the URL
        clock.now += RETRY_MAX
        with pytest.raises(SharedStateDown) as caught:
            sync.link.exchange([], [], None)
        assert "ConnectionError" in str(caught.value)
    finally:
        redis.stop()
    assert caplog.records and redacted(url) in caplog.text
    for secret in secrets:
        assert secret not in sync.link.error and secret not in str(caught.value)
        assert secret not in caplog.text
        for record in caplog.records:
            assert secret not in record.getMessage()
