"""Alert delivery by the real daemon: Alertmanager's view of an alert's lifecycle (re-sends with
endsAt, across a restart, resolution only when xinf-watch resolves) against a real Alertmanager,
and grouping of a flood for an apprise channel (a real HTTP receiver), with a critical alert in the
middle of it. Waits are on conditions; timing bounds are asserted and printed."""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Workspace, access_line, denied_line, json_url, received_alerts, total
from receivers import Alertmanager, HTTPReceiver, wait_until
from tools import require_program

from xinf_watch.delivery.text import alerts_in

pytestmark = pytest.mark.system

SILENT = {"name": "gateway-silent", "kind": "absent", "for": "2s", "severity": "critical", "notify": ["ops"]}
# max_alerts: 0, so that all 200 alerts reach the channel: what is tested here is delivery's grouping
# (the rule engine's flood limit, which would fold them into one, is tests/test_flood.py's)
FLOOD = {"name": "webui-external", "kind": "match", "when": {"ip": ["198.51.100.0/24"]}, "by": ["ip"],
         "cooldown": "0s", "severity": "warning", "notify": ["ops"], "max_alerts": 0}  # fmt: skip
CRITICAL = {"name": "admin-route-external", "kind": "match", "when": {"ip": ["203.0.113.99/32"]},
            "by": ["ip"], "cooldown": "0s", "severity": "critical", "notify": ["ops"]}  # fmt: skip


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Workspace]:
    w = Workspace(tmp_path / "ws")
    yield w
    w.close()


def append(path: Path, lines: list[str]) -> None:
    with path.open("a") as f:
        f.write("".join(line + "\n" for line in lines))


def active_ids(am: Alertmanager) -> list[str]:
    """Our alert ids Alertmanager holds active (its API leaves resolved alerts out)."""
    return sorted(json.loads(a["annotations"]["alert"])["id"] for a in am.alerts(active="true"))


