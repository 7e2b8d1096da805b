"""Alert delivery to real receivers: apprise json:// and mailto:// on loopback, a real Alertmanager,
an outage and recovery through the durable outbox, and the alert journal."""

from __future__ import annotations

import base64
import json
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from apprise.manager_plugins import NotificationManager
from receivers import Alertmanager, HTTPReceiver, SMTPReceiver, free_port, wait_until
from tools import require_program

from xinf_watch.delivery.alertmanager import AlertmanagerTarget, Refresher, alertmanager_alert
from xinf_watch.delivery.apprise_target import MAX_GROUP, AppriseTarget, _apprise_schemes
from xinf_watch.delivery.journal import AlertJournal
from xinf_watch.delivery.routing import build_targets, targets_for
from xinf_watch.delivery.sender import Deliverer
from xinf_watch.delivery.target import ALERTMANAGER, DeliveryError, Target
from xinf_watch.delivery.text import alerts_in, group_text, notification_text
from xinf_watch.model import Alert, AlertStatus, Severity, format_ts
from xinf_watch.state.outbox import Outbox
from xinf_watch.state.store import StateStore


@pytest.fixture(autouse=True)
def no_apprise_throttle(monkeypatch: pytest.MonkeyPatch) -> None:
    """apprise sleeps between two sends of one plugin (e.g. 5.5 s for email): not in tests."""
    _apprise_schemes()  # apprise's plugins, loaded as xinf_watch loads them (on first use)
    for plugin in NotificationManager().plugins():  # type: ignore[no-untyped-call]
        for cls in plugin.__mro__:
            if "request_rate_per_sec" in vars(cls):
                monkeypatch.setattr(cls, "request_rate_per_sec", 0)


@pytest.fixture
def http() -> Iterator[HTTPReceiver]:
    receiver = HTTPReceiver().start()
    yield receiver
    receiver.stop()


def make_alert(n: int = 1, status: AlertStatus = AlertStatus.FIRING, first: float = 1_795_000_000.0,
               last: float = 1_795_000_030.0, **extra: Any) -> Alert:  # fmt: skip
    return Alert(
        rule="denied-burst", kind="threshold", severity=Severity.CRITICAL, status=status,
        group={"ip": "203.0.113.7"}, key="unknown", count=20 + n, first_ts=first, last_ts=last,
        summary=f"{20 + n} denied requests from 203.0.113.7 in 1m", source="gateway", id=f"a{n:04d}",
        extra=extra,
    )  # fmt: skip


def alert_in(text: str) -> dict[str, Any]:
    """The machine part of a notification body: its last line."""
    result: dict[str, Any] = json.loads(text.strip().splitlines()[-1])
    return result


def test_notification_text_reads_well_and_carries_the_json() -> None:
    alert = make_alert(3, value="198.51.100.0/24").to_json()
    title, body = notification_text(alert)
    assert title == "[FIRING] denied-burst (critical): 23 denied requests from 203.0.113.7 in 1m"
    assert body.splitlines()[0] == "denied-burst is FIRING (critical, threshold rule)"
    for line in ("key:    unknown", "ip:     203.0.113.7", "count:  23", "from:   2026-11-18T",
                 "to:     2026-11-18T", "source: gateway", "value:  198.51.100.0/24"):  # fmt: skip
        assert line in body
    assert alert_in(body) == alert
    assert notification_text(make_alert(status=AlertStatus.RESOLVED).to_json())[0].startswith("[RESOLVED] ")


def test_apprise_json_reaches_the_http_receiver(http: HTTPReceiver) -> None:
    alert = make_alert().to_json()
    AppriseTarget("ops", [f"json://{http.url}/hook"]).send([alert])
    (request,) = http.requests
    assert request.path == "/hook"
    payload = request.json()
    assert payload["title"] == notification_text(alert)[0]
    assert "denied-burst is FIRING" in payload["message"]
    assert alert_in(payload["message"]) == alert
    assert payload["type"] == "failure"


def test_dead_endpoint_fails_loudly_without_secrets(
    http: HTTPReceiver, capfd: pytest.CaptureFixture[str]
) -> None:
    http.stop()
    target = AppriseTarget("ops", [f"json://hookuser:s3cr3t-token@{http.url}/hook?token=s3cr3t-token"])
    with pytest.raises(DeliveryError) as err:
        target.send([make_alert().to_json()])
    assert "notify group 'ops'" in str(err.value) and "s3cr3t" not in str(err.value)
    assert capfd.readouterr() == ("", "")  # apprise's own logging stays off our stderr

    http.status = 500
    http.start()
    with pytest.raises(DeliveryError, match="500"):
        target.send([make_alert().to_json()])


