"""Bounded-memory building blocks of the rule engine: sliding-window counters and capped maps.

A `WindowCounter` counts events in a sliding window with `BUCKETS` time buckets, so its memory is
O(BUCKETS) whatever the rate, and its count is exact to one bucket (window / 30). Out-of-order
events land in the bucket of their own time when it is still inside the window, else they are
dropped (they are older than anything the window can count).

`BoundedMap` is a dict that forgets its least recently touched entries beyond `limit` and counts
what it forgot: a million distinct IPs or forged keys cost at most `limit` entries per rule.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

BUCKETS = 30

K = TypeVar("K")
V = TypeVar("V")


class WindowCounter:
    __slots__ = ("width", "buckets", "total")

    def __init__(self, window: float) -> None:
        self.width = window / BUCKETS
        self.buckets: deque[list[int]] = deque()  # [bucket index, count], ascending
        self.total = 0

    def add(self, ts: float, now: float, n: int = 1) -> None:
        idx = int(ts // self.width)
        buckets = self.buckets
        if not buckets or buckets[-1][0] < idx:
            buckets.append([idx, n])
        elif buckets[-1][0] == idx:
            buckets[-1][1] += n
        else:
            if idx <= int(now // self.width) - BUCKETS:
                return  # older than the window
            for bucket in reversed(buckets):
                if bucket[0] <= idx:
                    bucket[1] += n  # the bucket of its time, or the nearest earlier one
                    break
            else:
                buckets.appendleft([idx, n])
        self.total += n
        self.expire(now)

    def expire(self, now: float) -> None:
        cutoff = int(now // self.width) - BUCKETS
        buckets = self.buckets
        while buckets and buckets[0][0] <= cutoff:
            self.total -= buckets.popleft()[1]

    def count(self, now: float) -> int:
        self.expire(now)
        return self.total

    def snapshot(self) -> list[list[int]]:
        return [list(b) for b in self.buckets]

    def restore(self, buckets: list[list[int]]) -> None:
        self.buckets = deque([int(i), int(n)] for i, n in buckets)
        self.total = sum(n for _, n in self.buckets)


class BoundedMap(Generic[K, V]):
    """Least-recently-touched eviction beyond `limit`; `evicted` counts what was forgotten."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data: OrderedDict[K, V] = OrderedDict()
        self.evicted = 0

    def get(self, key: K) -> V | None:
        value = self.data.get(key)
        if value is not None:
            self.data.move_to_end(key)
        return value

    def setdefault(self, key: K, factory: Callable[[], V]) -> V:
        value = self.data.get(key)
        if value is None:
            value = self.data[key] = factory()
            if len(self.data) > self.limit:
                self.data.popitem(last=False)
                self.evicted += 1
        else:
            self.data.move_to_end(key)
        return value

    def pop(self, key: K) -> V | None:
        return self.data.pop(key, None)

    def items(self) -> Iterator[tuple[K, V]]:
        return iter(list(self.data.items()))

    def __len__(self) -> int:
        return len(self.data)

    def __contains__(self, key: object) -> bool:
        return key in self.data
