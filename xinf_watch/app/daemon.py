"""The live daemon: wires the stages to I/O (docs/DESIGN.md sections 1 and 8).

One main loop owns the pipeline. It wakes when watchfiles reports a change in a watched directory
(or after `WAKE_EVERY` at the latest: app/tailers.py), polls every source's tailer within a byte
budget, feeds the lines through the pipeline, and commits read positions, metric counters, rule
state and new alerts in one SQLite transaction. A restart, or a `kill -9`, resumes from the last
commit: lines after it are read again into state that has not seen them, so nothing is counted
twice or lost.

Around the loop:
- a metrics HTTP server thread (prometheus-client) serves `/metrics` from the committed and
  in-flight counters, under the same lock the loop holds while it processes a batch; it opens
  after the first turn, so counters never go down across a kill -9;
- two sender threads deliver the outbox (app/senders.py): one to the notify groups, one to
  Alertmanager; the loop only wakes them;
- signal handlers only record requests: SIGTERM/SIGINT stop after the current batch, SIGHUP
  reloads. Reload is build-then-swap (app/reload.py): a config or key file that fails to load
  leaves the running one in place, says why, and is counted;
- systemd: READY once state is loaded and the port is open, RELOADING/READY around a reload,
  STATUS with the line rate, WATCHDOG only while the loop turns, STOPPING on the way out.
- shared rule state (`state.shared`): the pipeline defers its events to the rules, and each turn
  makes one round trip to the fleet's Redis (app/fleetsync.py): own events out, the fleet's
  in, alerts claimed; without Redis the instance goes on alone and says so;
- a state dir that cannot be written (disk full, read-only): the loop goes on, the store keeps the
  state in memory (state/mirror.py) and the journal its records; the loop retries with backoff (also
  while idle) until both are written, says so once each way, and exports it (app/statewrites.py).
"""

from __future__ import annotations

import functools
import logging
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client.registry import CollectorRegistry

from xinf_watch.app.fleetsync import FleetSync
from xinf_watch.app.pipeline import Pipeline
from xinf_watch.app.reload import changed_keys, forget_gone_rules, rebuild, say_refused, warn_restart_only
from xinf_watch.app.ruleclock import RuleClock
from xinf_watch.app.senders import delivery_targets, start_senders
from xinf_watch.app.service import MetricsServer, Notifier
from xinf_watch.app.statewrites import StateWrites, say_in_memory_at_start
from xinf_watch.app.tailers import open_tailer, position_to_json, swap_tailers, wakeups, watch_dirs
from xinf_watch.config.schema import Config, load_config
from xinf_watch.delivery.journal import AlertJournal
from xinf_watch.delivery.routing import targets_for
from xinf_watch.fleet.feed import FleetFeed
from xinf_watch.fleet.link import SharedLink
from xinf_watch.ingest.tail import SourceTailer
from xinf_watch.keys.dates import DisabledSince
from xinf_watch.keys.registry import KeyRegistry
from xinf_watch.keys.sources import KeySources
from xinf_watch.metrics.selfmetrics import DaemonCollector, LoopStats
from xinf_watch.metrics.store import MetricsStore, StoreCollector
from xinf_watch.model import Alert
from xinf_watch.rules.engine import RuleEngine
from xinf_watch.state.outbox import Outbox
from xinf_watch.state.store import StateStore

log = logging.getLogger("xinf_watch")

COMMIT_EVERY = 0.1  # seconds between commits while lines keep coming (alerts commit at once), at least
COMMIT_SHARE = 0.1  # and at most this share of the time: a big rule state (an attack) costs ms per commit
BUDGET_BYTES = 4 << 20  # per source per turn, so one busy source cannot starve the others
KEYS_CHECK_EVERY = 1.0


