"""Golden files: every recorded gateway log replayed with the shipped rules, compared byte for byte.

For each fixture log, `xinf-watch replay` runs as a real process with a rules file made from
rules/rules.yaml (its rules, notify and the rest as shipped; sources, keys and networks replaced:
the fixture file, the recording's key files, `internal` = the recording's internal network), and
its outputs are compared with tests/golden/<case>.prom (the --metrics-out exposition),
<case>.events.jsonl (--events) and <case>.alerts.jsonl (the alert lines).

The goldens are written by the product, never by hand:

    python3 -m pytest tests/test_golden.py --update-goldens

then review `git diff tests/golden` (every changed line is a changed output someone depends on).
The one normalisation: the version label of `xinf_watch_build_info` is written as "VERSION", so a
version bump does not touch the goldens (the real label is checked against `__version__`).

Xinference's own logs are here too: audit.log (4.1.0, all five phases of set A), the 4.1.0
xinference.log (no access lines at all: every line skipped), and the 2.11.0 xinference.log of
both runs of set B (uvicorn access lines among the application's own lines).
"""

from __future__ import annotations

import difflib
import gzip
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from paths import FIXTURES
from prometheus_client.parser import text_string_to_metric_families
from test_shipped_rules import deliberately_quiet
from tools import require_program

from xinf_watch import __version__

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden"
SHIPPED_RULES = REPO / "rules" / "rules.yaml"
INTERNAL = ["127.0.1.0/24"]  # the recordings' internal network (fixtures/README.md)
REGENERATE = (
    "If the change is intended, regenerate the goldens with "
    "`python3 -m pytest tests/test_golden.py --update-goldens` and review `git diff tests/golden`."
)

KEY_SETS = {
    # set A: Xinference 4.1.0 recording; set B: Xinference 2.11.0 with --auth-config
    "A": ("keys.yaml",),
    "B": ("xinference-legacy/keys.yaml", "config/legacy/auth.json"),
    # audit.log names keys by prefix; etl-embed is only a hash in keys.yaml, its prefix is in auth.json
    "A+auth": ("keys.yaml", "config/auth.json"),
}
NGINX = {"format": "nginx", "log_format": "combined_key"}
LEGACY = {**NGINX, "xinference_version": "2.11"}


@dataclass(frozen=True)
class Case:
    log: str  # relative to FIXTURES
    source: dict[str, str]  # the source's settings in rules.yaml
    key_set: str
    records: int | None = None  # access records in the file; None: every line is one

    @property
    def truth_field(self) -> str:
        """expected_alerts.json's flag for 'this log alone can show it'."""
        return "detectable_from_xinference_log" if self.source["format"] == "xinference" else (
            "detectable_from_gateway_log")


CASES = {
    "nginx-access_combined_key": Case("nginx/access_combined_key.log", NGINX, "A"),
    "nginx-access_json": Case("nginx/access_json.log", {"format": "json", "preset": "nginx-json"}, "A"),
    "caddy-access": Case("caddy/access.log", {"format": "json", "preset": "caddy"}, "A"),
    "caddy-access_log_credentials": Case(
        "caddy/access_log_credentials.log", {"format": "json", "preset": "caddy"}, "A"
    ),
    "haproxy-haproxy": Case("haproxy/haproxy.log", {"format": "haproxy"}, "A"),
    "haproxy-haproxy_stdout_raw": Case("haproxy/haproxy_stdout_raw.log", {"format": "haproxy"}, "A"),
    "legacy-text-nginx_access_combined_key": Case(
        "xinference-legacy/text/nginx_access_combined_key.log", LEGACY, "B"
    ),
    "legacy-json-nginx_access_combined_key": Case(
        "xinference-legacy/json/nginx_access_combined_key.log", LEGACY, "B"
    ),
    "xinference-audit": Case("xinference/audit.log", {"format": "xinference-audit"}, "A+auth"),
    "xinference-xinference": Case("xinference/xinference.log.gz", {"format": "xinference"}, "A", records=0),
    "legacy-text-xinference": Case(
        "xinference-legacy/text/xinference.log",
        {"format": "xinference", "xinference_version": "2.11"}, "B", records=176,
    ),
    "legacy-json-xinference": Case(
        "xinference-legacy/json/xinference.log",
        {"format": "xinference", "xinference_version": "2.11"}, "B", records=151,
    ),
}
NAMES = sorted(CASES)


