"""Value types shared by every stage: what a parser makes, what attribution makes, what rules emit.

The flow is `str line -> Record -> Event -> Alert`. Every value is small, immutable and free of
raw credentials once it has left the parser: a `Record` may still hold the Authorization header as
logged; an `Event` holds only the key alias, its state, and (for unknown credentials) a short
fingerprint. Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class LineResult(StrEnum):
    """What became of one input line; the `result` label of `xinf_watch_lines_total`."""

    PARSED = "parsed"  # an access record
    UNPARSED = "unparsed"  # should have been an access record but is not: counted, skipped
    SKIPPED = "skipped"  # a line of the source that is not an access record (startup, error log...)


class Outcome(StrEnum):
    ALLOWED = "allowed"
    DENIED = "denied"
    THROTTLED = "throttled"
    CLIENT_ERROR = "client_error"
    ERROR = "error"

    @staticmethod
    def from_status(status: int) -> Outcome:
        if status < 400:
            return Outcome.ALLOWED
        if status in (401, 403):
            return Outcome.DENIED
        if status == 429:
            return Outcome.THROTTLED
        if status < 500:
            return Outcome.CLIENT_ERROR
        return Outcome.ERROR


class KeyState(StrEnum):
    VALID = "valid"
    EXPIRED = "expired"
    REVOKED = "revoked"
    UNKNOWN = "unknown"  # a credential the registry does not know
    NONE = "none"  # no credential at all


class ScopeDenial(StrEnum):
    """What keeps a key from a scope (`Event.scope_denied_by`)."""

    PERMISSIONS = "permissions"  # the key's (or its owner's) permissions do not cover it
    API_KEY_LIMIT = "api_key_limit"  # advanced auth: API keys only reach models:list / models:read


class CredentialKind(StrEnum):
    API_KEY = "api_key"
    JWT = "jwt"
    NONE = "none"
    OTHER = "other"


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


ONE_OFF_KINDS = frozenset({"match", "new_value"})  # rule kinds whose alerts never resolve: one event each


class AlertStatus(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class KeyHint:
    """How Xinference's audit.log names a key instead of logging it: user, key name, 7-char prefix."""

    user: str
    key_name: str
    key_prefix: str
    auth_type: str  # api_key | jwt | none | "" as audit.log writes it


# Record and Event are made once per log line: they are not `frozen` because a frozen dataclass's
# __init__ goes through object.__setattr__ per field, which measured 3 us of the ~10 us a line
# costs. Treat them as immutable all the same: no stage assigns to them. The parsers and attribute.py
# build them with positional arguments (keywords cost 3x as much): add a field at the end.
@dataclass(slots=True)
class Record:
    """One access-log line, as the source wrote it (still raw: may carry a credential)."""

    ts: float  # Unix seconds, UTC
    ip: str
    method: str
    path: str  # as logged: may still carry a query string and percent-escapes
    status: int
    credential: str | None = None  # Authorization value or bare token as logged; None: absent/redacted
    bytes: int | None = None
    duration: float | None = None  # seconds
    user_agent: str | None = None
    request_id: str | None = None
    ip_forwarded: bool = False  # the IP came from a client-supplied X-Forwarded-For
    reason: str | None = None  # why the source says it was denied (audit.log status), if it says
    key_hint: KeyHint | None = None
    consumer: str | None = None  # a gateway's consumer name (Kong, APISIX), where it hid the key


@dataclass(slots=True)
class Event:
    """An attributed request: the unit metrics count and rules match. Holds no raw credential."""

    ts: float
    source: str
    ip: str
    ip_forwarded: bool
    method: str
    path: str  # decoded, without query string
    status: int
    outcome: Outcome
    reason: str | None
    credential: CredentialKind
    key: str  # alias, "unknown", "none" or "jwt:<user>"
    owner: str | None
    key_state: KeyState
    scope: str
    scope_allowed: bool | None  # None: the key's permissions are not known
    ip_allowed: bool | None  # inside the key's allowed_ips; None: the key has no allow-list
    duration: float | None
    bytes: int | None
    user_agent: str | None
    request_id: str | None
    fingerprint: str | None = None  # short hash of an unknown credential: distinct, never reversible
    scope_denied_by: ScopeDenial | None = None  # why scope_allowed is False; None otherwise

    def to_json(self) -> dict[str, Any]:
        return {
            "ts": format_ts(self.ts),
            "source": self.source,
            "ip": self.ip,
            "ip_forwarded": self.ip_forwarded,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "outcome": self.outcome.value,
            "reason": self.reason,
            "credential": self.credential.value,
            "key": self.key,
            "owner": self.owner,
            "key_state": self.key_state.value,
            "scope": self.scope,
            "scope_allowed": self.scope_allowed,
            "scope_denied_by": self.scope_denied_by,
            "ip_allowed": self.ip_allowed,
            "duration": self.duration,
            "bytes": self.bytes,
            "user_agent": self.user_agent,
            "request_id": self.request_id,
            "fingerprint": self.fingerprint,
        }


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert transition (firing or resolved); its JSON is the contract of docs/DESIGN.md section 7."""

    rule: str
    kind: str
    severity: Severity
    status: AlertStatus
    group: dict[str, str]
    key: str
    count: int
    first_ts: float
    last_ts: float
    summary: str
    source: str | None
    id: str
    extra: dict[str, Any] = field(default_factory=dict)  # kind-specific details (e.g. the new value)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rule": self.rule,
            "kind": self.kind,
            "severity": self.severity.value,
            "status": self.status.value,
            "group": dict(self.group),
            "key": self.key,
            "count": self.count,
            "first_ts": format_ts(self.first_ts),
            "last_ts": format_ts(self.last_ts),
            "summary": self.summary,
            "source": self.source,
            "id": self.id,
        }
        out.update(self.extra)
        return out


def format_ts(ts: float) -> str:
    """ISO 8601 UTC with millisecond precision when the time has a fraction, else seconds."""
    dt = datetime.fromtimestamp(ts, UTC)
    if dt.microsecond:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")
