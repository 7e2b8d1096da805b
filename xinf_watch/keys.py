"""The key registry: whose credential a log line carries, and what state it was in at that time.

Owns the key and user entries, resolving logged credentials to an `Attribution`, and loading key
files. Raw keys never leave this module: an entry keeps only the SHA-256 of its key, the 7-char
prefix Xinference logs as `key_prefix`, and an alias; reprs leave the hash out, and errors name a
key by alias or `sha256:<first 8 hex>`.

Resolving (`KeyRegistry.resolve`, per log line, cached per credential string):
- no value, "" or "-" -> credential none.
- `Bearer <token>` (scheme word in any case) or a bare token. A token whose SHA-256 is in the
  registry, or a 64-hex SHA-256 that is (gateways that hash), is that key. Otherwise: `sk-`/`xf-`
  tokens and 64-hex are unknown API keys; `eyJ...` tokens are JWTs, attributed to `jwt:<sub>` only
  when `sub` is a known user (so nobody can mint label values), with `exp` checked at the event
  time and no signature check; a bare value equal to an alias is that key (Kong/APISIX consumer);
  anything else (`Bearer undefined`, `Basic ...`) is credential other, key unknown.
- Unknown credentials carry a fingerprint: the first 12 hex of the token's SHA-256 (of a hashed
  credential: its first 12 hex, so raw and hashed logs agree).
- Key state: revoked (the entry, or its owner, is disabled), expired (expires_at <= at), valid.
  JWT state: expired (exp < at), revoked (user disabled), valid.

Audit-log hints (`resolve_hint`): audit.log names a key by user, key name and 7-char prefix. A
prefix with neither user nor name is how Xinference logs a key it did not find (`invalid_key`),
so it stays unknown even if a registry key has that prefix. Otherwise prefer the entry whose
prefix, owner and name all match, then prefix and owner, then the only entry with that prefix
that does not contradict the hint.

Key files (`load_registry`), detected from content: Xinference's `--auth-config` JSON
(`user_config`; passwords and the JWT secret are never read), `{"api_keys": [{key, permissions}]}`,
and xinf-watch `keys.yaml` (`keys:`). Xinference's SQLite auth.db is recognised and refused for now
(`_load_auth_db` is where it plugs in). Merging is by key SHA-256, field by field: keys.yaml beats
the auth configs whatever the file order, and among files of the same rank the later one wins. So
alias, owner, expiry, revocation, allowed_ips and permissions come from keys.yaml when it gives
them, else from the auth config (a key's permissions = its user's).
Aliases: explicit aliases must be unique (else `KeyFileError`) and cannot be `unknown`, `none` or
`jwt:...`. The default alias is `<owner>:<last 4 chars of key>` (`<owner>:<first 4 hex of sha256>`
for a key known only by hash; `key:` without an owner). Default aliases that collide with any
other alias all get `-<first 6 hex of sha256>` appended, so no alias depends on file order.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any

import yaml

from xinf_watch.model import CredentialKind, KeyHint, KeyState

IPNetwork = IPv4Network | IPv6Network
CACHE_LIMIT = 4096
_JWT_MAX = 16384  # longer "JWTs" are not decoded: bounds the work an attacker can cause per line
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_SUB = re.compile(r'"sub"\s*:\s*"([^"\\]{1,256})"')
_EXP = re.compile(r'"exp"\s*:\s*(\d{1,15}(?:\.\d+)?)[,}\s]')
_KEYLIKE = re.compile(r"(?:sk-|xf-|eyJ)[A-Za-z0-9]|[0-9a-fA-F]{32}")
_RESERVED = frozenset({"unknown", "none"})
_SQLITE_MAGIC = b"SQLite format 3\x00"
_KEYS_YAML_FIELDS = frozenset(
    {"key", "key_sha256", "alias", "owner", "name", "permissions", "created_at", "expires_at", "revoked"}
    | {"allowed_ips"}
)
_RANK_AUTH_CONFIG, _RANK_KEYS_YAML = 1, 2


class KeyFileError(ValueError):
    """A key file that cannot be used: `file[:line]: field: what is wrong (what was expected)`."""

    def __init__(self, file: Path | str, problem: str, *, line: int | None = None, where: str = "") -> None:
        location = f"{file}:{line}" if line else str(file)
        super().__init__(f"{location}: {where}: {problem}" if where else f"{location}: {problem}")


@dataclass(frozen=True, slots=True)
class KeyEntry:
    alias: str
    owner: str | None
    permissions: frozenset[str] | None  # None: not known
    created_at: float | None
    expires_at: float | None
    revoked: bool
    allowed_ips: tuple[IPNetwork, ...]
    sha256: str = field(repr=False)  # with prefix and alias, enough to brute-force short sk- keys
    prefix: str | None  # first 7 chars (audit.log's api_key_prefix); None when only the hash is known
    name: str | None = None  # Xinference's key name, e.g. migrated-sk-Yn9g

    @property
    def ref(self) -> str:
        return f"sha256:{self.sha256[:8]}"

    def state_at(self, at: float) -> KeyState:
        if self.revoked:
            return KeyState.REVOKED
        if self.expires_at is not None and self.expires_at <= at:
            return KeyState.EXPIRED
        return KeyState.VALID


@dataclass(frozen=True, slots=True)
class UserEntry:
    name: str
    permissions: frozenset[str] | None  # None: not known
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class Attribution:
    credential: CredentialKind
    key: str  # alias | "unknown" | "none" | "jwt:<user>"
    owner: str | None
    state: KeyState
    permissions: frozenset[str] | None
    allowed_ips: tuple[IPNetwork, ...]
    fingerprint: str | None  # unknown credentials only: first 12 hex of sha256(token)
    is_api_key: bool


@dataclass(frozen=True, slots=True)
class _Resolution:
    """A cached lookup: the attribution before and from `until` on (a key or JWT expiring)."""

    until: float
    before: Attribution
    after: Attribution

    def at(self, at: float) -> Attribution:
        return self.before if at < self.until else self.after


def _fixed(attribution: Attribution) -> _Resolution:
    return _Resolution(math.inf, attribution, attribution)


_NONE = _fixed(Attribution(CredentialKind.NONE, "none", None, KeyState.NONE, None, (), None, False))


class KeyRegistry:
    """Key and user entries, and the resolution of logged credentials to them."""

    __slots__ = (
        "entries",
        "users",
        "_by_sha",
        "_by_alias",
        "_by_prefix",
        "_users",
        "_res",
        "_cache",
        "_hints",
    )

    def __init__(self, entries: Iterable[KeyEntry] = (), users: Iterable[UserEntry] = ()) -> None:
        self.entries = tuple(entries)
        self._by_sha: dict[str, KeyEntry] = {}
        self._by_alias: dict[str, KeyEntry] = {}
        self._by_prefix: dict[str, list[KeyEntry]] = {}
        for entry in self.entries:
            if entry.sha256 in self._by_sha:
                raise ValueError(f"key {entry.alias} ({entry.ref}) is listed twice")
            if entry.alias in self._by_alias:
                raise ValueError(f"alias {entry.alias!r} names two keys")
            self._by_sha[entry.sha256] = entry
            self._by_alias[entry.alias] = entry
            if entry.prefix:
                self._by_prefix.setdefault(entry.prefix, []).append(entry)
        self._users = {u.name: u for u in users}
        for entry in self.entries:
            if entry.owner and entry.owner not in self._users:
                self._users[entry.owner] = UserEntry(entry.owner, None)
        self.users = tuple(self._users.values())
        self._res = {e.sha256: self._entry_resolution(e) for e in self.entries}
        self._cache: dict[str, _Resolution] = {}
        self._hints: dict[KeyHint, _Resolution] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return f"KeyRegistry({len(self.entries)} keys, {len(self.users)} users)"

    def known_users(self) -> frozenset[str]:
        return frozenset(self._users)

    def by_alias(self, alias: str) -> KeyEntry | None:
        return self._by_alias.get(alias)

    def state_of(self, entry: KeyEntry, at: float) -> KeyState:
        """The entry's state at `at`, counting a disabled owner (unlike `KeyEntry.state_at`)."""
        res = self._res.get(entry.sha256)
        return res.at(at).state if res is not None else entry.state_at(at)

    def resolve(self, credential: str | None, at: float) -> Attribution:
        """Attribute an Authorization value (or bare token, hash, consumer name) at time `at`."""
        if not credential:
            return _NONE.before
        res = self._cache.get(credential)
        if res is None:
            res = self._lookup(credential)
            if len(self._cache) >= CACHE_LIMIT:
                self._cache.clear()
            self._cache[credential] = res
        return res.before if at < res.until else res.after

    def resolve_hint(self, hint: KeyHint, at: float) -> Attribution:
        """Attribute an audit.log line's user / key name / key prefix at time `at`."""
        res = self._hints.get(hint)
        if res is None:
            res = self._hint_lookup(hint)
            if len(self._hints) >= CACHE_LIMIT:
                self._hints.clear()
            self._hints[hint] = res
        return res.at(at)

    def _entry_resolution(self, entry: KeyEntry) -> _Resolution:
        owner = self._users.get(entry.owner) if entry.owner else None
        valid = Attribution(
            CredentialKind.API_KEY, entry.alias, entry.owner, KeyState.VALID, entry.permissions,
            entry.allowed_ips, None, True,
        )  # fmt: skip
        if entry.revoked or (owner is not None and owner.disabled):
            return _fixed(replace(valid, state=KeyState.REVOKED))
        if entry.expires_at is None:
            return _fixed(valid)
        return _Resolution(entry.expires_at, valid, replace(valid, state=KeyState.EXPIRED))

    def _lookup(self, credential: str) -> _Resolution:
        value = credential.strip()
        if not value or value == "-":
            return _NONE
        parts = value.split(None, 1)
        if len(parts) == 2:
            if parts[0].lower() != "bearer":
                return _unknown(CredentialKind.OTHER, _fingerprint(value))
            return self._token(parts[1].strip(), bare=False)
        return self._token(value, bare=True)

    def _token(self, token: str, *, bare: bool) -> _Resolution:
        entry = self._by_sha.get(_sha256(token))
        if entry is not None:
            return self._res[entry.sha256]
        if _HEX64.fullmatch(token):
            digest = token.lower()
            entry = self._by_sha.get(digest)
            return self._res[entry.sha256] if entry else _unknown(CredentialKind.API_KEY, digest[:12])
        if token.startswith(("sk-", "xf-")):
            return _unknown(CredentialKind.API_KEY, _fingerprint(token))
        if token.startswith("eyJ") and "." in token:
            return self._jwt(token)
        if bare and token in self._by_alias:
            return self._res[self._by_alias[token].sha256]
        return _unknown(CredentialKind.OTHER, _fingerprint(token))

    def _jwt(self, token: str) -> _Resolution:
        sub, exp = _jwt_claims(token)
        user = self._users.get(sub) if sub else None
        if user is None:
            return _unknown(CredentialKind.JWT, _fingerprint(token))
        session = self._session(user)
        if exp is None:
            return _fixed(session)
        # exp is inclusive: the token is expired once exp < at
        return _Resolution(math.nextafter(exp, math.inf), session, replace(session, state=KeyState.EXPIRED))

    def _session(self, user: UserEntry) -> Attribution:
        state = KeyState.REVOKED if user.disabled else KeyState.VALID
        return Attribution(
            CredentialKind.JWT, f"jwt:{user.name}", user.name, state, user.permissions, (), None, False
        )

    def _hint_lookup(self, hint: KeyHint) -> _Resolution:
        user, name, prefix = hint.user.strip(), hint.key_name.strip(), hint.key_prefix.strip()
        auth_type = hint.auth_type.strip().lower()
        if auth_type == "jwt" and user:
            known = self._users.get(user)
            if known is None:
                return _unknown(CredentialKind.JWT, _fingerprint(f"user:{user}"))
            return _fixed(self._session(known))
        if not prefix:
            if user and auth_type == "api_key":
                return _unknown(CredentialKind.API_KEY, None)
            return _NONE  # no credential, or a password login at /token (auth_type none)
        entry = self._match_hint(prefix, user, name)
        if entry is None:
            return _unknown(CredentialKind.API_KEY, _fingerprint(f"prefix:{prefix}"))
        return self._res[entry.sha256]

    def _match_hint(self, prefix: str, user: str, name: str) -> KeyEntry | None:
        candidates = self._by_prefix.get(prefix, ())
        if not candidates or not (user or name):
            return None
        exact = [e for e in candidates if user and name and e.owner == user and e.name == name]
        if len(exact) == 1:
            return exact[0]
        # An entry fits unless the hint contradicts it (another owner, another key name).
        fits = [
            e for e in candidates if e.owner in (None, user or e.owner) and e.name in (None, name or e.name)
        ]
        owned = [e for e in fits if e.owner == user]
        if user and len(owned) == 1:
            return owned[0]
        return fits[0] if len(fits) == 1 else None


