"""Bounded caches of what is worked out from what clients send: addresses, paths, credentials.

Such keys are as many as an attacker likes, so a cache of them must not grow with the input.
`remember` stores a value and, when the cache is full, starts it over: cheaper per line than an
LRU, and an attacker who flushes a cache only costs its recomputation.
"""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")

LIMIT = 16384  # entries, unless a cache says otherwise


def remember(cache: dict[K, V], key: K, value: V, limit: int = LIMIT) -> V:
    """`cache[key] = value` (after emptying `cache` when it holds `limit` entries); `value`."""
    if len(cache) >= limit:
        cache.clear()
    cache[key] = value
    return value
