"""rules/rules.yaml as shipped, on the real recorded logs of tests/fixtures.

Every config here is rules/rules.yaml itself with only `sources`, `keys` and `networks` replaced
(the fixture file; the recording's key files; `internal` = the recording's 127.0.1.0/24), and the
lines go through the real stages: `Pipeline.build` (parser, key registry, scope map, and the
`RuleEngine` of the config). Three kinds of test:

1. For EACH shipped rule: real lines where it fires, and real lines where it must not (the same
   log minus the incident, or another scenario). A shipped rule without both fails the suite.
   Rules no recording exercises get input built from real lines whose timestamps are shifted or
   repeated (rate-spike, source-silent), or the real lines with a changed registry or network
   list (scope-not-enforced, admin-route-external); each says why where it does it.
2. The recording's ground truth (expected_alerts.json, set A; xinference-legacy/expected_alerts.json,
   set B), against what `xinf-watch replay` prints for each gateway log: every `must` alert the
   log can show is raised, every firing alert is a `must` or `tolerated` entry of the same
   scenario (or one of the `EXTRA_BY_DESIGN` pairs), nothing fires for `must_not_alert`
   scenarios, and the output is the same twice. The byte-for-byte golden alert files of the same
   replays are tests/golden/<case>.alerts.jsonl, checked by tests/test_golden.py.
3. Engine state over a restart: half a log, snapshot -> JSON -> restore, the other half, equals
   one uninterrupted run.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterable, Sequence
from contextlib import redirect_stdout
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from paths import FIXTURES

from xinf_watch.app.cli import main as cli_main
from xinf_watch.app.pipeline import Pipeline
from xinf_watch.config.schema import load_config
from xinf_watch.keys.files import load_registry
from xinf_watch.model import Alert, Event

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "rules" / "rules.yaml"
RULE_NAMES = [r["name"] for r in yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))["rules"]]
INTERNAL = ["127.0.1.0/24"]  # fixtures/README.md: the recordings' internal network
SLACK = 1.5  # seconds: gateways log whole seconds, and the time a request ended

KEYS = {
    "A": ("keys.yaml",),
    "B": ("xinference-legacy/keys.yaml", "config/legacy/auth.json"),
}
NGINX = {"format": "nginx", "log_format": "combined_key"}


@dataclass(frozen=True)
class Log:
    path: str  # relative to FIXTURES
    source: dict[str, str]
    key_set: str
    phase: str  # set A phase, or set B run

    @property
    def truth_name(self) -> str:
        """How expected_alerts.json names this file in `log_files`."""
        return self.path if self.key_set == "A" else self.path.split("/", 1)[1]


LOGS = {
    "nginx-access_combined_key": Log("nginx/access_combined_key.log", NGINX, "A", "nginx"),
    "nginx-access_json": Log(
        "nginx/access_json.log", {"format": "json", "preset": "nginx-json"}, "A", "nginx"
    ),
    "caddy-access": Log("caddy/access.log", {"format": "json", "preset": "caddy"}, "A", "caddy"),
    "caddy-access_log_credentials": Log(
        "caddy/access_log_credentials.log", {"format": "json", "preset": "caddy"}, "A", "caddy_creds"
    ),
    "haproxy-haproxy": Log("haproxy/haproxy.log", {"format": "haproxy"}, "A", "haproxy"),
    "haproxy-haproxy_stdout_raw": Log(
        "haproxy/haproxy_stdout_raw.log", {"format": "haproxy"}, "A", "haproxy"
    ),
    "legacy-text-nginx_access_combined_key": Log(
        "xinference-legacy/text/nginx_access_combined_key.log",
        {**NGINX, "xinference_version": "2.11"},
        "B",
        "text",
    ),
    "legacy-json-nginx_access_combined_key": Log(
        "xinference-legacy/json/nginx_access_combined_key.log",
        {**NGINX, "xinference_version": "2.11"},
        "B",
        "json",
    ),
}


def write_rules(
    tmp_path: Path,
    log: Log,
    *,
    keys: Sequence[Path] | None = None,
    internal: Sequence[str] = INTERNAL,
    rule_changes: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """rules/rules.yaml as shipped, with sources, keys and networks made for this fixture
    (`rule_changes`: settings that replace the shipped ones, by rule name)."""
    doc = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    changes = rule_changes or {}
    doc["rules"] = [{**rule, **changes.get(rule["name"], {})} for rule in doc["rules"]]
    doc["sources"] = [{"name": "gateway", "path": str(FIXTURES / log.path), **log.source}]
    doc["keys"] = [str(k) for k in (keys or [FIXTURES / k for k in KEYS[log.key_set]])]
    doc["networks"] = {"internal": list(internal)}
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


class Run:
    """The real pipeline with the shipped rules, fed line by line."""

    def __init__(self, tmp_path: Path, log: str, **options: Any) -> None:
        config = load_config(write_rules(tmp_path, LOGS[log], **options))
        self.pipeline = Pipeline.build(config, load_registry(config.keys))
        self.engine = self.pipeline.engine
        self.alerts: list[Alert] = []
        self.last_ts = 0.0

    def feed(self, lines: Iterable[str]) -> Run:
        for line in lines:
            record = self.pipeline.parse("gateway", line)
            if record is not None:
                self.alerts += self.pipeline.process("gateway", record)[1]
                self.last_ts = max(self.last_ts, record.ts)
        return self

    def finish(self, now: float | None = None) -> Run:
        """What replay does after the last line: let the rules settle at the last event's time."""
        self.alerts += self.pipeline.advance(self.last_ts if now is None else now)
        return self

    def firing(self, rule: str) -> list[Alert]:
        return [a for a in self.alerts if a.rule == rule and a.status.value == "firing"]

    def of(self, rule: str) -> list[Alert]:
        return [a for a in self.alerts if a.rule == rule]