def test_invalid_entry_is_a_problem_not_a_crash(http: HTTPReceiver) -> None:
    target = AppriseTarget("ops", ["/nonexistent/apprise.yml", f"json://{http.url}/ok", "bogus://x?t=s3cr3t"])
    assert target.problems == [
        "ops[1] (/nonexistent/apprise.yml): no such file (expected an apprise URL or config file)",
        "ops[3] (bogus://): Unparseable URL <url>"]  # fmt: skip
    with pytest.raises(DeliveryError, match="ops\\[1\\]"):
        target.send([make_alert().to_json()])
    assert len(http.requests) == 1  # the valid URL still got it


def test_partial_failure_retries_only_the_failed_url(http: HTTPReceiver) -> None:
    other = HTTPReceiver().start()
    other.stop()
    target = AppriseTarget("ops", [f"json://{http.url}/a", f"json://{other.url}/b"])
    alert = make_alert().to_json()
    with pytest.raises(DeliveryError, match="ops\\[2\\]"):
        target.send([alert])
    other.start()
    try:
        target.send([alert])
        assert [r.path for r in http.requests] == ["/a"] and [r.path for r in other.requests] == ["/b"]
    finally:
        other.stop()


def test_apprise_config_file(http: HTTPReceiver, tmp_path: Path) -> None:
    config = tmp_path / "apprise.yml"
    config.write_text(f"urls:\n  - json://{http.url}/from-yaml\n")
    AppriseTarget("ops", [str(config)]).send([make_alert().to_json()])
    assert [r.path for r in http.requests] == ["/from-yaml"]


@pytest.mark.parametrize("form", [
    "mailto://example.com?smtp=127.0.0.1&port={port}&from=xinf-watch@example.com&to=ops@example.com",
    "mailtos://127.0.0.1:{port}?mode=insecure&from=xinf-watch@example.com&to=ops@example.com",
])  # fmt: skip
def test_mailto_reaches_the_smtp_server(form: str) -> None:
    smtp = SMTPReceiver().start()
    try:
        url = form.format(port=smtp.port)
        alert = make_alert(status=AlertStatus.RESOLVED).to_json()
        target = AppriseTarget("mail", [url])
        target.send([alert])
        target.send([make_alert(2).to_json()])  # a second send right away: the throttle is off
        wait_until(lambda: len(smtp.messages) == 2, what="two emails")
        msg = smtp.messages[0]
        assert msg["Subject"] == notification_text(alert)[0]
        assert msg["To"] == "ops@example.com"
        part = msg.get_body(("plain",))
        assert part is not None
        assert alert_in(part.get_content()) == alert
    finally:
        smtp.stop()


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_outage_then_recovery_delivers_everything_once_in_order(http: HTTPReceiver, tmp_path: Path) -> None:
    ops_down, am_like = http, HTTPReceiver().start()
    store = StateStore(tmp_path)
    targets: dict[str, Target] = {"ops": AppriseTarget("ops", [f"json://{ops_down.url}/hook"]),
                                  "other": AppriseTarget("other", [f"json://{am_like.url}/x"])}  # fmt: skip
    results: list[tuple[str, bool]] = []
    log: list[str] = []
    clock = FakeClock()
    deliverer = Deliverer(
        Outbox(tmp_path), targets, lambda t, ok, n: results.extend([(t, ok)] * n), clock, log=log.append
    )
    outbox = Outbox(tmp_path)
    try:
        ops_down.stop()
        transitions = [make_alert(1), make_alert(2), make_alert(1, AlertStatus.RESOLVED), make_alert(3)]
        store.commit({}, {}, [(transitions[0], ["ops", "other"]), (transitions[1], ["ops", "other"])])
        store.commit({}, {}, [(transitions[2], ["ops", "other", "gone"]), (transitions[3], ["ops"])])
        store.commit({}, {}, [(transitions[0], ["ops", "other"])])  # enqueued again: stored once

        for _ in range(4):  # the outage: ops fails (once per pass), the other target is not held back
            deliverer.deliver_due()
            clock.t += 40
        assert sorted(set(results)) == [("gone", False), ("ops", False), ("other", True)]
        assert results.count(("ops", False)) == 4 and results.count(("other", True)) == 3
        assert outbox.pending() == 5  # 4 for ops, 1 for the unknown target: nothing lost
        assert sum("no target named 'gone'" in m for m in log) == 1  # loud once, then quiet

        ops_down.start()  # back on the same port
        clock.t += 300
        assert deliverer.deliver_due() == 4
        assert deliverer.deliver_due() == 0
        got = [
            (alert_in(r.json()["message"])["id"], alert_in(r.json()["message"])["status"])
            for r in ops_down.requests
        ]
        assert got == [("a0001", "firing"), ("a0002", "firing"), ("a0001", "resolved"), ("a0003", "firing")]
        assert len(am_like.requests) == 3
        assert outbox.pending() == 1  # "gone" stays queued until a config has it again

        deliverer.set_targets({**targets, "gone": targets["other"]})
        clock.t += 300
        assert deliverer.deliver_due() == 1 and outbox.pending() == 0
    finally:
        am_like.stop()


