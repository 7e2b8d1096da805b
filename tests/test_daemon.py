"""The real daemon process: systemd notifications, signals, restarts, reload, key changes, alert
delivery to a real HTTP receiver, the metrics address, a corrupt state database.

Every wait is on a notification (READY / RELOADING / STOPPING) or on a /metrics condition; a
timeout fails with the daemon's stderr (see harness.py).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import (
    FIXTURE_KEYS,
    DaemonProcess,
    FileSink,
    LogWriter,
    Workspace,
    access_line,
    denied_line,
    json_url,
    parsed_lines,
    received_alerts,
    total,
)
from paths import FIXTURES
from prometheus_client.registry import CollectorRegistry
from receivers import HTTPReceiver, wait_until

from xinf_watch.app.service import MetricsServer
from xinf_watch.config.schema import load_config

pytestmark = pytest.mark.system

DENIED_BURST = {
    "name": "denied-burst", "kind": "threshold", "when": {"outcome": "denied", "ip": ["203.0.113.0/24"]},
    "by": ["ip"], "count": 5, "window": "1m", "severity": "critical", "notify": ["ops"],
}  # fmt: skip
REVOKED_KEY_USED = {
    "name": "revoked-key-used", "kind": "match", "when": {"key_state": "revoked"}, "by": ["ip"],
    "severity": "critical", "notify": ["ops"],
}  # fmt: skip


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Workspace]:
    w = Workspace(tmp_path)
    yield w
    w.close()


def append(path: Path, lines: list[str]) -> None:
    with path.open("a") as f:
        f.write("".join(line + "\n" for line in lines))


def numbered(start: int, n: int) -> list[str]:
    return [access_line(seq) for seq in range(start, start + n)]


def requests_total(m: dict) -> int:  # type: ignore[type-arg]
    return int(total(m, "xinf_requests_total"))


def counters(m: dict) -> dict:  # type: ignore[type-arg]
    """The cumulative series a restart must continue: requests, bytes, lines, by labels."""
    names = ("xinf_requests_total", "xinf_response_bytes_total", "xinf_watch_lines_total")
    return {k: v for k, v in m.items() if k[0] in names}


def revoked_line(seq: int, ip: str) -> str:
    """A request with chatbot-legacy's key (revoked: true in keys.yaml) from `ip`."""
    return access_line(seq, ip=ip).rsplit('"Bearer ', 1)[0] + '"Bearer sk-duStQ5OUlVIe5" 0.012'


def test_ready_only_after_metrics_port_answers(ws: Workspace) -> None:
    append(ws.log, numbered(0, 300))
    ws.write_rules()
    d = ws.daemon()
    d.spawn()
    d.wait_for("READY=1", timeout=20)
    # no retry: the port must answer the moment READY is out, with the first read done
    m = d.metrics()
    assert parsed_lines(m) == 300
    assert total(m, "xinf_watch_build_info") == 1
    ready = next(msg for _, msg in d.messages if "READY=1" in msg.split("\n"))
    assert "STATUS=watching 1 sources" in ready.split("\n")
    d.terminate()


