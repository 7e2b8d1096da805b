"""The live daemon: wires the stages to I/O (docs/DESIGN.md sections 1 and 8).

One main loop owns the pipeline. It wakes when watchfiles reports a change in a watched directory
(or after `WAKE_EVERY` at the latest), polls every source's tailer within a byte budget, feeds the
lines through the pipeline, and commits read positions, metric counters, rule state and new
alerts in one SQLite transaction. A restart, or a `kill -9`, resumes from the last commit: lines
after it are read again into state that has not seen them, so nothing is counted twice or lost.

Around the loop:
- a metrics HTTP server thread (prometheus-client) serves `/metrics` from the committed and
  in-flight counters, under the same lock the loop holds while it processes a batch; it opens
  after the first turn, so counters never go down across a kill -9;
- two sender threads deliver the outbox (alerts.Deliverer): one to the notify groups (each URL
  on a lane thread of its own, so a slow or dead one holds up only itself), one to Alertmanager,
  which also re-sends the firing alerts every `resend_interval` (alerts.Refresher); the loop only
  wakes them;
- signal handlers only record requests: SIGTERM/SIGINT stop after the current batch, SIGHUP
  reloads. Reload is build-then-swap: a config or key file that fails to load leaves the running
  one in place, says why, and is counted;
- systemd: READY once state is loaded and the port is open, RELOADING/READY around a reload,
  STATUS with the line rate, WATCHDOG only while the loop turns, STOPPING on the way out.
- shared rule state (`state.shared`): the pipeline defers its events to the rules, and each turn
  makes one round trip to the fleet's Redis (sharedlink.FleetSync): own events out, the fleet's
  in, alerts claimed; without Redis the instance goes on alone and says so;
- a state dir that cannot be written (disk full, read-only): the loop goes on, the store keeps the
  state in memory (state/mirror.py) and the journal its records; the loop retries with backoff (also
  while idle) until both are written, says so once each way, and exports it
  (`xinf_watch_state_writable`, `xinf_watch_state_write_errors_total`).
"""

from __future__ import annotations

import logging
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import watchfiles
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from xinf_watch.app.pipeline import Pipeline
from xinf_watch.app.service import MetricsServer, Notifier
from xinf_watch.config.schema import Config, ConfigError, load_config
from xinf_watch.config.sources import SourceConfig
from xinf_watch.delivery.alertmanager import Refresher
from xinf_watch.delivery.journal import AlertJournal
from xinf_watch.delivery.routing import build_targets, targets_for
from xinf_watch.delivery.sender import Deliverer
from xinf_watch.delivery.target import ALERTMANAGER
from xinf_watch.fleet.feed import FleetFeed
from xinf_watch.fleet.link import FleetSync, SharedLink, redacted
from xinf_watch.ingest.tail import FileIdentity, Position, SourceTailer
from xinf_watch.keys.dates import DisabledSince
from xinf_watch.keys.files import KeyFileError
from xinf_watch.keys.registry import KeyRegistry
from xinf_watch.keys.sources import KeySources
from xinf_watch.metrics.store import MetricsStore, StoreCollector
from xinf_watch.model import Alert
from xinf_watch.rules.engine import RuleEngine
from xinf_watch.state.outbox import Outbox
from xinf_watch.state.store import StateStore

log = logging.getLogger("xinf_watch")

WAKE_EVERY = 0.25  # seconds: the longest the loop sleeps without a file event
COMMIT_EVERY = 0.1  # seconds between commits while lines keep coming (alerts commit at once), at least
COMMIT_SHARE = 0.1  # and at most this share of the time: a big rule state (an attack) costs ms per commit
BUDGET_BYTES = 4 << 20  # per source per turn, so one busy source cannot starve the others
KEYS_CHECK_EVERY = 1.0
RETRY_MIN, RETRY_MAX = 0.5, 10.0  # seconds between attempts to write a state dir that refused writes


def position_to_json(p: Position) -> dict[str, Any]:
    i = p.identity
    return {"path": p.path, "dev": i.dev, "ino": i.ino, "fingerprint": i.fingerprint,
            "fingerprint_len": i.fingerprint_len, "offset": p.offset}