def test_run_loop_delivers_on_wake_and_does_not_spin(http: HTTPReceiver, tmp_path: Path) -> None:
    store = StateStore(tmp_path)

    class CountingOutbox(Outbox):
        passes = 0

        def due(self, now: float, limit: int = 100, **lane: Any) -> Any:
            CountingOutbox.passes += 1
            return super().due(now, limit, **lane)

    results: list[tuple[str, bool]] = []
    deliverer = Deliverer(CountingOutbox(tmp_path), {"ops": AppriseTarget("ops", [f"json://{http.url}/h"])},
                          lambda t, ok, n: results.extend([(t, ok)] * n), time.time)  # fmt: skip
    stop, wake = threading.Event(), threading.Event()
    thread = threading.Thread(target=deliverer.run, args=(stop, wake))
    thread.start()
    try:
        store.commit({}, {}, [(make_alert(1), ["ops"])])
        wake.set()
        wait_until(lambda: len(http.requests) == 1, timeout=5, what="delivery after wake")
        http.stop()  # a failure is retried after 1 s, then 2 s: a handful of passes, not thousands
        store.commit({}, {}, [(make_alert(2), ["ops"])])
        wake.set()
        time.sleep(1.5)
        assert CountingOutbox.passes < 10
        assert results[0] == ("ops", True) and ("ops", False) in results
    finally:
        stop.set()
        wake.set()
        thread.join(5)
    assert not thread.is_alive()


def test_targets_for_and_build_targets() -> None:
    groups = {"ops": ["json://127.0.0.1:9/x", "json://127.0.0.1:9/y"],
              "mail": ["mailto://127.0.0.1:9?to=a@example.com"]}  # fmt: skip
    # each URL is a target (a queue) of its own
    assert targets_for(["ops", "ops", "missing"], groups, None) == ["ops[1]", "ops[2]"]
    assert targets_for([], groups, "http://127.0.0.1:9093") == [ALERTMANAGER]
    assert targets_for(["mail", "ops"], groups, "http://127.0.0.1:9093") == [
        "mail[1]", "ops[1]", "ops[2]", ALERTMANAGER]  # fmt: skip
    # the group names too: rows an earlier release queued per group still have a target
    assert sorted(build_targets(groups, "http://127.0.0.1:9093")) == [
        ALERTMANAGER, "mail", "mail[1]", "ops", "ops[1]", "ops[2]"]  # fmt: skip
    with pytest.raises(ValueError):
        build_targets({ALERTMANAGER: ["json://127.0.0.1:9/x"]}, "http://127.0.0.1:9093")


def test_alertmanager_labels_are_sanitized_strings() -> None:
    alert = make_alert().to_json() | {"group": {"ip/24": "203.0.113.0/24", "9x": "1", "key": "bob"},
                                      "source": None}  # fmt: skip
    out = alertmanager_alert(alert, now=1_795_000_100.0)
    assert out["labels"] == {
        "alertname": "denied-burst",
        "rule": "denied-burst",
        "severity": "critical",
        "key": "unknown",
        "ip_24": "203.0.113.0/24",
        "_9x": "1",
        "group_key": "bob",
    }
    assert json.loads(out["annotations"]["alert"]) == alert
    assert out["startsAt"] == alert["first_ts"]