def test_sigterm_final_commit_and_counters_continue_across_restarts(ws: Workspace) -> None:
    ws.write_rules()
    append(ws.log, numbered(0, 2000))
    d = ws.daemon().start()
    d.wait_until(lambda m: parsed_lines(m) == 2000, what="2000 lines")
    append(ws.log, numbered(2000, 500))
    before = d.wait_until(lambda m: parsed_lines(m) == 2500, what="2500 lines")
    started = time.monotonic()
    d.terminate()  # at once: the last lines may be in memory only, the final commit must save them
    assert time.monotonic() - started < 3.0

    d.start()
    after = d.metrics()  # READY: the saved counters are restored, and nothing new was read
    assert counters(after) == counters(before)
    assert requests_total(after) == 2500

    append(ws.log, numbered(2500, 100))  # written while running
    d.terminate()
    append(ws.log, numbered(2600, 400))  # written while stopped
    d.start()
    m = d.wait_until(lambda m: parsed_lines(m) == 3000, what="3000 lines")
    assert requests_total(m) == 3000 == len(ws.log.read_text().splitlines())

    # SIGTERM while a writer appends at full speed: exit 0 quickly, resume without loss or double count
    writer = LogWriter(FileSink(ws.log), total=30_000).start()
    writer.wait_count(10_000)
    d.terminate()
    d.start()
    writer.join()
    expected = 3000 + writer.count
    m = d.wait_until(lambda m: parsed_lines(m) == expected, timeout=20, what=f"{expected} lines")
    assert requests_total(m) == expected == len(ws.log.read_text().splitlines())
    d.terminate()


@pytest.mark.parametrize("start_at, seen_at_ready", [("end", 0), ("beginning", 100)])
def test_start_at_on_first_start(ws: Workspace, start_at: str, seen_at_ready: int) -> None:
    append(ws.log, numbered(0, 100))
    ws.write_rules(start_at=start_at)
    d = ws.daemon().start()
    assert parsed_lines(d.metrics()) == seen_at_ready
    append(ws.log, numbered(100, 10))
    d.wait_until(lambda m: parsed_lines(m) == seen_at_ready + 10, what="the 10 new lines")
    d.terminate()
    append(ws.log, numbered(110, 5))  # start_at is for the first start only: a restart resumes
    d.start()
    d.wait_until(lambda m: parsed_lines(m) == seen_at_ready + 15, what="the lines written while down")
    d.terminate()


def test_reload_with_valid_rules_takes_effect(ws: Workspace) -> None:
    ws.write_rules(rules=[DENIED_BURST])
    d = ws.daemon().start()
    append(ws.log, [revoked_line(0, "198.51.100.1")] + [denied_line(n, "203.0.113.9") for n in range(3)])
    d.wait_until(lambda m: parsed_lines(m) == 4)
    assert total(d.metrics(), "xinf_alerts_total", rule="revoked-key-used") == 0

    ws.write_rules(rules=[DENIED_BURST, REVOKED_KEY_USED])
    d.hup()
    d.wait_for("RELOADING=1")
    d.wait_for("READY=1")
    m = d.metrics()
    assert total(m, "xinf_watch_config_reloads_total", result="success") == 1
    assert parsed_lines(m) == 4  # the source is kept: nothing re-read

    append(ws.log, [revoked_line(1, "198.51.100.2")])
    d.wait_until(lambda m: total(m, "xinf_alerts_total", rule="revoked-key-used") == 1, what="the new rule")
    # the kept rule kept its state: 3 denials before the reload + 2 after = its count of 5
    append(ws.log, [denied_line(n, "203.0.113.9") for n in range(3, 5)])
    d.wait_until(lambda m: total(m, "xinf_alerts_total", rule="denied-burst") == 1, what="the kept rule")
    d.terminate()


def test_reload_with_broken_rules_keeps_the_running_ones(ws: Workspace) -> None:
    ws.write_rules(rules=[REVOKED_KEY_USED])
    d = ws.daemon().start()
    append(ws.log, [revoked_line(0, "198.51.100.1")])
    d.wait_until(lambda m: total(m, "xinf_alerts_total", rule="revoked-key-used") == 1, what="first alert")

    good = ws.rules.read_text()
    broken = good.replace("kind: match", "kind: match\n  window: 5 minutes\n  count: many")
    ws.rules.write_text(broken)
    d.hup()
    d.wait_for("RELOADING=1")
    d.wait_for("READY=1")
    m = d.metrics()
    assert total(m, "xinf_watch_config_reloads_total", result="failure") == 1
    assert total(m, "xinf_watch_config_reloads_total", result="success") == 0
    line_no = broken.splitlines().index("  window: 5 minutes") + 1
    err = d.stderr()
    assert "reload failed, keeping the running config" in err
    assert f"rules.yaml:{line_no}: rules[0].window" in err, err

    append(ws.log, [revoked_line(1, "198.51.100.2")])  # the old rule still runs
    d.wait_until(lambda m: total(m, "xinf_alerts_total", rule="revoked-key-used") == 2, what="old rule")
    d.terminate()


