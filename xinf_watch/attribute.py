"""Turning a parsed `Record` into an attributed `Event`: who (key), what (scope), allowed or not.

This is where the raw credential is consumed: `KeyRegistry.resolve` reads it and returns an alias,
a state and a fingerprint; the `Event` that leaves this module carries none of the credential.
Paths are normalised once here (query string dropped, percent-escapes decoded, length capped) so
every later stage and every output sees the same path.
"""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address, ip_address
from urllib.parse import unquote

from xinf_watch.keys import Attribution, KeyRegistry
from xinf_watch.model import CredentialKind, Event, Outcome, Record
from xinf_watch.scopes import ScopeMap

MAX_PATH = 1024
_OUTCOMES = {status: Outcome.from_status(status) for status in range(100, 600)}


def normalise_path(path: str) -> str:
    path = path.split("?", 1)[0]
    if "%" in path:
        path = unquote(path, errors="replace")
    return path[:MAX_PATH]


def _parse_ip(text: str) -> IPv4Address | IPv6Address | None:
    try:
        return ip_address(text)
    except ValueError:
        return None


class Attributor:
    """Attributes the records of one source; `registry` is a getter so a reload swaps it in place."""

    def __init__(self, source: str, registry: Callable[[], KeyRegistry], scopes: ScopeMap) -> None:
        self.source = source
        self.registry = registry
        self.scopes = scopes

    def attribute(self, record: Record) -> Event:
        registry = self.registry()
        if record.key_hint is not None and record.credential is None:
            who: Attribution = registry.resolve_hint(record.key_hint, record.ts)
        else:
            who = registry.resolve(record.credential, record.ts)
        path = normalise_path(record.path)
        scope = self.scopes.scope_for(record.method, record.path)  # decodes like Starlette: once
        ip_allowed = None
        if who.allowed_ips:
            addr = _parse_ip(record.ip)
            ip_allowed = addr is not None and any(addr in net for net in who.allowed_ips)
        return Event(
            ts=record.ts,
            source=self.source,
            ip=record.ip,
            ip_forwarded=record.ip_forwarded,
            method=record.method,
            path=path,
            status=record.status,
            outcome=_OUTCOMES.get(record.status) or Outcome.from_status(record.status),
            reason=record.reason,
            credential=who.credential,
            key=who.key,
            owner=who.owner,
            key_state=who.state,
            scope=scope,
            scope_allowed=self.scopes.covers(
                who.permissions, scope, api_key=who.credential is CredentialKind.API_KEY
            ),
            ip_allowed=ip_allowed,
            duration=record.duration,
            bytes=record.bytes,
            user_agent=record.user_agent,
            request_id=record.request_id,
            fingerprint=who.fingerprint,
        )