def lines_of(log: str) -> list[str]:
    return (FIXTURES / LOGS[log].path).read_text(encoding="utf-8").splitlines()


@cache
def attributed(log: str) -> tuple[tuple[str, Event], ...]:
    """Each line of the log with its attributed event (shipped config, no rules run)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(write_rules(Path(tmp), LOGS[log]))
        pipeline = Pipeline.build(config, load_registry(config.keys))
    out = []
    for line in lines_of(log):
        record = pipeline.parse("gateway", line)
        assert record is not None, line
        out.append((line, pipeline.process("gateway", record)[0]))
    return tuple(out)


def without(log: str, drop: Callable[[Event], bool]) -> list[str]:
    """The real lines of `log` except those whose event `drop` picks (an incident scenario)."""
    kept = [line for line, e in attributed(log) if not drop(e)]
    assert len(kept) < len(attributed(log)), "the filter dropped nothing: wrong scenario?"
    return kept


def only(log: str, keep: Callable[[Event], bool]) -> list[str]:
    return [line for line, e in attributed(log) if keep(e)]


def iso(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


_NGINX_TIME = re.compile(r"\[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\]")


def at(line: str, ts: float) -> str:
    """A real nginx line with only its $time_local changed (the shifted-timestamp inputs)."""
    stamp = datetime.fromtimestamp(ts, UTC).strftime("[%d/%b/%Y:%H:%M:%S +0000]")
    shifted, n = _NGINX_TIME.subn(stamp, line, count=1)
    assert n == 1, line
    return shifted


# -- 1. every shipped rule: where it fires, where it must not ------------------------------------

FIRES: dict[str, Callable[[Path], None]] = {}
QUIET: dict[str, Callable[[Path], None]] = {}


def fires(rule: str) -> Callable[[Callable[[Path], None]], Callable[[Path], None]]:
    def register(test: Callable[[Path], None]) -> Callable[[Path], None]:
        FIRES[rule] = test
        return test

    return register


def quiet(rule: str) -> Callable[[Callable[[Path], None]], Callable[[Path], None]]:
    def register(test: Callable[[Path], None]) -> Callable[[Path], None]:
        QUIET[rule] = test
        return test

    return register


@pytest.mark.parametrize("rule", RULE_NAMES)
def test_shipped_rule_fires_on_real_lines(rule: str, tmp_path: Path) -> None:
    assert rule in FIRES, f"shipped rule {rule!r} has no sample of real lines where it fires"
    FIRES[rule](tmp_path)


@pytest.mark.parametrize("rule", RULE_NAMES)
def test_shipped_rule_stays_quiet_on_real_lines(rule: str, tmp_path: Path) -> None:
    assert rule in QUIET, f"shipped rule {rule!r} has no sample of real lines where it must not fire"
    QUIET[rule](tmp_path)


def test_every_sample_is_for_a_shipped_rule() -> None:
    assert set(FIRES) <= set(RULE_NAMES) and set(QUIET) <= set(RULE_NAMES)


NGINX_LOG = "nginx-access_combined_key"
HAPROXY_LOG = "haproxy-haproxy"
LEGACY_LOG = "legacy-text-nginx_access_combined_key"


@fires("denied-burst")
def _(tmp_path: Path) -> None:
    run = Run(tmp_path, NGINX_LOG).feed(lines_of(NGINX_LOG)).finish()
    (alert,) = run.firing("denied-burst")  # b_denied_burst: 40 x 401 in 20 s
    assert alert.group == {"ip": "127.77.40.2"} and alert.count == 20
    assert (
        iso("2026-11-28T07:07:25.329Z") - SLACK
        <= alert.first_ts
        <= alert.last_ts
        <= iso("2026-11-28T07:07:45.329Z")
    )
    (done,) = [a for a in run.of("denied-burst") if a.status.value == "resolved"]
    assert done.id == alert.id and done.count == 40


@quiet("denied-burst")
def _(tmp_path: Path) -> None:
    # k_key_spraying's 10 x 401 (then 429, throttled) and e_no_auth's 3 x 401 stay below 20
    lines = without(NGINX_LOG, lambda e: e.ip == "127.77.40.2")
    assert Run(tmp_path, NGINX_LOG).feed(lines).finish().of("denied-burst") == []


@fires("key-spraying")
def _(tmp_path: Path) -> None:
    run = Run(tmp_path, HAPROXY_LOG).feed(lines_of(HAPROXY_LOG)).finish()
    (alert,) = run.firing("key-spraying")
    assert alert.group == {"ip": "127.88.66.9"} and alert.key == "unknown" and alert.extra["distinct"] == 10
    assert "sk-" not in json.dumps(alert.to_json())  # fingerprints, never keys


@quiet("key-spraying")
def _(tmp_path: Path) -> None:
    # b_denied_burst sends "Bearer undefined" 8 times: one unknown token, not spraying (README)
    lines = without(HAPROXY_LOG, lambda e: e.ip == "127.88.66.9")
    run = Run(tmp_path, HAPROXY_LOG).feed(lines).finish()
    assert run.of("key-spraying") == [] and run.firing("denied-burst") != []


@fires("new-ip-for-key")
def _(tmp_path: Path) -> None:
    # The HAProxy phase: chatbot-staging shows up from outside (c2_new_ip_outside), inside the
    # key's first week: an outside address far from every one the key used is never learned.
    run = Run(tmp_path, HAPROXY_LOG).feed(lines_of(HAPROXY_LOG)).finish()
    got = [(a.key, a.extra["value"]) for a in run.firing("new-ip-for-key")]
    assert got == [("chatbot-staging", "127.88.12.0/24")]
    # The internal ones are `known` (DELIBERATELY_QUIET); per address, with nothing known and the
    # old 15 s of learning, they fire.
    strict = {"new-ip-for-key": {"known": [], "value": "ip", "learn": "15s"}}
    run = Run(tmp_path, HAPROXY_LOG, rule_changes=strict).feed(lines_of(HAPROXY_LOG)).finish()
    got = [(a.key, a.extra["value"]) for a in run.firing("new-ip-for-key")]
    assert got == [
        ("analyst-notebook", "127.0.1.140"),  # c1_new_ip_internal
        ("finance-bot", "127.0.1.200"),  # ip_key_outside_allowed_ips (tolerated)
        ("chatbot-staging", "127.88.12.34"),  # c2_new_ip_outside
    ]


@quiet("new-ip-for-key")
def _(tmp_path: Path) -> None:
    lines = without(HAPROXY_LOG, lambda e: e.ip in ("127.0.1.140", "127.0.1.200", "127.88.12.34"))
    assert Run(tmp_path, HAPROXY_LOG).feed(lines).finish().of("new-ip-for-key") == []


def chatbot_prod_lines() -> list[str]:
    return only(NGINX_LOG, lambda e: e.key == "chatbot-prod" and e.status == 200)


@fires("rate-spike")
def _(tmp_path: Path) -> None:
    # No recording is long enough for a daily baseline, so: chatbot-prod's real lines (200
    # answers), timestamps shifted to 1 a minute for two days, then 150 in 150 s (a runaway).
    real = chatbot_prod_lines()
    start = iso("2026-11-28T00:00:00Z")
    baseline = [at(real[i % len(real)], start + 60 * i) for i in range(2 * 24 * 60)]
    runaway = start + 2 * 86400 + 14 * 3600
    burst = [at(real[i % len(real)], runaway + i) for i in range(150)]
    run = Run(tmp_path, NGINX_LOG).feed(baseline + burst).finish(runaway + 3 * 3600)
    (alert, done) = run.of("rate-spike")
    assert alert.status.value == "firing" and alert.key == "chatbot-prod" and alert.count == 100
    assert 4 <= alert.extra["baseline"] <= 6 and "x the usual" in alert.summary
    assert done.status.value == "resolved" and done.id == alert.id


@quiet("rate-spike")
def _(tmp_path: Path) -> None:
    # The same real lines at 30 a minute for a day and a half: 150 per 5-minute window is over
    # min_count, but it is the key's usual rate.
    real = chatbot_prod_lines()
    start = iso("2026-11-28T06:00:00Z")
    steady = [at(real[i % len(real)], start + 2 * i) for i in range(36 * 60 * 30)]
    assert Run(tmp_path, NGINX_LOG).feed(steady).finish().of("rate-spike") == []
    # and a burst with no history at all (the key's first minutes) is not a spike either
    burst = [at(real[i], start + i) for i in range(150)]
    assert Run(tmp_path, NGINX_LOG).feed(burst).finish().of("rate-spike") == []


@fires("expired-key-used")
def _(tmp_path: Path) -> None:
    run = Run(tmp_path, NGINX_LOG).feed(lines_of(NGINX_LOG)).finish()
    # h: etl-archive, expired in keys.yaml, answered 200; j: mlops-2025-q3, answered 401
    assert [(a.key, a.count) for a in run.firing("expired-key-used")] == [
        ("etl-archive", 1),
        ("mlops-2025-q3", 1),
    ]


@quiet("expired-key-used")
def _(tmp_path: Path) -> None:
    lines = without(NGINX_LOG, lambda e: e.key in ("etl-archive", "mlops-2025-q3"))
    assert Run(tmp_path, NGINX_LOG).feed(lines).finish().of("expired-key-used") == []
    # set B: legacy keys never expire in keys.yaml; the expired JWT is a session, not a key
    assert Run(tmp_path, LEGACY_LOG).feed(lines_of(LEGACY_LOG)).finish().of("expired-key-used") == []


@fires("revoked-key-used")
def _(tmp_path: Path) -> None:
    run = Run(tmp_path, NGINX_LOG).feed(lines_of(NGINX_LOG)).finish()
    # r: chatbot-legacy (revoked here, answered 200); i: analyst-old-laptop (disabled: 401)
    assert [a.key for a in run.firing("revoked-key-used")] == ["chatbot-legacy", "analyst-old-laptop"]


@quiet("revoked-key-used")
def _(tmp_path: Path) -> None:
    lines = without(NGINX_LOG, lambda e: e.key in ("chatbot-legacy", "analyst-old-laptop"))
    assert Run(tmp_path, NGINX_LOG).feed(lines).finish().of("revoked-key-used") == []


@fires("expired-jwt-accepted")
def _(tmp_path: Path) -> None:
    run = Run(tmp_path, LEGACY_LOG).feed(lines_of(LEGACY_LOG)).finish()
    (alert,) = run.firing("expired-jwt-accepted")  # x_expired_jwt: 15 s after exp, answered 200
    assert alert.key == "jwt:deployer" and alert.first_ts == iso("2026-11-28T07:12:28Z")


@quiet("expired-jwt-accepted")
def _(tmp_path: Path) -> None:
    # g_jwt_login used the same token before its exp; set A's JWT sessions are all fresh
    exp = iso("2026-11-28T07:12:13.820Z")
    lines = without(LEGACY_LOG, lambda e: e.key == "jwt:deployer" and e.ts > exp)
    assert Run(tmp_path, LEGACY_LOG).feed(lines).finish().of("expired-jwt-accepted") == []
    assert Run(tmp_path, NGINX_LOG).feed(lines_of(NGINX_LOG)).finish().of("expired-jwt-accepted") == []


@fires("scope-violation")
def _(tmp_path: Path) -> None:
    run = Run(tmp_path, NGINX_LOG).feed(lines_of(NGINX_LOG)).finish()
    # d_scope_violation: three refused in a second (must); d2_server_policy_denial's one refused
    # request is a mistake Xinference already refused (DELIBERATELY_QUIET)
    (alert,) = run.firing("scope-violation")
    assert alert.key == "chatbot-prod" and alert.count == 3
    legacy = Run(tmp_path, LEGACY_LOG).feed(lines_of(LEGACY_LOG)).finish()
    # set B, legacy scopes: dashboard-ro (only models:list) keeps trying; rag-prod asked once
    assert [a.key for a in legacy.firing("scope-violation")] == ["dashboard-ro"]
    # a one-off refusal is still counted, for the dashboard: the key, its scope, denied
    requests = legacy.pipeline.store.requests  # (source, key, scope, outcome) -> count
    assert sum(n for k, n in requests.items() if k[1] == "rag-prod" and k[3] == "denied") >= 1


@quiet("scope-violation")
def _(tmp_path: Path) -> None:
    # without d and d2, the only 403s left are the analyst's JWT session (g3): not an API key
    lines = without(NGINX_LOG, lambda e: e.status == 403 and e.credential.value == "api_key")
    run = Run(tmp_path, NGINX_LOG).feed(lines).finish()
    assert run.of("scope-violation") == []
    assert any(e.status == 403 and e.key == "jwt:analyst" for _, e in attributed(NGINX_LOG))


@fires("key-state-not-enforced")
def _(tmp_path: Path) -> None:
    run = Run(tmp_path, NGINX_LOG).feed(lines_of(NGINX_LOG)).finish()
    assert [a.key for a in run.firing("key-state-not-enforced")] == ["etl-archive", "chatbot-legacy"]


@quiet("key-state-not-enforced")
def _(tmp_path: Path) -> None:
    # i and j: a revoked and an expired key, both refused (401) by Xinference: enforced
    lines = without(NGINX_LOG, lambda e: e.key in ("etl-archive", "chatbot-legacy"))
    run = Run(tmp_path, NGINX_LOG).feed(lines).finish()
    assert run.of("key-state-not-enforced") == [] and len(run.firing("revoked-key-used")) == 1


@fires("scope-not-enforced")
def _(tmp_path: Path) -> None:
    # Xinference enforced every scope in the recordings. The rule catches the registry and the
    # server disagreeing, so: the real lines, with a keys.yaml in which chatbot-prod may only
    # use models (models:read), not list them; its real `GET /v1/models` answered 200 now
    # breaks that.
    doc = yaml.safe_load((FIXTURES / "keys.yaml").read_text(encoding="utf-8"))
    for key in doc["keys"]:
        if key["alias"] == "chatbot-prod":
            key["permissions"] = ["models:read"]
    narrowed = tmp_path / "keys.yaml"
    narrowed.write_text(yaml.safe_dump(doc), encoding="utf-8")
    run = Run(tmp_path, NGINX_LOG, keys=[narrowed]).feed(lines_of(NGINX_LOG)).finish()
    (alert,) = run.firing("scope-not-enforced")
    assert alert.key == "chatbot-prod" and "GET /v1/models -> 200" in alert.summary


@quiet("scope-not-enforced")
def _(tmp_path: Path) -> None:
    for log in (NGINX_LOG, HAPROXY_LOG, LEGACY_LOG):
        assert Run(tmp_path, log).feed(lines_of(log)).finish().of("scope-not-enforced") == []


@fires("key-outside-allowed-ips")
def _(tmp_path: Path) -> None:
    run = Run(tmp_path, NGINX_LOG).feed(lines_of(NGINX_LOG)).finish()
    (alert,) = run.firing("key-outside-allowed-ips")
    assert alert.key == "finance-bot" and "from 127.0.1.200" in alert.summary


@quiet("key-outside-allowed-ips")
def _(tmp_path: Path) -> None:
    # finance-bot from .66/.67 (inside 127.0.1.64/28), platform-admin from its 127.0.1.10/32
    lines = without(NGINX_LOG, lambda e: e.ip == "127.0.1.200")
    assert Run(tmp_path, NGINX_LOG).feed(lines).finish().of("key-outside-allowed-ips") == []


@fires("webui-external")
def _(tmp_path: Path) -> None:
    run = Run(tmp_path, NGINX_LOG).feed(lines_of(NGINX_LOG)).finish()
    (alert,) = run.firing("webui-external")  # f_webui_outside; 5 more lines within the cooldown
    assert alert.group == {"ip": "127.77.8.8"}


@quiet("webui-external")
def _(tmp_path: Path) -> None:
    # g_admin_jwt_webui_internal: the WebUI from 127.0.1.10, inside
    lines = without(NGINX_LOG, lambda e: e.ip == "127.77.8.8")
    assert Run(tmp_path, NGINX_LOG).feed(lines).finish().of("webui-external") == []


@fires("admin-route-external")
def _(tmp_path: Path) -> None:
    # Nobody outside reached an admin route in the recordings (b_denied_burst's GET
    # /v1/cluster/info were refused). The platform admin's real JWT calls to /v1/cluster/info
    # and /v1/admin/users (200) are, once `internal` leaves out the admin workstation 127.0.1.10.
    internal = ["127.0.1.16/28", "127.0.1.32/27", "127.0.1.64/26", "127.0.1.128/25"]
    run = Run(tmp_path, NGINX_LOG, internal=internal).feed(lines_of(NGINX_LOG)).finish()
    (alert,) = run.firing("admin-route-external")
    assert alert.group == {"ip": "127.0.1.10"} and "GET /v1/cluster/info -> 200" in alert.summary


@quiet("admin-route-external")
def _(tmp_path: Path) -> None:
    run = Run(tmp_path, NGINX_LOG).feed(lines_of(NGINX_LOG)).finish()
    assert run.of("admin-route-external") == []
    assert any(
        e.scope == "admin" and e.ip == "127.77.40.2" and e.status == 401 for _, e in attributed(NGINX_LOG)
    )


@fires("key-expiring")
def _(tmp_path: Path) -> None:
    run = Run(tmp_path, NGINX_LOG).feed(lines_of(NGINX_LOG)).finish()
    (alert,) = run.firing("key-expiring")  # etl-embed expires 2 days after the recording
    assert alert.key == "etl-embed" and alert.extra == {"expires_at": "2026-11-30T07:05:55Z"}
    first_use = min(e.ts for _, e in attributed(NGINX_LOG) if e.key == "etl-embed")
    assert alert.first_ts == first_use  # at the key's first use, not a minute later


@quiet("key-expiring")
def _(tmp_path: Path) -> None:
    lines = without(NGINX_LOG, lambda e: e.key == "etl-embed")
    assert Run(tmp_path, NGINX_LOG).feed(lines).finish().of("key-expiring") == []
    assert Run(tmp_path, LEGACY_LOG).feed(lines_of(LEGACY_LOG)).finish().of("key-expiring") == []


@fires("source-silent")
def _(tmp_path: Path) -> None:
    # The recordings have no gap of 15 minutes: the first 100 real lines, then the clock moves
    # on without lines (the daemon's advance), then the next real line, shifted 20 minutes later.
    lines = lines_of(NGINX_LOG)
    run = Run(tmp_path, NGINX_LOG).feed(lines[:100])
    last = run.last_ts
    assert run.finish(last + 899).of("source-silent") == []
    (alert,) = run.finish(last + 900).of("source-silent")
    assert alert.group == {"source": "gateway"} and alert.first_ts == last
    run.feed([at(lines[100], last + 1200)])
    (_, back) = run.of("source-silent")
    assert back.status.value == "resolved" and back.id == alert.id


@quiet("source-silent")
def _(tmp_path: Path) -> None:
    for log in LOGS:
        assert Run(tmp_path, log).feed(lines_of(log)).finish().of("source-silent") == [], log


# -- 2. the recording's ground truth, on `xinf-watch replay` output --------------------------------

ALERT_RULE = {
    "DENIED_BURST": "denied-burst",
    "UNKNOWN_KEY_SPRAYING": "key-spraying",
    "NEW_IP_FOR_KEY": "new-ip-for-key",
    "KEY_IP_NOT_ALLOWED": "key-outside-allowed-ips",
    "SCOPE_VIOLATION": "scope-violation",
    "EXPIRED_KEY_USED": "expired-key-used",
    "REVOKED_KEY_USED": "revoked-key-used",
    "WEBUI_EXTERNAL_ACCESS": "webui-external",
    "KEY_EXPIRING_SOON": "key-expiring",
    "EXPIRED_JWT_ACCEPTED": "expired-jwt-accepted",
}
# Expected alerts of the recordings that the shipped rules leave out on purpose (issue 8: an
# alert is a promise that a person should look now), with why; each test below shows the event
# is still seen (a stricter rule, or the request counters).
DELIBERATELY_QUIET = {
    "c1_new_ip_internal": "new-ip-for-key: internal networks are `known` (pods and hosts change "
    "internal addresses all day); `known: []` catches it",
    "d2_server_policy_denial": "scope-violation: one refused request is a mistake Xinference already "
    "refused; counted in xinf_requests_total, alerted from 3 in 10 minutes",
}


def deliberately_quiet(entry: dict[str, Any]) -> bool:
    """An expected entry the shipped rules leave out on purpose (DELIBERATELY_QUIET), including
    any single refused out-of-scope request (set B's rag-prod)."""
    if entry["scenario"] in DELIBERATELY_QUIET:
        return True
    single_refusal = entry.get("requests") == 1 and set(entry.get("statuses", {})) <= {"401", "403"}
    return entry["alert"] == "SCOPE_VIOLATION" and single_refusal


# Alerts that come with a listed one by design, not in expected_alerts.json: whenever Xinference
# answered (200) an expired or revoked key or an expired JWT, key-state-not-enforced says so too.
# (rule, scenario) -> the expected alert it accompanies; that entry must show a 200.
EXTRA_BY_DESIGN = {
    ("key-state-not-enforced", "h_registry_expired_key"): "EXPIRED_KEY_USED",  # etl-archive
    ("key-state-not-enforced", "r_registry_revoked_key"): "REVOKED_KEY_USED",  # chatbot-legacy
    ("key-state-not-enforced", "x_expired_jwt"): "EXPIRED_JWT_ACCEPTED",  # set B, jwt:deployer
}


def replay_output(tmp_path: Path, name: str) -> str:
    """What `xinf-watch replay --rules ... FILE` prints (in-process: `main` is a function)."""
    rules = write_rules(tmp_path, LOGS[name])
    out = io.StringIO()
    with redirect_stdout(out):
        code = cli_main(
            [
                "replay",
                "--rules",
                str(rules),
                "--source",
                "gateway",
                "--quiet",
                str(FIXTURES / LOGS[name].path),
            ]
        )
    assert code == 0
    return out.getvalue()


@dataclass(frozen=True)
class Truth:
    entries: list[dict[str, Any]]  # this phase / run
    must_not: list[str]  # scenario names
    requests: list[dict[str, Any]]  # events.jsonl lines of this phase / run


@cache
def truth(name: str) -> Truth:
    log = LOGS[name]
    if log.key_set == "A":
        data = json.loads((FIXTURES / "expected_alerts.json").read_text(encoding="utf-8"))
        entries = [a for a in data["alerts"] if a["phase"] == log.phase]
        sent = FIXTURES / "events.jsonl"
        field = "phase"
    else:
        data = json.loads(
            (FIXTURES / "xinference-legacy" / "expected_alerts.json").read_text(encoding="utf-8")
        )
        entries = [a for a in data["alerts"] if a["run"] == log.phase]
        sent = FIXTURES / "xinference-legacy" / "events.jsonl"
        field = "run"
    requests = [
        r for r in map(json.loads, sent.read_text(encoding="utf-8").splitlines()) if r[field] == log.phase
    ]
    must_not = [text.split()[0] for text in data["must_not_alert"]]
    return Truth(entries, must_not, requests)


def who(entry: dict[str, Any]) -> set[str]:
    """The key names an expected entry may appear under: alias, `jwt:<user>` for a session."""
    alias = entry.get("key_alias")
    names = {f"jwt:{entry['jwt_sub']}"} if entry.get("jwt_sub") else set()
    if alias and alias.endswith("/jwt"):
        names.add("jwt:" + alias.removesuffix("/jwt"))
    elif alias:
        names.add(alias)
    return names


def same_incident(alert: dict[str, Any], entry: dict[str, Any]) -> bool:
    by_ip = alert["group"].get("ip") in entry["src_ips"]
    by_key = alert["key"] in who(entry)
    start, end = iso(entry["start"]) - SLACK, iso(entry["end"]) + SLACK
    return (by_ip or by_key) and start <= iso(alert["first_ts"]) and iso(alert["last_ts"]) <= end


def detectable(entry: dict[str, Any], log: Log) -> bool:
    return log.truth_name in entry["log_files"] and entry.get("detectable_from_gateway_log") is not False


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, str]]:
    """Each gateway log replayed twice."""
    out = {}
    for name in LOGS:
        tmp = tmp_path_factory.mktemp(name)
        out[name] = (replay_output(tmp, name), replay_output(tmp, name))
    return out


