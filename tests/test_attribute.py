"""Attribution's per-combination plans (attribution/attribute.py): what is worked out once per distinct
(credential kind, key state, permissions, method, path, status) must follow a key file reload,
and stay bounded whatever paths an attacker sends."""

from __future__ import annotations

from ipaddress import ip_network

from xinf_watch.attribution.attribute import PLAN_CACHE_LIMIT, Attributor
from xinf_watch.attribution.scopes import load_scope_map
from xinf_watch.keys.registry import KeyEntry, KeyRegistry, sha256_hex
from xinf_watch.model import Record, ScopeDenial

T0 = 1795849560.0
KEY = "sk-AAAAAAAAAAAAA"


def registry(permissions: set[str], allowed: str) -> KeyRegistry:
    entry = KeyEntry("svc", "ops", frozenset(permissions), None, None, False,
                     (ip_network(allowed),), sha256_hex(KEY), None)  # fmt: skip
    return KeyRegistry([entry])


def test_a_reload_that_changes_permissions_and_allowed_ips_is_seen_at_once() -> None:
    current = [registry({"models:list"}, "10.0.0.0/8")]
    attributor = Attributor("gateway", lambda: current[0], load_scope_map("2.12"))  # no advanced auth
    launch = Record(T0, "10.1.2.3", "POST", "/v1/models", 200, f"Bearer {KEY}")
    before = attributor.attribute(launch)
    assert (before.scope, before.scope_allowed, before.ip_allowed) == ("models:write", False, True)
    assert before.scope_denied_by is ScopeDenial.PERMISSIONS
    current[0] = registry({"models:list", "models:write"}, "192.0.2.0/24")  # the key file rewritten
    after = attributor.attribute(launch)
    assert (after.scope_allowed, after.scope_denied_by, after.ip_allowed) == (True, None, False)


def test_the_reason_follows_whether_the_source_logs_credentials() -> None:
    attributor = Attributor("gateway", lambda: KeyRegistry(), load_scope_map())
    anonymous = Record(T0, "203.0.113.7", "GET", "/v1/models", 401, None)
    assert attributor.attribute(anonymous).reason is None  # no credential seen yet: says nothing
    attributor.attribute(Record(T0, "203.0.113.7", "GET", "/v1/models", 401, "Bearer sk-unknown12345"))
    assert attributor.attribute(anonymous).reason == "no_credentials"


def test_plans_stay_bounded_whatever_the_paths() -> None:
    attributor = Attributor("gateway", lambda: KeyRegistry(), load_scope_map())
    for n in range(PLAN_CACHE_LIMIT + 500):
        event = attributor.attribute(Record(T0, "203.0.113.7", "GET", f"/v1/models/m{n}%20x?q=1", 404, None))
        assert event.path == f"/v1/models/m{n} x"
    assert len(attributor._plans) <= PLAN_CACHE_LIMIT