def test_alertmanager_ends_at_follows_the_alert_lifecycle() -> None:
    """Firing: endsAt 4 resend intervals after the post (Prometheus' rule), so Alertmanager keeps it
    exactly while re-sends come; resolved: when it ended (never after the post); one-off: a fixed
    time after its last hit, the same on every post."""
    now = 1_795_000_100.0
    firing = make_alert().to_json()  # first 1_795_000_000, last 1_795_000_030
    assert alertmanager_alert(firing, now, hold=240.0)["endsAt"] == format_ts(now + 240)
    assert alertmanager_alert(firing, now + 60, hold=240.0)["endsAt"] == format_ts(now + 300)
    resolved = make_alert(status=AlertStatus.RESOLVED).to_json()
    assert alertmanager_alert(resolved, now)["endsAt"] == resolved["last_ts"]
    ahead = make_alert(status=AlertStatus.RESOLVED, last=now + 500).to_json()  # a log ahead of the clock
    assert alertmanager_alert(ahead, now)["endsAt"] == format_ts(now)
    one_off = make_alert().to_json() | {"kind": "match"}
    for at in (now, now + 600):
        assert alertmanager_alert(one_off, at, event_ttl=900.0)["endsAt"] == format_ts(1_795_000_030 + 900)
    future = make_alert(first=now + 1000, last=now + 1000).to_json()  # never endsAt before startsAt
    assert alertmanager_alert(future, now, hold=240.0)["endsAt"] == future["first_ts"]


def test_alertmanager_target_posts_one_alert_with_basic_auth(http: HTTPReceiver) -> None:
    AlertmanagerTarget(f"http://am%40ops:p%3Ass@{http.url}/prefix/").send([make_alert().to_json()])
    (request,) = http.requests
    assert request.path == "/prefix/api/v2/alerts"
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(b"am@ops:p:ss").decode()
    (posted,) = request.json()
    assert posted["labels"]["alertname"] == "denied-burst"
    assert posted["startsAt"] == make_alert().to_json()["first_ts"]
    http.status = 400
    with pytest.raises(DeliveryError, match=f"alertmanager at {http.url}: HTTP 400") as err:
        AlertmanagerTarget(f"http://am:s3cr3t@{http.url}").send([make_alert().to_json()])
    assert "s3cr3t" not in str(err.value)


@pytest.mark.system
def test_real_alertmanager_fires_then_resolves(tmp_path: Path) -> None:
    am = Alertmanager(require_program("prometheus-alertmanager", "alertmanager"), tmp_path)
    try:
        now = time.time()
        target = AlertmanagerTarget(am.url + "/")
        target.send([make_alert(7, first=now - 60, last=now - 30).to_json()])
        (got,) = am.alerts()
        assert got["labels"] == {"alertname": "denied-burst", "rule": "denied-burst", "severity": "critical",
                                 "key": "unknown", "source": "gateway", "ip": "203.0.113.7"}  # fmt: skip
        assert got["status"]["state"] == "active"
        assert json.loads(got["annotations"]["alert"])["id"] == "a0007"

        target.send([make_alert(7, AlertStatus.RESOLVED, first=now - 60, last=now - 1).to_json()])
        assert am.alerts(active="true") == []
    finally:
        am.stop()
    with pytest.raises(DeliveryError, match="alertmanager at 127.0.0.1"):
        AlertmanagerTarget(f"http://127.0.0.1:{free_port()}", timeout=2).send([make_alert().to_json()])


def test_journal_appends_one_line_per_alert(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    journal = AlertJournal(path)
    journal.append([make_alert(1), make_alert(1, AlertStatus.RESOLVED)])
    journal.append([])
    AlertJournal(path).append([make_alert(2)])
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(a["id"], a["status"]) for a in lines] == [
        ("a0001", "firing"),
        ("a0001", "resolved"),
        ("a0002", "firing"),
    ]
    assert lines[0] == make_alert(1).to_json()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_journal_writes_each_transition_once_across_reopen(tmp_path: Path) -> None:
    """The daemon journals before it commits: after a crash the same batch comes again, and the
    journal (reopened by the restarted daemon) must not write it twice."""
    path = tmp_path / "alerts.jsonl"
    first, second = make_alert(1), make_alert(2)
    AlertJournal(path).append([first])
    again = AlertJournal(path)  # a restart
    again.append([first, second])
    again.append([second])
    ids = [orjson.loads(line)["id"] for line in path.read_bytes().splitlines()]
    assert ids == [first.id, second.id]


# -- grouping and re-sending ----------------------------------------------------------------------