def alerts_of(outputs: dict[str, tuple[str, str]], name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in outputs[name][0].splitlines()]


@pytest.mark.parametrize("name", list(LOGS))
def test_replay_gives_the_same_alerts_twice(outputs: dict[str, tuple[str, str]], name: str) -> None:
    first, second = outputs[name]
    assert first == second and first.endswith("\n")


@pytest.mark.parametrize("name", list(LOGS))
def test_every_must_alert_the_log_can_show_is_raised(outputs: dict[str, tuple[str, str]], name: str) -> None:
    fired = [a for a in alerts_of(outputs, name) if a["status"] == "firing"]
    musts = [
        e for e in truth(name).entries
        if e["level"] == "must" and detectable(e, LOGS[name]) and not deliberately_quiet(e)
    ]  # fmt: skip
    assert musts, "no must entry for this log: wrong phase?"
    missing = [
        f"{e['scenario']}: {e['alert']} ({e['key_alias']}, {e['src_ips']})"
        for e in musts
        if not any(a["rule"] == ALERT_RULE[e["alert"]] and same_incident(a, e) for a in fired)
    ]
    assert missing == []


@pytest.mark.parametrize("name", list(LOGS))
def test_every_firing_alert_is_expected_or_tolerated(outputs: dict[str, tuple[str, str]], name: str) -> None:
    entries = truth(name).entries
    unexplained = []
    for alert in (a for a in alerts_of(outputs, name) if a["status"] == "firing"):
        listed = any(ALERT_RULE[e["alert"]] == alert["rule"] and same_incident(alert, e) for e in entries)
        by_design = any(
            EXTRA_BY_DESIGN.get((alert["rule"], scenario)) == e["alert"]
            and same_incident(alert, e)
            and "200" in e["statuses"]
            for e in entries
            for scenario in e["scenario"].split(",")
        )
        if not (listed or by_design):
            unexplained.append(f"{alert['rule']} {alert['group']} {alert['first_ts']}: {alert['summary']}")
    assert unexplained == []