def stays_active(am: Alertmanager, alert_id: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert active_ids(am) == [alert_id], "Alertmanager let go of an alert xinf-watch still has firing"
        time.sleep(0.25)


def test_alertmanager_keeps_a_firing_alert_until_xinf_watch_resolves_it(
    ws: Workspace, tmp_path: Path
) -> None:
    """Alertmanager's resolve_timeout is 2 s and xinf-watch re-sends every 2 s (endsAt 8 s ahead):
    an absent alert firing for 10 s, then across a restart and a reload for 10 s more, stays active, and
    resolves in Alertmanager within moments of the line that resolves it, well before the endsAt
    of the last re-send."""
    (tmp_path / "am").mkdir()
    am = Alertmanager(require_program("prometheus-alertmanager", "alertmanager"), tmp_path / "am", "2s")
    try:
        ws.log.touch()
        ws.write_rules(rules=[SILENT], extra={"alertmanager": {"url": am.url, "resend_interval": "2s"}})
        d = ws.daemon().start()
        append(ws.log, [access_line(1)])  # rule time starts with the first line; then the log is silent
        wait_until(lambda: len(active_ids(am)) == 1, timeout=20, what="the absent alert in Alertmanager")
        (alert_id,) = active_ids(am)
        stays_active(am, alert_id, 10.0)  # 5x resolve_timeout, past the first post's endsAt
        d.terminate()
        d.start()  # the firing set comes back from the state database; re-sends go on
        d.hup()  # and a reload keeps them going
        d.wait_for("RELOADING=1")
        d.wait_for("READY=1")
        stays_active(am, alert_id, 10.0)
        append(ws.log, [access_line(2)])
        written = time.monotonic()
        wait_until(lambda: active_ids(am) == [], timeout=6, what="the resolution in Alertmanager")
        took = time.monotonic() - written
        print(f"\nresolved in Alertmanager {took * 1000:.0f} ms after the line that resolved it")
        assert took < 4.0  # the last re-send's endsAt was >= 6 s ahead: this is the resolution
        assert [(a["id"], a["status"]) for a in ws.journal()] == [
            (alert_id, "firing"),
            (alert_id, "resolved"),
        ]
        d.terminate()
        assert "re-sending" not in d.stderr()  # no re-send failed
    finally:
        am.stop()


def test_flood_is_grouped_and_a_critical_alert_is_not_held_behind_it(ws: Workspace) -> None:
    """200 firings of one warning rule written over about 1 s (group interval 3 s) and one critical
    alert of another rule in the middle: the flood reaches the receiver as a few messages carrying
    every alert exactly once; the critical one arrives in well under the group interval."""
    receiver = HTTPReceiver().start()
    try:
        ws.log.touch()
        ws.write_rules(rules=[FLOOD, CRITICAL], notify={"ops": [json_url(receiver)]},
                       extra={"delivery": {"group_interval": "3s"}})  # fmt: skip
        d = ws.daemon().start()
        n = 200
        written: dict[str, float] = {}
        for i in range(n):
            ip = f"198.51.100.{i + 1}"
            append(ws.log, [denied_line(i, ip)])
            written[ip] = time.monotonic()
            if i == n // 2:
                append(ws.log, [denied_line(10_000, "203.0.113.99")])
                written["203.0.113.99"] = time.monotonic()
            time.sleep(0.005)
        wait_until(lambda: len(received_alerts(receiver)) >= n + 1, timeout=30, what=f"{n + 1} alerts")
        time.sleep(0.5)  # room for a duplicate
        requests = list(receiver.requests)
        d.terminate()
    finally:
        receiver.stop()

    def arrival(ip: str) -> float:
        return next(
            r.at for r in requests if any(a["group"]["ip"] == ip for a in alerts_in(r.json()["message"]))
        )

    alerts = [a for r in requests for a in alerts_in(r.json()["message"])]
    per_id = collections.Counter((a["id"], a["status"]) for a in alerts)
    flood_messages = [r for r in requests if "webui-external" in r.json()["title"]]
    critical_latency = arrival("203.0.113.99") - written["203.0.113.99"]
    first_latency = arrival("198.51.100.1") - written["198.51.100.1"]
    print(f"\n{n} firings of one rule -> {len(flood_messages)} messages "
          f"({[len(alerts_in(r.json()['message'])) for r in flood_messages]} alerts each); "
          f"first alert {first_latency * 1000:.0f} ms, critical during the flood "
          f"{critical_latency * 1000:.0f} ms after its line")  # fmt: skip
    assert len(per_id) == n + 1 and set(per_id.values()) == {1}  # every alert, exactly once
    assert sorted(a["group"]["ip"] for a in alerts if a["rule"] == "webui-external") == sorted(
        f"198.51.100.{i + 1}" for i in range(n)
    )
    assert per_id == collections.Counter((a["id"], a["status"]) for a in ws.journal())
    assert len(flood_messages) <= 4  # the first at once, the rest folded per 3 s interval
    assert critical_latency < 1.5  # not held for the flood's 3 s interval
    assert first_latency < 1.5


def test_a_flood_is_held_back_counted_and_a_critical_alert_in_it_goes_out_at_once(ws: Workspace) -> None:
    """The flood limit in the real daemon: 600 firings of one rule (max_alerts: 5) reach the receiver
    as 5 alerts and one flood alert, the rest counted in xinf_watch_alerts_held_back_total, the
    journal holding exactly what was sent; another rule's critical alert in the middle goes out."""
    receiver = HTTPReceiver().start()
    try:
        ws.log.touch()
        limited = FLOOD | {"max_alerts": 5}
        ws.write_rules(rules=[limited, CRITICAL], notify={"ops": [json_url(receiver)]},
                       extra={"delivery": {"group_interval": "0s"}})  # fmt: skip
        d = ws.daemon().start()
        lines = [denied_line(i, f"198.51.100.{i % 250 + 1}") for i in range(600)]  # cooldown 0s: each fires
        append(ws.log, lines[:300])
        append(ws.log, [denied_line(10_000, "203.0.113.99")])
        written = time.monotonic()
        append(ws.log, lines[300:])
        wait_until(lambda: len(received_alerts(receiver)) >= 7, timeout=30, what="7 alerts")
        d.wait_until(lambda m: total(m, "xinf_watch_alerts_held_back_total", rule="webui-external") == 595,
                     timeout=30, what="595 held back")  # fmt: skip
        time.sleep(1.0)  # room for more than was due
        requests = list(receiver.requests)
        d.terminate()
    finally:
        receiver.stop()
    alerts = [a for r in requests for a in alerts_in(r.json()["message"])]
    flood = [a for a in alerts if a["kind"] == "flood"]
    assert len(alerts) == 7 and len(flood) == 1, [a["summary"] for a in alerts]
    assert flood[0]["group"] == {"flood": "webui-external"} and flood[0]["status"] == "firing"
    assert len([a for a in alerts if a["rule"] == "webui-external" and a["kind"] == "match"]) == 5
    critical_at = next(r.at for r in requests if "admin-route-external" in r.json()["title"])
    assert critical_at - written < 5.0
    assert sorted(a["id"] for a in ws.journal()) == sorted(a["id"] for a in alerts)