def test_missing_key_files_are_each_reported_at_their_line_on_reload_and_start(ws: Workspace) -> None:
    ws.write_rules(rules=[REVOKED_KEY_USED])
    d = ws.daemon().start()
    missing = [ws.root / "gone-1.yaml", ws.root / "gone-2.yaml"]
    rules = ws.write_rules(keys=[missing[0], FIXTURE_KEYS, missing[1]], rules=[REVOKED_KEY_USED])
    text = rules.read_text().splitlines()
    expected = [
        f"{rules}:{text.index(f'- {path}') + 1}: keys[{i}]: {path} does not exist "
        "(expected a key file: Xinference's auth config, auth.db or keys.yaml)"
        for i, path in ((0, missing[0]), (2, missing[1]))
    ]
    d.hup()
    d.wait_for("RELOADING=1")
    d.wait_for("READY=1")
    assert total(d.metrics(), "xinf_watch_config_reloads_total", result="failure") == 1
    err = d.stderr().splitlines()
    at = err.index("ERROR reload failed, keeping the running config:")
    assert err[at + 1 : at + 3] == expected
    d.terminate()

    d.spawn()  # the same files at startup: refused, every one named, exit 2
    assert d.proc is not None and d.proc.wait(timeout=20) == 2
    assert d.stderr().splitlines() == expected


def test_key_file_change_is_picked_up_while_running(ws: Workspace) -> None:
    keys = ws.root / "keys.yaml"
    keys.write_text(FIXTURE_KEYS.read_text())
    rule = {**REVOKED_KEY_USED, "by": ["key"]}
    ws.write_rules(keys=[keys], rules=[rule])
    d = ws.daemon().start()

    def chatbot_prod(seq: int) -> str:
        return access_line(seq, ip="127.0.1.21").rsplit('"Bearer ', 1)[0] + '"Bearer sk-Yn9ggOg8DoIku" 0.02'

    append(ws.log, [chatbot_prod(0)])
    d.wait_until(lambda m: parsed_lines(m) == 1)
    m = d.metrics()
    assert total(m, "xinf_requests_total", key="chatbot-prod") == 1
    assert total(m, "xinf_key_info", key="chatbot-prod", state="valid") == 1
    assert total(m, "xinf_alerts_total") == 0
    d.hup()  # a reload first: what follows must work on the reloaded pipeline as well
    d.wait_for("RELOADING=1")
    d.wait_for("READY=1")

    text = keys.read_text()
    entry = text.index("alias: chatbot-prod")
    revoked_at = text.index("revoked: false", entry)
    keys.write_text(text[:revoked_at] + "revoked: true " + text[revoked_at + len("revoked: false") :])
    d.wait_until(lambda m: total(m, "xinf_key_info", key="chatbot-prod", state="revoked") == 1,
                 what="chatbot-prod revoked in xinf_key_info")  # fmt: skip
    append(ws.log, [chatbot_prod(1)])
    d.wait_until(lambda m: total(m, "xinf_alerts_total", rule="revoked-key-used") == 1, what="alert")
    assert "key files changed" in d.stderr()
    d.terminate()


