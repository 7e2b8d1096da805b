"""The outbox of alert deliveries, and the firing set the Alertmanager sender re-sends.

The store's commit enqueues alerts and keeps the firing set (`enqueue`, in the commit's
transaction: state/store.py); the senders (delivery/sender.py, delivery/alertmanager.py) read,
mark and prune through `Outbox`.

- The outbox is idempotent: one row per (alert id, status, target), whatever is enqueued twice.
  Rows are never dropped on failure; delivered rows are kept for a while (`Outbox.prune`) so that a
  late re-enqueue of the same transition is still recognised.
- The firing set holds the latest firing transition of every alert not resolved yet (a resolution
  removes it in the same transaction that enqueues it): what the Alertmanager sender re-sends. It
  knows nothing of rule kinds; the sender forgets the alerts that no resolution will ever end.
- Each outbox row carries its notification group (`rule`, `severity`), so the sender can take the
  due rows of one group without reading the others (delivery/sender.py groups notifications).
- `Outbox` is the delivery side: the sender threads share its own connection on the same file, or,
  given the store (the daemon), the store's connection and lock.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import orjson

from xinf_watch.model import Alert, AlertStatus
from xinf_watch.state.database import DB_NAME, connect, transaction

if TYPE_CHECKING:
    from xinf_watch.state.store import StateStore

BACKOFF_MAX = 300.0  # seconds between retries of one outbox row, at most

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    target: str
    alert: dict[str, Any]  # the alert JSON (docs/DESIGN.md section 7)
    attempts: int
    next_attempt: float
    group: str  # notification group: rule and severity (`notification_group`)


def notification_group(alert: Alert | Mapping[str, Any]) -> str:
    """The notification group of an alert: the alerts of one rule and severity are told together."""
    if isinstance(alert, Alert):
        return f"{alert.rule}\0{alert.severity.value}"
    return f"{alert.get('rule')}\0{alert.get('severity')}"


def enqueue(conn: sqlite3.Connection, alerts: Sequence[tuple[Alert, Sequence[str]]]) -> None:
    """In the caller's transaction: enqueue each alert for each of its targets (idempotent), and
    keep the firing set: a firing alert enters it (or replaces itself), a resolution leaves it."""
    rows: list[tuple[str, str, str, bytes, str]] = []
    for alert, targets in alerts:
        body = orjson.dumps(alert.to_json())
        group = notification_group(alert)
        rows.extend((alert.id, alert.status.value, target, body, group) for target in targets)
        if alert.status is AlertStatus.FIRING:
            conn.execute("INSERT OR REPLACE INTO firing (alert_id, alert) VALUES (?, ?)",
                         (alert.id, body))  # fmt: skip
        else:
            conn.execute("DELETE FROM firing WHERE alert_id = ?", (alert.id,))
    conn.executemany(
        "INSERT OR IGNORE INTO outbox (alert_id, status, target, alert, grp) VALUES (?, ?, ?, ?, ?)",
        rows,
    )


class Outbox:
    """The delivery side of the outbox, on its own connection (safe to use from the sender thread).

    Per target, rows go out in the order they were enqueued: a row waiting for its retry holds back
    the later rows of the same target (so a resolution never overtakes its firing), never those of
    other targets.
    """

    def __init__(
        self, directory: Path, *, sync: Literal["NORMAL", "FULL"] = "NORMAL", store: StateStore | None = None
    ) -> None:
        """`store`: use the store's connection and lock, so the outbox follows it into memory and
        back (a state dir that cannot be written); else a connection of its own on the file."""
        self._store = store
        self._own = None if store else connect(Path(directory) / DB_NAME, create=False, sync=sync)
        self._lock: threading.Lock | threading.RLock = threading.Lock() if store is None else store.lock

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._store is not None:
            return self._store.connection()
        assert self._own is not None
        return self._own

    def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._store is not None:
            return self._store.write(work)
        with self._lock:
            return transaction(self._conn, work)

    def pending(self) -> int:
        with self._lock:
            return int(
                self._conn.execute("SELECT count(*) FROM outbox WHERE delivered_at IS NULL").fetchone()[0]
            )

    def due(
        self,
        now: float,
        limit: int = 100,
        *,
        only: str | None = None,
        besides: str | None = None,
        skip: Collection[tuple[str, str]] = (),
        exclude: Collection[str] = (),
        groups: Collection[str] | None = None,
    ) -> list[OutboxItem]:
        """Due rows in order: of target `only` (if given), not of target `besides` nor of the targets
        in `exclude`, and not of the (target, group) pairs in `skip` (groups the sender holds back);
        of the notification `groups` only, if given."""
        where, params = self._lane("o", only, besides, skip, exclude)
        if groups is not None:
            where += " AND o.grp IN (" + ",".join(f":grp{n}" for n in range(len(groups))) + ")"
            params.update({f"grp{n}": group for n, group in enumerate(groups)})
        with self._lock:
            rows = self._conn.execute(
                f"""SELECT id, target, alert, attempts, next_attempt, grp FROM outbox AS o
                   WHERE delivered_at IS NULL AND next_attempt <= :now{where}
                     AND NOT EXISTS (SELECT 1 FROM outbox AS p
                                     WHERE p.target = o.target AND p.delivered_at IS NULL
                                       AND p.id < o.id AND p.next_attempt > :now)
                   ORDER BY id LIMIT :limit""",
                {**params, "now": now, "limit": limit},
            ).fetchall()
        return [OutboxItem(i, t, orjson.loads(a), n, nxt, g) for i, t, a, n, nxt, g in rows]

    def pending_groups(self, target: str) -> list[str]:
        """The notification groups that have pending rows for `target`."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT DISTINCT grp FROM outbox WHERE delivered_at IS NULL AND target = ?", (target,)
            ).fetchall()
        return [row[0] for row in rows]

    def due_targets(
        self,
        now: float,
        *,
        only: str | None = None,
        besides: str | None = None,
        skip: Collection[tuple[str, str]] = (),
        exclude: Collection[str] = (),
    ) -> list[str]:
        """The targets that have a due row (as `due` chooses them), each once."""
        with self._lock:
            pending = [row[0] for row in self._conn.execute(
                "SELECT DISTINCT target FROM outbox WHERE delivered_at IS NULL ORDER BY target")]  # fmt: skip
        chosen = [t for t in pending if (only is None or t == only) and t != besides and t not in exclude]
        return [t for t in chosen if self.due(now, 1, only=t, skip=skip)]

    @staticmethod
    def _lane(
        table: str,
        only: str | None,
        besides: str | None,
        skip: Collection[tuple[str, str]],
        exclude: Collection[str] = (),
    ) -> tuple[str, dict[str, Any]]:
        """An SQL condition (starting with AND) on the rows of `table` and its parameters."""
        where, params = "", dict[str, Any]()
        for n, target in enumerate(exclude):
            where += f" AND {table}.target != :x{n}"
            params[f"x{n}"] = target
        if only is not None:
            where, params["only"] = f" AND {table}.target = :only", only
        if besides is not None:
            where, params["besides"] = where + f" AND {table}.target != :besides", besides
        for n, (target, group) in enumerate(skip):
            where += f" AND NOT ({table}.target = :t{n} AND {table}.grp = :g{n})"
            params[f"t{n}"], params[f"g{n}"] = target, group
        return where, params

    def next_due(
        self,
        *,
        only: str | None = None,
        besides: str | None = None,
        skip: Collection[tuple[str, str]] = (),
        exclude: Collection[str] = (),
    ) -> float | None:
        """When the earliest row could become due (the oldest pending row of each target, leaving out
        the groups in `skip` and the targets in `exclude`), or None."""
        where, params = self._lane("o", only, besides, skip, exclude)
        inner, _ = self._lane("p", None, None, skip)
        with self._lock:
            row = self._conn.execute(
                f"""SELECT min(next_attempt) FROM outbox AS o
                   WHERE delivered_at IS NULL{where}
                     AND id = (SELECT min(id) FROM outbox AS p
                               WHERE p.target = o.target AND p.delivered_at IS NULL{inner})""",
                params,
            ).fetchone()
        return None if row[0] is None else float(row[0])

    def firing(self) -> list[dict[str, Any]]:
        """The firing set: the latest firing transition of every alert not resolved (or forgotten)."""
        with self._lock:
            rows = self._conn.execute("SELECT alert FROM firing ORDER BY rowid").fetchall()
        return [orjson.loads(row[0]) for row in rows]

    def forget_firing(self, alert_ids: Collection[str]) -> None:
        """Take alerts out of the firing set that no resolution will ever end (one-off events)."""
        rows = [(i,) for i in alert_ids]
        self._write(lambda conn: conn.executemany("DELETE FROM firing WHERE alert_id = ?", rows))

    def delivered(self, item_ids: int | Sequence[int], now: float | None = None) -> None:
        """Mark rows sent. The rows of one message (several ids) in one transaction: a kill lands
        before or after the whole mark, so a message is repeated whole or not at all."""
        when = time.time() if now is None else now
        ids = _as_list(item_ids)
        sql = "UPDATE outbox SET delivered_at = ?, last_error = NULL WHERE id = ?"
        self._write(lambda conn: conn.executemany(sql, [(when, i) for i in ids]))

    def failed(self, item_ids: int | Sequence[int], now: float, error: str) -> None:
        """Retry later: 1 s after the first failure, then 2 s, 4 s, ... at most BACKOFF_MAX. Never dropped.
        The rows of one failed message (several ids) come due again together, after the backoff of
        the most tried one: a message is retried whole."""
        ids = _as_list(item_ids)
        marks = ",".join("?" * len(ids))

        def work(conn: sqlite3.Connection) -> None:
            (tried,) = conn.execute(f"SELECT max(attempts) FROM outbox WHERE id IN ({marks})", ids)
            delay = min(BACKOFF_MAX, float(1 << min(int(tried[0] or 0), 20)))
            conn.execute(
                f"""UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt = ?
                   WHERE id IN ({marks})""",
                [error[:1000], now + delay, *ids],
            )

        self._write(work)

    def prune(self, before: float) -> int:
        """Forget rows delivered before `before`; returns how many."""
        sql = "DELETE FROM outbox WHERE delivered_at IS NOT NULL AND delivered_at < ?"
        return self._write(lambda conn: conn.execute(sql, (before,)).rowcount)

    def close(self) -> None:
        """Closes its own connection (a store's is the store's to close)."""
        with self._lock:
            if self._own is not None:
                self._own.close()


def _as_list(item_ids: int | Sequence[int]) -> list[int]:
    """One row's id or a message's ids, as a list."""
    return [item_ids] if isinstance(item_ids, int) else list(item_ids)