@pytest.mark.parametrize("name", list(LOGS))
def test_nothing_fires_for_the_must_not_alert_scenarios(
    outputs: dict[str, tuple[str, str]], name: str
) -> None:
    fired = [a for a in alerts_of(outputs, name) if a["status"] == "firing"]
    t = truth(name)
    checked = 0
    for scenario in t.must_not:
        sent = [r for r in t.requests if r["scenario"] == scenario and r.get("via") != "direct"]
        if scenario == "a_background" or not sent:
            continue  # the background: every alert must be a listed entry (test above)
        checked += 1
        ips = {r["src_ip"] for r in sent}
        keys = {k for r in sent if (k := r["key_alias"]) and not k.startswith("random")}
        keys = {f"jwt:{k.removesuffix('/jwt')}" if k.endswith("/jwt") else k for k in keys}
        start = min(iso(r["t_sent"]) for r in sent) - SLACK
        end = max(iso(r["t_done"]) for r in sent) + SLACK
        for alert in fired:
            overlaps = iso(alert["first_ts"]) <= end and iso(alert["last_ts"]) >= start
            if overlaps and (alert["group"].get("ip") in ips or alert["key"] in keys):
                pytest.fail(f"{scenario} must not alert, got {alert['rule']}: {alert['summary']}")
    assert checked >= 2


