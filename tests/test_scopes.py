"""Scope map: (method, path) -> scope on real fixture paths, per Xinference version, and covers()."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st
from paths import FIXTURES

from xinf_watch.attribution import scopes as scopes_module
from xinf_watch.attribution.scopes import ScopeMap, ScopeOverride, load_scope_map, version_tag

CURRENT = load_scope_map()
V4 = load_scope_map("4.1.0")
V2_11 = load_scope_map("2.11.0")
V2_12 = load_scope_map("2.12")


REAL_PATHS = [
    ("GET", "/v1/models", "models:list", "models:list"),
    ("GET", "/v1/models/qwen2.5-instruct", "models:list", "models:list"),
    ("POST", "/v1/chat/completions", "models:read", "models:read"),
    ("POST", "/v1/embeddings", "models:read", "models:read"),
    ("POST", "/v1/models", "models:write", "models:start"),
    ("DELETE", "/v1/models/x", "models:write", "models:stop"),
    ("DELETE", "/v1/models/glm4-chat", "models:write", "models:stop"),
    ("GET", "/v1/cluster/info", "admin", "admin"),
    ("GET", "/v1/cluster/logs", "logs:list", "admin"),
    ("POST", "/v1/models/update_type", "models:register", "models:add"),
    ("GET", "/v1/admin/users", "users:manage", "users:manage"),
    ("GET", "/v1/admin/keys", "keys:create", "keys:create"),  # any of keys:create / keys:manage
    ("GET", "/", "webui", "webui"),
    ("GET", "/ui/", "webui", "webui"),
    ("GET", "/ui/static/js/main.js", "webui", "webui"),
    ("GET", "/docs", "webui", "webui"),
    ("GET", "/redoc", "webui", "webui"),
    ("GET", "/openapi.json", "webui", "webui"),
    ("POST", "/token", "public", "public"),
    ("GET", "/status", "public", "public"),
    ("GET", "/metrics", "public", "public"),
    ("GET", "/v1/models/prompts", "public", "public"),
    ("GET", "/v1/models/instances", "models:list", "models:list"),  # registered before /v1/models/{uid}
    ("GET", "/v1/nonexistent", "unmatched", "unmatched"),
    ("POST", "/whatever", "unmatched", "unmatched"),
    ("PUT", "/v1/models", "unmatched", "unmatched"),
]


@pytest.mark.parametrize(("method", "path", "current", "legacy"), REAL_PATHS)
def test_real_paths(method: str, path: str, current: str, legacy: str) -> None:
    assert CURRENT.scope_for(method, path) == current
    assert V4.scope_for(method, path) == current
    assert V2_11.scope_for(method, path) == legacy


def test_the_next_js_ui_exists_from_v3_on() -> None:
    assert CURRENT.scope_for("GET", "/_next/static/chunks/x.js") == "webui"
    assert load_scope_map("3.2").scope_for("GET", "/_next/static/css/3f9f47f0f37fbd03.css") == "webui"
    # v2.11 served the React build at /ui/; it has no /_next route and no SPA catch-all
    assert V2_11.scope_for("GET", "/_next/static/chunks/x.js") == "unmatched"
    assert V2_11.scope_for("GET", "/login") == "unmatched"


def test_routes_removed_in_v3() -> None:
    assert V2_11.scope_for("POST", "/v1/ui/qwen2.5-instruct") == "models:read"
    assert V2_12.scope_for("POST", "/v1/ui/images/sd") == "models:read"
    assert CURRENT.scope_for("POST", "/v1/ui/qwen2.5-instruct") == "unmatched"
    assert V2_11.scope_for("POST", "/v1/audio/embeddings") == "unmatched"  # added after v2.12
    assert CURRENT.scope_for("POST", "/v1/audio/embeddings") == "models:read"
    assert load_scope_map("3.2.1").scope_for("POST", "/v1/messages") == "unmatched"  # main only
    assert CURRENT.scope_for("POST", "/v1/messages") == "models:read"


def test_v2_12_renamed_the_scopes() -> None:
    assert V2_12.scope_for("POST", "/v1/models") == "models:write"
    assert V2_12.scope_for("DELETE", "/v1/model_registrations/llm/x") == "models:register"


@pytest.mark.parametrize(
    ("method", "path", "scope"),
    [
        ("GET", "/login", "webui"),
        ("GET", "/api-key-management", "webui"),
        ("GET", "/launch-model/llm", "webui"),
        ("GET", "/favicon.ico", "webui"),
        ("HEAD", "/", "webui"),
        ("GET", "/ui", "webui"),
        ("GET", "/ui/anything/deep", "webui"),
        # the catch-all answers a JSON 404 for backend first segments
        ("GET", "/v1/nonexistent", "unmatched"),
        ("GET", "/v1", "unmatched"),
        ("GET", "/docs/extra", "unmatched"),
        ("GET", "/api/whatever", "unmatched"),
        ("GET", "/anthropic/v2/x", "unmatched"),
        ("GET", "/openapi.json/x", "unmatched"),
        ("GET", "/token", "unmatched"),
        # the catch-all is GET only
        ("POST", "/login", "unmatched"),
        ("DELETE", "/", "unmatched"),
    ],
)
def test_the_spa_catch_all(method: str, path: str, scope: str) -> None:
    assert CURRENT.scope_for(method, path) == scope


@pytest.mark.parametrize(
    ("method", "path", "scope"),
    [
        ("GET", "/v1/models?limit=10", "models:list"),
        ("GET", "/v1/models/instances?model_uid=x&a=%2F", "models:list"),
        ("GET", "/v1/models/qwen2.5%2Dinstruct", "models:list"),
        ("GET", "/v1/models%2Finstances", "models:list"),  # decoded before routing, as Starlette does
        ("GET", "/v1/cluster%2Finfo", "admin"),
        ("GET", "/v1/models/a%2Fb", "unmatched"),  # {model_uid} does not span a slash
        ("GET", "/v1/%6Dodels", "models:list"),
        ("POST", "/v1/chat/completions?stream=true", "models:read"),
        ("GET", "/?next=/v1/cluster/info", "webui"),
        ("HEAD", "/v1/models", "models:list"),
        ("get", "/v1/models", "models:list"),
        ("GET", "/v1/models/", "unmatched"),  # no redirect_slashes guessing
        ("GET", "v1/models", "unmatched"),
        ("GET", "", "unmatched"),
        ("GET", "/v1/models\n", "unmatched"),
    ],
)
def test_paths_as_logged(method: str, path: str, scope: str) -> None:
    assert CURRENT.scope_for(method, path) == scope


def fixture_requests(path: Path) -> set[tuple[str, str]]:
    with path.open(encoding="utf-8") as f:
        return {(e["method"], e["path"]) for e in map(json.loads, f)}


@pytest.mark.parametrize(
    ("events", "version"),
    [("events.jsonl", "4.1.0"), ("xinference-legacy/events.jsonl", "2.11.0")],
)
def test_every_request_of_the_fixtures_has_a_scope(events: str, version: str) -> None:
    scope_map = load_scope_map(version)
    requests = fixture_requests(FIXTURES / events)
    assert len(requests) > 10
    # every path of both recordings exists in the server that answered it
    assert {r: scope_map.scope_for(*r) for r in requests if scope_map.scope_for(*r) == "unmatched"} == {}


def test_overrides_are_tried_first() -> None:
    scope_map = load_scope_map(
        overrides=[
            ScopeOverride("POST", "/v1/chat/completions", "chat"),
            ScopeOverride("*", "/v1/models/{uid}/extra", "extra"),
            ScopeOverride("get", "/files/{rest:path}", "files"),
            ScopeOverride("GET", "/internal/*", "internal"),
            ScopeOverride("GET", "/v1/cluster/info", "admin:cluster"),
        ]
    )
    assert scope_map.scope_for("POST", "/v1/chat/completions") == "chat"
    assert scope_map.scope_for("PATCH", "/v1/models/x/extra") == "extra"
    assert scope_map.scope_for("GET", "/v1/models/x/y/extra") == "unmatched"
    assert scope_map.scope_for("GET", "/files/a/b/c.txt") == "files"
    assert scope_map.scope_for("HEAD", "/files/a") == "files"
    assert scope_map.scope_for("GET", "/internal/x/y?z") == "internal"
    assert scope_map.scope_for("GET", "/v1/cluster/info") == "admin:cluster"
    assert scope_map.scope_for("GET", "/v1/models") == "models:list"
    literal = load_scope_map(overrides=[ScopeOverride("GET", "/a.b", "dot")])
    assert literal.scope_for("GET", "/a.b") == "dot" and literal.scope_for("GET", "/aXb") == "webui"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (ScopeOverride("GET", "v1/x", "s"), "must start with '/'"),
        (ScopeOverride("", "/x", "s"), "must not be empty"),
        (ScopeOverride("GET", "/x", " "), "must not be empty"),
        (ScopeOverride("GET", "/x/{bad-name}", "s"), "parameters look like {name} or {name:path}"),
        (ScopeOverride("GET", "/x/{open", "s"), "parameters look like {name} or {name:path}"),
        (ScopeOverride("GET", "/x/close}", "s"), "parameters look like {name} or {name:path}"),
    ],
)
def test_bad_overrides(override: ScopeOverride, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        load_scope_map(overrides=[override])


@pytest.mark.parametrize(
    ("version", "tag"),
    [
        (None, "head"),
        ("4", "head"),
        ("4.1.0", "head"),
        ("3.3", "head"),
        ("3.2", "v3.2.1"),
        ("3.2.1", "v3.2.1"),
        ("3.0.0", "v3.2.1"),
        ("3", "v3.2.1"),
        ("v2.12.0", "v2.12.0"),
        ("2.12.3", "v2.12.0"),
        ("2.11", "v2.11.0"),
        ("v2.11.0", "v2.11.0"),
        ("2.9.0", "v2.11.0"),
        ("2", "v2.11.0"),
        ("1.17.1", "v1.17.1"),
        ("0.16", "v1.17.1"),
        ("2.11.0rc1", "v2.11.0"),
        ("3.2.1.post1", "v3.2.1"),
        (" 4.1.0 ", "head"),
        ("head", "head"),
        ("main", "head"),
        ("Latest", "head"),
    ],
)
def test_versions(version: str | None, tag: str) -> None:
    assert version_tag(version) == tag
    assert load_scope_map(version).version_tag == tag
    assert load_scope_map(version).advanced_auth == (tag in ("v3.2.1", "head"))


@pytest.mark.parametrize("version", ["", "latestish", "four", "4.x", "v", "2..1", "1.2.3.4.5"])
def test_unparseable_versions(version: str) -> None:
    with pytest.raises(ValueError, match="is not a version"):
        load_scope_map(version)


ADMIN = frozenset({"admin"})
READER = frozenset({"models:list", "models:read"})
OPERATOR_OLD_NAMES = frozenset({"models:list", "models:read", "models:start", "models:stop"})
REGISTRAR_OLD_NAMES = frozenset({"models:add", "models:unregister"})


COVERS = [
    (CURRENT, None, "webui", True, True),
    (CURRENT, None, "public", False, True),
    (CURRENT, None, "unmatched", True, True),
    (CURRENT, None, "models:list", True, None),
    (CURRENT, None, "models:write", True, None),
    (CURRENT, frozenset(), "models:list", False, False),
    (CURRENT, READER, "models:read", True, True),
    (CURRENT, READER, "models:write", False, False),
    (CURRENT, READER, "admin", False, False),
    (CURRENT, ADMIN, "users:manage", False, True),  # admin covers everything
    (CURRENT, ADMIN, "models:write", True, False),  # advanced auth: keys only reach model queries
    (CURRENT, ADMIN, "models:read", True, True),
    (CURRENT, OPERATOR_OLD_NAMES, "models:write", False, True),  # old names expanded (v2.12+)
    (CURRENT, OPERATOR_OLD_NAMES, "models:write", True, False),
    (CURRENT, REGISTRAR_OLD_NAMES, "models:register", False, True),
    (V2_12, OPERATOR_OLD_NAMES, "models:write", True, True),  # no advanced auth by default in 2.x
    (V2_12, ADMIN, "models:write", True, True),
    (V2_11, OPERATOR_OLD_NAMES, "models:start", True, True),  # legacy: compared as is
    (V2_11, OPERATOR_OLD_NAMES, "models:write", True, False),
    (V2_11, frozenset({"models:write"}), "models:start", True, False),
    (V2_11, ADMIN, "models:stop", True, True),
    (V2_11, READER, "admin", True, False),
]


@pytest.mark.parametrize(("scope_map", "permissions", "scope", "api_key", "expected"), COVERS)
def test_covers(
    scope_map: ScopeMap, permissions: frozenset[str] | None, scope: str, api_key: bool, expected: bool | None
) -> None:
    assert scope_map.covers(permissions, scope, api_key=api_key) is expected


def test_fixture_scenarios_through_covers() -> None:
    # d: chatbot-prod (models:list/read) POST /v1/models; d2: mlops-ci (models:start/stop) POST /v1/models
    scope = V4.scope_for("POST", "/v1/models")
    assert V4.covers(READER, scope, api_key=True) is False
    assert V4.covers(OPERATOR_OLD_NAMES, scope, api_key=True) is False
    assert V4.covers(OPERATOR_OLD_NAMES, scope, api_key=False) is True  # the mlops JWT may
    # set B: dashboard-ro (models:list only) POST /v1/chat/completions -> 403 in 2.11
    assert (
        V2_11.covers(
            frozenset({"models:list"}), V2_11.scope_for("POST", "/v1/chat/completions"), api_key=True
        )
        is False
    )


_TABLE = scopes_module._route_table()
_HEAD_ROUTES = [
    scopes_module._table_route(r, legacy=False) for r in _TABLE["routes"] if "head" in r["present_in"]
]
SEGMENTS = sorted({s for r in _TABLE["routes"] for s in r["path"].split("/") if s} | {"x", "", "%2F", "?a=b"})


def naive_scope(method: str, path: str) -> str:
    """Reference for the current table: a linear scan over every route, without the index."""
    method, path = method.upper(), scopes_module._route_path(path)
    for route in _HEAD_ROUTES:
        if method in route.methods and route.pattern.fullmatch(path):
            if route.catch_all and path.split("/")[1] in scopes_module.BACKEND_SEGMENTS:
                return "unmatched"
            return route.scope
    return "unmatched"


@given(
    st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]),
    st.lists(st.sampled_from(SEGMENTS), min_size=0, max_size=5),
)
def test_the_index_agrees_with_a_linear_scan(method: str, segments: list[str]) -> None:
    path = "/" + "/".join(segments)
    assert CURRENT.scope_for(method, path) == naive_scope(method, path)


@given(st.text(max_size=200), st.text(max_size=200))
def test_scope_for_never_raises(method: str, path: str) -> None:
    for scope_map in (CURRENT, V2_11):
        assert isinstance(scope_map.scope_for(method, path), str)
        assert isinstance(scope_map.scope_for("GET", "/" + path), str)


def test_the_cache_is_bounded() -> None:
    scope_map = load_scope_map()
    for i in range(scopes_module.CACHE_LIMIT + 10):
        scope_map.scope_for("GET", f"/v1/models/m{i}")
    assert len(scope_map._cache) <= scopes_module.CACHE_LIMIT
    assert scope_map.scope_for("GET", "/v1/models/m1") == "models:list"


# -- built by the test itself, edges of overrides and paths, what refused a scope -------------------


def test_maps_built_by_the_test_agree_with_the_tables() -> None:
    """The maps above are built when this module is imported; these are built inside the test, so
    that mutation testing (docs/mutation.md), which imports the tests once, sees that work too."""
    current, v4, v2_11, v2_12 = (load_scope_map(v) for v in (None, "4.1.0", "2.11.0", "2.12"))
    for method, path, now, legacy in REAL_PATHS:
        scopes = [m.scope_for(method, path) for m in (current, v4, v2_11)]
        assert scopes == [now, now, legacy], (method, path)
    fresh = {id(CURRENT): current, id(V2_12): v2_12, id(V2_11): v2_11}
    for scope_map, permissions, scope, api_key, expected in COVERS:
        assert fresh[id(scope_map)].covers(permissions, scope, api_key=api_key) is expected, (
            scope,
            permissions,
        )
    assert v2_11.scope_for("POST", "/v1/ui/qwen2.5-instruct") == "models:read"  # a route removed in v3.0
    assert v2_12.scope_for("DELETE", "/v1/model_registrations/llm/x") == "models:register"
    assert load_scope_map("1.17.1").scope_for("GET", "/ui/") == "webui"


def test_old_scope_names_are_expanded_only_from_v2_12_on() -> None:
    start = frozenset({"models:start"})
    assert load_scope_map("2.12").covers(start, "models:write", api_key=False) is True
    assert load_scope_map("2.11.0").covers(start, "models:write", api_key=False) is False
    assert load_scope_map("2.11.0").covers(start, "models:start", api_key=False) is True


@pytest.mark.parametrize(
    ("version", "scope", "api_key", "denied_by"),
    [
        ("4.1.0", "models:write", True, "api_key_limit"),
        ("3.2", "admin", True, "api_key_limit"),
        ("4.1.0", "models:write", False, "permissions"),  # a user's token: its permissions
        ("4.1.0", "models:read", True, "permissions"),  # within the limit: the key's permissions
        ("2.11", "models:start", True, "permissions"),  # no advanced auth before 3.0 by default
    ],
)
def test_denied_by(version: str, scope: str, api_key: bool, denied_by: str) -> None:
    assert load_scope_map(version).denied_by(scope, api_key=api_key).value == denied_by


def test_override_wildcards_and_parameters_match_whole_segments() -> None:
    scope_map = load_scope_map(
        overrides=[
            ScopeOverride("GET", "/internal/*", "internal"),
            ScopeOverride("GET", "/a/{x}/b/{y}", "two"),
        ]
    )
    assert scope_map.scope_for("GET", "/internal/") == "internal"
    assert scope_map.scope_for("GET", "/internals") != "internal"  # the `*` follows the slash
    assert scope_map.scope_for("GET", "/a/1/b/2") == "two"
    assert (
        scope_map.scope_for("GET", "/c/1/b/2") != "two" and scope_map.scope_for("GET", "/a/1/b/2/3") != "two"
    )


@given(
    st.lists(
        st.sampled_from(["a", "/", "%41", "%e2%82%ac", "%F0%9F%98%80", "%ff", "?", "%3F", "%"]), max_size=40
    ),
    st.integers(min_value=1, max_value=30),
)
def test_decode_path_is_decoding_all_then_cutting(parts: list[str], limit: int) -> None:
    path = "".join(parts)
    assert scopes_module.decode_path(path, limit) == unquote(path.partition("?")[0])[:limit]


def test_a_path_longer_than_an_event_keeps_is_still_routed_whole() -> None:
    uid = "m" * 2 * scopes_module.MAX_PATH
    assert CURRENT.scope_for("GET", f"/v1/models/{uid}/events") == "models:read"
    assert CURRENT.scope_for("GET", f"/v1/models/{uid}") == "models:list"


def test_the_lookup_and_permission_caches_never_pass_their_limit() -> None:
    scope_map = load_scope_map()
    for i in range(scopes_module.CACHE_LIMIT + 1):
        scope_map.scope_for("GET", f"/v1/models/m{i}")
        scope_map.covers(frozenset({f"p{i}"}), "models:list", api_key=False)
    assert len(scope_map._cache) <= scopes_module.CACHE_LIMIT
    assert len(scope_map._expanded) <= scopes_module.CACHE_LIMIT
    assert scope_map.covers(frozenset({"models:list"}), "models:list", api_key=False) is True
