"""`xinf-watch demo` runs the real daemon on simulated traffic: the first incidents must alert."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.system
def test_demo_shows_alerts_from_the_live_daemon() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "xinf_watch", "demo", "--duration", "42"],
        capture_output=True, text=True, timeout=90,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "metrics: http://127.0.0.1:" in out
    # Every incident the demo plays (one each 4 s from 3 s on), caught by its shipped rule, as
    # shipped, through the daemon.
    assert "firing: denied-burst: 20 matching requests" in out
    assert "firing: key-spraying:" in out
    assert "firing: revoked-key-used:" in out
    assert "firing: key-state-not-enforced: key archive-job (expired)" in out
    assert "firing: new-ip-for-key: key chatbot-prod seen from new subnet 192.0.2.0/24" in out
    assert "firing: key-outside-allowed-ips: key finance-bot" in out
    assert "firing: scope-violation: 3 matching requests from key chatbot-prod" in out
    assert "firing: webui-external:" in out
    # normal traffic (the keys' usual addresses, all internal) raises nothing else
    rules = {line.split(": ")[1] for line in out.splitlines() if "] firing: " in line}
    assert rules == {"key-expiring", "denied-burst", "key-spraying", "revoked-key-used", "expired-key-used",
                     "key-state-not-enforced", "new-ip-for-key", "key-outside-allowed-ips",
                     "scope-violation", "webui-external"}  # fmt: skip
    assert "demo finished" in out
    assert "Traceback" not in done.stderr
