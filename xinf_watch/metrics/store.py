"""Counting events and exposing them in the Prometheus format of docs/DESIGN.md section 6.

Counting happens per line, so it is done in plain dicts keyed by label tuples (`MetricsStore`);
prometheus-client objects are only built at scrape time by `StoreCollector`. Updating client
objects on every line made the pipeline about 2.7x slower.

Label values are bounded whatever the input: `key` is an alias from the registry, `unknown`,
`none` or `jwt:<known user>`; `scope` comes from the route table; `source`, `rule` and `target`
from the config. Distinct client IPs are tracked per key up to `MAX_IPS_PER_KEY`.

The store is a plain value: `snapshot()` and `restore()` turn it into JSON-able data so the daemon
can checkpoint counters with the read positions and continue them across restarts.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from xinf_watch import __version__
from xinf_watch.keys.registry import KeyRegistry
from xinf_watch.model import Alert, AlertStatus, Event, LineResult

# LLM requests are slow: the default client buckets stop at 10 s, a long completion takes minutes.
DURATION_BUCKETS: tuple[float, ...] = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
CLIENT_IP_WINDOW = 24 * 3600.0
_ONE_SHOT_KINDS = frozenset({"match", "new_value"})
MAX_IPS_PER_KEY = 4096
COUNTER_MAX = 2**63 - 1  # a sum saturates here rather than outgrow what JSON and SQLite keep exactly


class MetricsStore:
    """Every counter and gauge the daemon exports, as plain data."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str, str], int] = {}  # source, key, scope, outcome
        self.response_bytes: dict[tuple[str, str, str], int] = {}  # source, key, scope
        # source, scope -> [bucket counts..., +Inf count, sum]
        self.durations: dict[tuple[str, str], list[float]] = {}
        self.lines: dict[tuple[str, str], int] = {}  # source, result
        self.key_last_used: dict[str, float] = {}
        self.key_ips: dict[str, dict[str, float]] = {}  # key -> ip -> last seen
        self.alerts: dict[tuple[str, str], int] = {}  # rule, severity
        self.firing: dict[tuple[str, str], set[str]] = {}  # rule, severity -> alert ids
        self.rotations: dict[str, int] = {}
        self.truncations: dict[str, int] = {}
        self.notifications: dict[tuple[str, str], int] = {}  # target, result
        self.source_lag: dict[str, int] = {}
        self.outbox_pending = 0
        self.source_last_event: dict[str, float] = {}
        self.last_event_ts = 0.0

    def count_line(self, source: str, result: LineResult) -> None:
        k = (source, result)  # StrEnum: the member is its label value
        self.lines[k] = self.lines.get(k, 0) + 1

    def count_lines(self, source: str, result: LineResult, n: int) -> None:
        if n:
            k = (source, result)
            self.lines[k] = self.lines.get(k, 0) + n

    def observe(self, event: Event) -> None:
        key = event.key
        k4 = (event.source, key, event.scope, event.outcome)
        self.requests[k4] = self.requests.get(k4, 0) + 1
        if event.bytes:
            k3 = (event.source, key, event.scope)
            total = self.response_bytes.get(k3, 0) + event.bytes
            self.response_bytes[k3] = total if total < COUNTER_MAX else COUNTER_MAX
        if event.duration is not None:
            k2 = (event.source, event.scope)
            hist = self.durations.get(k2)
            if hist is None:
                hist = self.durations[k2] = [0.0] * (len(DURATION_BUCKETS) + 2)
            hist[bisect_left(DURATION_BUCKETS, event.duration)] += 1
            hist[-1] += event.duration
        ts = event.ts
        if ts > self.last_event_ts:
            self.last_event_ts = ts
        if ts > self.source_last_event.get(event.source, 0.0):
            self.source_last_event[event.source] = ts
        if ts > self.key_last_used.get(key, 0.0):
            self.key_last_used[key] = ts
        ips = self.key_ips.get(key)
        if ips is None:
            ips = self.key_ips[key] = {}
        ips[event.ip] = ts
        if len(ips) > MAX_IPS_PER_KEY:
            _prune_ips(ips, ts - CLIENT_IP_WINDOW)

    def record_alert(self, alert: Alert) -> None:
        k = (alert.rule, alert.severity.value)
        ids = self.firing.setdefault(k, set())
        if alert.status is AlertStatus.FIRING:
            self.alerts[k] = self.alerts.get(k, 0) + 1
            if alert.kind not in _ONE_SHOT_KINDS:  # those never resolve: nothing stays firing
                ids.add(alert.id)
        else:
            ids.discard(alert.id)

    def count_notification(self, target: str, sent: bool) -> None:
        k = (target, "sent" if sent else "failed")
        self.notifications[k] = self.notifications.get(k, 0) + 1

    def count_file_events(self, source: str, rotations: int, truncations: int) -> None:
        if rotations:
            self.rotations[source] = self.rotations.get(source, 0) + rotations
        if truncations:
            self.truncations[source] = self.truncations.get(source, 0) + truncations

    def client_ip_count(self, key: str, now: float) -> int:
        since = now - CLIENT_IP_WINDOW
        return sum(1 for seen in self.key_ips.get(key, {}).values() if seen >= since)

    # -- persistence -------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Counters as JSON-able data (gauges that the next run recomputes are left out)."""
        return {
            "requests": _items(self.requests),
            "response_bytes": _items(self.response_bytes),
            "durations": _items(self.durations),
            "lines": _items(self.lines),
            "key_last_used": self.key_last_used,
            "key_ips": self.key_ips,
            "alerts": _items(self.alerts),
            "firing": [[list(k), sorted(v)] for k, v in self.firing.items()],
            "rotations": self.rotations,
            "truncations": self.truncations,
            "notifications": _items(self.notifications),
            "source_last_event": self.source_last_event,
            "last_event_ts": self.last_event_ts,
        }

    def restore(self, data: dict[str, Any]) -> None:
        self.requests = {tuple(k): v for k, v in data.get("requests", [])}
        self.response_bytes = {tuple(k): v for k, v in data.get("response_bytes", [])}
        self.durations = {tuple(k): list(v) for k, v in data.get("durations", [])}
        self.lines = {tuple(k): v for k, v in data.get("lines", [])}
        self.key_last_used = dict(data.get("key_last_used", {}))
        self.key_ips = {k: dict(v) for k, v in data.get("key_ips", {}).items()}
        self.alerts = {tuple(k): v for k, v in data.get("alerts", [])}
        self.firing = {tuple(k): set(v) for k, v in data.get("firing", [])}
        self.rotations = dict(data.get("rotations", {}))
        self.truncations = dict(data.get("truncations", {}))
        self.notifications = {tuple(k): v for k, v in data.get("notifications", [])}
        self.source_last_event = {k: float(v) for k, v in data.get("source_last_event", {}).items()}
        self.last_event_ts = float(data.get("last_event_ts", 0.0))