def flood_alert(n: int, rule: str = "webui-external", severity: Severity = Severity.WARNING,
                status: AlertStatus = AlertStatus.FIRING) -> Alert:  # fmt: skip
    ip = f"198.51.{n // 250}.{n % 250 + 1}"
    return Alert(
        rule=rule, kind="match", severity=severity, status=status, group={"ip": ip}, key="none", count=1,
        first_ts=1_795_000_000.0 + n, last_ts=1_795_000_000.0 + n, summary=f"GET /ui from {ip}",
        source="gateway", id=f"{rule}-{n:04d}",
    )  # fmt: skip


def messages(receiver: HTTPReceiver) -> list[tuple[str, list[dict[str, Any]]]]:
    return [(r.json()["title"], alerts_in(r.json()["message"])) for r in receiver.requests]


def test_group_text_lists_each_alert_then_each_json_line() -> None:
    resolved = flood_alert(1, status=AlertStatus.RESOLVED).to_json() | {"summary": "gone\nfor now"}
    alerts = [flood_alert(1).to_json(), flood_alert(2).to_json(), resolved]
    title, body = group_text(alerts)
    assert title == "[FIRING] webui-external (warning): 3 alerts (2 firing, 1 resolved)"
    lines = body.splitlines()
    assert lines[0] == "webui-external: 3 alerts, 2 firing, 1 resolved (warning, match rule)"
    assert lines[2] == f"{alerts[0]['last_ts']} FIRING: GET /ui from 198.51.0.2"
    assert lines[4] == f"{alerts[2]['last_ts']} RESOLVED: gone\\x0afor now"  # one line each, escaped
    assert alerts_in(body) == alerts
    one = [make_alert().to_json()]
    assert group_text(one) == notification_text(one[0]) and alerts_in(group_text(one)[1]) == one


def test_flood_of_one_rule_is_two_messages_and_a_critical_rule_is_not_held(
    http: HTTPReceiver, tmp_path: Path
) -> None:
    """200 firings of one rule in 20 s, a delivery pass after each commit (as the daemon does): the
    first goes out at once, the other 199 in one message when the group interval ends. A critical
    alert of another rule in the middle of the flood goes out in the pass after its commit."""
    store, clock = StateStore(tmp_path), FakeClock()
    ops = AppriseTarget("ops", [f"json://{http.url}/hook"], group_interval=30.0)
    deliverer = Deliverer(Outbox(tmp_path), {"ops": ops}, lambda t, ok, n: None, clock)
    started = clock.t
    critical = flood_alert(9000, rule="admin-route-external", severity=Severity.CRITICAL)
    for n in range(200):
        batch = [(flood_alert(n), ["ops"])]
        if n == 50:
            batch.append((flood_alert(7, status=AlertStatus.RESOLVED), ["ops"]))
        store.commit({}, {}, batch)
        if n == 100:
            store.commit({}, {}, [(critical, ["ops"])])
        deliverer.deliver_due()
        if n == 100:  # sent in this very pass, while 99 warnings wait
            assert messages(http)[-1] == (notification_text(critical.to_json())[0], [critical.to_json()])
        clock.t += 0.1
    assert len(http.requests) == 2
    assert deliverer.next_wake(clock.t) == started + 30.0  # the sender sleeps until the interval ends
    clock.t = started + 30.0
    assert deliverer.deliver_due() == 200
    (t1, first), (_, crit), (t3, rest) = messages(http)
    assert [a["id"] for a in first] == ["webui-external-0000"] and crit == [critical.to_json()]
    assert t3 == "[FIRING] webui-external (warning): 200 alerts (199 firing, 1 resolved)"
    assert [a["id"] for a in rest if a["status"] == "firing"] == [
        f"webui-external-{n:04d}" for n in range(1, 200)
    ]
    resolved = [i for i, a in enumerate(rest) if a["status"] == "resolved"]
    assert [rest[i]["id"] for i in resolved] == ["webui-external-0007"] and resolved[
        0
    ] > 6  # after its firing
    assert deliverer.deliver_due() == 0 and Outbox(tmp_path).pending() == 0
    # quiet again once an interval has passed without a message: the next one goes out at once
    clock.t += 31
    store.commit({}, {}, [(flood_alert(500), ["ops"])])
    assert deliverer.deliver_due() == 1 and len(messages(http)[-1][1]) == 1


