"""xinf-watch's own key file, `keys.yaml`: a top-level `keys:` list, one mapping per key.

Owns reading its entries into registry contributions (`keys/files.py` detects the file and merges).
A key is given raw (`key`) or by its SHA-256 (`key_sha256`), exactly one of them; every other field
is optional: alias, owner, name, permissions, created_at, expires_at, revoked, revoked_at,
allowed_ips. Errors point at the entry's field by line; a raw key is never quoted.
"""

from __future__ import annotations

import contextlib
import re
from datetime import UTC, date, datetime
from ipaddress import ip_network
from typing import Any

from xinf_watch.keys.registry import IPNetwork
from xinf_watch.keys.values import (
    KEY_TOKEN,
    RANK_KEYS_YAML,
    RESERVED,
    Contribution,
    Doc,
    Origin,
    key_parts,
    name_text,
    permission_set,
    show,
)

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_KEYS_YAML_FIELDS = frozenset(
    {"key", "key_sha256", "alias", "owner", "name", "permissions", "created_at", "expires_at", "revoked"}
    | {"revoked_at", "allowed_ips"}
)


def load_keys_yaml(doc: Doc, data: dict[str, Any]) -> list[Contribution]:
    for extra in data.keys() - {"keys"}:
        raise doc.at(str(extra)).error("unknown field (expected only keys:)")
    items = data.get("keys") or []
    if not isinstance(items, list):
        raise doc.at("keys").error("expected a list of keys")
    out: list[Contribution] = []
    seen: dict[str, Origin] = {}
    for i, item in enumerate(items):
        origin = doc.at("keys", i)
        sha, prefix, last4 = _identity(doc, i, item)
        if sha in seen:
            raise origin.error(f"the same key as at {seen[sha]} (expected each key once)")
        seen[sha] = origin
        fields = _fields(doc, i, item)
        alias_at = doc.at("keys", i, "alias") if "alias" in fields else None
        out.append(Contribution(sha, prefix, last4, RANK_KEYS_YAML, fields, origin, alias_at))
    return out


def _identity(doc: Doc, i: int, item: object) -> tuple[str, str | None, str | None]:
    """The key of entry `i` (SHA-256, prefix, last 4), after checking the entry's field names."""
    if not isinstance(item, dict):
        raise doc.at("keys", i).error("expected a mapping with key or key_sha256, alias, owner, ...")
    for name in item.keys() - _KEYS_YAML_FIELDS:
        raise doc.at("keys", i, str(name)).error(
            f"unknown field (expected one of {', '.join(sorted(_KEYS_YAML_FIELDS))})"
        )
    if ("key" in item) == ("key_sha256" in item):
        raise doc.at("keys", i).error("expected exactly one of key or key_sha256")
    if "key" in item:
        return key_parts(doc.at("keys", i, "key"), item["key"])
    return _sha_field(doc.at("keys", i, "key_sha256"), item["key_sha256"]), None, None


def _fields(doc: Doc, i: int, item: dict[str, Any]) -> dict[str, Any]:
    """What entry `i` sets besides its key, checked; only the fields it gives."""
    fields = _names(doc, i, item)
    if item.get("permissions") is not None:
        fields["permissions"] = permission_set(doc.at("keys", i, "permissions"), item["permissions"])
    for name in ("created_at", "expires_at"):
        if name in item:
            fields[name] = _epoch(doc.at("keys", i, name), item[name])
    fields |= _revocation(doc, i, item)
    if item.get("allowed_ips") is not None:
        fields["allowed_ips"] = _networks(doc.at("keys", i, "allowed_ips"), item["allowed_ips"])
    return fields


def _names(doc: Doc, i: int, item: dict[str, Any]) -> dict[str, Any]:
    """alias, owner and name; an alias can be neither reserved nor the key itself."""
    fields: dict[str, Any] = {}
    for name in ("alias", "owner", "name"):
        if item.get(name) is not None:
            fields[name] = name_text(doc.at("keys", i, name), item[name])
    alias = fields.get("alias")
    if alias is not None and (alias in RESERVED or alias.startswith("jwt:")):
        raise doc.at("keys", i, "alias").error(f"{alias!r} is reserved (expected another alias)")
    if alias is not None and KEY_TOKEN.search(alias):
        # the alias is a metric label and shows in every alert: it must not be the key itself
        raise doc.at("keys", i, "alias").error("looks like a key (expected a name such as alice-laptop)")
    return fields


def _revocation(doc: Doc, i: int, item: dict[str, Any]) -> dict[str, Any]:
    """revoked and revoked_at: revoked_at implies revoked: true and contradicts revoked: false."""
    fields: dict[str, Any] = {}
    if item.get("revoked") is not None:
        if not isinstance(item["revoked"], bool):
            raise doc.at("keys", i, "revoked").error("expected true or false")
        fields["revoked"], fields["revoked_at"] = item["revoked"], None
    if item.get("revoked_at") is not None:
        where = doc.at("keys", i, "revoked_at")
        if fields.get("revoked") is False:
            raise where.error("given with revoked: false (expected revoked: true or no revoked:)")
        fields["revoked"], fields["revoked_at"] = True, _epoch(where, item["revoked_at"])
    return fields


def _sha_field(origin: Origin, value: object) -> str:
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise origin.error("expected the SHA-256 of the key as 64 hex digits")
    return value.lower()


def _networks(origin: Origin, value: object) -> tuple[IPNetwork, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise origin.error(f"{show(value)} is not a list of networks (expected e.g. [10.1.0.0/16])")
    try:
        return tuple(ip_network(str(item), strict=False) for item in items)
    except ValueError:
        bad = next(item for item in items if not _is_network(item))
        raise origin.error(f"{show(bad)} is not an IP network (expected e.g. 10.1.0.0/16)") from None


def _is_network(value: object) -> bool:
    try:
        ip_network(str(value), strict=False)
    except ValueError:
        return False
    return True


def _epoch(origin: Origin, value: object) -> float | None:
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
    raise origin.error(f"{show(value)} is not a date (expected e.g. 2026-12-31 or 2026-12-31T00:00:00Z)")
