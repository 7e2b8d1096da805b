"""Turning a parsed `Record` into an attributed `Event`: who (key), what (scope), allowed or not.

This is where the raw credential is consumed: `KeyRegistry.resolve` reads it and returns an alias,
a state and a fingerprint; the `Event` that leaves this module carries none of the credential.
Paths are normalised once here (query string dropped, length capped, percent-escapes decoded) so
every later stage and every output sees the same path. A denial the source gives no reason for
gets one from its status where only one cause fits (`reason_from_status`). A scope the key may not
use also says what refuses it (`scope_denied_by`: its permissions, or advanced auth's API-key limit).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from xinf_watch.addresses import ip_in
from xinf_watch.attribution.scopes import ScopeMap, decode_path
from xinf_watch.caches import remember
from xinf_watch.keys.registry import Attribution, KeyRegistry
from xinf_watch.model import CredentialKind, Event, KeyState, Outcome, Record, ScopeDenial

_OUTCOMES = {status: Outcome.from_status(status) for status in range(100, 600)}
_KEY_401 = {
    KeyState.UNKNOWN: "invalid_key",
    KeyState.EXPIRED: "key_expired",
    KeyState.REVOKED: "key_disabled",
}


def reason_from_status(
    status: int, who: Attribution, scope_allowed: bool | None, *, credentials_logged: bool
) -> str | None:
    """Why a 401/403 was denied, in audit.log's words, for sources that do not say (gateways,
    xinference.log); None unless the status and the attribution leave one cause only.

    401: an API key the registry does not know -> `invalid_key`; a key expired -> `key_expired`,
    revoked or of a disabled owner -> `key_disabled` (what Xinference answers for the key, when the
    registry agrees with it); a JWT -> `user_disabled` if its user is disabled, else
    `invalid_token` (bad signature, expired, stale); no credential -> `no_credentials`, but only
    from a source that logs credentials (`credentials_logged`): in a log that never shows one
    (xinference.log, Caddy's redacted default) "none" says nothing about the request. A valid key
    or an `other` credential (`Bearer undefined` is `invalid_token`, `Basic ...` `no_credentials`
    to Xinference) with 401 is left alone.
    403: a valid key or session whose permissions do not cover the route -> `insufficient_scope`
    (a 403 can also be the IP allowlist or a per-model denial: not named unless scope says so).
    429 is never named: ip_banned, key_banned and a model's concurrency limit look the same.
    """
    kind, state = who.credential, who.state
    if status == 401:
        if kind is CredentialKind.API_KEY:
            return _KEY_401.get(state)
        if kind is CredentialKind.JWT:
            return "user_disabled" if state is KeyState.REVOKED else "invalid_token"
        if kind is CredentialKind.NONE and credentials_logged:
            return "no_credentials"
        return None
    if status == 403 and scope_allowed is False and state is KeyState.VALID:
        return "insufficient_scope"
    return None


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """What follows from a request's few repeating fields (credential kind, key state and
    permissions, method, path, status): computed once per distinct combination."""

    path: str
    scope: str
    scope_allowed: bool | None
    scope_denied_by: ScopeDenial | None
    reason: str | None
    outcome: Outcome


PLAN_CACHE_LIMIT = 16384  # combinations; paths are attacker-chosen: beyond, start over


class Attributor:
    """Attributes the records of one source; `registry` is a getter so a reload swaps it in place."""

    def __init__(self, source: str, registry: Callable[[], KeyRegistry], scopes: ScopeMap) -> None:
        self.source = source
        self.registry = registry
        self.scopes = scopes
        # Whether this source's log shows credentials at all: true from its first record with one.
        self.credentials_logged = False
        self._plans: dict[tuple[Any, ...], RoutePlan] = {}
        self._allowed: dict[tuple[str, str], bool] = {}  # (key, ip) -> inside its allowed_ips
        self._allowed_registry: KeyRegistry | None = None  # the registry `_allowed` was made with

    def attribute(self, record: Record) -> Event:
        registry = self.registry()
        if record.key_hint is not None and record.credential is None:
            who: Attribution = registry.resolve_hint(record.key_hint, record.ts)
        elif record.consumer is not None and record.credential is None:
            who = registry.resolve_consumer(record.consumer, record.ts)
        else:
            who = registry.resolve(record.credential, record.ts)
        if record.credential is not None and not self.credentials_logged:
            self.credentials_logged = True
        combination = (
            who.credential, who.state, who.permissions, record.method, record.path, record.status,
            record.reason, self.credentials_logged,
        )  # fmt: skip
        plan = self._plans.get(combination)
        if plan is None:
            plan = remember(self._plans, combination, self._plan(who, record), PLAN_CACHE_LIMIT)
        ip_allowed = None
        if who.allowed_ips:
            if registry is not self._allowed_registry:  # the key files were reloaded
                self._allowed.clear()
                self._allowed_registry = registry
            ip_allowed = self._ip_allowed(who, record.ip)
        # Positional, in the order of Event's fields: with 22 keywords the call cost three times
        # as much (0.8 against 0.25 us a line, Python 3.11).
        return Event(
            record.ts, self.source, record.ip, record.ip_forwarded, record.method, plan.path,
            record.status, plan.outcome, plan.reason, who.credential, who.key, who.owner, who.state,
            plan.scope, plan.scope_allowed, ip_allowed, record.duration, record.bytes,
            record.user_agent, record.request_id, who.fingerprint, plan.scope_denied_by,
        )  # fmt: skip

    def _plan(self, who: Attribution, record: Record) -> RoutePlan:
        scope = self.scopes.scope_for(record.method, record.path)  # decodes like Starlette: once
        api_key = who.credential is CredentialKind.API_KEY
        scope_allowed = self.scopes.covers(who.permissions, scope, api_key=api_key)
        denied_by = self.scopes.denied_by(scope, api_key=api_key) if scope_allowed is False else None
        reason = record.reason
        if reason is None and (record.status == 401 or record.status == 403):
            reason = reason_from_status(
                record.status, who, scope_allowed, credentials_logged=self.credentials_logged
            )
        outcome = _OUTCOMES.get(record.status) or Outcome.from_status(record.status)
        return RoutePlan(decode_path(record.path), scope, scope_allowed, denied_by, reason, outcome)

    def _ip_allowed(self, who: Attribution, ip: str) -> bool:
        combination = (who.key, ip)
        inside = self._allowed.get(combination)
        if inside is None:
            inside = remember(self._allowed, combination, ip_in(ip, who.allowed_ips), PLAN_CACHE_LIMIT)
        return inside