def position_from_json(d: dict[str, Any]) -> Position:
    identity = FileIdentity(int(d["dev"]), int(d["ino"]), str(d["fingerprint"]), int(d["fingerprint_len"]))
    return Position(str(d["path"]), identity, int(d["offset"]))


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
    shared: FleetSync | None = None  # read for its gauges and counters

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
            reloads = CounterMetricFamily("xinf_watch_config_reloads", "Config reloads, by result.",
                                          labels=("result",))
            for result in ("success", "failure"):
                reloads.add_metric((result,), s.reloads.get(result, 0))
            batch = CounterMetricFamily("xinf_watch_batch_duration_seconds",
                                        "Time spent processing batches (sum; rate / batches = mean).")
            batch.add_metric((), s.batch_seconds_sum)
            batches = CounterMetricFamily("xinf_watch_batches", "Batches processed.")
            batches.add_metric((), s.batches)
            errors = CounterMetricFamily("xinf_watch_line_errors", "Lines skipped because processing them "
                                         "failed (a bug: the log says which).", labels=("source",))
            for name, n in sorted(s.line_errors.items()):
                errors.add_metric((name,), n)
            evicted = CounterMetricFamily("xinf_watch_rule_state_evicted", "Rule groups or values forgotten "
                                          "because a rule's memory cap was reached.", labels=("rule",))
            for rule, n in sorted(s.evicted.items()):
                evicted.add_metric((rule,), n)
            held_back = CounterMetricFamily("xinf_watch_alerts_held_back", "Firing alerts not sent because "
                                            "their rule was flooding (max_alerts).", labels=("rule",))
            for rule, n in sorted(s.held_back.items()):
                held_back.add_metric((rule,), n)
            writable = GaugeMetricFamily("xinf_watch_state_writable", "1 when the state dir takes writes, 0 "
                                         "while state and alerts are kept in memory (disk full, read-only).")
            writable.add_metric((), int(s.state_writable))
            write_errors = CounterMetricFamily("xinf_watch_state_write_errors", "Writes to the state dir "
                                               "that failed (commits, journal appends, their retries).")
            write_errors.add_metric((), s.state_write_errors)
            shared = list(self._shared(s.shared)) if s.shared else []
        yield from families
        yield from (files, reloads, batch, batches, evicted, held_back, errors, writable, write_errors)
        yield from shared

    @staticmethod
    def _shared(sync: FleetSync) -> Iterator[Metric]:
        up = GaugeMetricFamily("xinf_watch_shared_state_up", "1 while the fleet's Redis (state.shared) is "
                               "reachable; 0 while rules count this instance's lines alone.")
        up.add_metric((), int(bool(sync.link.up)))
        pending = GaugeMetricFamily("xinf_watch_shared_events_pending", "Own events not yet published to "
                                    "the fleet's stream.")
        pending.add_metric((), sync.feed.pending_events())
        events = CounterMetricFamily("xinf_watch_shared_events", "Events published to the fleet's stream "
                                     "(own) and fed to the rule engine (the fleet's).", labels=("direction",))
        events.add_metric(("published",), sync.feed.published_events)
        events.add_metric(("fed",), sync.feed.fed_events)
        dropped = CounterMetricFamily("xinf_watch_shared_events_dropped", "Own events never published: "
                                      "more waited than are kept while Redis was unreachable.")
        dropped.add_metric((), sync.feed.dropped)
        invalid = CounterMetricFamily("xinf_watch_shared_entries_invalid", "Stream entries skipped: not "
                                      "readable as events (garbage, another version).")
        invalid.add_metric((), sync.feed.invalid)
        yield from (up, pending, events, dropped, invalid)


