"""`xinf-watch demo` runs the real daemon on simulated traffic: the first incidents must alert."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.system
def test_demo_shows_alerts_from_the_live_daemon() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "xinf_watch", "demo", "--duration", "16"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "metrics: http://127.0.0.1:" in out
    # The incidents played in the first 16 s, each caught by its shipped rule through the daemon.
    assert "firing: denied-burst: 20 matching requests" in out
    assert "firing: key-spraying:" in out
    assert "firing: revoked-key-used:" in out
    assert "demo finished" in out
    assert "Traceback" not in done.stderr
