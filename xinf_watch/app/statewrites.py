"""A state dir that cannot be written (disk full, read-only), as the daemon's loop handles it.

The store keeps the state in memory (state/mirror.py) and the journal its records; `retry` writes
both back when due, with backoff (also while idle), and `check` counts the writes that failed and
says once each way when the state dir stops or starts taking them. Both go to the loop's stats
(`xinf_watch_state_writable`, `xinf_watch_state_write_errors_total`, metrics/selfmetrics.py).
"""

from __future__ import annotations

import logging
import time

from xinf_watch.delivery.journal import AlertJournal
from xinf_watch.metrics.selfmetrics import LoopStats
from xinf_watch.state.store import StateStore

log = logging.getLogger("xinf_watch")

RETRY_MIN, RETRY_MAX = 0.5, 10.0  # seconds between attempts to write a state dir that refused writes


def say_in_memory_at_start(state: StateStore) -> None:
    """A store that could not open its file for writing: say where its state came from."""
    loaded = ("loaded the last saved state read-only" if state.loaded == "read-only"
              else "starting from empty state")  # fmt: skip
    log.warning("state: cannot write %s; %s, keeping it in memory (alerts are delivered) and"
                " retrying until it can be written", state.error, loaded)  # fmt: skip


class StateWrites:
    """Whether the store and the journal take writes, retried with backoff while they do not."""

    def __init__(self, state: StateStore, journal: AlertJournal, stats: LoopStats) -> None:
        self.state, self.journal, self.stats = state, journal, stats
        self._errors_seen = 0  # the store's and the journal's, as counted in stats
        self._retry_every = RETRY_MIN
        self._retry_at = 0.0  # monotonic

    def follow_journal(self) -> None:
        """Before a commit: a journal that cannot be written keeps the store in memory, so the file
        never gets ahead of it."""
        if self.journal.unwritten:
            self.state.hold(self.journal.error or str(self.journal.path))

    def retry(self, *, now: bool = False) -> bool:
        """Write what the journal and the store keep in memory, when due (backoff); True when
        nothing is kept in memory any more."""
        kept = not self.state.writable or self.journal.unwritten > 0
        if kept and (now or time.monotonic() >= self._retry_at):
            ok = self.journal.flush() and self.state.recover()
            self._retry_every = RETRY_MIN if ok else min(RETRY_MAX, self._retry_every * 2)
            self._retry_at = time.monotonic() + self._retry_every
        self.check()  # also notices a store a sender's outbox mark put in memory
        return self.state.writable and not self.journal.unwritten

    def check(self) -> None:
        """Count the writes the state dir refused, and say once when it stops or starts taking them."""
        seen = self.state.write_errors + self.journal.write_errors
        self.stats.state_write_errors += seen - self._errors_seen
        self._errors_seen = seen
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

    def last_try(self) -> None:
        """On the way out: write what is kept in memory, and say so when it is lost."""
        if not self.retry(now=True):
            log.error("state: %s still cannot be written: what was kept in memory is lost; the next start"
                      " reads the lines again from the last saved positions (alerts made since may be"
                      " sent again)", self.state.error or self.journal.error)  # fmt: skip