class Daemon:
    def __init__(self, rules_path: Path, notifier: Notifier | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.rules_path = rules_path
        self.notifier = notifier or Notifier()
        self.clock = clock
        self.stop = threading.Event()
        self.stop_signal: int | None = None
        self.reload_requested = False
        self.lock = threading.Lock()
        self.stats = LoopStats()
        self.sender_wake = threading.Event()  # the notify groups' sender
        self.alertmanager_wake = threading.Event()  # Alertmanager's sender
        self._dirty = True  # uncommitted lines since the last commit (first start: commit once)
        self._commit_every = COMMIT_EVERY
        self._last_event_seen = 0.0
        self._tailer_counts: dict[str, tuple[SourceTailer | None, int, int]] = {}
        self._last_event_wall = 0.0
        self._write_errors_seen = 0  # the store's and the journal's, as counted in stats
        self._retry_every = RETRY_MIN
        self._retry_at = 0.0  # monotonic

    # -- signals: record the request, the loop acts on it --------------------------------------

    def install_signal_handlers(self) -> None:
        """Before `start()`, so a SIGTERM or SIGHUP while loading is handled, not fatal."""
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)

    def _on_stop(self, signum: int, _frame: Any) -> None:
        # no logging here: a handler that writes to stderr while the loop is writing to it raises
        # "reentrant call" in the loop; the loop logs the request
        self.stop_signal = signum
        self.stop.set()

    def _on_hup(self, _signum: int, _frame: Any) -> None:
        self.reload_requested = True

    # -- startup --------------------------------------------------------------------------------

    def start(self) -> None:
        """Load config, keys and state, open the port, start the sender. Raises on a bad config."""
        config = load_config(self.rules_path)
        self.state = StateStore(config.state.dir, log=log.error)
        if not self.state.writable:
            self.stats.state_writable = False
            loaded = ("loaded the last saved state read-only" if self.state.loaded == "read-only"
                      else "starting from empty state")  # fmt: skip
            log.warning("state: cannot write %s; %s, keeping it in memory (alerts are delivered) and"
                        " retrying until it can be written", self.state.error, loaded)  # fmt: skip
        checkpoint = self.state.load()
        # when auth.db first showed each key disabled: restored before the keys are loaded
        self.disabled_since = DisabledSince(checkpoint.blobs.get("key_dates"))
        self.key_sources = KeySources(config.keys, config.key_sites, disabled_since=self.disabled_since)
        registry = self.key_sources.load()
        self.store = MetricsStore()
        self.store.restore(checkpoint.blobs.get("metrics", {}))
        self.stats.restore(checkpoint.blobs.get("loop", {}))
        self.fleet = self._fleet(config, checkpoint.blobs.get("fleet"))
        self.stats.shared = self.fleet
        self.pipeline = Pipeline.build(config, registry, self.store, rule_state=checkpoint.blobs.get("rules"),
                                       partial_lines=checkpoint.blobs.get("partial_lines"),
                                       defer_rules=self.fleet is not None)  # fmt: skip
        self.tailers = {
            s.name: self._tailer(s, checkpoint.positions.get(s.name)) for s in self.config.sources
        }
        self.journal = AlertJournal(self.config.state.dir / "alerts.jsonl")
        self._forget_firing_of_gone_rules(self.config)
        self.outbox = Outbox(self.config.state.dir, store=self.state)  # follows the store into memory
        targets = self._targets(self.config)
        self.deliverer = Deliverer(self.outbox, targets, self._count_notification, now=self.clock,
                                   log=log.warning, besides=ALERTMANAGER)
        self.alertmanager_sender = Deliverer(self.outbox, targets, self._count_notification, now=self.clock,
                                             log=log.warning, only=ALERTMANAGER,
                                             refresher=Refresher(self.outbox, self.clock, log.warning))
        self.senders = [  # the notify groups' sender sends to each URL on a lane of its own
            threading.Thread(target=deliverer.run, args=(self.stop, wake), kwargs={"lanes": lanes},
                             name=name, daemon=True)
            for deliverer, wake, name, lanes in (
                (self.deliverer, self.sender_wake, "xinf-watch-sender", True),
                (self.alertmanager_sender, self.alertmanager_wake, "xinf-watch-alertmanager", False))
        ]  # fmt: skip
        for sender in self.senders:
            sender.start()
        log.info("xinf-watch: %d sources, %d keys, %d rules; state in %s", len(self.config.sources),
                 len(self.registry), len(self.config.rules), self.config.state.dir)

    def _serve_metrics(self) -> None:
        """Open /metrics only after the first turn: a scrape before it would see the committed
        counters without the lines a kill -9 left uncommitted (the first turn reads them again),
        and a counter that goes down is a reset to Prometheus (a spike in every rate())."""
        registry = CollectorRegistry(auto_describe=False)
        # the registry of whatever pipeline is current: a reload replaces the pipeline object
        store_collector = StoreCollector(self.store, self._current_registry, now=self.clock)
        registry.register(DaemonCollector(self.lock, store_collector, self.stats))
        self.server = MetricsServer(self.config.metrics.host, self.config.metrics.port, registry)
        log.info("metrics on http://%s/metrics", self.server.address)

    @staticmethod
    def _fleet(config: Config, saved: dict[str, Any] | None) -> FleetSync | None:
        if config.state.shared is None:
            return None
        feed = FleetFeed(config.state.instance or socket.gethostname(), run=secrets.token_hex(4))
        feed.restore(saved)
        return FleetSync(feed, SharedLink(config.state.shared), log)

    def _current_registry(self) -> KeyRegistry:
        return self.pipeline.registry

    # The running config, keys and rules are the pipeline's: one reference, swapped on reload.
    @property
    def config(self) -> Config:
        return self.pipeline.config

    @property
    def registry(self) -> KeyRegistry:
        return self.pipeline.registry

    @property
    def engine(self) -> RuleEngine:
        return self.pipeline.engine

    def _tailer(self, source: SourceConfig, saved: list[dict[str, Any]] | None) -> SourceTailer:
        positions = [position_from_json(p) for p in saved or ()]
        # A source known from an earlier run reads every file it has not seen from the start.
        start_at = "beginning" if saved is not None else source.start_at
        return SourceTailer(source.name, source.path, start_at=start_at, positions=positions,
                            log=log.warning)

    def _targets(self, config: Config) -> dict[str, Any]:
        am = config.alertmanager
        if am is None:
            return build_targets(config.notify, None, group_interval=config.delivery.group_interval)
        return build_targets(config.notify, am.url, group_interval=config.delivery.group_interval,
                             resend_interval=am.resend_interval, event_ttl=am.event_ttl)  # fmt: skip

    def _count_notification(self, target: str, sent: bool, alerts: int) -> None:
        """A sender's report of one message (its thread): counted per alert, committed with the next turn."""
        pending = self.outbox.pending()
        with self.lock:
            for _ in range(alerts):
                self.store.count_notification(target, sent)
            self.store.outbox_pending = pending
            self._dirty = True

    # -- the loop -------------------------------------------------------------------------------

    def run(self) -> None:
        self.turn(force_commit=True)  # first read (start_at, or what a kill -9 left) before READY
        self._serve_metrics()
        self.notifier.ready(f"watching {len(self.tailers)} sources")
        last_commit = last_status = last_keys = self.clock()
        lines_at_status = 0
        while not self.stop.is_set():
            for _changes in self._wakeups():
                if self.stop.is_set() or self.reload_requested:
                    break
                backlog = True
                while backlog:  # a backlog is read turn after turn, not one budget per wakeup
                    now = self.clock()
                    if self.turn(force_commit=now - last_commit >= self._commit_every):
                        last_commit = now
                    if now - last_keys >= KEYS_CHECK_EVERY:
                        last_keys = now
                        self._reload_keys_if_changed()
                    self.notifier.watchdog()
                    if now - last_status >= 5.0:
                        rate = (self.stats.lines - lines_at_status) / (now - last_status)
                        self.notifier.status(f"{rate:,.0f} lines/s, outbox {self.store.outbox_pending}")
                        last_status, lines_at_status = now, self.stats.lines
                    backlog = any(t.pending() for t in self.tailers.values())
                    backlog = backlog or bool(self.fleet and self.fleet.behind)  # the fleet's stream
                    backlog = backlog and not (self.stop.is_set() or self.reload_requested)
            if self.reload_requested:
                self.reload_requested = False
                self.reload()
        self.shutdown()

    def _wakeups(self) -> Iterator[set[Any]]:
        """watchfiles change sets, or an empty set every WAKE_EVERY; ends when the dirs to watch change."""
        dirs = self._watch_dirs()
        if not dirs:
            while not self.stop.is_set() and not self.reload_requested:
                yield set()
                self.stop.wait(WAKE_EVERY)
            return
        for changes in watchfiles.watch(*dirs, stop_event=self.stop, yield_on_timeout=True, debounce=10,
                                        step=10, rust_timeout=int(WAKE_EVERY * 1000), recursive=False,
                                        raise_interrupt=False, ignore_permission_denied=True):
            yield changes
            if self._watch_dirs() != dirs:
                return

    def _watch_dirs(self) -> list[str]:
        dirs: set[Path] = set()
        for tailer in self.tailers.values():
            dirs.update(tailer.watch_paths())
        return sorted(str(d) for d in dirs if d.is_dir())

    def turn(self, force_commit: bool = False) -> bool:
        """Read what is there, process it, commit when due or when alerts wait. True if committed."""
        started = time.perf_counter()
        alerts: list[Alert] = []
        lines = 0
        with self.lock:
            self._retry_writes()
            for name, tailer in self.tailers.items():
                for batch in tailer.poll(BUDGET_BYTES):
                    process_line = self.pipeline.process_line
                    for line in batch.lines:
                        try:
                            alerts.extend(process_line(name, line, batch.file))
                        except Exception:  # a bug must cost a line, not the daemon: counted, logged
                            self._line_failed(name)
                    lines += len(batch.lines)
                if self.pipeline.has_partial_lines(name):  # a wrapped line the file let go ended inside
                    try:
                        held = {p.identity.key for p in tailer.positions()}
                        alerts.extend(self.pipeline.end_files(name, held))
                    except Exception:
                        self._line_failed(name)
                self._tailer_stats(name, tailer)
            if self.fleet is not None:
                alerts.extend(self.fleet.turn(self.pipeline, self._event_clock))
                lines_or_fleet = lines + self.fleet.received
            else:
                lines_or_fleet = lines
                rule_now = self._event_clock()
                if rule_now is not None:
                    alerts.extend(self.pipeline.advance(rule_now))
            self.stats.lines += lines
            if lines:
                self.stats.batches += 1
                self.stats.batch_seconds_sum += time.perf_counter() - started
            self.stats.evicted = self.engine.evicted
            self.stats.held_back = self.engine.held_back
            self._dirty = self._dirty or lines_or_fleet > 0
            if not alerts and not (force_commit and self._dirty):
                return False
            # Journal first: a crash before the commit re-reads the lines and makes the same
            # alerts, which the journal recognises; a crash after it cannot lose a journal line.
            # (A journal that cannot be written keeps the store in memory: the file never gets ahead.)
            self.journal.append(alerts)
            self._commit(alerts)
        if alerts:
            self.sender_wake.set()
            self.alertmanager_wake.set()
        return True

    def _line_failed(self, source: str) -> None:
        self.stats.line_errors[source] = n = self.stats.line_errors.get(source, 0) + 1
        if n == 1 or n % 1000 == 0:  # the traceback once, then a reminder now and then
            log.exception("%s: a line could not be processed (%d so far); it is skipped", source, n)

    def _event_clock(self) -> float | None:
        """Rule time: the log's own time, moved on by the wall clock while no line arrives.

        Live, log time and wall time agree; for logs written with older timestamps (a backlog,
        a test appending recorded lines) rules still see the spacing of the log, as in `replay`.
        None until the first line ever: rule time starts with the logs (so `absent` fires once
        some source has written, for the sources that then stay silent).
        """
        now = self.clock()
        last = self.engine.last_write or self.store.last_event_ts
        if not last:
            return None
        if last != self._last_event_seen:
            self._last_event_seen, self._last_event_wall = last, now
        return last + max(0.0, now - self._last_event_wall)

    def _tailer_stats(self, name: str, tailer: SourceTailer) -> None:
        # A tailer counts from 0 (a restart, a reloaded source): add what it counted since last time.
        counted_by, rotations, truncations = self._tailer_counts.get(name, (None, 0, 0))
        if counted_by is not tailer:
            rotations = truncations = 0
        self.store.count_file_events(name, tailer.rotations - rotations, tailer.truncations - truncations)
        self._tailer_counts[name] = (tailer, tailer.rotations, tailer.truncations)
        self.store.source_lag[name] = tailer.lag_bytes()
        self.stats.files_open[name] = tailer.files_open()

    def _commit(self, alerts: list[Alert]) -> None:
        config = self.config
        url = config.alertmanager.url if config.alertmanager else None
        notify = {r.name: r.notify for r in config.rules}
        started = time.perf_counter()
        if self.journal.unwritten:
            self.state.hold(self.journal.error or str(self.journal.path))
        blobs: dict[str, Any] = {"metrics": self.store.snapshot(), "rules": self.engine.snapshot(),
                                 "loop": self.stats.snapshot(), "key_dates": self.disabled_since.snapshot(),
                                 "partial_lines": self.pipeline.partial_lines()}
        if self.fleet is not None:
            blobs["fleet"] = self.fleet.feed.snapshot()
        self.state.commit(  # to the file, or to memory when the state dir refuses writes
            {name: [position_to_json(p) for p in t.positions()] for name, t in self.tailers.items()},
            blobs,
            [(a, targets_for(notify.get(a.rule, ()), config.notify, url)) for a in alerts],
        )
        self.store.outbox_pending = self.outbox.pending()
        self._dirty = False
        self._commit_every = max(COMMIT_EVERY, (time.perf_counter() - started) / COMMIT_SHARE)
        self._writes_checked()

    def _retry_writes(self, *, now: bool = False) -> bool:
        """Write what the journal and the store keep in memory, when due (backoff); True when
        nothing is kept in memory any more."""
        kept = not self.state.writable or self.journal.unwritten > 0
        if kept and (now or time.monotonic() >= self._retry_at):
            ok = self.journal.flush() and self.state.recover()
            self._retry_every = RETRY_MIN if ok else min(RETRY_MAX, self._retry_every * 2)
            self._retry_at = time.monotonic() + self._retry_every
        self._writes_checked()  # also notices a store a sender's outbox mark put in memory
        return self.state.writable and not self.journal.unwritten

    def _writes_checked(self) -> None:
        """Count the writes the state dir refused, and say once when it stops or starts taking them."""
        seen = self.state.write_errors + self.journal.write_errors
        self.stats.state_write_errors += seen - self._write_errors_seen
        self._write_errors_seen = seen
        writable = self.state.writable and not self.journal.unwritten
        if writable == self.stats.state_writable:
            return
        self.stats.state_writable = writable
        if writable:
            log.info("state: %s can be written again: read positions, counters, rule state and alerts"
                     " kept in memory are saved", self.state.directory)  # fmt: skip
            return
        self._retry_every = RETRY_MIN
        self._retry_at = time.monotonic() + RETRY_MIN
        log.warning("state: cannot write %s; keeping read positions, counters, rule state and alerts in"
                    " memory (alerts are delivered) and retrying: nothing is lost while xinf-watch runs",
                    self.state.error or self.journal.error)  # fmt: skip

    # -- reload ---------------------------------------------------------------------------------

    def reload(self) -> None:
        """Build everything from the files (this thread runs the loop: nothing changes meanwhile),
        then swap under the lock. Any failure while building leaves the running config as it is."""
        self.notifier.reloading()
        try:
            config = load_config(self.rules_path)
            key_sources = KeySources(config.keys, config.key_sites, disabled_since=self.disabled_since)
            registry = key_sources.load()
            # rule state carries over, by rule name
            pipeline = Pipeline.build(config, registry, self.store, rule_state=self.engine.snapshot(),
                                      partial_lines=self.pipeline.partial_lines(),
                                      defer_rules=self.fleet is not None)  # fmt: skip
            targets = self._targets(config)
        except Exception as exc:  # config, key files, targets, rule state: all refused the same way
            self._count_reload("failure")
            why = str(exc) if isinstance(exc, ConfigError | KeyFileError) else f"{type(exc).__name__}: {exc}"
            lines = why.splitlines() or [why]  # one argument a line: each escaped, the breaks kept
            log.error("reload failed, keeping the running config:" + "\n%s" * len(lines), *lines)
            self.notifier.ready("reload failed, running the previous config")
            return
        for what, old, new in (("metrics.listen", self.config.metrics.listen, config.metrics.listen),
                               ("state.dir", self.config.state.dir, config.state.dir),
                               ("state.shared", self.config.state.shared, config.state.shared),
                               ("state.instance", self.config.state.instance, config.state.instance)):
            if old != new:
                if what == "state.shared":  # its password stays out of the log
                    old, new = (redacted(str(u)) if u else u for u in (old, new))
                log.warning("reload: %s changed (%s -> %s): takes effect at the next start", what, old, new)
        with self.lock:
            self.key_sources = key_sources
            self.pipeline = pipeline
            kept = {s.name: self.tailers[s.name] for s in config.sources if s.name in self.tailers
                    and self.tailers[s.name].pattern == s.path}
            for name, tailer in self.tailers.items():
                if name not in kept:
                    tailer.close()
            self.tailers = {s.name: kept.get(s.name) or self._tailer(s, None) for s in config.sources}
            self.deliverer.set_targets(targets)
            self.alertmanager_sender.set_targets(targets)
        self._forget_firing_of_gone_rules(config)
        self._count_reload("success")
        log.info("reloaded %s: %d sources, %d keys, %d rules", self.rules_path, len(config.sources),
                 len(registry), len(config.rules))
        self.notifier.ready("reloaded")

    def _forget_firing_of_gone_rules(self, config: Config) -> None:
        """Firing alerts of a rule removed (or changed kind) since get no resolution: stop re-sending
        them, so Alertmanager ends them at their last endsAt."""
        rules = {(r.name, r.kind) for r in config.rules}
        n = self.state.keep_firing(lambda a: (a.get("rule"), a.get("kind")) in rules)
        if n:
            log.warning("%d firing alerts belong to rules no longer configured (or of another kind):"
                        " no longer re-sent to Alertmanager", n)  # fmt: skip

    def _count_reload(self, result: str) -> None:
        with self.lock:
            self.stats.reloads[result] = self.stats.reloads.get(result, 0) + 1
            self._dirty = True  # committed with the next turn, like a line

    def _reload_keys_if_changed(self) -> None:
        try:
            registry = self.key_sources.reload_if_changed()
        except KeyFileError as exc:
            log.error("key files changed but cannot be loaded, keeping the previous keys: %s", exc)
            return
        if registry is not None:
            with self.lock:
                self.pipeline.registry = registry
                self._dirty = True  # a key newly disabled in auth.db: its date is committed at once
            log.info("key files changed: %d keys", len(registry))

    def shutdown(self) -> None:
        """The one way out: stop the sender, read and commit what is there, close everything."""
        name = signal.Signals(self.stop_signal).name if self.stop_signal else "stop request"
        log.info("received %s, stopping", name)
        self.notifier.stopping()
        self.stop.set()
        self.sender_wake.set()
        self.alertmanager_wake.set()
        for sender in self.senders:  # first, so the final commit has their notification counts
            sender.join(timeout=5)
        self.turn(force_commit=True)
        if not self._retry_writes(now=True):
            log.error("state: %s still cannot be written: what was kept in memory is lost; the next start"
                      " reads the lines again from the last saved positions (alerts made since may be"
                      " sent again)", self.state.error or self.journal.error)  # fmt: skip
        self.close()

    def close(self) -> None:
        self.server.close()
        for tailer in self.tailers.values():
            tailer.close()
        self.outbox.close()
        self.state.close()
        if self.fleet is not None:
            self.fleet.link.close()


def run_daemon(rules_path: Path) -> int:
    daemon = Daemon(rules_path)
    daemon.install_signal_handlers()
    daemon.start()
    daemon.run()
    log.info("stopped")
    return 0