def write_rules(case: Case, path: Path) -> Path:
    """rules/rules.yaml as shipped, with sources, keys and networks made for this fixture."""
    doc = yaml.safe_load(SHIPPED_RULES.read_text(encoding="utf-8"))
    doc["sources"] = [{"name": "gateway", "path": str(FIXTURES / case.log), **case.source}]
    doc["keys"] = [str(FIXTURES / k) for k in KEY_SETS[case.key_set]]
    doc["networks"] = {"internal": INTERNAL}
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: bytes
    stderr: bytes
    metrics: bytes


@dataclass(frozen=True)
class Replays:
    alerts: Run  # replay --metrics-out
    alerts_again: Run  # the same, another process and hash seed
    events: Run  # replay --events --metrics-out
    events_again: Run


def replay_processes(rules: Path, log: Path, out: Path) -> Replays:
    """Four replays of one file, run concurrently, each with its own PYTHONHASHSEED."""
    specs = {"alerts": [], "alerts_again": [], "events": ["--events"], "events_again": ["--events"]}
    procs: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    for seed, (name, extra) in enumerate(specs.items()):
        metrics = out / f"{name}.prom"
        argv = [sys.executable, "-m", "xinf_watch", "replay", "--rules", str(rules), "--source", "gateway"]
        argv += [*extra, "--metrics-out", str(metrics), str(log)]
        env = {**os.environ, "PYTHONHASHSEED": str(seed)}
        procs[name] = (
            subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env),
            metrics,
        )
    runs: dict[str, Run] = {}
    for name, (proc, metrics) in procs.items():
        stdout, stderr = proc.communicate(timeout=60)
        runs[name] = Run(proc.returncode, stdout, stderr, metrics.read_bytes() if metrics.exists() else b"")
    return Replays(**runs)


_cache: dict[str, Replays] = {}


@pytest.fixture
def replays(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Replays:
    """The replays of the case named by the test's `name` parameter, made once per session."""
    name: str = request.getfixturevalue("name")
    if name not in _cache:
        work = tmp_path_factory.mktemp(name)
        rules = write_rules(CASES[name], work / "rules.yaml")
        result = replay_processes(rules, FIXTURES / CASES[name].log, work)
        for label, run in vars(result).items():
            assert run.returncode == 0 and run.stderr == b"", (
                f"replay ({label}) of {CASES[name].log} failed with exit code {run.returncode}:\n"
                + run.stderr.decode(errors="replace")
            )
        _cache[name] = result
    return _cache[name]


# -- comparing with the goldens -------------------------------------------------------------------

_BUILD_INFO = re.compile(rb'^(xinf_watch_build_info\{version=)"([^"]*)"', re.MULTILINE)


def normalise_exposition(text: bytes) -> bytes:
    return _BUILD_INFO.sub(rb'\1"VERSION"', text)


def check_golden(path: Path, actual: bytes, update: bool) -> None:
    if update:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(actual)
        return
    shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    assert path.exists(), f"{shown} does not exist. {REGENERATE}"
    expected = path.read_bytes()
    if expected == actual:
        return
    diff = list(
        difflib.unified_diff(
            expected.decode(errors="replace").splitlines(),
            actual.decode(errors="replace").splitlines(),
            f"{shown} (golden)",
            "replay output",
            lineterm="",
            n=1,
        )
    )
    shown_diff = "\n".join(diff[:60]) + (
        f"\n... ({len(diff) - 60} more diff lines)" if len(diff) > 60 else ""
    )
    pytest.fail(f"{shown} differs from the replay output:\n{shown_diff}\n{REGENERATE}", pytrace=False)


@pytest.mark.parametrize("name", NAMES)
def test_exposition_matches_golden(name: str, replays: Replays, update_goldens: bool) -> None:
    versions = _BUILD_INFO.findall(replays.alerts.metrics)
    assert [v.decode() for _, v in versions] == [__version__]
    check_golden(GOLDEN / f"{name}.prom", normalise_exposition(replays.alerts.metrics), update_goldens)


@pytest.mark.parametrize("name", NAMES)
def test_events_match_golden(name: str, replays: Replays, update_goldens: bool) -> None:
    check_golden(GOLDEN / f"{name}.events.jsonl", replays.events.stdout, update_goldens)


@pytest.mark.parametrize("name", NAMES)
def test_alerts_match_golden(name: str, replays: Replays, update_goldens: bool) -> None:
    check_golden(GOLDEN / f"{name}.alerts.jsonl", replays.alerts.stdout, update_goldens)


def test_every_golden_file_belongs_to_a_case() -> None:
    expected = {f"{n}{ext}" for n in CASES for ext in (".prom", ".events.jsonl", ".alerts.jsonl")}
    assert sorted(p.name for p in GOLDEN.iterdir()) == sorted(expected)


# -- properties of the outputs --------------------------------------------------------------------


def line_counts(exposition: bytes) -> dict[str, float]:
    """result -> value of xinf_watch_lines_total for the source `gateway`."""
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(exposition.decode()):
        for sample in family.samples:
            if sample.name == "xinf_watch_lines_total" and sample.labels["source"] == "gateway":
                counts[sample.labels["result"]] = sample.value
    return counts


@pytest.mark.parametrize("name", NAMES)
def test_every_line_is_parsed(name: str, replays: Replays) -> None:
    case = CASES[name]
    raw = (FIXTURES / case.log).read_bytes()
    lines = len((gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).splitlines())
    records = lines if case.records is None else case.records
    counts = line_counts(replays.alerts.metrics)
    assert counts.get("unparsed", 0) == 0, counts
    assert counts.get("parsed", 0) == records, counts
    assert counts.get("parsed", 0) + counts.get("skipped", 0) == lines, counts
    assert len(replays.events.stdout.splitlines()) == records


@pytest.mark.parametrize("name", NAMES)
def test_promtool_accepts_exposition(name: str, replays: Replays) -> None:
    promtool = require_program("promtool")
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=replays.alerts.metrics, capture_output=True, timeout=30
    )
    assert checked.returncode == 0, (checked.stdout + checked.stderr).decode(errors="replace")


