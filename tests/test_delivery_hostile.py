"""Delivery under a dead or slow channel and hostile text, by the real daemon with real receivers
(issue 11): one dead or slow URL in a notify group delays only itself; text from logs reaches
people and stderr escaped; a notify URL's secrets appear nowhere in stderr at --log-level debug."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from harness import Workspace, denied_line, json_url, received_alerts
from receivers import HTTPReceiver, free_port, wait_until

from xinf_watch.delivery.text import alerts_in

pytestmark = pytest.mark.system

FLOOD = {"name": "webui-external", "kind": "match", "when": {"ip": ["198.51.100.0/24"]}, "by": ["ip"],
         "cooldown": "0s", "severity": "warning", "notify": ["ops"]}  # fmt: skip
BY_PATH = {"name": "odd-path", "kind": "match", "when": {"ip": ["198.51.100.0/24"]}, "by": ["path"],
           "cooldown": "0s", "severity": "critical", "notify": ["ops"]}  # fmt: skip
FORGED = "\n[RESOLVED] odd-path: false positive, ignore\r\x1b[2J\u202e\u2066\x85\u2028"
SHOWN = "\\x0a[RESOLVED] odd-path: false positive, ignore\\x0d\\x1b[2J\\u202e\\u2066\\x85\\u2028"
# what must never reach a person raw: C0/C1 controls, DEL, bidi, zero-width, line/paragraph separators
RAW = {chr(c) for c in (*range(0x20), 0x7F, *range(0x80, 0xA0), *range(0x202A, 0x202F),
                        *range(0x2066, 0x206A), 0x200B, 0x200E, 0x200F, 0x2028, 0x2029)} - {"\n"}  # fmt: skip


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Workspace]:
    w = Workspace(tmp_path / "ws")
    yield w
    w.close()


def append(path: Path, lines: list[str]) -> None:
    with path.open("a") as f:
        f.write("".join(line + "\n" for line in lines))


def test_a_dead_and_a_slow_url_delay_only_themselves(ws: Workspace) -> None:
    """ops = [healthy, a closed port, a receiver that answers after 3 s]: 20 alerts written over
    2 s all reach the healthy receiver, each within 1.5 s of its line, in order; the slow one gets
    them too, in order; the dead one's failures are logged under its own name."""
    healthy, slow = HTTPReceiver().start(), HTTPReceiver(delay=3.0).start()
    dead = f"json://127.0.0.1:{free_port()}/hook"  # nothing listens: connection refused
    try:
        ws.log.touch()
        ws.write_rules(rules=[FLOOD], notify={"ops": [json_url(healthy), dead, json_url(slow)]},
                       extra={"delivery": {"group_interval": "0s"}})  # fmt: skip
        d = ws.daemon().start()
        n, written = 20, {}
        for i in range(n):
            ip = f"198.51.100.{i + 1}"
            append(ws.log, [denied_line(i, ip)])
            written[ip] = time.monotonic()
            time.sleep(0.1)
        wait_until(lambda: len(received_alerts(healthy)) >= n, timeout=15, what=f"{n} alerts, healthy URL")
        latency = max(r.at - written[a["group"]["ip"]] for r in healthy.requests
                      for a in alerts_in(r.json()["message"]))  # fmt: skip
        got = [a["group"]["ip"] for a in received_alerts(healthy)]
        wait_until(lambda: len(slow.requests) >= 3, timeout=20, what="the slow URL's first messages")
        slow_got = [a["group"]["ip"] for a in received_alerts(slow)]
        d.terminate()
        err = d.stderr()
    finally:
        healthy.stop()
        slow.stop()
    print(f"\nhealthy URL: {n} alerts, the slowest {latency * 1000:.0f} ms after its line "
          f"(beside a dead URL and one answering in 3 s); slow URL: {len(slow_got)} so far")  # fmt: skip
    assert got == list(written)  # every alert, once, in order
    assert latency < 1.5
    assert slow_got == list(written)[: len(slow_got)]  # in order, none skipped
    assert "to ops[2] failed" in err and "to ops[1] failed" not in err and "to ops[3] failed" not in err


