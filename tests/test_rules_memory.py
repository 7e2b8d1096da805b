"""The rule engine's memory stays bounded under a flood of distinct addresses and forged keys.

1,000,000 events over two hours of event time go through every shipped rule (rules/rules.yaml,
with the recording's key registry): 80 % unknown API keys, each with its own fingerprint, from
its own random address (401, some 429), a tenth of them from 20 addresses that keep spraying;
15 % the recording's valid keys, each request from a new random address; 5 % no credential, the
WebUI and admin routes from random outside addresses.
Every per-IP and per-key-value map of the engine is then pushed to its cap (MAX_GROUPS groups per
rule, MAX_VALUES values per new_value group), and must forget rather than grow.

The run is a child process (this file run as a script), so its peak RSS (VmHWM) measures the
engine and nothing the test session loaded before. Measured on the development VM (Python 3.11.7,
2 vCPUs, shared): peak RSS 102 MB, of which 44 MB before the first event (interpreter, pydantic,
config, key registry) and ~58 MB of rule state at the caps; observe() ran at ~90,000 events/s of
CPU time with all 15 shipped rules on this flood, where every event makes new groups (ordinary
traffic, the nginx recording repeated: ~200,000 events/s); the whole test takes ~25-30 s. Without
the caps the same run peaks at 1.1 GB, and grows with the input. The bound is the measured peak
plus 50 %.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

PEAK_RSS_BOUND_MB = 155  # measured peak 102 MB, + 50 %
EVENTS = 1_000_000
SPAN = 7200.0  # seconds of event time
CHUNK = 10_000


def test_memory_is_bounded_under_a_flood_of_distinct_ips_and_keys() -> None:
    started = time.monotonic()
    child = subprocess.run(
        [sys.executable, __file__, str(EVENTS)], capture_output=True, text=True, timeout=180, check=False
    )
    assert child.returncode == 0, child.stderr
    result: dict[str, Any] = json.loads(child.stdout.splitlines()[-1])
    elapsed = time.monotonic() - started
    print(json.dumps(result | {"wall_seconds": round(elapsed, 1)}), file=sys.stderr)
    assert result["events"] == EVENTS
    assert result["peak_rss_mb"] < PEAK_RSS_BOUND_MB, result
    evicted = result["evicted"]
    for rule in ("denied-burst", "key-spraying", "new-ip-for-key", "webui-external", "admin-route-external"):
        assert evicted.get(rule, 0) > 0, (
            f"{rule} never reached its cap: the flood did not test it ({evicted})"
        )
    assert result["groups"]["denied-burst"] <= 20_000 and result["groups"]["key-spraying"] <= 20_000
    # every kind of alert the flood should cause, so the rules really ran
    expected = {"denied-burst", "key-spraying", "new-ip-for-key", "webui-external", "admin-route-external"}
    assert expected | {"key-expiring", "key-outside-allowed-ips"} == set(result["alerts"]), result["alerts"]
    if elapsed > 90:
        pytest.fail(f"the flood took {elapsed:.0f} s (expected well under a minute)")


# -- the child ----------------------------------------------------------------------------------


def rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(n: int) -> dict[str, Any]:
    import tempfile

    import yaml
    from paths import FIXTURES

    from xinf_watch.config.schema import load_config
    from xinf_watch.keys.files import load_registry
    from xinf_watch.model import CredentialKind, Event, KeyState, Outcome
    from xinf_watch.rules.engine import RuleEngine

    shipped = Path(__file__).resolve().parents[1] / "rules" / "rules.yaml"
    doc = yaml.safe_load(shipped.read_text(encoding="utf-8"))
    doc["sources"] = [{"name": "gateway", "path": "/var/log/nginx/access.log", "format": "nginx"}]
    doc["keys"] = [str(FIXTURES / "keys.yaml")]
    doc["networks"] = {"internal": ["127.0.1.0/24"]}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rules.yaml"
        path.write_text(yaml.safe_dump(doc), encoding="utf-8")
        config = load_config(path)
    registry = load_registry(config.keys)
    engine = RuleEngine(config.rules, lambda: registry, ["gateway"])
    valid = [e for e in registry.entries if registry.state_of(e, 1795849555.0) is KeyState.VALID]
    rng = random.Random(20261128)
    t0 = 1795849555.0
    before = rss_mb("VmRSS")

    attackers = [f"198.18.0.{i}" for i in range(1, 21)]

    def make(
        ts: float, ip: str, method: str, path: str, status: int, *who: Any, fp: str | None = None
    ) -> Event:
        credential, key, owner, state, scope, scope_allowed, ip_allowed = who
        return Event(ts, "gateway", ip, False, method, path, status, Outcome.from_status(status), None,
                     credential, key, owner, state, scope, scope_allowed, ip_allowed, 0.01, 100,
                     "python-requests/2.31", None, fp)  # fmt: skip

    def events(start: int, stop: int) -> list[Event]:
        out = []
        for i in range(start, stop):
            ts = t0 + SPAN * i / n
            bits = rng.getrandbits(32)
            ip = f"{(bits >> 24) % 223 + 1}.{(bits >> 16) & 255}.{(bits >> 8) & 255}.{bits & 255}"
            r = rng.random()
            if r < 0.08:  # a few hundred addresses spraying forged keys, among the noise
                ip = attackers[i % len(attackers)]
            if r < 0.80:  # a forged key: unknown, its own fingerprint
                status = 429 if r < 0.05 else 401
                out.append(make(ts, ip, "POST", "/v1/chat/completions", status, CredentialKind.API_KEY,
                                "unknown", None, KeyState.UNKNOWN, "models:read", None, None,
                                fp=f"{i:012x}"))  # fmt: skip
            elif r < 0.95:  # a valid key from yet another address
                entry = valid[i % len(valid)]
                outside = False if entry.allowed_ips else None
                out.append(make(ts, ip, "GET", "/v1/models", 200, CredentialKind.API_KEY, entry.alias,
                                entry.owner, KeyState.VALID, "models:list", True, outside))  # fmt: skip
            elif r < 0.975:  # the WebUI from outside
                out.append(make(ts, ip, "GET", "/", 200, CredentialKind.NONE, "none", None, KeyState.NONE,
                                "webui", True, None))  # fmt: skip
            else:  # an admin route from outside, answered 404
                out.append(make(ts, ip, "GET", "/v1/admin/users/x", 404, CredentialKind.NONE, "none", None,
                                KeyState.NONE, "admin", True, None))  # fmt: skip
        return out

    observing = 0.0
    alerts: dict[str, int] = {}
    observe = engine.observe
    for start in range(0, n, CHUNK):
        chunk = events(start, min(n, start + CHUNK))
        began = time.process_time()  # CPU time: the figure does not depend on the machine's load
        for event in chunk:
            for alert in observe(event):
                alerts[alert.rule] = alerts.get(alert.rule, 0) + 1
        observing += time.process_time() - began
    for alert in engine.advance(t0 + SPAN + 600):  # windows settle; not yet a silent source
        alerts[alert.rule] = alerts.get(alert.rule, 0) + 1
    return {
        "events": n,
        "observe_cpu_seconds": round(observing, 1),
        "events_per_second": round(n / observing),
        "rss_before_mb": round(before),
        "peak_rss_mb": round(rss_mb("VmHWM")),
        "evicted": engine.evicted,
        "groups": {r.name: len(r.groups) for r in engine.rules},
        "alerts": alerts,
    }


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))  # for `paths`
    print(json.dumps(child(int(sys.argv[1]))))
