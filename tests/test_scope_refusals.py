"""What refused a scope: the key's permissions, or advanced auth's limit on API keys.

Under Xinference's advanced auth (2.9+, the default from 3.0) an API key may only use routes
whose scopes are all in {models:read, models:list}, whatever its permissions say
(docs/xinference/FACTS.md 1.2); under `--auth-config` (era A) a key carries its owner's
permissions. On the real recordings: Xinference 4.1.0 answered its 403s "API keys can only
access model query and inference endpoints", 2.11.0 "Not enough permissions". `replay` runs as a
real process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from paths import FIXTURES

NGINX_LOG = FIXTURES / "nginx" / "access_combined_key.log"
LEGACY_LOG = FIXTURES / "xinference-legacy" / "text" / "nginx_access_combined_key.log"
LEGACY_KEYS = (FIXTURES / "xinference-legacy" / "keys.yaml", FIXTURES / "config" / "legacy" / "auth.json")
API_KEY_LIMIT = "API keys may only use models:list/models:read under Xinference's advanced auth"
# every refused request as an alert of its own (the shipped scope-violation counts them)
REFUSED = {"name": "scope-refused", "kind": "match", "by": ["key", "path"],
           "when": {"credential": "api_key", "scope_allowed": False}}  # fmt: skip


def replay(tmp_path: Path, log: Path, keys: tuple[Path, ...], version: str | None, *args: str) -> list[Any]:
    source = {"name": "gateway", "path": str(log), "format": "nginx", "log_format": "combined_key"}
    if version is not None:
        source["xinference_version"] = version
    rules = tmp_path / "rules.yaml"
    doc = {"sources": [source], "keys": [str(k) for k in keys], "rules": [REFUSED]}
    rules.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "xinf_watch", "replay", "--rules", str(rules), *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def recorded_403s(path: Path, detail: str, **match: str) -> set[tuple[str, str, str]]:
    """(key alias, method, path) of the recorded requests answered 403 with `detail`."""
    out = set()
    for line in path.read_text().splitlines():
        e = json.loads(line)
        if e["status"] == 403 and detail in e["detail"] and all(e[k] == v for k, v in match.items()):
            out.add((e["key_alias"], e["method"], e["path"]))
    return out


def test_an_admin_key_refused_under_advanced_auth_is_said_to_be_refused_by_the_api_key_limit(
    tmp_path: Path,
) -> None:
    doc = yaml.safe_load((FIXTURES / "keys.yaml").read_text(encoding="utf-8"))
    next(k for k in doc["keys"] if k["alias"] == "mlops-ci")["permissions"] = ["admin"]
    keys = tmp_path / "keys.yaml"
    keys.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")

    events = replay(tmp_path, NGINX_LOG, (keys,), None, "--events")
    refused = [e for e in events if e["scope_allowed"] is False]
    # exactly the requests Xinference 4.1.0 refused with its API-key message, each said so
    limit = "API keys can only access model query and inference endpoints"
    assert {(e["key"], e["method"], e["path"]) for e in refused} == recorded_403s(
        FIXTURES / "events.jsonl", limit, phase="nginx"
    )
    assert {e["scope_denied_by"] for e in refused} == {"api_key_limit"}
    assert {e["scope_denied_by"] for e in events if e["scope_allowed"] is not False} == {None}

    alerts = {
        a["key"] + " " + a["group"]["path"]: a["summary"] for a in replay(tmp_path, NGINX_LOG, (keys,), None)
    }
    assert alerts["mlops-ci /v1/models"] == (
        f"key mlops-ci used from 127.0.1.52 for models:write ({API_KEY_LIMIT}): POST /v1/models -> 403"
        " (insufficient_scope)"
    )
    assert len(alerts) == 4 and all(API_KEY_LIMIT in s and "permissions" not in s for s in alerts.values())

    # the same key under --auth-config (era A) carries admin: nothing refuses it
    legacy = replay(tmp_path, NGINX_LOG, (keys,), "2.11", "--events")
    assert not [e for e in legacy if e["key"] == "mlops-ci" and e["scope_allowed"] is False]


def test_a_key_refused_by_its_permissions_is_said_to_be(tmp_path: Path) -> None:
    events = replay(tmp_path, LEGACY_LOG, LEGACY_KEYS, "2.11", "--events")
    refused = [e for e in events if e["scope_allowed"] is False]
    assert {(e["key"], e["method"], e["path"]) for e in refused} == recorded_403s(
        FIXTURES / "xinference-legacy" / "events.jsonl", "Not enough permissions", run="text", via="nginx"
    )
    assert {e["scope_denied_by"] for e in refused} == {"permissions"}
    summaries = [a["summary"] for a in replay(tmp_path, LEGACY_LOG, LEGACY_KEYS, "2.11")]
    assert summaries and all("(not in its permissions)" in s and "API keys" not in s for s in summaries)
