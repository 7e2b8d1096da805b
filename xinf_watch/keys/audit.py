"""Key hygiene report (`xinf-watch keys audit`): what is wrong with the registry's keys at a time.

Owns the audit rules and the report. `audit_keys` is pure (registry and time in, findings out);
`run_keys_audit` is the command's edge: it loads rules.yaml's key files, prints, and returns the
exit code. Findings name a key by its alias only: never the key, its hash or its prefix.

Rules, judged at `now`. A revoked key gets only `revoked`; every other key is checked for all the
rest. A "legacy" key is one whose key files show it as an `sk-` key.
- `revoked` (info): revoked in keys.yaml or Xinference, or its owner disabled, with the date
  from which it is (keys.yaml's revoked_at) where known. Fine, but listed. A key whose
  revoked_at is after `now` is not revoked yet: it is audited like any other.
- `expired` (critical): expires_at <= now and not revoked: a dead key still listed as live.
- `expiring` (warning): now < expires_at <= now + `within`.
- `no_expiry` (warning): no expires_at, or a legacy key whatever its expires_at: keys of
  Xinference's `--auth-config` cannot expire and `xinference-migrate-auth` gives them no expiry,
  so such a date binds only xinf-watch (the registry cannot tell whether auth.db sets one too).
- `too_old` (warning): not expired and created_at more than `max_age` ago: rotate it.
- `admin` (warning): its permissions (else its owner's) include `admin`: under `--auth-config` an
  API key carries all its owner's permissions, admin included.
- `shared` (warning): the key has no owner. With no usage data, ownership is the registry's only
  sign of sharing: a key nobody owns is tied to no client or person and gets passed around.
  (Use from many IPs is the daemon's business: `new_value` rules, `xinf_key_client_ips`.)
- `unknown_permissions` (info): neither the key nor its owner lists permissions (scope_allowed
  cannot be judged), or it lists names Xinference does not know (a misspelt name grants nothing).
- `no_allowlist` (info): a live key (neither expired nor revoked) without allowed_ips: a use
  from any network looks normal.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import orjson

from xinf_watch.config.schema import load_config
from xinf_watch.config.values import parse_duration
from xinf_watch.durations import describe_duration as span  # as the key_expiry alerts say it
from xinf_watch.keys.files import load_registry
from xinf_watch.keys.registry import KeyEntry, KeyRegistry, UserEntry
from xinf_watch.model import KeyState, Severity, format_ts

DEFAULT_WITHIN = 7 * 86400.0
DEFAULT_MAX_AGE = 90 * 86400.0

SEVERITY: dict[str, Severity] = {
    "expired": Severity.CRITICAL,
    "expiring": Severity.WARNING,
    "no_expiry": Severity.WARNING,
    "too_old": Severity.WARNING,
    "admin": Severity.WARNING,
    "shared": Severity.WARNING,
    "unknown_permissions": Severity.INFO,
    "no_allowlist": Severity.INFO,
    "revoked": Severity.INFO,
}
KINDS = tuple(SEVERITY)
_LEGACY = "a legacy sk- key (--auth-config keys never expire; migrated ones get no expiry)"
_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}
_Said = tuple[str, str]  # a finding's kind and detail, before it is tied to its key

# Every permission name Xinference has used (docs/xinference/FACTS.md 1.1 and 1.2): era A's names, the
# current ones, and the legacy aliases still expanded.
KNOWN_PERMISSIONS = frozenset(
    {"admin", "models:list", "models:read", "models:write", "models:register", "models:start"}
    | {"models:stop", "models:add", "models:unregister", "keys:create", "keys:manage", "users:manage"}
    | {"cache:list", "cache:delete", "virtualenv:list", "virtualenv:delete", "logs:list", "monitor:view"}
    | {"routers:list", "routers:read", "routers:write", "routers:operate"}
)


@dataclass(frozen=True, slots=True)
class Finding:
    severity: Severity
    kind: str
    key: str  # the alias, as in every other output
    owner: str | None
    detail: str

    def to_json(self) -> dict[str, object]:
        return {
            "key": self.key,
            "owner": self.owner,
            "kind": self.kind,
            "severity": self.severity.value,
            "detail": self.detail,
        }


def audit_keys(
    registry: KeyRegistry, now: float, *, within: float = DEFAULT_WITHIN, max_age: float = DEFAULT_MAX_AGE
) -> list[Finding]:
    """Every finding for every key at `now`, most severe first, then by alias."""
    users = {u.name: u for u in registry.users}
    findings = [
        finding
        for entry in registry.entries
        for finding in _audit_entry(
            entry, registry.state_of(entry, now), users.get(entry.owner or ""), now, within, max_age
        )
    ]
    return sorted(findings, key=lambda f: (-_RANK[f.severity], f.key, KINDS.index(f.kind)))


def _audit_entry(
    entry: KeyEntry, state: KeyState, owner: UserEntry | None, now: float, within: float, max_age: float
) -> Iterator[Finding]:
    if state is KeyState.REVOKED:
        found: Iterable[_Said] = [("revoked", _revoked_detail(entry, owner, now))]
    else:
        found = _live_findings(entry, state, owner, now, within, max_age)
    for kind, detail in found:
        yield Finding(SEVERITY[kind], kind, entry.alias, entry.owner, detail)


def _revoked_detail(entry: KeyEntry, owner: UserEntry | None, now: float) -> str:
    own = entry.revoked_from is not None and entry.revoked_from <= now
    since = entry.revoked_at if own else owner.disabled_at if owner else None
    why = "revoked" if own else f"its owner {entry.owner} is disabled"
    if since is None:
        return f"{why}; still listed, so its uses show as key_state revoked"
    return (
        f"{why} since {format_ts(since)} ({span(now - since)} ago); still listed, so its uses"
        " from then on show as key_state revoked"
    )


def _live_findings(
    entry: KeyEntry, state: KeyState, owner: UserEntry | None, now: float, within: float, max_age: float
) -> Iterator[_Said]:
    """Every rule but `revoked`, for a key that is not revoked (yet)."""
    yield from _expiry_findings(entry, state, now, within)
    yield from _no_expiry_findings(entry)
    if state is KeyState.VALID and entry.created_at is not None and now - entry.created_at > max_age:
        yield (
            "too_old",
            f"created {format_ts(entry.created_at)}, {span(now - entry.created_at)} ago (--max-age"
            f" {span(max_age)}): rotate it: new key, move the clients, revoke this one",
        )
    permissions = entry.permissions
    if permissions is None and owner is not None:
        permissions = owner.permissions
    if permissions is not None and "admin" in permissions:
        whose = "has admin" if entry.permissions is not None else f"inherits admin from {entry.owner}"
        yield (
            "admin",
            f"{whose}: under --auth-config an API key carries all its owner's permissions, so whoever"
            " holds it controls the server; give clients keys of a user without admin",
        )
    if entry.owner is None:
        yield (
            "shared",
            "no owner: nothing ties the key to one client or person, so nobody answers for it;"
            " give it an owner in keys.yaml",
        )
    yield from _permission_findings(permissions)
    if state is KeyState.VALID and not entry.allowed_ips:
        yield "no_allowlist", "no allowed_ips: a use from any network looks normal (ip_allowed cannot tell)"


def _expiry_findings(entry: KeyEntry, state: KeyState, now: float, within: float) -> Iterator[_Said]:
    """`expired` or `expiring`."""
    if state is KeyState.EXPIRED and entry.expires_at is not None:
        yield (
            "expired",
            f"expired {format_ts(entry.expires_at)} ({span(now - entry.expires_at)} ago) but not revoked:"
            " delete or disable it in Xinference (or its auth config), then set revoked_at in keys.yaml",
        )
    elif entry.expires_at is not None and entry.expires_at <= now + within:
        yield (
            "expiring",
            f"expires {format_ts(entry.expires_at)} (in {span(entry.expires_at - now)}): create its"
            " successor, move the clients, then disable it (Xinference has no rotate endpoint)",
        )


def _no_expiry_findings(entry: KeyEntry) -> Iterator[_Said]:
    """`no_expiry`: no expires_at, or a legacy key (which Xinference never expires)."""
    legacy = (entry.prefix or "").startswith("sk-")
    if legacy and entry.expires_at is None:
        yield (
            "no_expiry",
            f"cannot expire: {_LEGACY}, no expires_at: rotate it by hand and"
            " give it an expires_at in keys.yaml",
        )
    elif legacy and entry.expires_at is not None:
        yield (
            "no_expiry",
            f"cannot expire in Xinference: {_LEGACY}; expires_at"
            f" {format_ts(entry.expires_at)} binds only xinf-watch unless set in auth.db",
        )
    elif entry.expires_at is None:
        yield (
            "no_expiry",
            "never expires: no expires_at; set one in Xinference (PUT /v1/admin/keys/{id}) and in keys.yaml",
        )


def _permission_findings(permissions: frozenset[str] | None) -> Iterator[_Said]:
    """`unknown_permissions`: none listed (the key's, else its owner's), or names Xinference does not know."""
    if permissions is None:
        yield (
            "unknown_permissions",
            "permissions not known (neither the key nor its owner lists any): scope_allowed cannot"
            " be judged; list them in keys.yaml",
        )
    elif unknown := sorted(permissions - KNOWN_PERMISSIONS):
        yield (
            "unknown_permissions",
            f"permissions Xinference does not know: {', '.join(unknown)} (a misspelt name grants nothing)",
        )


def fails(findings: list[Finding], fail_on: Severity) -> bool:
    """Whether any finding is at or above `fail_on`."""
    return any(_RANK[f.severity] >= _RANK[fail_on] for f in findings)


def format_table(findings: list[Finding]) -> str:
    """Aligned columns key, owner, kind, severity, detail; empty for no findings."""
    if not findings:
        return ""
    rows = [("KEY", "OWNER", "KIND", "SEVERITY", "DETAIL")]
    rows += [(f.key, f.owner or "-", f.kind, f.severity.value, f.detail) for f in findings]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[4]]) for row in rows]
    return "".join(line + "\n" for line in lines)


def summary(findings: list[Finding], keys: int, now: float, fail_on: Severity) -> str:
    counts = {s: sum(f.severity is s for f in findings) for s in Severity}
    verdict = f"findings at or above {fail_on.value}" if fails(findings, fail_on) else "ok"
    return (
        f"keys audit at {format_ts(now)}: {keys} keys, {counts[Severity.CRITICAL]} critical,"
        f" {counts[Severity.WARNING]} warning, {counts[Severity.INFO]} info"
        f" (--fail-on {fail_on.value}: {verdict})"
    )


def run_keys_audit(
    rules: Path,
    *,
    at: float | None,
    within: float,
    max_age: float,
    fail_on: Severity,
    as_json: bool,
    out: TextIO,
    err: TextIO,
    clock: Callable[[], float] = time.time,
) -> int:
    """Load rules.yaml's key files, print the report; 1 when a finding is at/above `fail_on`, else 0.

    Raises ConfigError / KeyFileError / OSError for the CLI to report."""
    config = load_config(rules)
    registry = load_registry(config.keys, config.key_sites)
    now = clock() if at is None else at
    findings = audit_keys(registry, now, within=within, max_age=max_age)
    if as_json:
        out.write("".join(orjson.dumps(f.to_json()).decode() + "\n" for f in findings))
    else:
        out.write(format_table(findings))
    print(summary(findings, len(registry), now, fail_on), file=err)
    return 1 if fails(findings, fail_on) else 0


# -- argument types for the CLI (argparse reports their errors as usage errors, exit 2) ------------


def time_arg(text: str) -> float:
    """`--at`: ISO 8601 (`2026-11-28T07:10:00Z`, `2026-11-28`); without an offset it is UTC."""
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time (expected ISO 8601, e.g. 2026-11-28T07:10:00Z)"
        ) from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def duration_arg(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (expected e.g. 12h, 7d, 90d)") from None
