"""rules/windows.py on its own: the sliding-window counter's bucket edges, its saved state, and the
bounded map's order, eviction scan and bookkeeping (the engine-level cases are in test_rules.py
and test_hostile_input.py).

Window arithmetic: `WindowCounter(60)` has 30 buckets of 2 s; at `now` it counts the buckets whose
index is above `now // 2 - 30`, i.e. the events of the last 58 to 60 s. `T` is on a bucket edge.
"""

from __future__ import annotations

import json

from xinf_watch.rules.windows import BUCKETS, EVICTION_SCAN, BoundedMap, WindowCounter

T = 1_000_000.0  # a multiple of 2: bucket 500000 starts here


def test_window_counter_counts_the_last_thirty_buckets_exactly() -> None:
    c = WindowCounter(60)
    assert c.width == 2.0 and c.count(T) == 0 and c.oldest(T) is None
    c.add(T, T)
    c.add(T + 1.9, T + 1.9)  # same bucket
    c.add(T + 2, T + 2, n=3)  # the next one, three at once
    assert c.buckets == [[T // 2, 2, T], [T // 2 + 1, 3, T + 2]]
    assert c.total == 5
    # the bucket of T is counted until `now` reaches its index + BUCKETS, then dropped whole
    assert c.count(T + 2 * BUCKETS - 0.1) == 5
    assert c.count(T + 2 * BUCKETS) == 3 and c.oldest(T + 2 * BUCKETS) == T + 2
    assert c.count(T + 2 * BUCKETS + 2) == 0 and c.buckets == []


def test_add_counts_without_the_bucket_its_own_time_pushed_out() -> None:
    """`add` returns the count at `now` (what threshold and spike compare): the bucket that left the
    window as `now` reached its index + BUCKETS is not in it, exactly as `count` says."""
    c = WindowCounter(60)
    c.add(T, T)
    c.add(T + 2, T + 2)
    now = T + 2 * BUCKETS  # bucket T//2 leaves at this instant, T//2 + 1 is still in
    assert c.add(now, now) == 2 == c.count(now)
    assert [b[0] for b in c.buckets] == [T // 2 + 1, T // 2 + BUCKETS]


def test_window_counter_keeps_each_buckets_earliest_time() -> None:
    c = WindowCounter(60)
    c.add(T + 1.5, T + 1.5)
    c.add(T + 0.5, T + 1.5)  # earlier, same (last) bucket: becomes its earliest
    c.add(T + 1.0, T + 1.5)  # later than that: the earliest stays
    assert c.buckets == [[T // 2, 3, T + 0.5]] and c.oldest(T + 1.5) == T + 0.5
    c.add(T + 10, T + 10)
    c.add(T + 1.2, T + 10)  # late, into an older bucket: its earliest is kept
    c.add(T + 0.2, T + 10, n=2)  # late and earliest of that bucket
    assert c.buckets == [[T // 2, 6, T + 0.2], [T // 2 + 5, 1, T + 10]]
    assert c.count(T + 10) == 7 and c.oldest(T + 10) == T + 0.2


def test_late_event_in_the_oldest_bucket_the_window_still_counts_is_counted() -> None:
    c = WindowCounter(60)
    now = T + 2 * BUCKETS  # counts buckets T//2 + 1 ... T//2 + 30
    c.add(now, now)
    c.add(T + 2, now)  # the oldest bucket still in the window: counted
    c.add(T + 1.9, now)  # one bucket further back: dropped
    assert c.count(now) == 2 and c.oldest(now) == T + 2
    assert [b[0] for b in c.buckets] == [T // 2 + 1, T // 2 + BUCKETS]


def test_late_event_between_buckets_is_inserted_in_order() -> None:
    c = WindowCounter(60)
    for ts in (T, T + 20, T + 40):
        c.add(ts, ts)
    c.add(T + 30, T + 40)
    c.add(T + 10, T + 40)
    c.add(T + 21, T + 40, n=4)
    assert c.buckets == [
        [T // 2, 1, T], [T // 2 + 5, 1, T + 10], [T // 2 + 10, 5, T + 20],
        [T // 2 + 15, 1, T + 30], [T // 2 + 20, 1, T + 40],
    ]  # fmt: skip
    assert c.count(T + 40) == 9


def test_expire_drops_every_bucket_out_of_the_window_in_one_go() -> None:
    c = WindowCounter(60)
    for i in range(10):
        c.add(T + 2 * i, T + 2 * i, n=i + 1)
    assert c.count(T + 18) == 55
    c.expire(T + 2 * BUCKETS + 2 * 4)  # buckets 0..4 leave: 1+2+3+4+5
    assert c.total == 40 and [b[1] for b in c.buckets] == [6, 7, 8, 9, 10]
    c.expire(T + 10_000)
    assert c.total == 0 and c.buckets == []


def test_window_counter_snapshot_is_a_copy_and_restore_sorts_and_types() -> None:
    c = WindowCounter(60)
    c.add(T, T)
    snap = c.snapshot()
    snap[0][1] = 99
    assert c.buckets[0][1] == 1  # the snapshot does not share the counter's lists
    again = WindowCounter(60)
    again.restore([[T // 2 + 3, "2", 1e6 + 6], [str(int(T // 2)), 5.0, int(T)]])  # as JSON may hand it back
    assert again.buckets == [[T // 2, 5, T], [T // 2 + 3, 2, T + 6]]
    assert [type(x) for x in again.buckets[0]] == [int, int, float]
    assert again.total == 7 and again.count(T + 6) == 7 and again.oldest(T + 6) == T
    again.restore(json.loads(json.dumps(c.snapshot())))
    assert again.buckets == c.buckets and again.total == 1


def test_bounded_map_get_touches_and_misses_are_none() -> None:
    m = BoundedMap[str, int](2)
    assert m.get("x") is None and len(m) == 0 and "x" not in m
    assert m.setdefault("a", lambda: 1) == 1
    assert m.setdefault("b", lambda: 2) == 2
    assert m.setdefault("a", lambda: 100) == 1  # present: the factory is not used, "a" is touched
    m.setdefault("c", lambda: 3)  # "b" is the least recently touched
    assert list(m.data) == ["a", "c"] and m.evicted == 1
    assert m.get("a") == 1 and list(m.data) == ["c", "a"]
    assert "a" in m and "b" not in m and len(m) == 2


def test_bounded_map_put_replaces_moves_to_the_end_and_keeps_the_limit() -> None:
    m = BoundedMap[str, int](3)
    for i, key in enumerate("abc"):
        m.put(key, i)
    m.put("a", 10)  # replaced, and now the newest
    assert list(m.items()) == [("b", 1), ("c", 2), ("a", 10)] and m.evicted == 0
    small = BoundedMap[str, int](0)
    small.put("x", 1)  # a limit of 0 keeps nothing
    assert len(small) == 0 and small.evicted == 1


def test_bounded_map_peek_does_not_touch_and_items_copy() -> None:
    m = BoundedMap[str, int](3)
    for i, key in enumerate("abc"):
        m.setdefault(key, lambda i=i: i)  # type: ignore[misc]
    assert m.peek("a") == 0 and m.peek("x") is None
    listed = m.items()
    m.setdefault("d", lambda: 3)  # "a" was only peeked at: still the oldest, so it goes
    assert list(listed) == [("a", 0), ("b", 1), ("c", 2)]  # a copy taken before the change
    assert list(m.items()) == [("b", 1), ("c", 2), ("d", 3)] and m.evicted == 1


def test_bounded_map_eviction_scans_at_most_eviction_scan_protected_entries() -> None:
    limit = EVICTION_SCAN + 2
    m = BoundedMap[int, str](limit, keep=lambda v: v == "firing")
    for i in range(EVICTION_SCAN):
        m.setdefault(i, lambda: "firing")
    m.setdefault(EVICTION_SCAN, lambda: "x")  # the first unprotected one, beyond the scan
    m.setdefault(EVICTION_SCAN + 1, lambda: "x")
    m.setdefault(EVICTION_SCAN + 2, lambda: "x")  # over the limit: the scan sees only protected ones
    assert 0 not in m and EVICTION_SCAN in m and m.evicted == 1
    # the protected ones looked at are put back where they were, oldest first
    assert list(m.data) == [*range(1, EVICTION_SCAN + 3)]


def test_bounded_map_eviction_takes_the_first_unprotected_and_restores_the_order() -> None:
    m = BoundedMap[str, str](4, keep=lambda v: v == "firing")
    for key, value in [("a", "firing"), ("b", "firing"), ("c", "x"), ("d", "x")]:
        m.setdefault(key, lambda v=value: v)  # type: ignore[misc]
    m.setdefault("e", lambda: "firing")
    assert list(m.data) == ["a", "b", "d", "e"] and m.evicted == 1
    # never the newest: with one entry over the limit and the rest protected, the oldest goes
    one = BoundedMap[str, str](1, keep=lambda v: v == "firing")
    one.setdefault("a", lambda: "firing")
    one.setdefault("b", lambda: "x")
    assert list(one.data) == ["b"] and one.evicted == 1


def test_small_timestamps_count_like_large_ones() -> None:
    """A clock that starts at 0 (bucket indexes as small as the counts in them) counts the same."""
    c = WindowCounter(60)
    c.add(10, 10)  # bucket 5, one event
    c.add(2.5, 10)  # late, bucket 1: its own bucket, not the last one's
    assert c.buckets == [[1, 1, 2.5], [5, 1, 10]]
    c.add(0, 10, n=5)  # bucket 0, five events
    assert c.count(59.9) == 7
    assert c.count(60) == 2 and c.oldest(60) == 2.5  # bucket 0 leaves at 60, though it holds 5
    assert c.count(62) == 1 and c.oldest(62) == 10
