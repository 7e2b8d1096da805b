"""Alert delivery to real receivers: apprise json:// and mailto:// on loopback, a real Alertmanager,
an outage and recovery through the durable outbox, and the alert journal."""

from __future__ import annotations

import base64
import json
import stat
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

from xinf_watch.alerts import (
    ALERTMANAGER,
    AlertJournal,
    AlertmanagerTarget,
    AppriseTarget,
    Deliverer,
    DeliveryError,
    Target,
    alertmanager_alert,
    build_targets,
    notification_text,
    targets_for,
)
from xinf_watch.model import Alert, AlertStatus, Severity
from xinf_watch.state import Outbox, StateStore


@pytest.fixture(autouse=True)
def no_apprise_throttle(monkeypatch: pytest.MonkeyPatch) -> None:
    """apprise sleeps between two sends of one plugin (e.g. 5.5 s for email): not in tests."""
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
    AppriseTarget("ops", [f"json://{http.url}/hook"]).send(alert)
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
        target.send(make_alert().to_json())
    assert "notify group 'ops'" in str(err.value) and "s3cr3t" not in str(err.value)
    assert capfd.readouterr() == ("", "")  # apprise's own logging stays off our stderr

    http.status = 500
    http.start()
    with pytest.raises(DeliveryError, match="500"):
        target.send(make_alert().to_json())


def test_invalid_entry_is_a_problem_not_a_crash(http: HTTPReceiver) -> None:
    target = AppriseTarget("ops", ["/nonexistent/apprise.yml", f"json://{http.url}/ok", "bogus://x?t=s3cr3t"])
    assert target.problems == [
        "ops[1] (/nonexistent/apprise.yml): no such file (expected an apprise URL or config file)",
        "ops[3] (bogus://): Unparseable URL <url>"]  # fmt: skip
    with pytest.raises(DeliveryError, match="ops\\[1\\]"):
        target.send(make_alert().to_json())
    assert len(http.requests) == 1  # the valid URL still got it


def test_partial_failure_retries_only_the_failed_url(http: HTTPReceiver) -> None:
    other = HTTPReceiver().start()
    other.stop()
    target = AppriseTarget("ops", [f"json://{http.url}/a", f"json://{other.url}/b"])
    alert = make_alert().to_json()
    with pytest.raises(DeliveryError, match="ops\\[2\\]"):
        target.send(alert)
    other.start()
    try:
        target.send(alert)
        assert [r.path for r in http.requests] == ["/a"] and [r.path for r in other.requests] == ["/b"]
    finally:
        other.stop()


def test_apprise_config_file(http: HTTPReceiver, tmp_path: Path) -> None:
    config = tmp_path / "apprise.yml"
    config.write_text(f"urls:\n  - json://{http.url}/from-yaml\n")
    AppriseTarget("ops", [str(config)]).send(make_alert().to_json())
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
        target.send(alert)
        target.send(make_alert(2).to_json())  # a second send right away: the throttle is off
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
        Outbox(tmp_path), targets, lambda t, ok: results.append((t, ok)), clock, log=log.append
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

        def due(self, now: float, limit: int = 100) -> Any:
            CountingOutbox.passes += 1
            return super().due(now, limit)

    results: list[tuple[str, bool]] = []
    deliverer = Deliverer(CountingOutbox(tmp_path), {"ops": AppriseTarget("ops", [f"json://{http.url}/h"])},
                          lambda t, ok: results.append((t, ok)), time.time)  # fmt: skip
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
    groups = {"ops": ["json://127.0.0.1:9/x"], "mail": ["mailto://127.0.0.1:9?to=a@example.com"]}
    assert targets_for(["ops", "ops", "missing"], groups, None) == ["ops"]
    assert targets_for([], groups, "http://127.0.0.1:9093") == [ALERTMANAGER]
    assert targets_for(["mail", "ops"], groups, "http://127.0.0.1:9093") == ["mail", "ops", ALERTMANAGER]
    assert sorted(build_targets(groups, "http://127.0.0.1:9093")) == [ALERTMANAGER, "mail", "ops"]
    with pytest.raises(ValueError):
        build_targets({ALERTMANAGER: ["json://127.0.0.1:9/x"]}, "http://127.0.0.1:9093")


def test_alertmanager_labels_are_sanitized_strings() -> None:
    alert = make_alert().to_json() | {"group": {"ip/24": "203.0.113.0/24", "9x": "1", "key": "bob"},
                                      "source": None}  # fmt: skip
    out = alertmanager_alert(alert)
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
    assert out["startsAt"] == alert["first_ts"] and "endsAt" not in out


def test_alertmanager_target_posts_one_alert_with_basic_auth(http: HTTPReceiver) -> None:
    AlertmanagerTarget(f"http://am%40ops:p%3Ass@{http.url}/prefix/").send(make_alert().to_json())
    (request,) = http.requests
    assert request.path == "/prefix/api/v2/alerts"
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(b"am@ops:p:ss").decode()
    assert request.json() == [alertmanager_alert(make_alert().to_json())]
    http.status = 400
    with pytest.raises(DeliveryError, match=f"alertmanager at {http.url}: HTTP 400") as err:
        AlertmanagerTarget(f"http://am:s3cr3t@{http.url}").send(make_alert().to_json())
    assert "s3cr3t" not in str(err.value)


@pytest.mark.system
def test_real_alertmanager_fires_then_resolves(tmp_path: Path) -> None:
    am = Alertmanager(require_program("prometheus-alertmanager", "alertmanager"), tmp_path)
    try:
        now = time.time()
        target = AlertmanagerTarget(am.url + "/")
        target.send(make_alert(7, first=now - 60, last=now - 30).to_json())
        (got,) = am.alerts()
        assert got["labels"] == {"alertname": "denied-burst", "rule": "denied-burst", "severity": "critical",
                                 "key": "unknown", "source": "gateway", "ip": "203.0.113.7"}  # fmt: skip
        assert got["status"]["state"] == "active"
        assert json.loads(got["annotations"]["alert"])["id"] == "a0007"

        target.send(make_alert(7, AlertStatus.RESOLVED, first=now - 60, last=now - 1).to_json())
        assert am.alerts(active="true") == []
    finally:
        am.stop()
    with pytest.raises(DeliveryError, match="alertmanager at 127.0.0.1"):
        AlertmanagerTarget(f"http://127.0.0.1:{free_port()}", timeout=2).send(make_alert().to_json())


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
