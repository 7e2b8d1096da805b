"""`xinf-watch keys audit` (docs/DESIGN.md section 2): the key hygiene report on the real fixture key files.

Set A is Xinference 4.1.0's keys (config/auth.json, migrated, plus keys.yaml), judged just after
the recording (2026-11-28T07:10:00Z); set B the legacy 2.11.0 `--auth-config` keys. The rules
themselves are also tested on hand-made registries through `audit_keys`, which is pure.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from ipaddress import ip_network
from pathlib import Path

import orjson
import pytest
import yaml
from paths import FIXTURES

from xinf_watch.app.cli import main
from xinf_watch.keys.audit import KINDS, SEVERITY, Finding, audit_keys, run_keys_audit
from xinf_watch.keys.registry import KeyEntry, KeyRegistry, UserEntry, sha256_hex
from xinf_watch.model import Severity

SET_A = (FIXTURES / "config" / "auth.json", FIXTURES / "keys.yaml")
SET_B = (FIXTURES / "config" / "legacy" / "auth.json", FIXTURES / "xinference-legacy" / "keys.yaml")
LEGACY_ONLY = (FIXTURES / "config" / "legacy" / "auth.json",)
AT_A = "2026-11-28T07:10:00Z"
AT_B = "2026-11-28T07:15:00Z"
DAY = 86400.0
NOW = datetime(2026, 11, 28, 7, 10, tzinfo=UTC).timestamp()
FIELDS = {"key", "owner", "kind", "severity", "detail"}

# Set A at AT_A, worked out by hand from keys.yaml (dates relative to the recording) and auth.json.
SET_A_FINDINGS = {
    ("etl-archive", "expired", "critical"),  # expired 2026-11-08, not revoked
    ("mlops-2025-q3", "expired", "critical"),  # expired 2026-10-01, not revoked
    ("etl-embed", "expiring", "warning"),  # expires 2026-11-30, within 7d
    ("platform-admin", "admin", "warning"),
    # sk- keys (all of auth.json, migrated): Xinference gives them no expiry, whatever keys.yaml says
    *{
        (alias, "no_expiry", "warning")
        for alias in ("platform-admin", "chatbot-prod", "chatbot-staging", "analyst-notebook")
        + ("mlops-ci", "etl-embed", "etl-archive", "finance-legacy")
    },
    # created more than 90 days ago, not expired (etl-archive is, so it is not also too_old)
    *{
        (alias, "too_old", "warning")
        for alias in ("platform-admin", "chatbot-prod", "analyst-notebook", "mlops-ci", "etl-embed")
        + ("finance-legacy",)
    },
    ("chatbot-legacy", "revoked", "info"),
    ("analyst-old-laptop", "revoked", "info"),
    # live keys without allowed_ips (platform-admin and finance-bot have them)
    *{
        (alias, "no_allowlist", "info")
        for alias in ("chatbot-prod", "chatbot-staging", "analyst-notebook", "mlops-ci", "etl-embed")
        + ("finance-legacy",)
    },
}


def write_rules(tmp_path: Path, keys: Sequence[Path]) -> Path:
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"keys": [str(k) for k in keys]}), encoding="utf-8")
    return rules


def audit(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, keys: Sequence[Path], *options: str
) -> tuple[int, str, str]:
    code = main(["keys", "audit", "--rules", str(write_rules(tmp_path, keys)), *options])
    out, err = capsys.readouterr()
    return code, out, err


def json_findings(out: str) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in out.splitlines()]


def triples(out: str) -> set[tuple[object, object, object]]:
    return {(f["key"], f["kind"], f["severity"]) for f in json_findings(out)}


# -- the fixtures -------------------------------------------------------------------------------


def test_set_a_findings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = audit(capsys, tmp_path, SET_A, "--at", AT_A, "--json")
    assert code == 1
    assert triples(out) == SET_A_FINDINGS
    assert len(json_findings(out)) == len(SET_A_FINDINGS)  # no finding twice
    assert err == (
        "keys audit at 2026-11-28T07:10:00Z: 12 keys, 2 critical, 16 warning, 8 info"
        " (--fail-on critical: findings at or above critical)\n"
    )


def test_set_a_details(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = audit(capsys, tmp_path, SET_A, "--at", AT_A, "--json")
    detail = {(f["key"], f["kind"]): str(f["detail"]) for f in json_findings(out)}
    assert detail["etl-embed", "expiring"].startswith("expires 2026-11-30T07:05:55Z (in 1d23h)")
    assert detail["etl-archive", "expired"].startswith("expired 2026-11-08T07:05:55Z (20d ago)")
    assert detail["finance-legacy", "too_old"].startswith("created 2025-10-24T07:05:55Z, 400d ago")
    assert "cannot expire in Xinference" in detail["chatbot-prod", "no_expiry"]
    assert "all its owner's permissions" in detail["platform-admin", "admin"]


def test_table_is_sorted_by_severity_then_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = audit(capsys, tmp_path, SET_A, "--at", AT_A)
    assert code == 1
    header, *rows = out.splitlines()
    assert header.split() == ["KEY", "OWNER", "KIND", "SEVERITY", "DETAIL"]
    cells = [row.split()[:4] for row in rows]
    assert {(c[0], c[2], c[3]) for c in cells} == SET_A_FINDINGS and len(rows) == len(SET_A_FINDINGS)
    rank = {"critical": 0, "warning": 1, "info": 2}
    order = [(rank[c[3]], c[0], KINDS.index(c[2])) for c in cells]
    assert order == sorted(order)
    assert cells[0] == ["etl-archive", "etl", "expired", "critical"]
    # the columns line up: every row's detail starts where the header's DETAIL does
    column = header.index("DETAIL")
    assert all(row[column - 2 : column] == "  " and row[column] != " " for row in rows)


def test_table_and_json_say_the_same(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, table, table_err = audit(capsys, tmp_path, SET_A, "--at", AT_A)
    _, lines, json_err = audit(capsys, tmp_path, SET_A, "--at", AT_A, "--json")
    assert [row.split()[0] for row in table.splitlines()[1:]] == [f["key"] for f in json_findings(lines)]
    assert table_err == json_err


def test_json_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = audit(capsys, tmp_path, SET_A, "--at", AT_A, "--json")
    assert out.endswith("\n")
    aliases = {alias for alias, _, _ in SET_A_FINDINGS}
    for finding in json_findings(out):
        assert set(finding) == FIELDS
        assert finding["kind"] in KINDS
        assert finding["severity"] == SEVERITY[str(finding["kind"])].value
        assert finding["key"] in aliases
        assert isinstance(finding["owner"], str) and isinstance(finding["detail"], str)


def test_set_b_legacy_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = audit(capsys, tmp_path, SET_B, "--at", AT_B, "--json")
    assert code == 0  # warnings only
    found = triples(out)
    aliases = ("root-console", "rag-prod", "rag-batch", "dashboard-ro", "deployer-ci")
    assert {a for a, kind, _ in found if kind == "no_expiry"} == set(aliases)  # keys.yaml dates or not
    assert {a for a, kind, _ in found if kind == "admin"} == {"root-console"}
    assert {a for a, kind, _ in found if kind == "too_old"} == {"root-console", "rag-prod", "deployer-ci"}
    assert "0 critical, 9 warning, 5 info (--fail-on critical: ok)" in err


def test_auth_json_only_registry_reports_no_expiry_for_every_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = audit(capsys, tmp_path, LEGACY_ONLY, "--at", AT_B, "--json")
    assert code == 0
    no_expiry = [f for f in json_findings(out) if f["kind"] == "no_expiry"]
    assert len(no_expiry) == 5 and "5 keys" in err
    assert {f["owner"] for f in no_expiry} == {"root", "svc-rag", "dashboard", "deployer"}
    for finding in no_expiry:
        assert str(finding["detail"]).startswith("cannot expire: a legacy sk- key")
    # no created_at in an auth config: nothing is too old; root's key carries admin
    assert {f["kind"] for f in json_findings(out)} == {"no_expiry", "admin", "no_allowlist"}
    assert [f["owner"] for f in json_findings(out) if f["kind"] == "admin"] == ["root"]


# -- exit codes ---------------------------------------------------------------------------------


def clean_keys(tmp_path: Path, *, allowed_ips: bool) -> Path:
    """One well-kept native key: fresh, expiring in a year, least privilege."""
    entry = {
        "key_sha256": hashlib.sha256(b"not a real key").hexdigest(),
        "alias": "tidy",
        "owner": "alice",
        "permissions": ["models:list", "models:read"],
        "created_at": "2026-11-01T00:00:00Z",
        "expires_at": "2027-11-01T00:00:00Z",
    }
    if allowed_ips:
        entry["allowed_ips"] = ["10.1.0.0/16"]
    path = tmp_path / f"keys-{allowed_ips}.yaml"
    path.write_text(yaml.safe_dump({"keys": [entry]}), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("keys", "codes"),
    [
        ("set_a", {"critical": 1, "warning": 1, "info": 1}),  # 2 critical
        ("set_b", {"critical": 0, "warning": 1, "info": 1}),  # warnings at most
        ("info_only", {"critical": 0, "warning": 0, "info": 1}),  # no allowed_ips
        ("clean", {"critical": 0, "warning": 0, "info": 0}),  # nothing at all
    ],
)
def test_exit_code_per_fail_on(
    keys: str, codes: dict[str, int], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = {
        "set_a": SET_A,
        "set_b": SET_B,
        "info_only": (clean_keys(tmp_path, allowed_ips=False),),
        "clean": (clean_keys(tmp_path, allowed_ips=True),),
    }[keys]
    for fail_on, expected in codes.items():
        code, out, err = audit(capsys, tmp_path, files, "--at", AT_B, "--fail-on", fail_on)
        assert code == expected, (fail_on, err)
        assert err.endswith(
            f"(--fail-on {fail_on}: {'ok' if expected == 0 else f'findings at or above {fail_on}'})\n"
        )


def test_no_findings_prints_nothing_on_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for options in ((), ("--json",)):
        code, out, err = audit(
            capsys, tmp_path, (clean_keys(tmp_path, allowed_ips=True),), "--at", AT_A, *options
        )
        assert (code, out) == (0, "")
        assert err.startswith("keys audit at 2026-11-28T07:10:00Z: 1 keys, 0 critical, 0 warning, 0 info")


def test_rules_without_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = audit(capsys, tmp_path, (), "--at", AT_A)
    assert (code, out) == (0, "")
    assert "0 keys" in err


# -- options ------------------------------------------------------------------------------------


def test_within_and_max_age(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = audit(capsys, tmp_path, SET_A, "--at", AT_A, "--json", "--within", "30d", "--max-age", "365d")
    found = triples(out)
    assert {a for a, kind, _ in found if kind == "expiring"} == {"etl-embed", "chatbot-staging"}
    assert {a for a, kind, _ in found if kind == "too_old"} == {"finance-legacy"}
    _, out, _ = audit(capsys, tmp_path, SET_A, "--at", AT_A, "--json", "--within", "1d")
    assert not {a for a, kind, _ in triples(out) if kind == "expiring"}


@pytest.mark.parametrize("at", ["2026-11-28T07:10:00Z", "2026-11-28T07:10:00", "2026-11-28T08:10:00+01:00"])
def test_at_spellings(at: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, err = audit(capsys, tmp_path, SET_A, "--at", at, "--json")
    assert triples(out) == SET_A_FINDINGS
    assert err.startswith("keys audit at 2026-11-28T07:10:00Z:")


def test_now_comes_from_the_clock(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from io import StringIO

    out, err = StringIO(), StringIO()
    code = run_keys_audit(
        write_rules(tmp_path, SET_A), at=None, within=7 * DAY, max_age=90 * DAY,
        fail_on=Severity.CRITICAL, as_json=True, out=out, err=err, clock=lambda: NOW,
    )  # fmt: skip
    assert code == 1 and triples(out.getvalue()) == SET_A_FINDINGS
    assert err.getvalue().startswith(f"keys audit at {AT_A}:")


@pytest.mark.parametrize(
    "options",
    [
        ["--at", "yesterday"],
        ["--within", "a week"],
        ["--max-age", "-3d"],
        ["--fail-on", "error"],
    ],
)
def test_bad_options_are_usage_errors(
    options: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = write_rules(tmp_path, SET_A)
    with pytest.raises(SystemExit) as exited:
        main(["keys", "audit", "--rules", str(rules), *options])
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and options[0] in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [["keys"], ["keys", "audit"], ["keys", "rotate", "--rules", "x.yaml"]])
def test_incomplete_commands_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert capsys.readouterr().out == ""


def test_missing_rules_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["keys", "audit", "--rules", str(tmp_path / "nope.yaml")])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert err == f"{tmp_path / 'nope.yaml'}: cannot read: No such file or directory\n"


def test_broken_key_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text("keys:\n  - {key: sk-Yn9ggOg8DoIku, alias: a, revoked: maybe}\n", encoding="utf-8")
    code, out, err = audit(capsys, tmp_path, [keys], "--at", AT_A)
    assert (code, out) == (2, "")
    assert len(err.splitlines()) == 1 and err.startswith(f"{keys}:"), err
    assert "sk-Yn9g" not in err


def test_as_a_process(tmp_path: Path) -> None:
    rules = write_rules(tmp_path, SET_A)
    done = subprocess.run(
        [sys.executable, "-m", "xinf_watch", "keys", "audit", "--rules", str(rules), "--at", AT_A],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines()[1].split()[:4] == ["etl-archive", "etl", "expired", "critical"]
    assert len(done.stderr.splitlines()) == 1


# -- no key material in any output ----------------------------------------------------------------

_KEY = re.compile(r"\b(?:sk|xf)-[A-Za-z0-9]{13,48}\b")
_SHA = re.compile(r"\b[0-9a-f]{64}\b")


def fixture_key_material() -> set[str]:
    """Every fixture key, its 7-char prefix (what Xinference shows) and its SHA-256 (and 8 hex of it)."""
    material: set[str] = set()
    for path in (*SET_A, *SET_B):
        text = path.read_text(encoding="utf-8")
        for key in _KEY.findall(text):
            material |= {key, key[:7], sha256_hex(key), sha256_hex(key)[:8]}
        for sha in _SHA.findall(text):
            material |= {sha, sha[:8]}
    return material


def test_no_key_or_key_prefix_in_any_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    material = fixture_key_material()
    assert len(material) >= 4 * 17  # 17 keys: set A's 12, set B's 5
    outputs = []
    for files, at in ((SET_A, AT_A), (SET_B, AT_B), (LEGACY_ONLY, AT_B)):
        for options in ((), ("--json",)):
            for fail_on in ("info", "critical"):
                code, out, err = audit(capsys, tmp_path, files, "--at", at, "--fail-on", fail_on, *options)
                outputs.append(out + err)
    shown = sorted({m[:7] + "..." for m in material for text in outputs if m in text})
    assert not shown


# -- the rules, on hand-made registries ----------------------------------------------------------


def entry(alias: str, **fields: object) -> KeyEntry:
    values: dict[str, object] = {
        "alias": alias,
        "owner": "alice",
        "permissions": frozenset({"models:read"}),
        "created_at": NOW - 10 * DAY,
        "expires_at": NOW + 100 * DAY,
        "revoked": False,
        "allowed_ips": (ip_network("10.0.0.0/8"),),
        "sha256": sha256_hex(f"xf-{alias}"),
        "prefix": f"xf-{alias}"[:7],
    }
    values.update(fields)
    return KeyEntry(**values)  # type: ignore[arg-type]


def kinds(findings: list[Finding], alias: str) -> list[str]:
    return [f.kind for f in findings if f.key == alias]


def test_a_well_kept_key_has_no_finding() -> None:
    assert audit_keys(KeyRegistry([entry("tidy")]), NOW) == []


def test_expiry_boundaries() -> None:
    registry = KeyRegistry(
        [
            entry("at-now", expires_at=NOW),  # expires_at <= now: expired
            entry("edge", expires_at=NOW + 7 * DAY),  # exactly `within` away: expiring
            entry("beyond", expires_at=NOW + 7 * DAY + 1),
            entry("never", expires_at=None),
        ]
    )
    findings = audit_keys(registry, NOW)
    assert kinds(findings, "at-now") == ["expired"]  # not live: no allowlist or age findings
    assert kinds(findings, "edge") == ["expiring"]
    assert kinds(findings, "beyond") == []
    assert kinds(findings, "never") == ["no_expiry"]
    never = next(f for f in findings if f.key == "never")
    assert never.detail.startswith("never expires") and never.severity is Severity.WARNING
    assert kinds(audit_keys(registry, NOW, within=0), "edge") == []


def test_max_age_boundary() -> None:
    registry = KeyRegistry(
        [entry("old", created_at=NOW - 90 * DAY), entry("older", created_at=NOW - 90 * DAY - 1)]
    )
    findings = audit_keys(registry, NOW)
    assert kinds(findings, "old") == [] and kinds(findings, "older") == ["too_old"]
    assert kinds(audit_keys(registry, NOW, max_age=30 * DAY), "old") == ["too_old"]


def test_legacy_key_cannot_expire_whatever_its_date() -> None:
    registry = KeyRegistry([entry("legacy", prefix="sk-abcd", expires_at=NOW + 300 * DAY)])
    [finding] = audit_keys(registry, NOW)
    assert (finding.kind, finding.severity) == ("no_expiry", Severity.WARNING)
    assert finding.detail.startswith("cannot expire in Xinference: a legacy sk- key")


def test_revoked_key_gets_only_revoked() -> None:
    registry = KeyRegistry(
        [entry("gone", revoked=True, permissions=frozenset({"admin"}), expires_at=None, owner=None)]
    )
    [finding] = audit_keys(registry, NOW)
    assert (finding.kind, finding.severity, finding.detail.split(";")[0]) == (
        "revoked",
        Severity.INFO,
        "revoked",
    )


def test_disabled_owner_counts_as_revoked() -> None:
    registry = KeyRegistry(
        [entry("bobs", owner="bob")], [UserEntry("bob", frozenset({"admin"}), disabled=True)]
    )
    [finding] = audit_keys(registry, NOW)
    assert finding.kind == "revoked" and finding.detail.startswith("its owner bob is disabled")


def test_admin_from_the_key_or_its_owner() -> None:
    registry = KeyRegistry(
        [entry("own", permissions=frozenset({"admin"})), entry("inherited", owner="root", permissions=None)],
        [UserEntry("root", frozenset({"admin", "models:read"}))],
    )
    findings = audit_keys(registry, NOW)
    assert kinds(findings, "own") == kinds(findings, "inherited") == ["admin"]
    assert next(f for f in findings if f.key == "inherited").detail.startswith("inherits admin from root")


def test_shared_is_a_key_without_owner() -> None:
    [finding] = audit_keys(KeyRegistry([entry("anyone", owner=None)]), NOW)
    assert (finding.kind, finding.severity, finding.owner) == ("shared", Severity.WARNING, None)


def test_unknown_permissions() -> None:
    registry = KeyRegistry(
        [
            entry("unlisted", permissions=None),  # owner alice is known only from keys.yaml: no permissions
            entry("typo", permissions=frozenset({"model:read", "models:list"})),
            entry("old-names", permissions=frozenset({"models:start", "models:stop", "cache:list"})),
        ]
    )
    findings = audit_keys(registry, NOW)
    assert kinds(findings, "unlisted") == kinds(findings, "typo") == ["unknown_permissions"]
    assert kinds(findings, "old-names") == []
    assert "model:read" in next(f for f in findings if f.key == "typo").detail
    assert all(f.severity is Severity.INFO for f in findings)


def test_no_allowlist_only_for_live_keys() -> None:
    registry = KeyRegistry([entry("open", allowed_ips=()), entry("dead", allowed_ips=(), expires_at=NOW - 1)])
    findings = audit_keys(registry, NOW)
    assert kinds(findings, "open") == ["no_allowlist"] and kinds(findings, "dead") == ["expired"]


def test_audit_is_pure_and_ordered() -> None:
    registry = KeyRegistry(
        [
            entry("b", allowed_ips=()),
            entry("a", owner=None),
            entry("c", expires_at=NOW - DAY),
            entry("a2", revoked=True),
        ]
    )
    first, second = audit_keys(registry, NOW), audit_keys(registry, NOW)
    assert first == second
    assert [(f.severity.value, f.key, f.kind) for f in first] == [
        ("critical", "c", "expired"),
        ("warning", "a", "shared"),
        ("info", "a2", "revoked"),
        ("info", "b", "no_allowlist"),
    ]
    assert audit_keys(registry, NOW - 2 * DAY) != first  # judged at the time given
