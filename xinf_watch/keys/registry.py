"""The key registry: whose credential a log line carries, and what state it was in at that time.

Owns the key and user entries and the resolving of logged credentials to an `Attribution`. Raw
keys never leave the registry: an entry keeps only the SHA-256 of its key, the 7-char prefix
Xinference logs as `key_prefix`, and an alias; reprs leave the hash out, and errors name a key by
alias or `sha256:<first 8 hex>`.

Resolving (`KeyRegistry.resolve`, per log line, cached per credential string):
- no value, "" or "-" -> credential none.
- `Bearer <token>` (scheme word in any case) or a bare token. A token whose SHA-256 is in the
  registry, or a 64-hex SHA-256 that is (gateways that hash), is that key. Otherwise: `sk-`/`xf-`
  tokens and 64-hex are unknown API keys; `eyJ...` tokens are JWTs, attributed to `jwt:<sub>` only
  when `sub` is a known user (so nobody can mint label values), with `exp` checked at the event
  time and no signature check; anything else (`Bearer undefined`, `Basic ...`, an alias: an alias
  is a name, not a credential) is credential other, key unknown.
- A gateway's consumer name (Kong, APISIX: `resolve_consumer`, only from the log's consumer field,
  where key-auth hid the key) equal to an alias is that key.
- Unknown credentials carry a fingerprint: the first 12 hex of the token's SHA-256 (of a hashed
  credential: its first 12 hex, so raw and hashed logs agree).
- Key state at `at`: revoked (the entry is revoked, or its owner disabled, and `at` is at or after
  revoked_at / disabled_at; no date: at all times), else expired (expires_at <= at), else valid.
  JWT state: expired (exp < at), revoked (user disabled at `at`), valid.
- A resolution is a short timeline (at most one change per date: expiry, revocation), so the
  state of a line is a bisect over at most two times in a cached tuple.

Audit-log hints (`resolve_hint`): audit.log names a key by user, key name and 7-char prefix. A
prefix with neither user nor name is how Xinference logs a key it did not find (`invalid_key`),
so it stays unknown even if a registry key has that prefix. Otherwise prefer the entry whose
prefix, owner and name all match, then prefix and owner, then the only entry with that prefix
that does not contradict the hint.

Loading key files into a registry is `keys/files.py`'s job (and reading Xinference's auth.db
`keys/authdb.py`'s); this module reads no file and imports neither.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Network, IPv6Network

from xinf_watch.caches import remember
from xinf_watch.model import CredentialKind, KeyHint, KeyState

IPNetwork = IPv4Network | IPv6Network
CACHE_LIMIT = 4096
_JWT_MAX = 16384  # longer "JWTs" are not decoded: bounds the work an attacker can cause per line
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_SUB = re.compile(r'"sub"\s*:\s*"([^"\\]{1,256})"')
_EXP = re.compile(r'"exp"\s*:\s*(\d{1,15}(?:\.\d+)?)[,}\s]')


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
    revoked_at: float | None = None  # when revoked: from then on; None: at all times

    @property
    def ref(self) -> str:
        return f"sha256:{self.sha256[:8]}"

    @property
    def revoked_from(self) -> float | None:
        """From when the key is revoked: -inf at all times, None never."""
        return _since(self.revoked, self.revoked_at)

    def state_at(self, at: float) -> KeyState:
        """The key's own state at `at` (`KeyRegistry.state_of` also counts a disabled owner)."""
        return _state(at, self.revoked_from, self.expires_at)


@dataclass(frozen=True, slots=True)
class UserEntry:
    name: str
    permissions: frozenset[str] | None  # None: not known
    disabled: bool = False
    disabled_at: float | None = None  # when disabled: from then on; None: at all times

    @property
    def disabled_from(self) -> float | None:
        """From when the user is disabled: -inf at all times, None never."""
        return _since(self.disabled, self.disabled_at)


def _since(flag: bool, at: float | None) -> float | None:
    if not flag:
        return None
    return -math.inf if at is None else at


def _state(at: float, revoked_from: float | None, expires_at: float | None) -> KeyState:
    if revoked_from is not None and revoked_from <= at:
        return KeyState.REVOKED
    if expires_at is not None and expires_at <= at:
        return KeyState.EXPIRED
    return KeyState.VALID


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
    """A cached lookup: `states[i]` holds from `changes[i - 1]` (inclusive) to `changes[i]`."""

    changes: tuple[float, ...]  # ascending; () for an attribution that never changes
    states: tuple[Attribution, ...]  # one more than changes

    def at(self, at: float) -> Attribution:
        return self.states[bisect_right(self.changes, at)] if self.changes else self.states[0]


def _fixed(attribution: Attribution) -> _Resolution:
    return _Resolution((), (attribution,))