def test_set_b_expectations(outputs: dict[str, tuple[str, str]]) -> None:
    """Set B: the legacy scope vocabulary and the expired JWT that Xinference 2.11 accepted."""
    for name in ("legacy-text-nginx_access_combined_key", "legacy-json-nginx_access_combined_key"):
        fired = [a for a in alerts_of(outputs, name) if a["status"] == "firing"]
        scope = {a["key"] for a in fired if a["rule"] == "scope-violation"}
        assert scope == {"dashboard-ro"}  # rag-prod's one refused request: DELIBERATELY_QUIET
        (jwt,) = [a for a in fired if a["rule"] == "expired-jwt-accepted"]
        assert jwt["key"] == "jwt:deployer"
        exp = next(e for e in truth(name).entries if e["alert"] == "EXPIRED_JWT_ACCEPTED")["jwt_exp"]
        assert iso(jwt["first_ts"]) > iso(exp)


def test_caddy_default_log_hides_the_key(outputs: dict[str, tuple[str, str]]) -> None:
    """Caddy's default log redacts Authorization: only the key-less alerts can fire from it."""
    fired = {a["rule"] for a in alerts_of(outputs, "caddy-access") if a["status"] == "firing"}
    assert fired == {"denied-burst", "webui-external"}


# -- 3. engine state over a restart ---------------------------------------------------------------


@pytest.mark.parametrize("name", [NGINX_LOG, HAPROXY_LOG, LEGACY_LOG, "caddy-access_log_credentials"])
def test_state_survives_a_restart_half_way(tmp_path: Path, name: str) -> None:
    lines = lines_of(name)
    whole = Run(tmp_path, name).feed(lines).finish()
    half = len(lines) // 2
    before = Run(tmp_path, name).feed(lines[:half])
    saved = json.loads(json.dumps(before.engine.snapshot(), allow_nan=False))
    after = Run(tmp_path, name)
    after.engine.restore(saved)
    after.last_ts = before.last_ts
    after.feed(lines[half:]).finish()
    assert [a.to_json() for a in before.alerts + after.alerts] == [a.to_json() for a in whole.alerts]
    assert len(whole.alerts) > 5
