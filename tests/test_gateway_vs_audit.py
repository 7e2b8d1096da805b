"""The same traffic seen by a gateway and by Xinference's audit.log: do they tell the same story?

Set A (fixtures/README.md) sent each phase through one entry point while Xinference 4.1.0 wrote
audit.log for all of them. Here the gateway's events and audit.log's events of the same phase
are compared key by key. Xinference 4.1.0 writes one audit row for every request (public routes,
the WebUI and logins included; no JWT inference call was made), so the counts agree except for
requests where audit.log cannot name the credential the gateway saw:

* `Authorization: Bearer undefined` (the denied burst, 8 per phase): the gateway has a
  credential it cannot attribute (`other`, key `unknown`); audit.log writes `invalid_token` with
  auth_type jwt and no user, which names nobody (key `none`).
* `ip_banned` (the key spraying after Xinference's ban, 15 per phase): the gateway still logs the
  unknown key that was sent (`unknown`); Xinference rejects the address before looking at the
  key and audits no credential (`none`).

Caddy's default log redacts the Authorization header, so its events carry no key at all; but it
logs the upstream's `X-Request-Id`, which is audit.log's `request_id`: joining the two by request
id attributes every Caddy request.

The registry is the recording's keys.yaml plus config/auth.json (the key files Xinference was
set up from): keys.yaml gives etl-embed only as `key_sha256`, and audit.log names keys by their
7-character prefix, which a hash cannot give (see `test_a_key_known_only_by_hash_...`).
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from paths import FIXTURES

from xinf_watch.app.pipeline import Pipeline
from xinf_watch.config.schema import load_config
from xinf_watch.keys.files import load_registry
from xinf_watch.model import CredentialKind, Event, KeyState

SOURCES: list[dict[str, Any]] = [
    {"name": "audit", "path": "xinference/audit.log", "format": "xinference-audit"},
    {
        "name": "nginx",
        "path": "nginx/access_combined_key.log",
        "format": "nginx",
        "log_format": "combined_key",
    },
    {"name": "caddy", "path": "caddy/access.log", "format": "json", "preset": "caddy"},
    {"name": "caddy_creds", "path": "caddy/access_log_credentials.log", "format": "json", "preset": "caddy"},
]
KEYS = [FIXTURES / "keys.yaml", FIXTURES / "config/auth.json"]
BURST_UNDEFINED = 8  # `Bearer undefined` rows of b_denied_burst, per phase
SPRAY_BANNED = 15  # 429 rows of k_key_spraying, per phase


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def replay(tmp_path: Path, keys: list[Path]) -> dict[str, list[Event]]:
    """Every source's events, through the same pipeline the daemon and `replay` use."""
    sources = [{**s, "path": str(FIXTURES / s["path"])} for s in SOURCES]
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"sources": sources, "keys": [str(k) for k in keys], "rules": []}))
    pipeline = Pipeline.build(load_config(rules), load_registry(keys))
    out: dict[str, list[Event]] = {}
    for source in sources:
        events = out[source["name"]] = []
        for line in Path(source["path"]).read_text(encoding="utf-8").splitlines():
            record = pipeline.parse(source["name"], line)
            if record is not None:
                events.append(pipeline.process(source["name"], record)[0])
    return out


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Event]]:
    return replay(tmp_path_factory.mktemp("gateway-vs-audit"), KEYS)


def audit_of_phase(events: dict[str, list[Event]], phase: str) -> list[Event]:
    """audit.log rows written during the phase (phases are >= 3 s apart; a row follows its request)."""
    timeline = json.loads((FIXTURES / "timeline.json").read_text())
    (span,) = [p for p in timeline["phases"] if p["phase"] == phase]
    start, end = epoch(span["start"]) - 1, epoch(span["end"]) + 2
    return [e for e in events["audit"] if start <= e.ts <= end]


def by_key(events: list[Event]) -> Counter[str]:
    return Counter(e.key for e in events)


def test_nginx_and_audit_agree_key_by_key(events: dict[str, list[Event]]) -> None:
    gateway, audit = events["nginx"], audit_of_phase(events, "nginx")
    assert len(gateway) == len(audit) == 1613
    differences = BURST_UNDEFINED + SPRAY_BANNED
    assert by_key(gateway) - by_key(audit) == {"unknown": differences}
    assert by_key(audit) - by_key(gateway) == {"none": differences}
    # every key alias that names a key or a session agrees exactly
    named = {key for key in by_key(gateway) if key not in ("unknown", "none")}
    assert {key: by_key(gateway)[key] for key in named} == {key: by_key(audit)[key] for key in named}
    assert by_key(gateway)["etl-embed"] == 342  # README: background mix by key
    # 4.1.0 audits what docs/xinference/FACTS.md (main after 3.2.1) says is never audited:
    # the WebUI and the public routes
    webui_and_public = {"/", "/ui/", "/docs", "/openapi.json", "/token"}
    assert {
        e.path for e in audit if e.path in webui_and_public or e.path.startswith("/_next/")
    } >= webui_and_public
    # the same requests: client address, method, path and status
    assert Counter((e.ip, e.method, e.path, e.status) for e in gateway) == Counter(
        (e.ip, e.method, e.path, e.status) for e in audit
    )