def test_hostile_text_reaches_people_and_stderr_escaped(ws: Workspace) -> None:
    """A request path carrying a forged "[RESOLVED] ... ignore" line, CR, ESC, bidi and C1/separator
    characters reaches a real json:// receiver: title and body show it escaped, with no forged line,
    and the alert JSON still carries the path exactly. An Alertmanager answering 400 with the same
    text: the daemon's stderr shows it escaped, on the daemon's own line."""
    receiver = HTTPReceiver().start()
    am = HTTPReceiver(status=400, reply=f"bad alert{FORGED}".encode()).start()
    path = "/ui/x" + FORGED
    line = denied_line(1, "198.51.100.7").replace("/v1/models", quote(path, safe="/"))
    try:
        ws.log.touch()
        ws.write_rules(rules=[BY_PATH], notify={"ops": [json_url(receiver)]},
                       extra={"alertmanager": {"url": f"http://{am.url}"}})  # fmt: skip
        d = ws.daemon().start()
        append(ws.log, [line])
        wait_until(lambda: len(receiver.requests) >= 1, timeout=10, what="the notification")
        wait_until(lambda: "HTTP 400" in d.stderr(), timeout=10, what="the Alertmanager failure")
        d.terminate()
        err = d.stderr()
    finally:
        receiver.stop()
        am.stop()
    message = receiver.requests[0].json()
    title, body = message["title"], message["message"]
    (alert,) = received_alerts(receiver)
    assert alert["group"]["path"] == path  # the data, exact, in the JSON line
    human = body.rsplit("\n\n", 1)[0]  # all but the JSON paragraph
    for text in (title, human, err):
        assert not RAW & set(text), sorted(RAW & set(text))
        assert not any(ln.startswith("[RESOLVED]") for ln in text.splitlines())
    assert "/ui/x" + SHOWN in title and "/ui/x" + SHOWN in human  # shown, escaped
    failure = next(ln for ln in err.splitlines() if "HTTP 400" in ln)
    assert failure.startswith("WARNING xinf-watch: delivery of an alert to alertmanager failed")
    assert "bad alert" + SHOWN.removesuffix("\\x85\\u2028") in failure  # (trailing space stripped)


def test_notify_url_secrets_never_reach_stderr_at_debug(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A notify URL whose userinfo, path and query each carry a unique secret, delivered to a real
    receiver (and once refused by it), with the daemon at --log-level debug (as the harness runs
    it): no part of any secret appears in stderr."""
    secrets = {"user": "usr-5d1f0c", "password": "pwd-8e2b7a", "path": "pth-3c9a41", "query": "qry-7f06d2"}
    receiver = HTTPReceiver().start()
    url = (f"json://{secrets['user']}:{secrets['password']}@{receiver.url}/{secrets['path']}"
           f"?token={secrets['query']}")  # fmt: skip
    try:
        ws.log.touch()
        ws.write_rules(rules=[FLOOD], notify={"ops": ["${XW_HOOK}"]},
                       extra={"delivery": {"group_interval": "0s"}})  # fmt: skip
        monkeypatch.setenv("XW_HOOK", url)  # the daemon's environment, as a systemd EnvironmentFile
        d = ws.daemon().start()
        append(ws.log, [denied_line(1, "198.51.100.1")])
        wait_until(lambda: len(receiver.requests) >= 1, timeout=10, what="the notification")
        assert secrets["path"] in receiver.requests[0].path  # it was used
        receiver.status = 500  # a failed send, logged
        append(ws.log, [denied_line(2, "198.51.100.2")])
        wait_until(lambda: "failed (attempt 1" in d.stderr(), timeout=10, what="the failure in stderr")
        d.terminate()
        err = d.stderr()
    finally:
        receiver.stop()
    assert d.proc is not None and d.proc.args[-2:] == ["--log-level", "debug"]
    leaked = [name for name, secret in secrets.items() if secret in err]
    assert leaked == [], err