def _timeline(
    base: Attribution, revoked_from: float | None, expires: float | None, *, expiry_wins: bool = False
) -> _Resolution:
    """`base` (valid) becoming revoked from `revoked_from` and expired from `expires` (None: never).
    Revoked wins over expired for keys; for JWTs (`expiry_wins`) an expired token is expired."""
    changes = sorted({t for t in (revoked_from, expires) if t is not None and math.isfinite(t)})

    def state(at: float) -> Attribution:
        revoked = revoked_from is not None and revoked_from <= at
        expired = expires is not None and expires <= at
        if expired and (expiry_wins or not revoked):
            return replace(base, state=KeyState.EXPIRED)
        return replace(base, state=KeyState.REVOKED) if revoked else base

    return _Resolution(tuple(changes), (state(-math.inf), *(state(t) for t in changes)))


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
        """Attribute an Authorization value (or bare token, or hash of one) at time `at`."""
        if not credential:
            return _NONE.states[0]
        res = self._cache.get(credential)
        if res is None:
            res = remember(self._cache, credential, self._lookup(credential), CACHE_LIMIT)
        return res.states[bisect_right(res.changes, at)] if res.changes else res.states[0]

    def resolve_consumer(self, name: str, at: float) -> Attribution:
        """Attribute a gateway consumer name (the key the gateway authenticated) at time `at`."""
        entry = self._by_alias.get(name)
        if entry is None:
            return _unknown(CredentialKind.OTHER, _fingerprint(name)).states[0]
        res = self._res[entry.sha256]
        return res.states[bisect_right(res.changes, at)] if res.changes else res.states[0]

    def resolve_hint(self, hint: KeyHint, at: float) -> Attribution:
        """Attribute an audit.log line's user / key name / key prefix at time `at`."""
        res = self._hints.get(hint)
        if res is None:
            res = remember(self._hints, hint, self._hint_lookup(hint), CACHE_LIMIT)
        return res.at(at)

    def _entry_resolution(self, entry: KeyEntry) -> _Resolution:
        owner = self._users.get(entry.owner) if entry.owner else None
        valid = Attribution(
            CredentialKind.API_KEY, entry.alias, entry.owner, KeyState.VALID, entry.permissions,
            entry.allowed_ips, None, True,
        )  # fmt: skip
        since = [t for t in (entry.revoked_from, owner.disabled_from if owner else None) if t is not None]
        return _timeline(valid, min(since, default=None), entry.expires_at)

    def _lookup(self, credential: str) -> _Resolution:
        value = credential.strip()
        if not value or value == "-":
            return _NONE
        parts = value.split(None, 1)
        if len(parts) == 2:
            if parts[0].lower() != "bearer":
                return _unknown(CredentialKind.OTHER, _fingerprint(value))
            return self._token(parts[1].strip())
        return self._token(value)

    def _token(self, token: str) -> _Resolution:
        entry = self._by_sha.get(sha256_hex(token))
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
        return _unknown(CredentialKind.OTHER, _fingerprint(token))

    def _jwt(self, token: str) -> _Resolution:
        sub, exp = _jwt_claims(token)
        user = self._users.get(sub) if sub else None
        if user is None:
            return _unknown(CredentialKind.JWT, _fingerprint(token))
        # exp is inclusive: the token is expired once exp < at
        expires = None if exp is None else math.nextafter(exp, math.inf)
        return _timeline(self._session(user), user.disabled_from, expires, expiry_wins=True)

    def _session(self, user: UserEntry) -> Attribution:
        name = user.name
        return Attribution(
            CredentialKind.JWT, f"jwt:{name}", name, KeyState.VALID, user.permissions, (), None, False
        )

    def _hint_lookup(self, hint: KeyHint) -> _Resolution:
        user, name, prefix = hint.user.strip(), hint.key_name.strip(), hint.key_prefix.strip()
        auth_type = hint.auth_type.strip().lower()
        if auth_type == "jwt" and user:
            known = self._users.get(user)
            if known is None:
                return _unknown(CredentialKind.JWT, _fingerprint(f"user:{user}"))
            return _timeline(self._session(known), known.disabled_from, None)
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
        if user and name:
            exact = [e for e in candidates if e.owner == user and e.name == name]
            if len(exact) == 1:
                return exact[0]
        return _fitting_hint_match(candidates, user, name)


def _fitting_hint_match(candidates: Sequence[KeyEntry], user: str, name: str) -> KeyEntry | None:
    """Among the entries the hint does not contradict (another owner, another key name): the only
    one of the hint's user, else the only one."""
    fits = [e for e in candidates if e.owner in (None, user or e.owner) and e.name in (None, name or e.name)]
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


def sha256_hex(text: str) -> str:
    """SHA-256 hex of a key as Xinference stores it (`api_keys.key_hash`) and the registry keys it."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _fingerprint(text: str) -> str:
    return sha256_hex(text)[:12]


def _jwt_claims(token: str) -> tuple[str | None, float | None]:
    """`sub` and `exp` of a JWT payload; (None, None) for anything that is not one. Never raises."""
    raw = _jwt_payload(token)
    if raw is None:
        return None, None
    sub, exp = _payload_claims(raw)
    if not isinstance(sub, str) or not sub:
        return None, None
    return sub, _exp_seconds(exp)


def _jwt_payload(token: str) -> bytes | None:
    """The decoded payload of a JWT-shaped token; None when it is not one (or too long to decode)."""
    parts = token.split(".", 2)
    if len(token) > _JWT_MAX or len(parts) < 2 or not _B64URL.fullmatch(parts[1]):
        return None
    payload = parts[1][: len(parts[1]) - 1] if len(parts[1]) % 4 == 1 else parts[1]
    try:
        return base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    except (binascii.Error, ValueError):
        return None


def _payload_claims(raw: bytes) -> tuple[object, object]:
    """`sub` and `exp` as the payload has them, not checked yet."""
    try:
        claims = json.loads(raw)
    except (ValueError, RecursionError):
        claims = None
    if isinstance(claims, dict):
        return claims.get("sub"), claims.get("exp")
    # A gateway that truncates the header (HAProxy's capture length) cuts the payload: read
    # what is left. Safe: the user must still be known, and signatures are never checked anyway.
    text = raw.decode("utf-8", "replace")
    sub_m, exp_m = _SUB.search(text), _EXP.search(text)
    return (sub_m.group(1) if sub_m else None), (float(exp_m.group(1)) if exp_m else None)


def _exp_seconds(exp: object) -> float | None:
    """`exp` as a finite number of seconds; None for anything else."""
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    try:
        exp_f = float(exp)
    except OverflowError:
        return None
    return exp_f if math.isfinite(exp_f) else None