def test_the_requests_the_two_attribute_differently(events: dict[str, list[Event]]) -> None:
    gateway, audit = events["nginx"], audit_of_phase(events, "nginx")
    timeline = json.loads((FIXTURES / "timeline.json").read_text())
    (phase,) = [p for p in timeline["phases"] if p["phase"] == "nginx"]
    only_gateway = Counter(
        (e.ip, e.credential, e.key, e.status, e.reason) for e in gateway if e.key == "unknown"
    ) - Counter(
        (e.ip, CredentialKind.API_KEY, "unknown", e.status, e.reason) for e in audit if e.key == "unknown"
    )
    assert only_gateway == {
        (phase["burst_ip"], CredentialKind.OTHER, "unknown", 401, None): BURST_UNDEFINED,
        (phase["spray_ip"], CredentialKind.API_KEY, "unknown", 429, None): SPRAY_BANNED,
    }
    audit_none = Counter(
        (e.ip, e.status, e.reason)
        for e in audit
        if e.key == "none" and e.status >= 400 and e.reason != "no_credentials"
    )
    assert audit_none == {
        (phase["burst_ip"], 401, "invalid_token"): BURST_UNDEFINED,
        (phase["spray_ip"], 429, "ip_banned"): SPRAY_BANNED,
    }


def test_reasons_named_from_the_gateway_status_match_what_audit_says(events: dict[str, list[Event]]) -> None:
    """The gateway's reasons come from status + key state (attribute.reason_from_status); where it
    names one, audit.log names the same. It does not name `Bearer undefined` nor a 429."""
    gateway, audit = events["nginx"], audit_of_phase(events, "nginx")
    named = Counter((e.key, e.reason) for e in gateway if e.reason is not None)
    from_audit = Counter((e.key, e.reason) for e in audit if e.reason in {r for _, r in named})
    assert named == from_audit
    assert named == {
        ("none", "no_credentials"): 35,
        ("unknown", "invalid_key"): 10,
        ("chatbot-prod", "insufficient_scope"): 3,
        ("mlops-ci", "insufficient_scope"): 1,
        ("jwt:analyst", "insufficient_scope"): 2,
        ("analyst-old-laptop", "key_disabled"): 3,
        ("mlops-2025-q3", "key_expired"): 2,
    }
    assert Counter(e.reason for e in gateway if e.status in (401, 403, 429) and e.reason is None) == {
        None: BURST_UNDEFINED + SPRAY_BANNED
    }


def test_key_states_agree(events: dict[str, list[Event]]) -> None:
    def states(es: list[Event]) -> set[tuple[str, KeyState]]:
        return {(e.key, e.key_state) for e in es if e.key not in ("unknown", "none")}

    assert states(events["nginx"]) == states(audit_of_phase(events, "nginx"))
    assert ("etl-archive", KeyState.EXPIRED) in states(events["nginx"])  # expired in keys.yaml only
    assert ("chatbot-legacy", KeyState.REVOKED) in states(events["nginx"])  # revoked in keys.yaml only


def test_caddy_requests_are_attributed_by_joining_audit_on_request_id(events: dict[str, list[Event]]) -> None:
    caddy, audit = events["caddy"], audit_of_phase(events, "caddy")
    assert len(caddy) == len(audit) == 313
    assert {e.key for e in caddy} == {"none"}  # Authorization redacted: Caddy alone names no key
    audit_by_id = {e.request_id: e for e in audit}
    assert len(audit_by_id) == len(audit)
    joined = [(e, audit_by_id.get(e.request_id)) for e in caddy]
    assert all(seen is not None for _, seen in joined)  # every Caddy request is in audit.log
    pairs = [(e, seen) for e, seen in joined if seen is not None]
    assert all((e.ip, e.method, e.path, e.status) == (a.ip, a.method, a.path, a.status) for e, a in pairs)
    assert by_key([a for _, a in pairs]) == by_key(audit)
    # Left without a key: no credential (3 e_no_auth + 32 of the burst), `Bearer undefined` (8),
    # banned (15), the WebUI and public routes (12) and the logins (3); unknown: the 10 sprayed keys
    # Xinference looked at before the ban. Every other Caddy request gets its key from audit.log.
    joined_keys = by_key([a for _, a in pairs])
    assert (joined_keys["none"], joined_keys["unknown"]) == (
        3 + 32 + BURST_UNDEFINED + SPRAY_BANNED + 12 + 3,
        10,
    )
    assert sum(joined_keys.values()) - joined_keys["none"] - joined_keys["unknown"] == 230


def test_caddy_with_credentials_agrees_with_audit_request_by_request(events: dict[str, list[Event]]) -> None:
    audit_by_id = {e.request_id: e for e in audit_of_phase(events, "caddy_creds")}
    caddy = events["caddy_creds"]
    assert len(caddy) == len(audit_by_id) == 313
    differ = Counter(
        (e.key, audit_by_id[e.request_id].key, audit_by_id[e.request_id].reason)
        for e in caddy
        if e.key != audit_by_id[e.request_id].key
    )
    assert differ == {
        ("unknown", "none", "invalid_token"): BURST_UNDEFINED,
        ("unknown", "none", "ip_banned"): SPRAY_BANNED,
    }


def test_a_key_known_only_by_hash_cannot_be_matched_to_audit_rows(tmp_path: Path) -> None:
    """keys.yaml alone gives etl-embed as `key_sha256`: the gateway (which hashes the key it sees)
    finds it, audit.log (which names a 7-character prefix) cannot: its rows stay `unknown`."""
    events = replay(tmp_path, [FIXTURES / "keys.yaml"])
    gateway, audit = events["nginx"], audit_of_phase(events, "nginx")
    assert by_key(gateway)["etl-embed"] == 342 and by_key(audit)["etl-embed"] == 0
    assert by_key(audit)["unknown"] - by_key(gateway)["unknown"] == 342 - BURST_UNDEFINED - SPRAY_BANNED
