"""Which permission scope a request needed: (method, path) -> scope, for one Xinference version.

Owns the route table (`data/routes.yaml`, extracted from Xinference's source), the mapping of a
version string onto the table's tags, and the question whether a set of permissions covers a scope.

Rules:
- The path is taken as logged: the query string is dropped and percent-escapes are decoded
  (Starlette routes on the decoded path); nothing else is normalised.
- Overrides (rules.yaml `scopes:`) are tried first, then the table in registration order; the
  first match wins, as in Starlette. HEAD matches GET routes. Method `*` in an override matches any.
- Result: the route's scope (`any_of_scopes` routes: the first of `scopes_any`); `webui` for the
  web UI, the Swagger/ReDoc pages and /openapi.json; `public` for routes that need no user
  permission; `unmatched` when nothing matches. The v3+ SPA catch-all `GET /{full_path:path}`
  answers a JSON 404 for backend first segments (v1, docs, api, ...), so those stay `unmatched`.
- Versions: < 2.0 -> v1.17.1, 2.0-2.11 -> v2.11.0, 2.12 -> v2.12.0, 3.0-3.2 -> v3.2.1, newer or
  None -> head. v1.17.1 and v2.11.0 use the old scope names (`legacy_scopes_le_v2_11`) and the
  routes removed in v3.0 (`legacy_only_routes`); from 3.0 on ("advanced" auth by default) an API
  key may only use models:read / models:list routes, whatever its permissions: a scope outside
  them is denied by that limit (`denied_by`), not by the key's permissions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

import yaml

from xinf_watch import DATA
from xinf_watch.caches import remember
from xinf_watch.model import ScopeDenial

ROUTES_FILE = DATA / "routes.yaml"

WEBUI = "webui"
PUBLIC = "public"
UNMATCHED = "unmatched"
NEEDS_NO_PERMISSION = frozenset({WEBUI, PUBLIC, UNMATCHED})
API_KEY_SCOPES = frozenset({"models:read", "models:list"})  # advanced auth: all an API key may reach
HEAD_TAG = "head"
LEGACY_TAGS = frozenset({"v1.17.1", "v2.11.0"})
ADVANCED_AUTH_TAGS = frozenset({"v3.2.1", HEAD_TAG})
# First path segments the v3+ frontend catch-all refuses with a JSON 404 (frontend_static.py).
BACKEND_SEGMENTS = frozenset(
    {"v1", "token", "status", "metrics", "sdapi", "anthropic", "api", "docs", "redoc", "openapi.json"}
    | {"ui", "_next"}
)
CACHE_LIMIT = 8192

_VERSION_RE = re.compile(
    r"[vV]?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:[.-]?(?:a|b|rc|post|dev)\d*)*(?:\+[0-9A-Za-z.]+)?"
)
_PARAM_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(:path)?\}")


@dataclass(frozen=True, slots=True)
class ScopeOverride:
    """An extra route from rules.yaml `scopes:`; path may use {param}, {param:path} and a `*` suffix."""

    method: str
    path: str
    scope: str


@dataclass(frozen=True, slots=True)
class _Route:
    methods: frozenset[str]  # upper case; "*" = any
    pattern: re.Pattern[str]
    scope: str
    prefix: tuple[str, ...]  # literal leading path segments (at most two), for the index
    catch_all: bool = False  # the SPA catch-all: backend first segments are a JSON 404


@dataclass(frozen=True, slots=True)
class _Bucket:
    """Routes of one method, indexed by literal leading segments, each list in registration order."""

    by_two: Mapping[tuple[str, str], tuple[_Route, ...]]
    by_one: Mapping[str, tuple[_Route, ...]]
    rest: tuple[_Route, ...]


def version_tag(version: str | None) -> str:
    """The routes.yaml tag whose route table and auth rules apply to an Xinference version."""
    if version is None:
        return HEAD_TAG
    text = version.strip()
    if text.lower() in ("head", "main", "latest"):
        return HEAD_TAG
    m = _VERSION_RE.fullmatch(text)
    if m is None:
        raise ValueError(
            f'xinference_version: {version!r} is not a version (expected e.g. "4", "3.2" or "v2.11.0")'
        )
    major, minor = int(m.group(1)), int(m.group(2) or 0)
    if major < 2:
        return "v1.17.1"
    if major == 2:
        return "v2.11.0" if minor < 12 else "v2.12.0"
    if major == 3 and minor <= 2:
        return "v3.2.1"
    return HEAD_TAG


class ScopeMap:
    """(method, path) -> scope for one version, plus the permission check of that version."""

    __slots__ = ("version_tag", "advanced_auth", "_overrides", "_buckets", "_aliases", "_cache", "_expanded")

    def __init__(
        self,
        routes: Sequence[_Route],
        *,
        version_tag: str,
        overrides: Sequence[_Route] = (),
        legacy_scope_aliases: Mapping[str, str] | None = None,
    ) -> None:
        self.version_tag = version_tag
        self.advanced_auth = version_tag in ADVANCED_AUTH_TAGS
        self._overrides = tuple(overrides)
        methods = {m for r in routes for m in r.methods}
        self._buckets = {m: _bucket([r for r in routes if m in r.methods]) for m in methods}
        # Old scope names are expanded only where Xinference does it (v2.12.0 on).
        self._aliases = {} if version_tag in LEGACY_TAGS else dict(legacy_scope_aliases or {})
        self._cache: dict[tuple[str, str], str] = {}
        self._expanded: dict[frozenset[str], frozenset[str]] = {}

    def __repr__(self) -> str:
        return f"ScopeMap(version_tag={self.version_tag!r}, advanced_auth={self.advanced_auth})"

    def scope_for(self, method: str, path: str) -> str:
        key = (method, path)
        scope = self._cache.get(key)
        if scope is None:
            scope = remember(self._cache, key, self._lookup(method.upper(), _route_path(path)), CACHE_LIMIT)
        return scope

    def covers(self, permissions: frozenset[str] | None, scope: str, *, api_key: bool) -> bool | None:
        """Whether `permissions` allow `scope`; None when the permissions are not known."""
        if scope in NEEDS_NO_PERMISSION:
            return True
        if permissions is None:
            return None
        if api_key and self.advanced_auth and scope not in API_KEY_SCOPES:
            return False
        expanded = self._expanded.get(permissions)
        if expanded is None:
            expanded = permissions | {self._aliases[p] for p in permissions if p in self._aliases}
            remember(self._expanded, permissions, expanded, CACHE_LIMIT)
        return "admin" in expanded or scope in expanded

    def denied_by(self, scope: str, *, api_key: bool) -> ScopeDenial:
        """What refuses a scope that `covers` found not allowed: the API-key limit of advanced auth
        comes first (Xinference checks it instead of the permissions), else the permissions."""
        if api_key and self.advanced_auth and scope not in API_KEY_SCOPES:
            return ScopeDenial.API_KEY_LIMIT
        return ScopeDenial.PERMISSIONS

    def _lookup(self, method: str, path: str) -> str:
        for route in self._overrides:
            if ("*" in route.methods or method in route.methods) and route.pattern.fullmatch(path):
                return route.scope
        bucket = self._buckets.get("GET" if method == "HEAD" else method)
        if bucket is None or not path.startswith("/"):
            return UNMATCHED
        segments = path.split("/", 3)
        candidates = bucket.rest
        if len(segments) > 2 and (segments[1], segments[2]) in bucket.by_two:
            candidates = bucket.by_two[segments[1], segments[2]]
        elif segments[1] in bucket.by_one:
            candidates = bucket.by_one[segments[1]]
        for route in candidates:
            if route.pattern.fullmatch(path):
                if route.catch_all and segments[1] in BACKEND_SEGMENTS:
                    return UNMATCHED
                return route.scope
        return UNMATCHED


def load_scope_map(version: str | None = None, overrides: Sequence[ScopeOverride] = ()) -> ScopeMap:
    """The scope map of an Xinference version (None: current), with rules.yaml overrides first."""
    tag = version_tag(version)
    table = _route_table()
    legacy = tag in LEGACY_TAGS
    routes = [_table_route(r, legacy=legacy) for r in table["routes"] if tag in r["present_in"]]
    routes += [_legacy_only_route(r) for r in table.get("legacy_only_routes") or () if tag in r["present_in"]]
    return ScopeMap(
        routes,
        version_tag=tag,
        overrides=[_override_route(o) for o in overrides],
        legacy_scope_aliases=table["meta"].get("legacy_scope_aliases") or {},
    )


@lru_cache(maxsize=1)
def _route_table() -> dict[str, Any]:
    # Parsed once per process: the packaged table never changes while running.
    with ROUTES_FILE.open(encoding="utf-8") as f:
        data: dict[str, Any] = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return data


MAX_PATH = 1024  # characters of an event's decoded path
_MAX_ROUTE_PATH = 8192  # characters a route lookup sees: nginx refuses longer request lines by default


def decode_path(path: str, limit: int = MAX_PATH) -> str:
    """`path` without its query string, percent-decoded once (bad UTF-8 replaced), cut at `limit`.

    The cut comes first: '%XX' per byte and up to 4 bytes per character, so `limit` characters decode
    from at most 12 * (limit + 1) raw ones, and only those are decoded, whatever the path's length
    (a 1 MiB percent-encoded path costs what a 12 KiB one does), with the same result as decoding all.
    """
    raw = 12 * (limit + 1)
    end = path.find("?", 0, raw)
    path = path[: end if end >= 0 else raw]
    return (unquote(path) if "%" in path else path)[:limit]


def _route_path(path: str) -> str:
    return decode_path(path, _MAX_ROUTE_PATH)


def _table_route(spec: Mapping[str, Any], *, legacy: bool) -> _Route:
    if spec.get("group") in ("webui", "docs"):
        scope = WEBUI
    elif spec["auth"] not in ("scopes", "any_of_scopes"):  # none, internal_token: no user permission
        scope = PUBLIC
    else:
        names = spec.get("legacy_scopes_le_v2_11") if legacy else None
        if names is None:
            names = spec.get("scopes_any") if spec["auth"] == "any_of_scopes" else spec.get("scopes")
        scope = names[0] if names else PUBLIC
    path = spec["path"]
    return _Route(
        methods=_methods(spec["method"]),
        pattern=re.compile(spec["regex"]),
        scope=scope,
        prefix=_literal_prefix(path),
        catch_all=spec.get("group") == "webui" and not _literal_prefix(path),
    )


def _legacy_only_route(spec: Mapping[str, Any]) -> _Route:
    # The unauthenticated ones are the old React UI: `/` (redirect) and the `/ui/` static mount.
    names = spec.get("legacy_scopes_le_v2_11") or ()
    scope = WEBUI if spec.get("auth") == "none" else (names[0] if names else PUBLIC)
    return _Route(_methods(spec["method"]), re.compile(spec["regex"]), scope, _literal_prefix(spec["path"]))


def _override_route(override: ScopeOverride) -> _Route:
    method = override.method.strip().upper()
    if not method or not override.scope.strip():
        raise ValueError(f"scopes: {override!r}: method and scope must not be empty")
    if not override.path.startswith("/"):
        raise ValueError(f"scopes: path {override.path!r} must start with '/' (e.g. /v1/chat/completions)")
    template = override.path[:-1] if override.path.endswith("*") else override.path
    regex, literals, pos = [], [], 0
    for m in _PARAM_RE.finditer(template):
        literals.append(template[pos : m.start()])
        regex += [re.escape(literals[-1]), ".*" if m.group(2) else "[^/]+"]
        pos = m.end()
    literals.append(template[pos:])
    regex.append(re.escape(literals[-1]))
    if any("{" in part or "}" in part for part in literals):
        raise ValueError(f"scopes: path {override.path!r}: parameters look like {{name}} or {{name:path}}")
    if template is not override.path:
        regex.append(".*")
    return _Route(_methods(method), re.compile("".join(regex)), override.scope.strip(), ())


def _methods(method: str) -> frozenset[str]:
    method = method.upper()
    return frozenset({method}) if method != "GET" else frozenset({"GET", "HEAD"})


def _literal_prefix(path: str) -> tuple[str, ...]:
    prefix: list[str] = []
    for segment in path.split("/")[1:3]:
        if "{" in segment or "*" in segment:
            break
        prefix.append(segment)
    return tuple(prefix)


def _bucket(routes: Iterable[_Route]) -> _Bucket:
    # A route can only match paths that start with its literal segments, so each index entry keeps
    # the routes that could match (in registration order): this is what keeps misses cheap.
    ordered = list(routes)
    rest = tuple(r for r in ordered if not r.prefix)
    firsts = {r.prefix[0] for r in ordered if r.prefix}
    pairs = {(r.prefix[0], r.prefix[1]) for r in ordered if len(r.prefix) >= 2}
    by_one = {s: tuple(r for r in ordered if r.prefix in ((), (s,))) for s in firsts}
    by_two = {(a, b): tuple(r for r in ordered if r.prefix in ((), (a,), (a, b))) for a, b in pairs}
    return _Bucket(by_two=by_two, by_one=by_one, rest=rest)
