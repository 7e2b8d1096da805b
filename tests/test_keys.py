"""Key registry: loading the real fixture key files and attributing the real logged credentials."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from paths import FIXTURES

from xinf_watch.keys import registry as keys_module
from xinf_watch.keys.files import KeyFileError, load_registry
from xinf_watch.keys.registry import Attribution, KeyEntry, KeyRegistry, UserEntry
from xinf_watch.model import CredentialKind, KeyHint, KeyState

SET_A = [FIXTURES / "config" / "auth.json", FIXTURES / "keys.yaml"]
SET_B = [FIXTURES / "config" / "legacy" / "auth.json", FIXTURES / "xinference-legacy" / "keys.yaml"]
RECORDING_A = datetime.fromisoformat("2026-11-28T07:10:00Z").timestamp()

# The fixture README's key table: state of each keys.yaml key during the recording.
EXPECTED_STATE_A = {
    "platform-admin": KeyState.VALID,
    "chatbot-prod": KeyState.VALID,
    "chatbot-staging": KeyState.VALID,
    "chatbot-legacy": KeyState.REVOKED,
    "analyst-notebook": KeyState.VALID,
    "mlops-ci": KeyState.VALID,
    "etl-embed": KeyState.VALID,
    "etl-archive": KeyState.EXPIRED,
    "finance-legacy": KeyState.VALID,
    "finance-bot": KeyState.VALID,
    "analyst-old-laptop": KeyState.REVOKED,
    "mlops-2025-q3": KeyState.EXPIRED,
}
PREFIX_ALIAS_A = {  # README: prefix (api_key_prefix in audit.log) -> alias
    "sk-k5TV": "platform-admin", "sk-Yn9g": "chatbot-prod", "sk-Ff2x": "chatbot-staging",
    "sk-duSt": "chatbot-legacy", "sk-QfeR": "analyst-notebook", "sk-OTyp": "mlops-ci",
    "sk-7jXW": "etl-embed", "sk-0fEi": "etl-archive", "sk-XrTI": "finance-legacy",
    "xf-WBrc": "finance-bot", "xf-jTbW": "analyst-old-laptop", "xf-LlCM": "mlops-2025-q3",
}  # fmt: skip


def ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def events(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def raw_keys() -> set[str]:
    """Every raw key and token that appears anywhere in the fixtures."""
    found: set[str] = set()
    for path in (FIXTURES / "keys.yaml", FIXTURES / "xinference-legacy" / "keys.yaml"):
        found |= {k["key"] for k in yaml.safe_load(path.read_text())["keys"] if "key" in k}
    for path in (SET_A[0], SET_B[0]):
        for user in json.loads(path.read_text())["user_config"]:
            found |= set(user["api_keys"])
    for path in (FIXTURES / "events.jsonl", FIXTURES / "xinference-legacy" / "events.jsonl"):
        found |= {e["auth_header"].split()[-1] for e in events(path) if e["auth_header"]}
    found.discard("undefined")
    return found


@pytest.fixture(scope="module")
def reg_a() -> KeyRegistry:
    return load_registry(SET_A)


@pytest.fixture(scope="module")
def reg_b() -> KeyRegistry:
    return load_registry(SET_B)


def jwt(payload: dict[str, Any]) -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(payload)}.c2lnbmF0dXJl"


# --- set A: Xinference 4.1.0 ---------------------------------------------------------------------


def test_set_a_loads_every_key_of_keys_yaml(reg_a: KeyRegistry) -> None:
    assert {e.alias for e in reg_a.entries} == set(EXPECTED_STATE_A)
    # auth.json's etl key sk-7jXW... is keys.yaml's etl-embed (given there only as key_sha256)
    assert len(reg_a) == 12
    assert reg_a.known_users() == {"platform", "chatbot", "analyst", "mlops", "etl", "finance"}
    assert {e.prefix: e.alias for e in reg_a.entries} == PREFIX_ALIAS_A


def test_every_alias_resolves_from_its_logged_header_with_the_readme_state(reg_a: KeyRegistry) -> None:
    seen: set[str] = set()
    for e in events(FIXTURES / "events.jsonl"):
        if e["key_alias"] not in EXPECTED_STATE_A:
            continue
        got = reg_a.resolve(e["auth_header"], ts(e["t_done"]))
        assert (got.key, got.state, got.credential) == (
            e["key_alias"], EXPECTED_STATE_A[e["key_alias"]], CredentialKind.API_KEY,
        )  # fmt: skip
        assert got.is_api_key and got.fingerprint is None
        seen.add(e["key_alias"])
    assert seen == set(EXPECTED_STATE_A) - {"finance-legacy"}  # the one key not used in the traffic
    got = reg_a.resolve("Bearer sk-XrTI5dxnN0G1e", RECORDING_A)
    assert (got.key, got.state, got.owner) == ("finance-legacy", KeyState.VALID, "finance")


def test_metadata_comes_from_keys_yaml_and_permissions_from_it_first(reg_a: KeyRegistry) -> None:
    admin = reg_a.resolve("Bearer sk-k5TVo3eVxM1FM", RECORDING_A)
    assert admin.owner == "platform" and admin.permissions == frozenset({"admin"})
    assert [str(n) for n in admin.allowed_ips] == ["127.0.1.10/32"]
    # keys.yaml gives mlops-ci fewer permissions than its user has in auth.json (no models:register)
    mlops = reg_a.resolve("Bearer sk-OTypA0RKoohv9", RECORDING_A)
    assert mlops.permissions == frozenset({"models:list", "models:read", "models:start", "models:stop"})


def test_etl_embed_resolves_although_keys_yaml_gives_only_its_sha256(reg_a: KeyRegistry) -> None:
    entry = reg_a.by_alias("etl-embed")
    assert entry is not None and entry.prefix == "sk-7jXW"  # the prefix comes from auth.json
    assert reg_a.resolve("Bearer sk-7jXWSdcw9Dwj8", RECORDING_A).key == "etl-embed"
    alone = load_registry([FIXTURES / "keys.yaml"])
    got = alone.resolve("Bearer sk-7jXWSdcw9Dwj8", RECORDING_A)
    assert (got.key, got.owner, got.state) == ("etl-embed", "etl", KeyState.VALID)
    # expires two days after the recording: the state follows the event time, not the cache
    expires = ts("2026-11-30T07:05:55Z")
    assert alone.resolve("Bearer sk-7jXWSdcw9Dwj8", expires - 1).state == KeyState.VALID
    assert alone.resolve("Bearer sk-7jXWSdcw9Dwj8", expires).state == KeyState.EXPIRED
    entry = alone.by_alias("etl-embed")
    assert entry is not None and alone.state_of(entry, expires) == KeyState.EXPIRED
    assert alone.resolve("Bearer sk-7jXWSdcw9Dwj8", expires - 1).state == KeyState.VALID


def test_a_sha256_hex_credential_resolves(reg_a: KeyRegistry) -> None:
    digest = hashlib.sha256(b"sk-Yn9ggOg8DoIku").hexdigest()
    for credential in (digest, digest.upper(), f"Bearer {digest}"):
        assert reg_a.resolve(credential, RECORDING_A).key == "chatbot-prod"
    unknown_key = "sk-AAAAAAAAAAAAA"
    hashed = reg_a.resolve(hashlib.sha256(unknown_key.encode()).hexdigest(), RECORDING_A)
    raw = reg_a.resolve(f"Bearer {unknown_key}", RECORDING_A)
    assert (hashed.key, hashed.state, hashed.credential) == (
        "unknown",
        KeyState.UNKNOWN,
        CredentialKind.API_KEY,
    )
    assert hashed.fingerprint == raw.fingerprint  # a hashing gateway and a raw one count the same key


def test_jwt_sessions_of_set_a_resolve_to_their_user(reg_a: KeyRegistry) -> None:
    perms = {"platform": frozenset({"admin"}), "analyst": frozenset({"models:list", "models:read"})}
    n = 0
    for e in events(FIXTURES / "events.jsonl"):
        if not (e["key_alias"] or "").endswith("/jwt"):
            continue
        user = e["key_alias"].removesuffix("/jwt")
        got = reg_a.resolve(e["auth_header"], ts(e["t_done"]))
        assert (got.credential, got.key, got.owner, got.state) == (
            CredentialKind.JWT, f"jwt:{user}", user, KeyState.VALID,
        )  # fmt: skip
        assert not got.is_api_key and got.fingerprint is None
        if user in perms:
            assert got.permissions == perms[user]
        n += 1
    assert n == 40


def test_the_deployer_jwt_of_set_b_is_expired_at_its_reuse(reg_b: KeyRegistry) -> None:
    for run in ("text", "json"):
        timeline = json.loads((FIXTURES / "xinference-legacy" / f"timeline-{run}.json").read_text())
        exp = ts(timeline["jwt_exp"])
        jwt_events = [
            e for e in events(FIXTURES / "xinference-legacy" / "events.jsonl")
            if e["run"] == run and e["key_alias"] == "deployer/jwt"
        ]  # fmt: skip
        assert {e["scenario"] for e in jwt_events} == {"g_jwt_login", "x_expired_jwt"}
        for e in jwt_events:
            got = reg_b.resolve(e["auth_header"], ts(e["t_done"]))
            expected = KeyState.EXPIRED if e["scenario"] == "x_expired_jwt" else KeyState.VALID
            assert (got.key, got.state) == ("jwt:deployer", expected)
            deployer = frozenset(
                {"models:list", "models:read", "models:register", "models:start", "models:stop"}
            )
            assert got.permissions == deployer
            # the payload's exp is the timeline's jwt_exp in whole seconds
            payload = e["auth_header"].split(".")[1]
            assert json.loads(base64.urlsafe_b64decode(payload + "=="))["exp"] == int(exp)
            assert reg_b.resolve(e["auth_header"], int(exp)).state == KeyState.VALID
            assert reg_b.resolve(e["auth_header"], int(exp) + 0.001).state == KeyState.EXPIRED


def test_set_b_keys_resolve(reg_b: KeyRegistry) -> None:
    states: dict[str, set[KeyState]] = {}
    for e in events(FIXTURES / "xinference-legacy" / "events.jsonl"):
        alias = e["key_alias"] or ""
        if alias in {"rag-prod", "rag-batch", "dashboard-ro", "deployer-ci"}:
            got = reg_b.resolve(e["auth_header"], ts(e["t_done"]))
            assert got.key == alias
            states.setdefault(alias, set()).add(got.state)
    assert states == {a: {KeyState.VALID} for a in ("rag-prod", "rag-batch", "dashboard-ro", "deployer-ci")}


def test_unknown_keys_get_distinct_fingerprints_that_show_nothing(reg_a: KeyRegistry) -> None:
    fingerprints = {}
    for path in (FIXTURES / "events.jsonl", FIXTURES / "xinference-legacy" / "events.jsonl"):
        for e in events(path):
            if (e["key_alias"] or "").startswith("random:"):
                got = reg_a.resolve(e["auth_header"], ts(e["t_done"]))
                assert (got.key, got.state, got.credential) == (
                    "unknown",
                    KeyState.UNKNOWN,
                    CredentialKind.API_KEY,
                )
                assert got.is_api_key and got.owner is None and got.permissions is None
                assert got.fingerprint is not None and re.fullmatch(r"[0-9a-f]{12}", got.fingerprint)
                token = e["auth_header"].split()[-1]
                assert got.fingerprint not in token
                fingerprints[token] = got.fingerprint
    assert len(fingerprints) > 100 and len(set(fingerprints.values())) == len(fingerprints)


def test_bearer_undefined_is_a_token_but_not_a_key(reg_a: KeyRegistry) -> None:
    n = 0
    for e in events(FIXTURES / "events.jsonl"):
        if e["key_alias"] == "token:undefined":
            got = reg_a.resolve(e["auth_header"], ts(e["t_done"]))
            assert (got.credential, got.key, got.state) == (CredentialKind.OTHER, "unknown", KeyState.UNKNOWN)
            assert not got.is_api_key and got.fingerprint
            n += 1
    assert n == 40


@pytest.mark.parametrize("credential", [None, "", "-", "  ", " - "])
def test_no_credential(reg_a: KeyRegistry, credential: str | None) -> None:
    got = reg_a.resolve(credential, RECORDING_A)
    assert (got.credential, got.key, got.state, got.fingerprint) == (
        CredentialKind.NONE, "none", KeyState.NONE, None,
    )  # fmt: skip


def test_events_without_a_header_are_none(reg_a: KeyRegistry) -> None:
    headers = {e["auth_header"] for e in events(FIXTURES / "events.jsonl") if e["key_alias"] is None}
    assert headers == {None}
    assert reg_a.resolve(None, RECORDING_A).credential == CredentialKind.NONE


@pytest.mark.parametrize(
    ("credential", "kind", "key"),
    [
        ("bearer xf-WBrciG0k56XwiR809SuB0Q2FKURe0FXO1C86UawWvj4W3sQx", CredentialKind.API_KEY, "finance-bot"),
        ("BEARER   sk-Yn9ggOg8DoIku  ", CredentialKind.API_KEY, "chatbot-prod"),
        ("sk-Yn9ggOg8DoIku", CredentialKind.API_KEY, "chatbot-prod"),  # a bare key
        # an alias is a name, not a credential: anyone can send it (issue 11)
        ("chatbot-prod", CredentialKind.OTHER, "unknown"),
        ("Bearer chatbot-prod", CredentialKind.OTHER, "unknown"),  # a token, not a consumer name
        ("Basic dXNlcjpwYXNzd29yZA==", CredentialKind.OTHER, "unknown"),
        ("Token sk-Yn9ggOg8DoIku", CredentialKind.OTHER, "unknown"),
        ("Bearer", CredentialKind.OTHER, "unknown"),
        ("Bearer sk-short", CredentialKind.API_KEY, "unknown"),
        ("Bearer xf-" + "a" * 48, CredentialKind.API_KEY, "unknown"),
        ("Bearer eyJ.garbage.x", CredentialKind.JWT, "unknown"),
        ("Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig", CredentialKind.JWT, "unknown"),  # payload {}
    ],
)
def test_credential_shapes(reg_a: KeyRegistry, credential: str, kind: CredentialKind, key: str) -> None:
    got = reg_a.resolve(credential, RECORDING_A)
    assert (got.credential, got.key) == (kind, key)
    assert (got.fingerprint is None) == (key != "unknown")


def test_an_alias_is_that_key_only_as_a_gateways_consumer_name(reg_a: KeyRegistry) -> None:
    """`Authorization: chatbot-prod` must not count as chatbot-prod's requests (and fire alerts
    in its name); Kong's or APISIX's consumer field, where key-auth hid the key, is that key."""
    assert reg_a.resolve("chatbot-prod", RECORDING_A).key == "unknown"
    consumer = reg_a.resolve_consumer("chatbot-prod", RECORDING_A)
    assert (consumer.credential, consumer.key, consumer.state) == (
        CredentialKind.API_KEY, "chatbot-prod", KeyState.VALID,
    )  # fmt: skip
    stranger = reg_a.resolve_consumer("mallory", RECORDING_A)
    assert (stranger.key, stranger.credential) == ("unknown", CredentialKind.OTHER)
    assert stranger.fingerprint is not None and "mallory" not in stranger.fingerprint


def test_a_jwt_of_an_unknown_user_cannot_mint_a_label(reg_a: KeyRegistry) -> None:
    got = reg_a.resolve("Bearer " + jwt({"sub": "mallory", "exp": 2e9}), RECORDING_A)
    assert (got.credential, got.key, got.owner, got.state) == (
        CredentialKind.JWT,
        "unknown",
        None,
        KeyState.UNKNOWN,
    )
    assert got.fingerprint
    # key owners are known users too (finance has no password login, but is a user)
    assert reg_a.resolve("Bearer " + jwt({"sub": "finance"}), RECORDING_A).key == "jwt:finance"


@pytest.mark.parametrize(
    "payload", [{"sub": 5}, {"sub": ""}, {"exp": 1}, [1, 2], "x", {"sub": "etl", "exp": 1e400}]
)
def test_odd_jwt_payloads(reg_a: KeyRegistry, payload: Any) -> None:
    part = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    got = reg_a.resolve(f"Bearer eyJhbGciOiJIUzI1NiJ9.{part}.sig", RECORDING_A)
    assert got.credential == CredentialKind.JWT
    if isinstance(payload, dict) and payload.get("sub") == "etl":  # infinite exp: ignored, never expires
        assert (got.key, got.state) == ("jwt:etl", KeyState.VALID)
    else:
        assert got.key == "unknown"


def test_a_jwt_truncated_by_haproxy_still_names_its_user(reg_a: KeyRegistry) -> None:
    headers = set(re.findall(r"\{(Bearer eyJ[^|]*)\|", (FIXTURES / "haproxy" / "haproxy.log").read_text()))
    truncated = [h for h in headers if h.count(".") == 1]
    assert truncated and all(len(h) == 256 for h in truncated)  # the 256-char capture cut the payload
    got = reg_a.resolve(truncated[0], ts("2026-11-28T07:11:58Z"))
    assert (got.key, got.state) == ("jwt:mlops", KeyState.VALID)
    assert reg_a.resolve(truncated[0], ts("2026-11-28T09:00:00Z")).state == KeyState.EXPIRED  # exp survived
    for header in headers:
        assert reg_a.resolve(header, ts("2026-11-28T07:11:58Z")).key.startswith("jwt:")


def test_disabled_users_and_their_keys_are_revoked() -> None:
    sha = hashlib.sha256(b"xf-disabled-owner-key").hexdigest()
    entry = KeyEntry("bob-key", "bob", frozenset({"models:read"}), None, None, False, (), sha, "xf-disa")
    reg = KeyRegistry([entry], [UserEntry("bob", frozenset({"models:read"}), disabled=True)])
    assert reg.resolve("Bearer xf-disabled-owner-key", 0).state == KeyState.REVOKED
    assert reg.state_of(entry, 0) == KeyState.REVOKED and entry.state_at(0) == KeyState.VALID
    session = reg.resolve("Bearer " + jwt({"sub": "bob", "exp": 100}), 50)
    assert (session.key, session.state) == ("jwt:bob", KeyState.REVOKED)
    assert reg.resolve("Bearer " + jwt({"sub": "bob", "exp": 100}), 101).state == KeyState.EXPIRED


def test_the_cache_is_bounded_and_keyed_by_lookup_not_state(reg_a: KeyRegistry) -> None:
    reg = load_registry(SET_A)
    for i in range(keys_module.CACHE_LIMIT + 10):
        reg.resolve(f"Bearer sk-{i:013d}", RECORDING_A)
    assert len(reg._cache) <= keys_module.CACHE_LIMIT
    header = "Bearer sk-ZZZZZZZZZZZZZ"
    assert reg.resolve(header, 0).fingerprint == reg.resolve(header, 1).fingerprint


@given(st.text(max_size=300))
def test_resolve_never_raises(text: str) -> None:
    reg = _REG_FOR_PROPERTIES
    for credential in (text, f"Bearer {text}", f"Bearer eyJ{text}", f"Bearer eyJhbGciOiJIUzI1NiJ9.{text}.x"):
        got = reg.resolve(credential, 0.0)
        assert isinstance(got, Attribution)
        assert got.key in {"none", "unknown"} | set(EXPECTED_STATE_A) or got.key.startswith("jwt:")


@given(st.text(max_size=40), st.text(max_size=40), st.text(max_size=10), st.text(max_size=10))
def test_resolve_hint_never_raises(user: str, name: str, prefix: str, auth_type: str) -> None:
    assert isinstance(
        _REG_FOR_PROPERTIES.resolve_hint(KeyHint(user, name, prefix, auth_type), 0.0), Attribution
    )


_REG_FOR_PROPERTIES = load_registry(SET_A)


# --- audit.log hints -----------------------------------------------------------------------------


def test_every_audit_log_line_is_attributed(reg_a: KeyRegistry) -> None:
    for e in events(FIXTURES / "xinference" / "audit.log"):
        hint = KeyHint(e["user"], e["api_key_name"], e["api_key_prefix"], e["auth_type"])
        got = reg_a.resolve_hint(hint, ts(e["@timestamp"]))
        if e["status"] == "invalid_key":  # Xinference did not find the key: user and name are empty
            assert (got.key, got.credential, got.state) == (
                "unknown",
                CredentialKind.API_KEY,
                KeyState.UNKNOWN,
            )
            assert got.fingerprint
        elif e["api_key_prefix"]:
            alias = PREFIX_ALIAS_A[e["api_key_prefix"]]
            assert (got.key, got.state) == (alias, EXPECTED_STATE_A[alias])
        elif e["auth_type"] == "jwt" and e["user"]:
            assert (got.key, got.credential) == (f"jwt:{e['user']}", CredentialKind.JWT)
        else:
            assert (got.key, got.credential) == ("none", CredentialKind.NONE)


def test_an_unknown_key_sharing_a_real_prefix_is_not_that_key(reg_a: KeyRegistry) -> None:
    # an attacker's guess xf-WBrc...: audit.log logs the prefix with no user and no name
    got = reg_a.resolve_hint(KeyHint("", "", "xf-WBrc", "api_key"), RECORDING_A)
    assert got.key == "unknown"


def test_prefix_collisions_prefer_owner_and_name() -> None:
    def entry(alias: str, owner: str | None, name: str | None) -> KeyEntry:
        sha = hashlib.sha256(alias.encode()).hexdigest()
        return KeyEntry(alias, owner, None, None, None, False, (), sha, "xf-Abcd", name)

    reg = KeyRegistry([entry("a1", "alice", "ci"), entry("a2", "alice", "laptop"), entry("b1", "bob", None)])
    assert reg.resolve_hint(KeyHint("alice", "laptop", "xf-Abcd", "api_key"), 0).key == "a2"
    assert reg.resolve_hint(KeyHint("alice", "ci", "xf-Abcd", "api_key"), 0).key == "a1"
    assert reg.resolve_hint(KeyHint("bob", "whatever", "xf-Abcd", "api_key"), 0).key == "b1"
    assert reg.resolve_hint(KeyHint("alice", "", "xf-Abcd", "api_key"), 0).key == "unknown"  # two of alice's
    assert reg.resolve_hint(KeyHint("carol", "x", "xf-Abcd", "api_key"), 0).key == "unknown"
    assert reg.resolve_hint(KeyHint("bob", "", "xf-Zzzz", "api_key"), 0).key == "unknown"
    single = KeyRegistry([entry("c1", None, None)])
    assert single.resolve_hint(KeyHint("carol", "x", "xf-Abcd", "api_key"), 0).key == "c1"  # unique prefix


def test_hints_for_sessions_and_logins(reg_a: KeyRegistry) -> None:
    assert reg_a.resolve_hint(KeyHint("platform", "", "", "jwt"), 0).key == "jwt:platform"
    assert reg_a.resolve_hint(KeyHint("mallory", "", "", "jwt"), 0).key == "unknown"
    login = reg_a.resolve_hint(KeyHint("platform", "", "", "none"), 0)  # POST /token with a password
    assert (login.credential, login.key) == (CredentialKind.NONE, "none")
    assert reg_a.resolve_hint(KeyHint("", "", "", ""), 0).credential == CredentialKind.NONE


# --- loading and merging -------------------------------------------------------------------------


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_keys_yaml_wins_over_auth_json_whatever_the_order() -> None:
    forward, backward = load_registry(SET_A), load_registry(list(reversed(SET_A)))
    assert {e.alias: e for e in forward.entries} == {e.alias: e for e in backward.entries}


def test_default_aliases_and_permissions_from_the_auth_config(tmp_path: Path) -> None:
    auth = write(tmp_path, "auth.json", json.dumps({
        "auth_config": {"secret_key": "s3cr3t-jwt-secret", "token_expire_in_minutes": 30},
        "user_config": [
            {"username": "alice", "password": "pw-alice-123", "permissions": ["models:list"],
             "api_keys": ["sk-aaaaaaaaaPmi1", "sk-bbbbbbbbbXy77"]},
            {"username": "bob", "password": "pw-bob-456", "permissions": ["admin"],
             "api_keys": ["sk-cccccccccXy77"]},
        ],
    }))  # fmt: skip
    digest = hashlib.sha256(b"xf-only-by-hash").hexdigest()
    meta = write(tmp_path, "keys.yaml", f"keys:\n  - key: sk-bbbbbbbbbXy77\n    expires_at: 2026-01-01\n"
                                        f"  - key_sha256: {digest}\n    owner: carol\n")  # fmt: skip
    reg = load_registry([auth, meta])
    by_key = {e.prefix: e for e in reg.entries}
    assert by_key["sk-aaaa"].alias == "alice:Pmi1"
    assert by_key["sk-aaaa"].permissions == frozenset({"models:list"})
    assert by_key["sk-bbbb"].alias == "alice:Xy77"  # no clash: the owners differ
    assert by_key["sk-bbbb"].expires_at == ts("2026-01-01T00:00:00Z")  # a YAML date, UTC
    assert by_key["sk-cccc"].alias == "bob:Xy77"
    assert by_key[None].alias == f"carol:{digest[:4]}"
    assert reg.known_users() == {"alice", "bob", "carol"}
    text = repr(reg) + repr(reg.entries) + repr(reg.users)
    assert "pw-alice" not in text and "s3cr3t" not in text
    assert not any("pw-" in repr(v) for e in reg.entries for v in (e.alias, e.name, e.owner))


def test_colliding_default_aliases_get_a_hash_suffix(tmp_path: Path) -> None:
    path = write(tmp_path, "k.json", json.dumps({"api_keys": [
        {"key": "sk-aaaaaaaaaSame", "permissions": ["models:read"], "owner": "ci"},
        {"key": "sk-bbbbbbbbbSame", "owner": "ci"},
    ]}))  # fmt: skip
    reg = load_registry([path])
    aliases = sorted(e.alias for e in reg.entries)
    assert all(a.startswith("ci:Same-") for a in aliases) and len(set(aliases)) == 2
    assert reg.resolve("Bearer sk-aaaaaaaaaSame", 0).permissions == frozenset({"models:read"})
    assert reg.resolve("Bearer sk-bbbbbbbbbSame", 0).permissions is None


def test_the_api_keys_format(tmp_path: Path) -> None:
    path = write(
        tmp_path, "keys.json", '{"api_keys": [{"key": "xf-abc123456789", "permissions": ["models:read"]}]}'
    )
    got = load_registry([path]).resolve("Bearer xf-abc123456789", 0)
    assert (got.key, got.owner, got.permissions) == ("key:6789", None, frozenset({"models:read"}))


def test_dates_in_every_accepted_form(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "keys.yaml",
        """keys:
  - {key: sk-1, created_at: 2026-01-05, expires_at: 2026-12-31T00:00:00Z}
  - {key: sk-2, created_at: "2026-01-05T10:00:00", expires_at: "2026-12-31T01:00:00+01:00"}
  - {key: sk-3, created_at: 2026-01-05 10:00:00, expires_at: null}