def _unknown(kind: CredentialKind, fingerprint: str | None) -> _Resolution:
    return _fixed(
        Attribution(
            kind, "unknown", None, KeyState.UNKNOWN, None, (), fingerprint, kind == CredentialKind.API_KEY
        )
    )


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _fingerprint(text: str) -> str:
    return _sha256(text)[:12]


def _jwt_claims(token: str) -> tuple[str | None, float | None]:
    """`sub` and `exp` of a JWT payload; (None, None) for anything that is not one. Never raises."""
    parts = token.split(".", 2)
    if len(token) > _JWT_MAX or len(parts) < 2 or not _B64URL.fullmatch(parts[1]):
        return None, None
    payload = parts[1][: len(parts[1]) - 1] if len(parts[1]) % 4 == 1 else parts[1]
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    except (binascii.Error, ValueError):
        return None, None
    try:
        claims = json.loads(raw)
    except (ValueError, RecursionError):
        claims = None
    if isinstance(claims, dict):
        sub, exp = claims.get("sub"), claims.get("exp")
    else:
        # A gateway that truncates the header (HAProxy's capture length) cuts the payload: read
        # what is left. Safe: the user must still be known, and signatures are never checked anyway.
        text = raw.decode("utf-8", "replace")
        sub_m, exp_m = _SUB.search(text), _EXP.search(text)
        sub = sub_m.group(1) if sub_m else None
        exp = float(exp_m.group(1)) if exp_m else None
    if not isinstance(sub, str) or not sub:
        return None, None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return sub, None
    try:
        exp_f = float(exp)
    except OverflowError:
        return sub, None
    return sub, exp_f if math.isfinite(exp_f) else None


