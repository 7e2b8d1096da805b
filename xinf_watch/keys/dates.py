"""When auth.db first showed a key or user disabled: the daemon's memory (auth.db keeps no date).

Xinference's auth.db says only whether a key or user is enabled (no disabled_at or updated_at
column, up to HEAD), so a key disabled there would be revoked at all times, and a request it made
before the disabling would look like a use of a revoked key. The daemon therefore remembers the
moment its key files first showed each key (or user) disabled; `files.load_registry` dates
the revocation with it: requests at or after that moment are judged revoked, earlier ones by
their own time. The memory is saved in the daemon's state database (blob `key_dates`), so a
restart keeps it. `replay` has none: there an auth.db-disabled key is revoked at all times
unless keys.yaml gives its `revoked_at`.

Rules:
- Keys are remembered by the first 8 hex digits of their SHA-256 (what errors show; no more of
  the hash goes into the state file: with a key's alias, a full hash would let someone with the
  state file brute-force a short legacy key), users by name. Two disabled keys whose hashes share
  those digits (a chance of 1 in 2^32 per pair) share the earlier date.
- A key or user that is enabled again, or gone, is forgotten: disabling it later is a new date.
- The first observation of a memory that never observed anything (a fresh state database, or
  one from before this memory existed) records what is disabled then as undated: nobody knows
  since when, so it stays revoked at all times, as in replay. Only what becomes disabled while
  the daemon is watching (or between two of its runs) gets a date.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from typing import Any

_REF_HEX = 8


class DisabledSince:
    """First-seen-disabled times of keys and users; None: disabled since before anyone looked."""

    __slots__ = ("_observed", "_keys", "_users")

    def __init__(self, saved: Mapping[str, Any] | None = None) -> None:
        """`saved`: a `snapshot()` from the state database; None: nothing was ever observed."""
        self._observed = saved is not None
        data = saved if isinstance(saved, Mapping) else {}
        self._keys = _dates(data.get("keys"))
        self._users = _dates(data.get("users"))

    def observe(self, keys: Set[str], users: Set[str], now: float) -> None:
        """What the key files show disabled `now`: `keys` by SHA-256 hex, `users` by name."""
        first: float | None = now if self._observed else None
        self._keys = {ref: self._keys.get(ref, first) for ref in sorted({sha[:_REF_HEX] for sha in keys})}
        self._users = {name: self._users.get(name, first) for name in sorted(users)}
        self._observed = True

    def key(self, sha256: str) -> float | None:
        return self._keys.get(sha256[:_REF_HEX])

    def user(self, name: str) -> float | None:
        return self._users.get(name)

    def snapshot(self) -> dict[str, Any]:
        return {"keys": dict(self._keys), "users": dict(self._users)}


def _dates(saved: object) -> dict[str, float | None]:
    if not isinstance(saved, dict):
        return {}
    return {str(k): float(v) if isinstance(v, int | float) else None for k, v in saved.items()}