@pytest.mark.parametrize("name", NAMES)
def test_replay_is_deterministic(name: str, replays: Replays) -> None:
    """Separate processes with different hash seeds give byte-identical outputs."""
    assert replays.alerts_again.stdout == replays.alerts.stdout
    assert replays.alerts_again.metrics == replays.alerts.metrics
    assert replays.events_again.stdout == replays.events.stdout
    # --events changes what is printed, not what is counted
    assert replays.events.metrics == replays.alerts.metrics
    assert replays.events_again.metrics == replays.alerts.metrics


# -- the recording's ground truth -----------------------------------------------------------------

RULE_OF_ALERT = {
    "DENIED_BURST": "denied-burst",
    "UNKNOWN_KEY_SPRAYING": "key-spraying",
    "NEW_IP_FOR_KEY": "new-ip-for-key",
    "SCOPE_VIOLATION": "scope-violation",
    "WEBUI_EXTERNAL_ACCESS": "webui-external",
    "EXPIRED_KEY_USED": "expired-key-used",
    "REVOKED_KEY_USED": "revoked-key-used",
    "KEY_IP_NOT_ALLOWED": "key-outside-allowed-ips",
    "KEY_EXPIRING_SOON": "key-expiring",
    "EXPIRED_JWT_ACCEPTED": "expired-jwt-accepted",
}


def must_alerts(case: Case) -> list[dict[str, Any]]:
    """The recording's `must` alerts that this gateway log alone can show."""
    if case.key_set != "B":
        truth, log = FIXTURES / "expected_alerts.json", case.log
    else:
        truth, log = FIXTURES / "xinference-legacy" / "expected_alerts.json", case.log.split("/", 1)[1]
    return [
        a
        for a in orjson.loads(truth.read_bytes())["alerts"]
        if a["level"] == "must"
        and log in a["log_files"]
        and (case.source["format"] == "xinference-audit" or a.get(case.truth_field) is not False)
    ]


def iso(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@pytest.mark.parametrize("name", NAMES)
def test_recorded_must_alerts_are_raised(name: str, replays: Replays) -> None:
    alerts = [orjson.loads(line) for line in replays.alerts.stdout.splitlines()]
    missing = []
    for expected in must_alerts(CASES[name]):
        rule = RULE_OF_ALERT[expected["alert"]]
        if deliberately_quiet(expected):
            continue
        who = {expected["key_alias"], f"jwt:{expected.get('jwt_sub')}"}
        if not any(
            a["rule"] == rule
            and a["status"] == "firing"
            and (a["key"] in who or a["group"].get("ip") in expected["src_ips"])
            for a in alerts
        ):
            missing.append(f"{expected['scenario']}: {rule} ({expected['key_alias']}, {expected['src_ips']})")
    assert missing == []