# --- key files ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Origin:
    file: Path
    line: int | None
    where: str

    def error(self, problem: str) -> KeyFileError:
        return KeyFileError(self.file, problem, line=self.line, where=self.where)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else f"{self.file} {self.where}"


@dataclass(frozen=True, slots=True)
class _Contribution:
    """What one file says about one key; `fields` holds only what the file actually sets."""

    sha256: str
    prefix: str | None
    last4: str | None
    rank: int
    fields: dict[str, Any]
    origin: _Origin
    alias_at: _Origin | None = None


@dataclass(slots=True)
class _Merged:
    sha256: str
    prefix: str | None = None
    last4: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    alias_origin: _Origin | None = None


@dataclass(frozen=True, slots=True)
class _Doc:
    """A parsed file and, for YAML, its node tree (for line numbers)."""

    file: Path
    node: yaml.Node | None

    def at(self, *steps: str | int) -> _Origin:
        where = "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in steps).lstrip(".")
        return _Origin(self.file, _line_of(self.node, steps), where)


def load_registry(paths: Sequence[Path]) -> KeyRegistry:
    """Merge key files (any mix of auth.json, api_keys JSON and keys.yaml) into one registry."""
    contributions: list[_Contribution] = []
    users: dict[str, UserEntry] = {}
    for path in paths:
        keys, file_users = _load_file(Path(path))
        contributions += keys
        users.update((u.name, u) for u in file_users)
    merged: dict[str, _Merged] = {}
    for c in contributions:  # first pass: entry order = first appearance
        m = merged.setdefault(c.sha256, _Merged(c.sha256))
        m.prefix, m.last4 = m.prefix or c.prefix, m.last4 or c.last4
    for c in sorted(contributions, key=lambda c: c.rank):  # stable: later files win within a rank
        m = merged[c.sha256]
        m.fields.update(c.fields)
        if "alias" in c.fields:
            m.alias_origin = c.alias_at or c.origin
    return KeyRegistry(_entries(list(merged.values())), users.values())