def _items(d: dict[Any, Any]) -> list[list[Any]]:
    return [[list(k), v] for k, v in d.items()]


def _prune_ips(ips: dict[str, float], since: float) -> None:
    for ip in [ip for ip, seen in ips.items() if seen < since]:
        del ips[ip]
    if len(ips) > MAX_IPS_PER_KEY:
        # Still full of fresh addresses (a spray): keep the most recently inserted half.
        for ip in list(ips)[: len(ips) - MAX_IPS_PER_KEY // 2]:
            del ips[ip]


class StoreCollector(Collector):
    """Builds the metric families from a `MetricsStore` and the key registry at scrape time.

    `now` gives the time key states and the 24 h IP window are judged at: the wall clock in the
    daemon, the last event's time in `replay` (so a replay's exposition is deterministic).
    """

    def __init__(
        self,
        store: MetricsStore,
        registry: Callable[[], KeyRegistry],
        now: Callable[[], float],
    ) -> None:
        self.store = store
        self.registry = registry
        self.now = now

    def collect(self) -> Iterator[Metric]:
        s = self.store
        yield _counter(
            "xinf_requests",
            "Requests seen, by API key alias, permission scope and outcome.",
            ("source", "key", "scope", "outcome"),
            s.requests,
        )
        yield self._durations()
        yield _counter(
            "xinf_response_bytes",
            "Response body bytes sent, by key and scope.",
            ("source", "key", "scope"),
            s.response_bytes,
        )
        yield from self._keys()
        yield _counter("xinf_alerts", "Alerts fired, by rule.", ("rule", "severity"), s.alerts)
        firing = GaugeMetricFamily(
            "xinf_alerts_firing", "Alerts currently firing, by rule.", labels=("rule", "severity")
        )
        for (rule, severity), ids in sorted(s.firing.items()):
            firing.add_metric((rule, severity), len(ids))
        yield firing
        yield _counter(
            "xinf_watch_lines",
            "Input lines read, by result (parsed, unparsed, skipped).",
            ("source", "result"),
            s.lines,
        )
        yield _gauge(
            "xinf_watch_last_event_timestamp_seconds",
            "Log time of the last record read, by source.",
            ("source",),
            {(k,): v for k, v in s.source_last_event.items()},
        )
        yield _gauge(
            "xinf_watch_source_lag_bytes",
            "Bytes written to the source's files but not read yet.",
            ("source",),
            {(k,): v for k, v in s.source_lag.items()},
        )
        yield _counter(
            "xinf_watch_rotations",
            "Log rotations followed.",
            ("source",),
            {(k,): v for k, v in s.rotations.items()},
        )
        yield _counter(
            "xinf_watch_truncations",
            "Files found shorter than read (copytruncate, or emptied in place: possible loss if no copy).",
            ("source",),
            {(k,): v for k, v in s.truncations.items()},
        )
        yield _counter(
            "xinf_watch_notifications",
            "Notification attempts, by target and result.",
            ("target", "result"),
            s.notifications,
        )
        pending = GaugeMetricFamily("xinf_watch_outbox_pending", "Alerts waiting in the outbox for delivery.")
        pending.add_metric((), s.outbox_pending)
        yield pending
        build = GaugeMetricFamily(
            "xinf_watch_build_info", "xinf-watch build information.", labels=("version",)
        )
        build.add_metric((__version__,), 1)
        yield build

    def _durations(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily(
            "xinf_request_duration_seconds",
            "Request duration as the source logged it, by scope.",
            labels=("source", "scope"),
        )
        for labels, hist in sorted(self.store.durations.items()):
            cumulative, buckets = 0.0, []
            for bound, n in zip((*DURATION_BUCKETS, float("inf")), hist[:-1], strict=True):
                cumulative += n
                buckets.append((_le(bound), cumulative))
            family.add_metric(labels, buckets, hist[-1])
        return family

    def _keys(self) -> Iterator[Metric]:
        now = self.now()
        registry = self.registry()
        info = GaugeMetricFamily(
            "xinf_key_info",
            "One series per registry key: alias, owner and state now.",
            labels=("key", "owner", "state"),
        )
        expiry = GaugeMetricFamily(
            "xinf_key_expiry_timestamp_seconds", "When the key expires (Unix time).", labels=("key",)
        )
        for entry in sorted(registry.entries, key=lambda e: e.alias):
            info.add_metric((entry.alias, entry.owner or "", registry.state_of(entry, now).value), 1)
            if entry.expires_at is not None:
                expiry.add_metric((entry.alias,), entry.expires_at)
        yield info
        yield expiry
        yield _gauge(
            "xinf_key_last_used_timestamp_seconds",
            "Time of the key's last request (Unix time).",
            ("key",),
            {(k,): v for k, v in self.store.key_last_used.items()},
        )
        yield _gauge(
            "xinf_key_client_ips",
            "Distinct client IPs that used the key in the last 24 h.",
            ("key",),
            {(k,): self.store.client_ip_count(k, now) for k in self.store.key_ips},
        )


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


def _counter(name: str, doc: str, labels: tuple[str, ...], values: dict[Any, Any]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for label_values, value in sorted(values.items()):
        family.add_metric(label_values, value)
    return family


def _gauge(name: str, doc: str, labels: tuple[str, ...], values: dict[Any, Any]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for label_values, value in sorted(values.items()):
        family.add_metric(label_values, value)
    return family


def exposition(collectors: Iterable[Collector]) -> bytes:
    """The Prometheus text exposition of the given collectors (a private registry, no globals)."""
    from prometheus_client import generate_latest

    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    return generate_latest(registry)