""",
    )
    e1, e2, e3 = load_registry([path]).entries
    assert e1.created_at == ts("2026-01-05T00:00:00Z") and e1.expires_at == ts("2026-12-31T00:00:00Z")
    assert e2.created_at == ts("2026-01-05T10:00:00Z") and e2.expires_at == ts("2026-12-31T00:00:00Z")
    assert e3.created_at == ts("2026-01-05T10:00:00Z") and e3.expires_at is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("keys:\n  - key: sk-Yn9ggOg8DoIku\n    expires_at: next year\n",
         "keys.yaml:3: keys[0].expires_at: 'next year' is not a date (expected e.g. 2026-12-31"),
        ("keys:\n  - key: sk-Yn9ggOg8DoIku\n    expire_at: 2026-01-01\n",
         "keys.yaml:3: keys[0].expire_at: unknown field (expected one of alias, allowed_ips,"),
        ("keys:\n  - key: sk-Yn9ggOg8DoIku\n    alias: a\n  - key: sk-Ff2xlFLn6m9oZ\n    alias: a\n",
         "keys.yaml:5: keys[1].alias: alias 'a' is already used by the key at "),
        ("keys:\n  - key: sk-Yn9ggOg8DoIku\n  - key: sk-Yn9ggOg8DoIku\n",
         "keys.yaml:3: keys[1]: the same key as at "),
        ("keys:\n  - key: sk-Yn9ggOg8DoIku\n    alias: unknown\n",
         "keys.yaml:3: keys[0].alias: 'unknown' is reserved"),
        ("keys:\n  - key: sk-Yn9ggOg8DoIku\n    alias: jwt:alice\n",
         "keys.yaml:3: keys[0].alias: 'jwt:alice' is reserved"),
        ("keys:\n  - alias: x\n", "keys.yaml:2: keys[0]: expected exactly one of key or key_sha256"),
        ("keys:\n  - key_sha256: 1234\n", "keys.yaml:2: keys[0].key_sha256: expected the SHA-256 of the key"),
        ("keys:\n  - key: [sk-Yn9ggOg8DoIku]\n", "keys.yaml:2: keys[0].key: expected the key as a non-empty"),
        ("keys:\n  - key: sk-Yn9ggOg8DoIku\n    revoked: yes please\n",
         "keys.yaml:3: keys[0].revoked: expected true"),
        ("keys:\n  - key: sk-Yn9ggOg8DoIku\n    allowed_ips: [10.0.0.0/33]\n",
         "keys.yaml:3: keys[0].allowed_ips: '10.0.0.0/33' is not an IP network"),
        ("keys:\n  - key: sk-Yn9ggOg8DoIku\n    permissions: admin\n",
         "keys.yaml:3: keys[0].permissions: 'admin' is not a list of scopes"),
        ("keys:\n  - key: sk-Yn9ggOg8DoIku\n  key: sk-Ff2xlFLn6m9oZ: x\n", "keys.yaml:3: invalid YAML: "),
        ("keys: {a: 1}\n", "keys.yaml:1: keys: expected a list of keys"),
        ("keys:\n  - key: sk-1\n    expires_at: 2026-13-01\n",
         "keys.yaml: invalid YAML: month must be in 1..12"),
        ("keys:\n  - owner: x\n", "keys.yaml:2: keys[0]: expected exactly one of key or key_sha256"),
        ("users: []\n", "keys.yaml: not a key file (expected"),
    ],
)  # fmt: skip
def test_key_file_errors_are_one_line_with_file_line_and_field(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, "keys.yaml", text)
    with pytest.raises(KeyFileError) as info:
        load_registry([path])
    got = str(info.value)
    assert got.startswith(str(tmp_path / message.split(":")[0])) and message in got.replace(
        f"{tmp_path}/", ""
    )
    assert "\n" not in got
    assert not any(k in got for k in ("sk-Yn9ggOg8DoIku", "sk-Ff2xlFLn6m9oZ", "Yn9g", "Ff2x"))
    # a traceback (--debug) must not show a chained YAML error, which quotes the file
    assert info.value.__context__ is None or info.value.__suppress_context__


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("auth.json", '{"user_config": [{"username": "a", "api_keys": ["sk-Yn9ggOg8DoIku", 5]}]}',
         "auth.json: user_config[0].api_keys[1]: expected the key as a non-empty string"),
        ("auth.json", '{"user_config": [{"username": "a", "api_keys": ["sk-Yn9ggOg8DoIku"]},'
                      ' {"username": "b", "api_keys": ["sk-Yn9ggOg8DoIku"]}]}',
         "auth.json: user_config[1].api_keys[0]: the same key as user_config[0].api_keys[0]"),
        ("auth.json", '{"user_config": [{"username": "a",\n "api_keys": ["sk-Yn9ggOg8DoIku" "x"]}]}',
         "auth.json:2: invalid JSON: Expecting"),
        ("auth.db", None, "auth.db: cannot read auth.db (SQLITE_NOTADB: file is not a database)"),
        ("missing.yaml", "", "missing.yaml: cannot read key file (No such file or directory)"),
        ("latin1.yaml", b"keys: \xe9", "latin1.yaml: not UTF-8 text"),
    ],
)  # fmt: skip
def test_other_file_errors(tmp_path: Path, name: str, content: str | bytes | None, message: str) -> None:
    path = tmp_path / name
    if content is None:
        path.write_bytes(b"SQLite format 3\x00" + bytes(100))
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content:
        path.write_text(content)
    with pytest.raises(KeyFileError) as info:
        load_registry([path])
    assert str(info.value) == f"{tmp_path}/{message}" or str(info.value).startswith(f"{tmp_path}/{message}")
    assert "Yn9g" not in str(info.value)


# --- raw keys never leave the registry -----------------------------------------------------------


def test_no_repr_str_or_error_shows_a_raw_key(tmp_path: Path) -> None:
    secrets = raw_keys()
    assert len(secrets) > 150
    hashes = {hashlib.sha256(s.encode()).hexdigest() for s in secrets}
    texts: list[str] = []
    for paths, event_file in ((SET_A, FIXTURES / "events.jsonl"),
                              (SET_B, FIXTURES / "xinference-legacy" / "events.jsonl")):  # fmt: skip
        reg = load_registry(paths)
        texts += [repr(reg), str(reg), repr(reg.entries), repr(reg.users), str(reg.entries)]
        texts += [repr(reg.resolve(e["auth_header"], ts(e["t_done"]))) for e in events(event_file)]
    reg = load_registry(SET_A)
    for e in events(FIXTURES / "xinference" / "audit.log"):
        hint = KeyHint(e["user"], e["api_key_name"], e["api_key_prefix"], e["auth_type"])
        texts.append(repr(reg.resolve_hint(hint, 0)))
    # errors raised on files full of keys
    key_lines = "\n".join(f"  - key: {k}\n    alias: same" for k in sorted(secrets)[:3])
    broken = [
        "keys:\n" + key_lines,
        "keys:\n  - key: sk-Yn9ggOg8DoIku\n  - key: sk-Yn9ggOg8DoIku\n",
        "keys:\n  - key: sk-Yn9ggOg8DoIku\n    owner: [sk-Ff2xlFLn6m9oZ\n",
        "keys:\n  - key: sk-Yn9ggOg8DoIku sk-Ff2xlFLn6m9oZ\n",
        "keys:\n  - key: 'sk-Yn9ggOg8DoIku\n",
        '{"user_config": [{"username": "a", "api_keys": ["sk-Yn9ggOg8DoIku", "sk-Yn9ggOg8DoIku"]}]}',
        '{"user_config": [{"username": "a", "api_keys": ["sk-Yn9ggOg8DoIku" "sk-Ff2xlFLn6m9oZ"]}]}',
        '{"api_keys": [{"key": "sk-Yn9ggOg8DoIku", "permissions": "sk-Ff2xlFLn6m9oZ"}]}',
    ]
    for i, text in enumerate(broken):
        with pytest.raises(KeyFileError) as info:
            load_registry([write(tmp_path, f"broken{i}.yaml", text)])
        texts += [str(info.value), repr(info.value)]
    blob = "\n".join(texts)
    leaked = [s for s in secrets if s in blob]
    assert leaked == []
    assert "(a value that looks like a key, not shown) is not a list of scopes" in blob
    assert not any(h in blob for h in hashes)