def test_grouped_retry_sends_each_url_only_what_it_lacks(http: HTTPReceiver, tmp_path: Path) -> None:
    other = HTTPReceiver().start()
    other.stop()
    store, clock = StateStore(tmp_path), FakeClock()
    ops = AppriseTarget("ops", [f"json://{http.url}/a", f"json://{other.url}/b"], group_interval=10.0)
    deliverer = Deliverer(Outbox(tmp_path), {"ops": ops}, lambda t, ok, n: None, clock, log=lambda m: None)
    try:
        store.commit({}, {}, [(flood_alert(1), ["ops"]), (flood_alert(2), ["ops"])])
        assert deliverer.deliver_due() == 0  # /b is down: both rows wait for their retry
        store.commit({}, {}, [(flood_alert(3), ["ops"])])
        other.start()
        clock.t += 1
        assert deliverer.deliver_due() == 3
        ids = [[a["id"][-1] for a in alerts] for _, alerts in messages(http)]
        assert ids == [["1", "2"], ["3"]]
        assert [[a["id"][-1] for a in alerts_in(r.json()["message"])] for r in other.requests] == [
            ["1", "2", "3"]
        ]
    finally:
        other.stop()


def test_refresher_posts_the_firing_set_and_forgets_ended_one_offs(
    http: HTTPReceiver, tmp_path: Path
) -> None:
    store, clock = StateStore(tmp_path), FakeClock()
    clock.t = 1_795_000_100.0
    am = AlertmanagerTarget(f"http://{http.url}", resend_interval=5.0, event_ttl=60.0, now=clock)
    outbox = Outbox(tmp_path)
    refresher = Refresher(outbox, clock)
    stateful, one_off = make_alert(1), flood_alert(50)  # one-off: last hit at 1_795_000_050
    store.commit({}, {}, [(stateful, []), (one_off, []), (make_alert(2), [])])
    store.commit({}, {}, [(make_alert(2, AlertStatus.RESOLVED), [])])
    refresher.run_due(am)
    (posted,) = [r.json() for r in http.requests]
    assert [json.loads(a["annotations"]["alert"])["id"] for a in posted] == ["a0001", one_off.id]
    assert [a["endsAt"] for a in posted] == [format_ts(clock.t + 20), format_ts(1_795_000_110)]
    refresher.run_due(am)
    assert len(http.requests) == 1  # not before resend_interval
    clock.t += 20  # the one-off's endsAt has passed: it leaves the firing set
    refresher.run_due(am)
    assert [json.loads(a["annotations"]["alert"])["id"] for a in http.requests[-1].json()] == ["a0001"]
    assert [a["id"] for a in outbox.firing()] == ["a0001"]
    assert store.keep_firing(lambda a: a["rule"] != "denied-burst") == 1  # its rule was removed
    assert outbox.firing() == []
    store.commit({}, {}, [(stateful, [])])
    http.stop()
    log: list[str] = []
    refresher = Refresher(outbox, clock, log.append)
    for _ in range(3):  # Alertmanager down: said once, retried every interval
        refresher.run_due(am)
        clock.t += 5
    assert len(log) == 1 and "re-sending 1 firing alerts failed" in log[0]
    store.commit({}, {}, [(flood_alert(60), [])])
    clock.t += 3600
    Refresher(outbox, clock).run_due(None)  # no Alertmanager: ended one-offs leave the set all the same
    assert [a["id"] for a in outbox.firing()] == ["a0001"]


