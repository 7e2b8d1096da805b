"""Bounded-memory building blocks of the rule engine: sliding-window counters and capped maps.

A `WindowCounter` counts events in a sliding window with `BUCKETS` time buckets, so its memory is
O(BUCKETS) whatever the rate, and its count is exact to one bucket (window / 30): it counts the
events of the last 29 to 30 bucket widths. Each bucket remembers its earliest event, so the
counter can say when the oldest event it still counts happened. Out-of-order events land in the
bucket of their own time when that is still inside the window, else they are dropped (they are
older than anything the window can count).

`BoundedMap` is a dict that forgets its least recently touched entries beyond `limit` and counts
what it forgot: a million distinct IPs or forged keys cost at most `limit` entries per rule. An
optional `keep` predicate protects entries (firing alerts) from eviction while others can go.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

BUCKETS = 30
EVICTION_SCAN = 8  # entries looked at for one eviction when `keep` protects the oldest ones

K = TypeVar("K")
V = TypeVar("V")


class WindowCounter:
    __slots__ = ("width", "buckets", "total")

    def __init__(self, window: float) -> None:
        self.width = window / BUCKETS
        # [bucket index, count, earliest ts], ascending; a list: at most BUCKETS long, and far
        # smaller than a deque for the many counters that hold one bucket
        self.buckets: list[list[Any]] = []
        self.total = 0

    def add(self, ts: float, now: float, n: int = 1) -> int:
        """Count `n` events at `ts`; the count at `now` (`count(now)`)."""
        width = self.width
        idx = int(ts // width)
        buckets = self.buckets
        last = buckets[-1] if buckets else None
        if last is not None and last[0] == idx:  # most events: the newest bucket
            last[1] += n
            if ts < last[2]:
                last[2] = ts
        elif last is None or last[0] < idx:
            buckets.append([idx, n, ts])
        elif idx <= int(now // width) - BUCKETS:
            return self.count(now)  # older than the window: not counted
        else:
            _insert(buckets, idx, n, ts)
        self.total += n
        cutoff = int(now // width) - BUCKETS
        if buckets[0][0] <= cutoff:
            self._drop(cutoff)
        return self.total

    def expire(self, now: float) -> None:
        cutoff = int(now // self.width) - BUCKETS
        if self.buckets and self.buckets[0][0] <= cutoff:
            self._drop(cutoff)

    def _drop(self, cutoff: int) -> None:
        """Forget the buckets at or before `cutoff`."""
        buckets = self.buckets
        gone = 0
        while gone < len(buckets) and buckets[gone][0] <= cutoff:
            self.total -= buckets[gone][1]
            gone += 1
        del buckets[:gone]

    def count(self, now: float) -> int:
        self.expire(now)
        return self.total

    def oldest(self, now: float) -> float | None:
        """Time of the earliest event still counted at `now`; None when the window is empty."""
        self.expire(now)
        return self.buckets[0][2] if self.buckets else None

    def snapshot(self) -> list[list[Any]]:
        return [list(b) for b in self.buckets]

    def restore(self, buckets: list[list[Any]]) -> None:
        restored: list[list[Any]] = sorted(
            ([int(i), int(n), float(t)] for i, n, t in buckets), key=lambda b: int(b[0])
        )
        self.buckets = restored
        self.total = sum(b[1] for b in restored)


def _insert(buckets: list[list[Any]], idx: int, n: int, ts: float) -> None:
    """A late event: into its bucket, found from the newest back (or a new one in its place)."""
    for pos in range(len(buckets) - 1, -1, -1):
        bucket = buckets[pos]
        if bucket[0] == idx:
            bucket[1] += n
            bucket[2] = min(bucket[2], ts)
            return
        if bucket[0] < idx:
            buckets.insert(pos + 1, [idx, n, ts])
            return
    buckets.insert(0, [idx, n, ts])


class BoundedMap(Generic[K, V]):
    """Least-recently-touched eviction beyond `limit`; `evicted` counts what was forgotten.

    Entries for which `keep(value)` holds are passed over while one of the `EVICTION_SCAN` oldest
    entries can go instead; when all of those are kept, the oldest goes anyway (the bound wins).
    """

    def __init__(self, limit: int, keep: Callable[[V], bool] | None = None) -> None:
        self.limit = limit
        self.keep = keep
        self.data: OrderedDict[K, V] = OrderedDict()
        self.evicted = 0

    def get(self, key: K) -> V | None:
        value = self.data.get(key)
        if value is not None:
            self.data.move_to_end(key)
        return value

    def setdefault(self, key: K, factory: Callable[[], V]) -> V:
        data = self.data
        value = data.get(key)
        if value is None:
            value = data[key] = factory()
            if len(data) > self.limit:
                self._evict_one()
        else:
            data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        """Insert or replace as the most recently touched entry (used when restoring state)."""
        self.data[key] = value
        self.data.move_to_end(key)
        while len(self.data) > self.limit:
            self._evict_one()

    def _evict_one(self) -> None:
        data, keep = self.data, self.keep
        kept: list[tuple[K, V]] = []
        done = False
        if keep is not None:
            # look past protected entries, never at the newest: it is the one being added
            for _ in range(min(EVICTION_SCAN, len(data) - 1)):
                key, value = data.popitem(last=False)
                if not keep(value):
                    done = True
                    break
                kept.append((key, value))
            if not done and kept:
                kept.pop(0)  # all protected: the bound wins, the oldest of them goes
                done = True
        if not done:
            data.popitem(last=False)
        for key, value in reversed(kept):  # back where they were
            data[key] = value
            data.move_to_end(key, last=False)
        self.evicted += 1

    def peek(self, key: K) -> V | None:
        """The value, without touching it (looking is not using: it keeps its place)."""
        return self.data.get(key)

    def items(self) -> Iterator[tuple[K, V]]:
        """Oldest first (a copy: the map may change while the caller iterates)."""
        return iter(list(self.data.items()))

    def __len__(self) -> int:
        return len(self.data)

    def __contains__(self, key: object) -> bool:
        return key in self.data