def _entries(merged: list[_Merged]) -> list[KeyEntry]:
    aliases: dict[str, str] = {}  # sha256 -> alias
    explicit: dict[str, _Origin | None] = {}  # alias -> where it was set
    for m in merged:
        alias = m.fields.get("alias")
        if alias is None:
            continue
        if alias in explicit and m.alias_origin is not None:
            raise m.alias_origin.error(
                f"alias {alias!r} is already used by the key at {explicit[alias]} (expected a unique alias)"
            )
        explicit[alias], aliases[m.sha256] = m.alias_origin, alias
    defaults = {m.sha256: _default_alias(m) for m in merged if "alias" not in m.fields}
    taken = Counter([*explicit, *defaults.values()])
    for sha, alias in defaults.items():
        aliases[sha] = f"{alias}-{sha[:6]}" if taken[alias] > 1 else alias
    entries = []
    for m in merged:
        f = m.fields
        entries.append(
            KeyEntry(
                alias=aliases[m.sha256],
                owner=f.get("owner"),
                permissions=f.get("permissions"),
                created_at=f.get("created_at"),
                expires_at=f.get("expires_at"),
                revoked=f.get("revoked", False),
                allowed_ips=f.get("allowed_ips", ()),
                sha256=m.sha256,
                prefix=m.prefix,
                name=f.get("name"),
            )
        )
    if len({e.alias for e in entries}) != len(entries):
        raise KeyFileError(
            "keys", "two keys ended up with the same alias (expected unique aliases: set alias:)"
        )
    return entries