def test_alertmanager_down_delays_the_resolution_and_no_refresh_follows_it(
    http: HTTPReceiver, tmp_path: Path
) -> None:
    """Alertmanager's own sender (the daemon's second lane): the firing goes out, Alertmanager goes
    away, the alert resolves; once it is back the resolution arrives, and no re-send of the firing
    ever comes after it (a late refresh would make Alertmanager show it active again)."""
    store, clock = StateStore(tmp_path), FakeClock()
    clock.t = 1_795_000_100.0
    am = AlertmanagerTarget(f"http://{http.url}", resend_interval=5.0, now=clock, timeout=2)
    outbox = Outbox(tmp_path)
    refresher = Refresher(outbox, clock, lambda m: None)
    lane = Deliverer(outbox, {ALERTMANAGER: am}, lambda t, ok, n: None, clock, log=lambda m: None,
                     only=ALERTMANAGER, refresher=refresher)  # fmt: skip
    stop, wake = threading.Event(), threading.Event()
    store.commit({}, {}, [(make_alert(1), [ALERTMANAGER])])
    lane.deliver_due()
    refresher.run_due(am)
    http.stop()
    store.commit({}, {}, [(make_alert(1, AlertStatus.RESOLVED), [ALERTMANAGER])])
    for _ in range(3):
        clock.t += 5
        lane.deliver_due()
        refresher.run_due(am)
    assert outbox.pending() == 1  # the resolution waits
    http.start()
    clock.t += 10
    thread = threading.Thread(target=lane.run, args=(stop, wake))
    thread.start()
    try:
        wait_until(lambda: outbox.pending() == 0, timeout=5, what="the resolution")
        clock.t += 20  # more refresh intervals go by
        wake.set()
        time.sleep(0.3)
    finally:
        stop.set()
        wake.set()
        thread.join(5)
    posts = [
        (json.loads(a["annotations"]["alert"])["status"], a["endsAt"])
        for r in http.requests
        for a in r.json()
    ]
    resolution = ("resolved", make_alert().to_json()["last_ts"])
    assert posts[-1] == resolution and posts.count(resolution) == 1
    assert len(posts) >= 3  # the firing, at least one refresh, the resolution


def test_a_group_that_speaks_says_all_it_has(http: HTTPReceiver, tmp_path: Path) -> None:
    """1,500 alerts waiting in one group when its interval ends: all go out in that pass, in
    messages of at most MAX_GROUP, more than one delivery pass reads (PASS_LIMIT)."""
    store, clock = StateStore(tmp_path), FakeClock()
    ops = AppriseTarget("ops", [f"json://{http.url}/hook"], group_interval=30.0)
    deliverer = Deliverer(Outbox(tmp_path), {"ops": ops}, lambda t, ok, n: None, clock)
    store.commit({}, {}, [(flood_alert(0), ["ops"])])
    assert deliverer.deliver_due() == 1
    store.commit({}, {}, [(flood_alert(n), ["ops"]) for n in range(1, 1501)])
    assert deliverer.deliver_due() == 0
    clock.t += 30
    assert deliverer.deliver_due() == 1500
    sizes = [len(alerts) for _, alerts in messages(http)]
    assert sizes == [1] + [MAX_GROUP] * 7 + [100]
    assert [a["id"] for _, alerts in messages(http) for a in alerts] == [
        f"webui-external-{n:04d}" for n in range(1501)
    ]


def test_a_critical_alert_is_never_sent_behind_a_flood_of_warnings(
    http: HTTPReceiver, tmp_path: Path
) -> None:
    """1,000 warnings of one rule are pending (grouping off: one message each) when a critical alert
    of another rule is enqueued after them: the next pass sends the critical one first; the warnings
    follow in their order."""
    store = StateStore(tmp_path)
    ops = AppriseTarget("ops[1]", [f"json://{http.url}/hook"])
    deliverer = Deliverer(Outbox(tmp_path), {"ops[1]": ops}, lambda t, ok, n: None, FakeClock())
    store.commit({}, {}, [(flood_alert(n), ["ops[1]"]) for n in range(1000)])
    critical = flood_alert(9000, rule="revoked-key-used", severity=Severity.CRITICAL)
    store.commit({}, {}, [(critical, ["ops[1]"])])
    stop = threading.Event()
    wait = threading.Thread(target=lambda: (wait_until(lambda: len(http.requests) >= 3), stop.set()))
    wait.start()
    deliverer.deliver_due(stop)  # stops after a few messages
    wait.join()
    sent = [alerts for _, alerts in messages(http)]
    assert sent[0] == [critical.to_json()]
    assert [a["id"] for (a,) in sent[1:]] == [f"webui-external-{n:04d}" for n in range(len(sent) - 1)]


def test_a_daemon_without_notify_urls_never_imports_apprise() -> None:
    """apprise with its plugins is ~18 MiB of the daemon's RSS: loaded only for a notify URL."""
    code = (
        "import sys\n"
        "import xinf_watch.app.cli, xinf_watch.app.daemon\n"
        "from xinf_watch.delivery.routing import build_targets\n"
        "build_targets({'ops': []}, 'http://127.0.0.1:9093')\n"
        "assert 'apprise' not in sys.modules, 'apprise imported without a notify URL'\n"
        "build_targets({'ops': ['json://127.0.0.1:9/x']}, None)\n"
        "assert 'apprise.plugins.custom_json' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
