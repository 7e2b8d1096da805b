"""The outbox sender: `Deliverer` takes due rows from the durable outbox (`state.Outbox`) and
sends them to their targets; `Lanes` gives each target a sending thread of its own.

Rules:
- Delivery is at least once, in order per target and group (so a resolution never overtakes its
  firing); a target's critical groups go first, so a backlog of warnings never delays them: a
  `Deliverer` takes due rows from the outbox, sends, and marks each delivered or failed
  (exponential backoff). A failed row holds back the later rows of its own target, never another
  target. Only a crash between a send and its `delivered` mark can repeat a notification;
  receivers de-duplicate by (id, status). The daemon runs two: one for the notify groups, one for
  Alertmanager, so neither waits for the other's timeouts.
- Each target is its own queue (delivery/routing.py) and, in the daemon, its own lane thread
  (`Lanes`), so a dead or slow URL delays only itself.
- Grouping (apprise targets with a `group_interval`): the alerts of one rule and severity
  (`state.notification_group`) are told together. The first one of a quiet group goes out at
  once; what follows within the group interval after a message waits for the interval's end and
  goes out as one message listing them all (at most `apprise_target.MAX_GROUP` alerts a message).
  A held group never holds back another group: a critical rule is not delayed by a flood of
  warnings. Which groups are held is the sender's memory only: after a restart the pending rows
  of a group go out together at once.
- A row whose target is not in the current config (the group was removed by a reload) is kept and
  retried with backoff, with one loud message per target name: a reload that brings the group back
  delivers the backlog, and nothing is ever dropped silently.
- After each pass, the Alertmanager's `Refresher` (delivery/alertmanager.py) re-sends the firing
  set on the same thread, so a re-send never lands after the resolution of the alert it carries.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping, Sequence

from xinf_watch.delivery.alertmanager import Refresher
from xinf_watch.delivery.target import ALERTMANAGER, DeliveryError, Target, group_of
from xinf_watch.state.outbox import Outbox, OutboxItem
from xinf_watch.visible import tell

IDLE_WAIT = 60.0  # seconds the sender sleeps when nothing is pending (a commit wakes it sooner)
PASS_LIMIT = 1000  # outbox rows one delivery pass takes
LANE_GRACE = 4.0  # seconds a stopping sender waits for the sends in progress (the daemon waits 5)
KEEP_DELIVERED = 7 * 86400.0  # delivered outbox rows are kept this long for de-duplication


class Deliverer:
    """Sends due outbox rows to their targets; `run` is a sender thread's loop.

    `only` / `besides` choose the rows of one target / all but one (the daemon's two senders);
    `refresher` re-sends the firing set to the Alertmanager target after each pass. `on_result`
    hears of each message: (target, sent, how many alerts it carried).
    """

    def __init__(
        self,
        outbox: Outbox,
        targets: Mapping[str, Target],
        on_result: Callable[[str, bool, int], None],
        now: Callable[[], float],
        *,
        log: Callable[[str], None] = tell,
        only: str | None = None,
        besides: str | None = None,
        refresher: Refresher | None = None,
    ) -> None:
        self._outbox = outbox
        self._targets = dict(targets)
        self._on_result = on_result
        self._now = now
        self._log = log
        self._only, self._besides = only, besides
        self._refresher = refresher
        self._missing_reported: set[str] = set()
        self._attempted = 0
        self._told_at: dict[tuple[str, str], float] = {}  # (target, group) -> its last message
        self._told_lock = threading.Lock()  # lanes write `_told_at`, the loop reads it
        self._lanes: Lanes | None = None

    def set_targets(self, targets: Mapping[str, Target]) -> None:
        """Swap in the targets of a reloaded config (one reference swap)."""
        self._targets = dict(targets)
        self._missing_reported.clear()
        if self._refresher is not None:
            self._refresher.reset()

    def holding(self, now: float) -> dict[tuple[str, str], float]:
        """The groups inside their group interval: (target, group) -> when they may speak again."""
        out: dict[tuple[str, str], float] = {}
        with self._told_lock:
            for (name, group), told in list(self._told_at.items()):
                target = self._targets.get(name)
                release = told + (target.group_interval if target is not None else 0.0)
                if release > now:
                    out[(name, group)] = release
                else:
                    del self._told_at[(name, group)]
        return out

    def _batches(self, items: Sequence[OutboxItem]) -> list[tuple[str, list[OutboxItem]]]:
        """The due rows as messages, in the order of their first row: the rows of a group together
        (grouping targets), all together (Alertmanager), or one each."""
        batches: list[tuple[str, list[OutboxItem]]] = []
        open_: dict[tuple[str, str], list[OutboxItem]] = {}
        for item in items:
            target = self._targets.get(item.target)
            if target is None or target.max_batch <= 1:
                batches.append((item.target, [item]))
                continue
            key = (item.target, item.group if target.group_interval > 0 else "")
            batch = open_.get(key)
            if batch is None or len(batch) >= target.max_batch:
                open_[key] = batch = []
                batches.append((item.target, batch))
            batch.append(item)
        return batches

    def deliver_due(self, stop: threading.Event | None = None) -> int:
        """One pass: each target with due rows says what it has (see `_deliver_target`). Without
        lanes the targets are served here, one after the other, and the count delivered is
        returned; with lanes (`run(lanes=True)`) each goes to its own lane thread, and 0 is returned."""
        self._attempted = 0
        now = self._now()
        skip = self.holding(now)
        busy = self._lanes.busy() if self._lanes is not None else set[str]()
        names = self._outbox.due_targets(now, only=self._only, besides=self._besides, skip=skip, exclude=busy)
        sent = 0
        for name in names:
            if stop is not None and stop.is_set():
                break
            self._attempted += 1
            if self._lanes is None:
                sent += self._deliver_target(name, now, skip, stop)
            else:
                self._lanes.start(name, functools.partial(self._deliver_target, name, now, skip, stop))
        return sent

    def _deliver_target(
        self, name: str, now: float, skip: Mapping[tuple[str, str], float], stop: threading.Event | None
    ) -> int:
        """The due rows of one target, `PASS_LIMIT` at a time, until one fails; returns how many
        were delivered. Critical alerts first: they never wait behind a flood of warnings (the
        order within a group, one rule and severity, is kept). The groups held back are those held
        when the pass began: a group that speaks in this pass says all it has, however many
        messages that takes."""
        sent = 0
        critical = [g for g in self._outbox.pending_groups(name) if g.rpartition("\0")[2] == "critical"]
        for groups in ([critical] if critical else []) + [None]:
            for _ in range(100):  # a bound, not a limit: a failed target's rows are not due again
                items = self._outbox.due(now, PASS_LIMIT, only=name, skip=skip, groups=groups)
                delivered, failed = self._send(items, stop)
                sent += delivered
                if failed or (stop is not None and stop.is_set()):
                    return sent
                if len(items) < PASS_LIMIT:
                    break
        return sent

    def _send(self, items: Sequence[OutboxItem], stop: threading.Event | None) -> tuple[int, bool]:
        """Send `items` (one target's) as messages, in order, until one fails: (delivered, failed)."""
        sent = 0
        for name, batch in self._batches(items):
            if stop is not None and stop.is_set():
                break
            target = self._targets.get(name)
            try:
                if target is None:
                    raise DeliveryError(f"no target named {name!r} in the current config")
                target.send([item.alert for item in batch])
            except Exception as exc:
                self._mark_failed(name, target, batch, exc)
                return sent, True  # its later rows wait for the retry
            self._mark_delivered(name, target, batch)
            sent += len(batch)
        return sent, False

    def _mark_failed(
        self, name: str, target: Target | None, batch: Sequence[OutboxItem], exc: Exception
    ) -> None:
        """A message that failed: its rows retried with backoff, and said (a missing target once)."""
        error = str(exc) if isinstance(exc, DeliveryError) else f"{type(exc).__name__}: {exc}"
        self._outbox.failed([item.id for item in batch], self._now(), error)
        self._on_result(group_of(name), False, len(batch))
        quiet = target is None and name in self._missing_reported
        if target is None:
            self._missing_reported.add(name)
        if not quiet:
            what = f"{len(batch)} alerts" if len(batch) > 1 else "an alert"
            self._log(f"xinf-watch: delivery of {what} to {name} failed (attempt"
                      f" {batch[0].attempts + 1}, will retry): {error}")  # fmt: skip

    def _mark_delivered(self, name: str, target: Target, batch: Sequence[OutboxItem]) -> None:
        """A message that went out: its rows delivered, and its groups held for their interval."""
        done = self._now()
        self._outbox.delivered([item.id for item in batch], done)
        self._on_result(group_of(name), True, len(batch))
        if target.group_interval > 0:
            with self._told_lock:
                for item in batch:
                    self._told_at[(name, item.group)] = done

    def next_wake(self, now: float) -> float:
        """When a pass may have something to do: a retry, a group's interval ending, a re-send
        (a target whose lane is busy wakes the sender when it is done)."""
        holding = self.holding(now)
        busy = self._lanes.busy() if self._lanes is not None else set[str]()
        due = self._outbox.next_due(only=self._only, besides=self._besides, skip=holding, exclude=busy)
        times = [now + IDLE_WAIT, *holding.values()]
        if due is not None:
            times.append(due)
        if self._refresher is not None:
            times.append(self._refresher.next_at)
        return min(times)

    def run(self, stop: threading.Event, wake: threading.Event, *, lanes: bool = False) -> None:
        """Deliver until `stop` is set. Set `wake` after a commit that enqueued alerts (and after `stop`).
        `lanes`: each target is sent to on a thread of its own (`Lanes`), so a slow or dead URL
        holds up only itself; the loop never waits for a send."""
        self._lanes = Lanes(wake, stop, self._log) if lanes else None
        last_prune = float("-inf")
        while not stop.is_set():
            timeout = IDLE_WAIT
            try:
                self.deliver_due(stop)
                if self._refresher is not None and not stop.is_set():
                    self._refresher.run_due(self._targets.get(ALERTMANAGER))
                now = self._now()
                if now - last_prune >= 3600:
                    self._outbox.prune(now - KEEP_DELIVERED)
                    last_prune = now
                timeout = min(max(self.next_wake(now) - now, 0.0), IDLE_WAIT)
            except Exception as exc:  # the sender must outlive a bad pass (e.g. a locked database)
                self._log(f"xinf-watch: alert delivery pass failed: {type(exc).__name__}: {exc}")
                self._attempted = 0
            if timeout == 0.0 and self._attempted == 0:
                timeout = 0.05  # due rows but nothing tried (stopping, or a clock step): never spin
            wake.wait(timeout)
            wake.clear()
        if self._lanes is not None:  # a send in progress may still mark its rows (else: sent again)
            self._lanes.wait_idle(LANE_GRACE)


class Lanes:
    """One sending thread per target at a time: a target whose send is in progress is busy, and the
    next pass leaves its rows alone (so its rows still go out in order, one message at a time). A
    lane wakes the sender loop when it is done, for whatever came due meanwhile."""

    def __init__(self, wake: threading.Event, stop: threading.Event, log: Callable[[str], None]) -> None:
        self._wake = wake
        self._stop = stop
        self._log = log
        self._busy: set[str] = set()
        self._lock = threading.Condition()

    def busy(self) -> set[str]:
        with self._lock:
            return set(self._busy)

    def wait_idle(self, timeout: float) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: not self._busy, timeout)

    def start(self, name: str, work: Callable[[], int]) -> None:
        def lane() -> None:
            try:
                work()
            except Exception as exc:  # e.g. a locked database: the next pass tries again
                if not self._stop.is_set():  # (stopping: the outbox may be closed under a late send)
                    self._log(f"xinf-watch: alert delivery to {name} failed: {type(exc).__name__}: {exc}")
            finally:
                with self._lock:  # not busy before the wake: the pass it wakes must see it free
                    self._busy.discard(name)
                    self._lock.notify_all()
                self._wake.set()

        with self._lock:
            self._busy.add(name)
        threading.Thread(target=lane, name=f"xinf-watch-send {name}", daemon=True).start()