def _default_alias(m: _Merged) -> str:
    alias = f"{m.fields.get('owner') or 'key'}:{m.last4 or m.sha256[:4]}"
    return f"key:{alias}" if alias.startswith("jwt:") else alias  # jwt:<user> names JWT sessions


def _load_file(path: Path) -> tuple[list[_Contribution], list[UserEntry]]:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise KeyFileError(path, f"cannot read key file ({e.strerror or type(e).__name__})") from None
    if data.startswith(_SQLITE_MAGIC):
        return _load_auth_db(path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise KeyFileError(path, "not UTF-8 text (expected auth.json, keys.yaml or auth.db)") from None
    if text.lstrip().startswith("{"):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise KeyFileError(path, f"invalid JSON: {e.msg}", line=e.lineno) from None
        where = _Doc(path, None)
    else:
        where, doc = _parse_yaml(path, text)
    if isinstance(doc, dict) and "user_config" in doc:
        return _load_auth_config(where, doc)
    if isinstance(doc, dict) and "api_keys" in doc:
        return _load_api_keys(where, doc), []
    if isinstance(doc, dict) and "keys" in doc:
        return _load_keys_yaml(where, doc), []
    raise KeyFileError(
        path,
        "not a key file (expected Xinference's auth config with user_config, JSON with api_keys,"
        " or keys.yaml with a top-level keys: list)",
    )


def _load_auth_db(path: Path) -> tuple[list[_Contribution], list[UserEntry]]:
    """Extension point for Xinference's SQLite auth.db (advanced auth, 2.9+); not implemented yet.

    Plan: open read-only (`file:...?mode=ro`, uri=True); `api_keys.key_hash` is the SHA-256 hex of
    the key (the merge key), `key_prefix` the prefix, `name` the name, `enabled=0` -> revoked,
    `expires_at` (naive UTC ISO) -> expires_at; `users` + `user_permissions` -> UserEntry (disabled
    users included). Rank it `_RANK_AUTH_CONFIG` so keys.yaml metadata still wins.
    """
    raise KeyFileError(path, "Xinference's auth.db is not supported yet (expected auth.json or keys.yaml)")


def _parse_yaml(path: Path, text: str) -> tuple[_Doc, Any]:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        doc = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as e:
        # Only the problem and its line: the exception's own text quotes the file, keys included.
        mark = e.problem_mark or e.context_mark
        problem = e.problem or e.context or "syntax error"
        problem = "syntax error" if _KEYLIKE.search(problem) else problem
        raise KeyFileError(path, f"invalid YAML: {problem}", line=mark.line + 1 if mark else None) from None
    except ValueError as e:  # a timestamp that is not a date, e.g. 2026-13-01
        problem = "a value cannot be converted" if _KEYLIKE.search(str(e)) else str(e)
        raise KeyFileError(path, f"invalid YAML: {problem}") from None
    except yaml.YAMLError as e:
        raise KeyFileError(path, f"invalid YAML ({type(e).__name__})") from None
    finally:
        loader.dispose()
    return _Doc(path, node), doc


def _line_of(node: yaml.Node | None, steps: Sequence[str | int]) -> int | None:
    """Line of the node at `steps`, or of the deepest one that exists (a missing field: its mapping)."""
    for step in steps:
        if isinstance(node, yaml.MappingNode) and isinstance(step, str):
            child = next((v for k, v in node.value if getattr(k, "value", None) == step), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
            child = node.value[step]
        else:
            child = None
        if child is None:
            break
        node = child
    return node.start_mark.line + 1 if node is not None else None


def _load_keys_yaml(doc: _Doc, data: dict[str, Any]) -> list[_Contribution]:
    for extra in data.keys() - {"keys"}:
        raise doc.at(str(extra)).error("unknown field (expected only keys:)")
    items = data.get("keys") or []
    if not isinstance(items, list):
        raise doc.at("keys").error("expected a list of keys")
    out: list[_Contribution] = []
    seen: dict[str, _Origin] = {}
    for i, item in enumerate(items):
        origin = doc.at("keys", i)
        if not isinstance(item, dict):
            raise origin.error("expected a mapping with key or key_sha256, alias, owner, ...")
        for name in item.keys() - _KEYS_YAML_FIELDS:
            raise doc.at("keys", i, str(name)).error(
                f"unknown field (expected one of {', '.join(sorted(_KEYS_YAML_FIELDS))})"
            )
        if ("key" in item) == ("key_sha256" in item):
            raise origin.error("expected exactly one of key or key_sha256")
        if "key" in item:
            sha, prefix, last4 = _key_parts(doc.at("keys", i, "key"), item["key"])
        else:
            sha, prefix, last4 = _sha_field(doc.at("keys", i, "key_sha256"), item["key_sha256"]), None, None
        if sha in seen:
            raise origin.error(f"the same key as at {seen[sha]} (expected each key once)")
        seen[sha] = origin
        fields: dict[str, Any] = {}
        for name in ("alias", "owner", "name"):
            if item.get(name) is not None:
                fields[name] = _text(doc.at("keys", i, name), item[name])
        if "alias" in fields and (fields["alias"] in _RESERVED or fields["alias"].startswith("jwt:")):
            raise doc.at("keys", i, "alias").error(
                f"{fields['alias']!r} is reserved (expected another alias)"
            )
        if item.get("permissions") is not None:
            fields["permissions"] = _permissions(doc.at("keys", i, "permissions"), item["permissions"])
        for name in ("created_at", "expires_at"):
            if name in item:
                fields[name] = _epoch(doc.at("keys", i, name), item[name])
        if item.get("revoked") is not None:
            if not isinstance(item["revoked"], bool):
                raise doc.at("keys", i, "revoked").error("expected true or false")
            fields["revoked"] = item["revoked"]
        if item.get("allowed_ips") is not None:
            fields["allowed_ips"] = _networks(doc.at("keys", i, "allowed_ips"), item["allowed_ips"])
        alias_at = doc.at("keys", i, "alias") if "alias" in fields else None
        out.append(_Contribution(sha, prefix, last4, _RANK_KEYS_YAML, fields, origin, alias_at))
    return out


def _load_auth_config(doc: _Doc, data: dict[str, Any]) -> tuple[list[_Contribution], list[UserEntry]]:
    users_cfg = data.get("user_config")
    if not isinstance(users_cfg, list):
        raise doc.at("user_config").error("expected a list of users")
    out: list[_Contribution] = []
    users: list[UserEntry] = []
    seen: dict[str, _Origin] = {}
    for i, user in enumerate(users_cfg):
        if not isinstance(user, dict):
            raise doc.at("user_config", i).error("expected an object with username, permissions, api_keys")
        name = _text(doc.at("user_config", i, "username"), user.get("username"))
        perms = None
        if user.get("permissions") is not None:
            perms = _permissions(doc.at("user_config", i, "permissions"), user["permissions"])
        users.append(UserEntry(name, perms))
        keys = user.get("api_keys") or []
        if not isinstance(keys, list):
            raise doc.at("user_config", i, "api_keys").error("expected a list of keys")
        fields: dict[str, Any] = {"owner": name} | ({"permissions": perms} if perms is not None else {})
        for j, key in enumerate(keys):
            origin = doc.at("user_config", i, "api_keys", j)
            sha, prefix, last4 = _key_parts(origin, key)
            if sha in seen:
                raise origin.error(f"the same key as {seen[sha].where} (expected each key once)")
            seen[sha] = origin
            out.append(_Contribution(sha, prefix, last4, _RANK_AUTH_CONFIG, dict(fields), origin))
    return out, users


def _load_api_keys(doc: _Doc, data: dict[str, Any]) -> list[_Contribution]:
    items = data.get("api_keys")
    if not isinstance(items, list):
        raise doc.at("api_keys").error("expected a list of {key, permissions}")
    out: list[_Contribution] = []
    for i, item in enumerate(items):
        origin = doc.at("api_keys", i)
        if not isinstance(item, dict):
            raise origin.error("expected an object with key and permissions")
        sha, prefix, last4 = _key_parts(doc.at("api_keys", i, "key"), item.get("key"))
        fields: dict[str, Any] = {}
        if item.get("permissions") is not None:
            fields["permissions"] = _permissions(doc.at("api_keys", i, "permissions"), item["permissions"])
        for name in ("owner", "name"):
            if item.get(name) is not None:
                fields[name] = _text(doc.at("api_keys", i, name), item[name])
        out.append(_Contribution(sha, prefix, last4, _RANK_AUTH_CONFIG, fields, origin))
    return out


def _key_parts(origin: _Origin, value: object) -> tuple[str, str, str]:
    # Never echo the value: it is (or may be) a key.
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise origin.error("expected the key as a non-empty string without spaces")
    return _sha256(value), value[:7], value[-4:]


def _sha_field(origin: _Origin, value: object) -> str:
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise origin.error("expected the SHA-256 of the key as 64 hex digits")
    return value.lower()


def _text(origin: _Origin, value: object) -> str:
    if not isinstance(value, str) or not value.strip() or any(not c.isprintable() for c in value):
        raise origin.error(f"{_show(value)} is not a name (expected a non-empty single-line string)")
    return value.strip()


def _permissions(origin: _Origin, value: object) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(p, str) and p.strip() for p in value):
        raise origin.error(
            f"{_show(value)} is not a list of scopes (expected e.g. [models:list, models:read])"
        )
    return frozenset(p.strip() for p in value)


def _networks(origin: _Origin, value: object) -> tuple[IPNetwork, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise origin.error(f"{_show(value)} is not a list of networks (expected e.g. [10.1.0.0/16])")
    try:
        return tuple(ip_network(str(item), strict=False) for item in items)
    except ValueError:
        bad = next(item for item in items if not _is_network(item))
        raise origin.error(f"{_show(bad)} is not an IP network (expected e.g. 10.1.0.0/16)") from None


def _is_network(value: object) -> bool:
    try:
        ip_network(str(value), strict=False)
    except ValueError:
        return False
    return True


def _epoch(origin: _Origin, value: object) -> float | None:
    """A YAML date/datetime, ISO 8601 string or epoch number as Unix seconds; naive means UTC."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = datetime.fromisoformat(value.strip())
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp()
    raise origin.error(f"{_show(value)} is not a date (expected e.g. 2026-12-31 or 2026-12-31T00:00:00Z)")


def _show(value: object) -> str:
    """A value for an error message, unless it looks like a key put in the wrong field."""
    text = repr(value)
    if _KEYLIKE.search(text):
        return "(a value that looks like a key, not shown)"
    return text if len(text) <= 40 else text[:37] + "..."
