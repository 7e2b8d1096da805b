"""The daemon's self-metrics: its own counters (`LoopStats`) and their Prometheus collector.

`LoopStats` holds the xinf_watch_* figures beyond what `MetricsStore` counts: the loop's batches,
reloads, lines that failed, the rule state's evictions and held-back alerts, whether the state
dir takes writes, and, with shared rule state, the fleet's stream. `DaemonCollector` exposes them
with the store's families at scrape time, read under the loop's lock (app/daemon.py).

The collector reads shared rule state through `SharedState` (the fleet's feed and link): `FleetSync`
is app's, and metrics sits below app in the layers (tests/test_layout.py).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from xinf_watch.fleet.feed import FleetFeed
from xinf_watch.fleet.link import SharedLink
from xinf_watch.metrics.store import StoreCollector


class SharedState(Protocol):
    """What the collector reads of shared rule state (app/fleetsync.py's `FleetSync`)."""

    @property
    def feed(self) -> FleetFeed: ...
    @property
    def link(self) -> SharedLink: ...


@dataclass
class LoopStats:
    """The daemon's own counters (xinf_watch_* beyond what MetricsStore holds).

    The exported counters are committed with the others (the `loop` blob) and continue across
    restarts; `evicted` and `held_back` are the rule state's own (saved with it), `files_open` a
    gauge, `lines` only feeds the STATUS rate.
    """

    files_open: dict[str, int] = field(default_factory=dict)
    reloads: dict[str, int] = field(default_factory=dict)
    batch_seconds_sum: float = 0.0
    batches: int = 0
    lines: int = 0
    evicted: dict[str, int] = field(default_factory=dict)
    held_back: dict[str, int] = field(default_factory=dict)
    line_errors: dict[str, int] = field(default_factory=dict)
    state_writable: bool = True
    state_write_errors: int = 0
    shared: SharedState | None = None  # read for its gauges and counters

    def snapshot(self) -> dict[str, Any]:
        return {"reloads": dict(self.reloads), "batches": self.batches,
                "batch_seconds_sum": self.batch_seconds_sum, "line_errors": dict(self.line_errors),
                "state_write_errors": self.state_write_errors}  # fmt: skip

    def restore(self, data: dict[str, Any]) -> None:
        self.reloads = {str(k): int(v) for k, v in data.get("reloads", {}).items()}
        self.batches = int(data.get("batches", 0))
        self.batch_seconds_sum = float(data.get("batch_seconds_sum", 0.0))
        self.line_errors = {str(k): int(v) for k, v in data.get("line_errors", {}).items()}
        self.state_write_errors = int(data.get("state_write_errors", 0))


class DaemonCollector(Collector):
    """Self-metrics of the loop, and the store's families, read under the loop's lock."""

    def __init__(self, lock: threading.Lock, store: StoreCollector, stats: LoopStats) -> None:
        self.lock, self.store, self.stats = lock, store, stats

    def collect(self) -> Iterator[Metric]:
        with self.lock:
            families = list(self.store.collect())
            s = self.stats
            files = GaugeMetricFamily("xinf_watch_files_open", "Files held open.", labels=("source",))
            for name in sorted(s.files_open):
                files.add_metric((name,), s.files_open[name])
            reloads = CounterMetricFamily(
                "xinf_watch_config_reloads", "Config reloads, by result.", labels=("result",)
            )
            for result in ("success", "failure"):
                reloads.add_metric((result,), s.reloads.get(result, 0))
            batch = CounterMetricFamily(
                "xinf_watch_batch_duration_seconds",
                "Time spent processing batches (sum; rate / batches = mean).",
            )
            batch.add_metric((), s.batch_seconds_sum)
            batches = CounterMetricFamily("xinf_watch_batches", "Batches processed.")
            batches.add_metric((), s.batches)
            errors = CounterMetricFamily(
                "xinf_watch_line_errors",
                "Lines skipped because processing them failed (a bug: the log says which).",
                labels=("source",),
            )
            for name, n in sorted(s.line_errors.items()):
                errors.add_metric((name,), n)
            evicted = CounterMetricFamily(
                "xinf_watch_rule_state_evicted",
                "Rule groups or values forgotten because a rule's memory cap was reached.",
                labels=("rule",),
            )
            for rule, n in sorted(s.evicted.items()):
                evicted.add_metric((rule,), n)
            held_back = CounterMetricFamily(
                "xinf_watch_alerts_held_back",
                "Firing alerts not sent because their rule was flooding (max_alerts).",
                labels=("rule",),
            )
            for rule, n in sorted(s.held_back.items()):
                held_back.add_metric((rule,), n)
            writable = GaugeMetricFamily(
                "xinf_watch_state_writable",
                "1 when the state dir takes writes, 0 "
                "while state and alerts are kept in memory (disk full, read-only).",
            )
            writable.add_metric((), int(s.state_writable))
            write_errors = CounterMetricFamily(
                "xinf_watch_state_write_errors",
                "Writes to the state dir that failed (commits, journal appends, their retries).",
            )
            write_errors.add_metric((), s.state_write_errors)
            shared = list(self._shared(s.shared)) if s.shared else []
        yield from families
        yield from (files, reloads, batch, batches, evicted, held_back, errors, writable, write_errors)
        yield from shared

    @staticmethod
    def _shared(sync: SharedState) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "xinf_watch_shared_state_up",
            "1 while the fleet's Redis (state.shared) is "
            "reachable; 0 while rules count this instance's lines alone.",
        )
        up.add_metric((), int(bool(sync.link.up)))
        pending = GaugeMetricFamily(
            "xinf_watch_shared_events_pending", "Own events not yet published to the fleet's stream."
        )
        pending.add_metric((), sync.feed.pending_events())
        events = CounterMetricFamily(
            "xinf_watch_shared_events",
            "Events published to the fleet's stream (own) and fed to the rule engine (the fleet's).",
            labels=("direction",),
        )
        events.add_metric(("published",), sync.feed.published_events)
        events.add_metric(("fed",), sync.feed.fed_events)
        dropped = CounterMetricFamily(
            "xinf_watch_shared_events_dropped",
            "Own events never published: more waited than are kept while Redis was unreachable.",
        )
        dropped.add_metric((), sync.feed.dropped)
        invalid = CounterMetricFamily(
            "xinf_watch_shared_entries_invalid",
            "Stream entries skipped: not readable as events (garbage, another version).",
        )
        invalid.add_metric((), sync.feed.invalid)
        yield from (up, pending, events, dropped, invalid)