def test_alert_reaches_http_receiver_and_journal(ws: Workspace) -> None:
    receiver = HTTPReceiver().start()
    try:
        ws.write_rules(rules=[DENIED_BURST], notify={"ops": [json_url(receiver)]})
        d = ws.daemon().start()
        append(ws.log, [denied_line(n, "203.0.113.7") for n in range(5)])
        wait_until(lambda: len(receiver.requests) >= 1, what="the notification")
        [alert] = received_alerts(receiver)
        assert (alert["rule"], alert["status"], alert["group"], alert["count"]) == (
            "denied-burst", "firing", {"ip": "203.0.113.7"}, 5)  # fmt: skip
        assert receiver.requests[0].path == "/hook"
        assert ws.journal() == [alert]
        d.wait_until(lambda m: total(m, "xinf_watch_notifications_total", target="ops", result="sent") == 1
                     and total(m, "xinf_watch_outbox_pending") == 0)  # fmt: skip
        d.terminate()
    finally:
        receiver.stop()


def test_receiver_down_then_up_every_alert_arrives_once(ws: Workspace) -> None:
    receiver = HTTPReceiver().start()
    try:
        ws.write_rules(rules=[DENIED_BURST], notify={"ops": [json_url(receiver)]})
        d = ws.daemon().start()
        receiver.stop()
        ips = [f"203.0.113.{n}" for n in range(10, 14)]
        for n, ip in enumerate(ips):
            append(ws.log, [denied_line(100 * n + i, ip) for i in range(5)])
        d.wait_until(
            lambda m: (
                total(m, "xinf_watch_notifications_total", result="failed") >= 2
                and total(m, "xinf_alerts_total") == 4
            ),
            timeout=15,
            what="failed deliveries",
        )
        # a restart while the receiver is down: the outbox is durable
        d.terminate()
        d.start()
        assert total(d.metrics(), "xinf_watch_outbox_pending") == 4
        receiver.start()  # same port
        wait_until(lambda: len(received_alerts(receiver)) >= 4, timeout=20, what="4 alerts after the outage")
        d.wait_until(lambda m: total(m, "xinf_watch_outbox_pending") == 0, what="an empty outbox")
        time.sleep(0.5)  # room for a duplicate to show up
        alerts = received_alerts(receiver)
        assert collections.Counter((a["id"], a["status"]) for a in alerts) == collections.Counter(
            (a["id"], a["status"]) for a in ws.journal()
        )
        assert sorted(a["group"]["ip"] for a in alerts) == ips
        assert len({a["id"] for a in alerts}) == 4
        d.terminate()
    finally:
        receiver.stop()


def _listening(port: int) -> list[str]:
    """Local addresses (hex, as /proc/net/tcp*) of the sockets listening on `port`."""
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for row in f.readlines()[1:]:
                local, state = row.split()[1], row.split()[3]
                address, hexport = local.rsplit(":", 1)
                if state == "0A" and int(hexport, 16) == port:
                    out.append(address)
    return out


def test_metrics_listen_on_loopback_by_default(ws: Workspace, tmp_path: Path) -> None:
    bare = tmp_path / "bare.yaml"
    bare.write_text(
        "sources:\n  - {name: gateway, path: logs/access.log, format: nginx, log_format: combined}\n"
    )
    config = load_config(bare)
    assert config.metrics.listen == "127.0.0.1:9877"
    assert (config.metrics.host, config.metrics.port) == ("127.0.0.1", 9877)

    server = MetricsServer("127.0.0.1", 0, CollectorRegistry())
    try:
        assert server.address == f"127.0.0.1:{server.port}"
        assert _listening(server.port) == ["0100007F"]  # 127.0.0.1, not 0.0.0.0
    finally:
        server.close()

    ws.write_rules()
    d = ws.daemon().start()
    assert _listening(ws.port) == ["0100007F"]
    with urllib.request.urlopen(d.url, timeout=5) as r:
        assert r.status == 200
    assert f"metrics on http://127.0.0.1:{ws.port}/metrics" in d.stderr()
    d.terminate()