class Daemon:
    def __init__(self, rules_path: Path, notifier: Notifier | None = None,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
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
        self._rule_clock = RuleClock(clock)
        self._tailer_counts: dict[str, tuple[SourceTailer | None, int, int]] = {}

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
            say_in_memory_at_start(self.state)
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
        self.tailers = {s.name: open_tailer(s, checkpoint.positions.get(s.name)) for s in self.config.sources}
        self.journal = AlertJournal(self.config.state.dir / "alerts.jsonl")
        self.writes = StateWrites(self.state, self.journal, self.stats)
        forget_gone_rules(self.state, self.config)
        self.outbox = Outbox(self.config.state.dir, store=self.state)  # follows the store into memory
        self.deliverer, self.alertmanager_sender, self.senders = start_senders(
            self.outbox, delivery_targets(self.config), self._count_notification, self.clock, self.stop,
            (self.sender_wake, self.alertmanager_wake))  # fmt: skip
        log.info("xinf-watch: %d sources, %d keys, %d rules; state in %s", len(self.config.sources),
                 len(self.registry), len(self.config.rules), self.config.state.dir)  # fmt: skip

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
            wake = wakeups(lambda: watch_dirs(self.tailers), self.stop, lambda: self.reload_requested)
            for _changes in wake:
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

    def turn(self, force_commit: bool = False) -> bool:
        """Read what is there, process it, commit when due or when alerts wait. True if committed."""
        started = time.perf_counter()
        alerts: list[Alert] = []
        with self.lock:
            self.writes.retry()
            lines = self._read_sources(alerts)
            received = self._advance_rules(alerts)
            self._count_turn(lines, started)
            self._dirty = self._dirty or lines + received > 0
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

    def _read_sources(self, alerts: list[Alert]) -> int:
        """Poll every tailer within its budget and process what it read into `alerts`; the lines read."""
        lines = 0
        for name, tailer in self.tailers.items():
            for batch in tailer.poll(BUDGET_BYTES):
                # a bug must cost a line, not the daemon: counted, logged (`on_error`)
                on_error = functools.partial(self._line_failed, name)
                alerts.extend(self.pipeline.process_lines(name, batch.lines, batch.file, on_error)[1])
                lines += len(batch.lines)
            if self.pipeline.has_partial_lines(name):  # a wrapped line the file let go ended inside
                try:
                    held = {p.identity.key for p in tailer.positions()}
                    alerts.extend(self.pipeline.end_files(name, held))
                except Exception:
                    self._line_failed(name)
            self._tailer_stats(name, tailer)
        return lines

    def _advance_rules(self, alerts: list[Alert]) -> int:
        """Move rule time on (with shared rule state: the fleet's turn) into `alerts`; the fleet's
        entries received (they too are uncommitted state)."""
        if self.fleet is not None:
            alerts.extend(self.fleet.turn(self.pipeline, self._event_clock))
            return self.fleet.received
        rule_now = self._event_clock()
        if rule_now is not None:
            alerts.extend(self.pipeline.advance(rule_now))
        return 0

    def _count_turn(self, lines: int, started: float) -> None:
        self.stats.lines += lines
        if lines:
            self.stats.batches += 1
            self.stats.batch_seconds_sum += time.perf_counter() - started
        self.stats.evicted = self.engine.evicted
        self.stats.held_back = self.engine.held_back

    def _line_failed(self, source: str) -> None:
        self.stats.line_errors[source] = n = self.stats.line_errors.get(source, 0) + 1
        if n == 1 or n % 1000 == 0:  # the traceback once, then a reminder now and then
            log.exception("%s: a line could not be processed (%d so far); it is skipped", source, n)

    def _event_clock(self) -> float | None:
        """Rule time (app/ruleclock.py), from the latest line's log time."""
        return self._rule_clock.now(self.engine.last_write or self.store.last_event_ts)

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
        self.writes.follow_journal()
        blobs: dict[str, Any] = {"metrics": self.store.snapshot(), "rules": self.engine.snapshot(),
                                 "loop": self.stats.snapshot(), "key_dates": self.disabled_since.snapshot(),
                                 "partial_lines": self.pipeline.partial_lines()}  # fmt: skip
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
        self.writes.check()

    # -- reload ---------------------------------------------------------------------------------

    def reload(self) -> None:
        """Build everything from the files (this thread runs the loop: nothing changes meanwhile),
        then swap under the lock. Any failure while building leaves the running config as it is."""
        self.notifier.reloading()
        try:
            new = rebuild(self.rules_path, self.pipeline, self.store, self.disabled_since,
                          defer_rules=self.fleet is not None)  # fmt: skip
            targets = delivery_targets(new.config)
        except Exception as exc:  # config, key files, targets, rule state: all refused the same way
            self._count_reload("failure")
            say_refused(exc)
            self.notifier.ready("reload failed, running the previous config")
            return
        config = new.config
        warn_restart_only(self.config, config)
        with self.lock:
            self.key_sources = new.key_sources
            self.pipeline = new.pipeline
            self.tailers = swap_tailers(self.tailers, config)
            self.deliverer.set_targets(targets)
            self.alertmanager_sender.set_targets(targets)
        forget_gone_rules(self.state, config)
        self._count_reload("success")
        log.info("reloaded %s: %d sources, %d keys, %d rules", self.rules_path, len(config.sources),
                 len(new.pipeline.registry), len(config.rules))  # fmt: skip
        self.notifier.ready("reloaded")

    def _count_reload(self, result: str) -> None:
        with self.lock:
            self.stats.reloads[result] = self.stats.reloads.get(result, 0) + 1
            self._dirty = True  # committed with the next turn, like a line

    def _reload_keys_if_changed(self) -> None:
        registry = changed_keys(self.key_sources)
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
        self.writes.last_try()
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