def test_corrupt_state_database_is_moved_aside(ws: Workspace) -> None:
    ws.state.mkdir(mode=0o700)
    (ws.state / "state.db").write_bytes(b"this is not a database\n" * 200)
    append(ws.log, numbered(0, 50))
    ws.write_rules()
    d = ws.daemon().start()
    assert parsed_lines(d.metrics()) == 50
    aside = [p.name for p in ws.state.iterdir() if p.name.startswith("state.db.corrupt-")]
    assert len(aside) == 1
    err = d.stderr()
    assert "is corrupt" in err and aside[0] in err
    d.terminate()
    d.start()  # the fresh database works: counters continue
    assert parsed_lines(d.metrics()) == 50
    d.terminate()


def test_daemon_process_helper_fails_with_stderr(ws: Workspace) -> None:
    ws.rules.write_text("sources: 7\n")
    d = DaemonProcess(ws.rules, ws.root, ws.port)
    try:
        with pytest.raises(AssertionError, match=r"(?s)no READY=1.*exit code: 2.*rules.yaml:1"):
            d.start(timeout=10)
    finally:
        d.close()
    assert os.path.exists(d.stderr_path)


def test_rotation_counters_continue_when_a_tailer_starts_again_from_zero(tmp_path: Path) -> None:
    """A restarted or reloaded source gets a new tailer counting from 0: the exported
    counters add what each tailer counted, they never fall back or stall."""
    from types import SimpleNamespace

    from xinf_watch.app.daemon import Daemon
    from xinf_watch.metrics.store import MetricsStore

    daemon = Daemon(tmp_path / "rules.yaml")
    daemon.store = MetricsStore()
    daemon.store.restore({"rotations": {"gw": 5}, "truncations": {"gw": 2}})  # from the last run

    def tailer(rotations: int, truncations: int) -> SimpleNamespace:
        return SimpleNamespace(rotations=rotations, truncations=truncations, lag_bytes=lambda: 0,
                               files_open=lambda: 1)

    first = tailer(0, 0)
    daemon._tailer_stats("gw", first)  # type: ignore[arg-type]
    first.rotations, first.truncations = 2, 1
    daemon._tailer_stats("gw", first)  # type: ignore[arg-type]
    daemon._tailer_stats("gw", tailer(1, 0))  # type: ignore[arg-type]  # a new tailer (reload)
    assert daemon.store.rotations == {"gw": 8}
    assert daemon.store.truncations == {"gw": 3}


def test_a_line_that_fails_to_process_is_counted_and_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever goes wrong with one line (a bug), the loop goes on with the next ones."""
    from xinf_watch.app.daemon import Daemon

    log_file = tmp_path / "access.log"
    lines = (FIXTURES / "nginx" / "access_combined_key.log").read_text().splitlines()[:5]
    log_file.write_text("\n".join(lines) + "\n")
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        f"sources: [{{name: gw, path: {log_file}, format: nginx, start_at: beginning}}]\n"
        f"state: {{dir: {tmp_path / 'state'}}}\n"
    )
    daemon = Daemon(rules)
    daemon.start()
    try:
        stage = daemon.pipeline.stages["gw"]

        def flaky(line: str) -> Any:
            if line == lines[2]:
                raise RuntimeError("a bug in some stage")
            return stage.parse(line)

        monkeypatch.setitem(daemon.pipeline.stages, "gw", dataclasses.replace(stage, parse=flaky))
        with caplog.at_level("ERROR", logger="xinf_watch"):
            daemon.turn(force_commit=True)
        parsed = daemon.store.lines.get(("gw", "parsed"), 0)
        assert parsed == 4 and daemon.stats.line_errors == {"gw": 1}
        assert "a line could not be processed" in caplog.text and "RuntimeError" in caplog.text
    finally:
        daemon.stop.set()
        daemon.sender_wake.set()
        daemon.alertmanager_wake.set()
        for sender in daemon.senders:
            sender.join(timeout=5)
        daemon.tailers["gw"].close()
        daemon.outbox.close()
        daemon.state.close()
